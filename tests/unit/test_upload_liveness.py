"""Two uploads of one image to one host: the receiver's lock says it is alive, a cleanup removes only
uploads that are provably dead, and the second to finish never replaces the first's published base."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest

from providers import clustermap
from providers.remote import transfer
from tests.unit.test_receive import _host, _odd_image

pytestmark = pytest.mark.unit


def _remove_dead(grace: int, *paths: str) -> list[str]:
    """The host's side of `transfer.remove_dead_uploads`, run here as the host runs it."""
    ran = subprocess.run(["sh", "-c", transfer._REMOVE_DEAD, "sh", str(grace), *paths], capture_output=True,
                         text=True, check=True)
    return ran.stdout.split()


def test_a_receiver_holds_a_lock_on_its_file_until_it_is_done(tmp_path) -> None:
    img, tmp, final = tmp_path / "img", tmp_path / "vfupload-x", tmp_path / "vfbase-x.raw"
    size = _odd_image(img)
    tmp.write_bytes(b"")
    want = clustermap.digest(clustermap.compute(str(img)))
    seen: list[bool] = []

    def feed(fd: int) -> int:
        with open(tmp, "rb") as probe:  # what a cleanup on the host asks: is anyone writing it?
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append(False)
            except BlockingIOError:
                seen.append(True)
        # and the cleanup itself, with no grace at all: the lock alone keeps it
        seen.append(_remove_dead(0, str(tmp)) == [] and tmp.exists())
        return transfer._send_runs(fd, str(img), size, None)

    ran, _ = _host([str(tmp), str(final), str(size), want], feed)
    assert ran.returncode == 0, ran.stderr
    assert seen == [True, True] and final.read_bytes() == img.read_bytes() and not tmp.exists()


def test_the_second_upload_to_finish_keeps_the_first_ones_published_base(tmp_path) -> None:
    img, tmp, final = tmp_path / "img", tmp_path / "vfupload-y", tmp_path / "vfbase-x.raw"
    size = _odd_image(img)
    final.write_bytes(img.read_bytes())  # the first upload's, already held and used
    first = final.stat().st_ino
    tmp.write_bytes(b"")
    want = clustermap.digest(clustermap.compute(str(img)))
    ran, _ = _host([str(tmp), str(final), str(size), want], lambda fd: transfer._send_runs(fd, str(img), size, None))
    assert ran.returncode == 0, ran.stderr
    assert final.stat().st_ino == first and not tmp.exists()


def test_the_checked_publish_never_replaces_a_published_base(tmp_path) -> None:
    src, dst = tmp_path / "vfupload-z", tmp_path / "vfbase-z.raw"
    src.write_bytes(b"x" * 4096)
    dst.write_bytes(b"x" * 4096)
    first = dst.stat().st_ino
    want = subprocess.run(["sh", "-c", f"cksum < {src}"], capture_output=True, text=True).stdout.split()[0]
    ran = subprocess.run(["sh", "-c", transfer._VERIFY_AND_PUBLISH, "sh", "crc", want, "4096", str(src), str(dst),
                          "", "", "python3"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert dst.stat().st_ino == first and not src.exists()


def test_only_old_unlocked_uploads_are_dead(tmp_path) -> None:
    old, young, locked = (tmp_path / f"vfupload-d-{n}" for n in ("old", "young", "locked"))
    for f in (old, young, locked):
        f.write_bytes(b"")
    hour_ago = time.time() - 3600
    for f in (old, locked):
        os.utime(f, (hour_ago, hour_ago))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = _remove_dead(transfer.UPLOAD_GRACE, str(old), str(young), str(locked),
                               str(tmp_path / "vfupload-d-gone"))
    assert removed == [str(old)]
    assert not old.exists() and young.exists() and locked.exists()
