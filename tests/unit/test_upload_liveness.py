"""Two uploads of one image to one host: the receiver's lock says it is alive, a cleanup removes only
uploads that are provably dead, and the second to finish never replaces the first's published base."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time

import pytest

from providers.hostside import clustermap
from providers.remote import transfer, uploads
from tests.unit.test_receive import _host, _odd_image

pytestmark = pytest.mark.unit


def _remove_dead(grace: int, *paths: str) -> list[str]:
    """The host's side of `uploads.remove_dead_uploads`, run here as the host runs it."""
    ran = subprocess.run(["sh", "-c", uploads._REMOVE_DEAD, "sh", str(grace), *paths], capture_output=True,
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
        return transfer._send_plan(fd, str(img), transfer.full_plan(str(img), size), None)

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
    plan = transfer.full_plan(str(img), size)
    ran, _ = _host([str(tmp), str(final), str(size), want], lambda fd: transfer._send_plan(fd, str(img), plan, None))
    assert ran.returncode == 0, ran.stderr
    assert final.stat().st_ino == first and not tmp.exists()


def test_the_checked_publish_never_replaces_a_published_base(tmp_path) -> None:
    src, dst = tmp_path / "vfupload-z", tmp_path / "vfbase-z.raw"
    src.write_bytes(b"x" * 4096)
    dst.write_bytes(b"x" * 4096)
    first = dst.stat().st_ino
    want = subprocess.run(["sh", "-c", f"cksum < {src}"], capture_output=True, text=True).stdout.split()[0]
    ran = subprocess.run(["sh", "-c", uploads._VERIFY_AND_PUBLISH, "sh", "crc", want, "4096", str(src), str(dst),
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
        removed = _remove_dead(uploads.UPLOAD_GRACE, str(old), str(young), str(locked),
                               str(tmp_path / "vfupload-d-gone"))
    assert removed == [str(old)]
    assert not old.exists() and young.exists() and locked.exists()


@pytest.fixture
def lv(tmp_path):
    """A loop device standing in for an LV (this kernel has no device-mapper: no real LV can be made here),
    and stand-ins for the LVM commands first on PATH that log their arguments and whether the script holds
    the device open (fd 9) when they run; `lvremove` refuses while `open` exists, as LVM refuses an open LV."""
    backing = tmp_path / "backing"
    backing.write_bytes(os.urandom(1 << 20))
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    bin_dir, log = tmp_path / "bin", tmp_path / "lvm.log"
    bin_dir.mkdir()
    for cmd in ("lvremove", "lvrename", "lvchange"):
        refuse = f'[ -e {tmp_path}/open ] && exit 5' if cmd == "lvremove" else ":"
        (bin_dir / cmd).write_text(f'#!/bin/sh\nfor last; do :; done\n{refuse}\n'
                                   f'[ -e /proc/$$/fd/9 ] && o=open || o=closed\necho "{cmd} $* fd9=$o" >> {log}\n')
        (bin_dir / cmd).chmod(0o755)
    try:
        yield dev, bin_dir, log, backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _run(script: str, bin_dir, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", script, "sh", *args], capture_output=True, text=True, env=env)


def test_a_dead_lv_upload_is_removed_an_open_or_young_one_kept(lv, tmp_path) -> None:
    dev, bin_dir, log, _ = lv
    os.chmod(dev, os.stat(dev).st_mode & 0o7777)  # its node changed now, as an LV's appears when it is made
    assert _run(uploads._REMOVE_DEAD, bin_dir, "3600", dev).stdout == ""  # younger than the grace: not asked
    assert not log.exists()
    (tmp_path / "open").touch()
    assert _run(uploads._REMOVE_DEAD, bin_dir, "0", dev).stdout == ""  # open: lvremove refuses, kept
    (tmp_path / "open").unlink()
    assert _run(uploads._REMOVE_DEAD, bin_dir, "0", dev).stdout.split() == [dev]
    assert log.read_text().splitlines() == [f"lvremove -q -f -- {dev} fd9=closed"]


def test_an_lv_upload_is_held_open_while_it_is_checked_and_renamed(lv, tmp_path) -> None:
    dev, bin_dir, log, backing = lv
    size = 1 << 20
    want = hashlib.sha256(backing.read_bytes()).hexdigest()
    ran = _run(uploads._VERIFY_AND_PUBLISH, bin_dir, "sha256", want, str(size), dev, "/dev/vg/vfbase-x.raw",
               "vg", "", "python3")
    assert ran.returncode == 0, ran.stderr
    assert log.read_text().splitlines() == [f"lvrename vg {os.path.basename(dev)} vfbase-x.raw fd9=open",
                                            "lvchange --permission r /dev/vg/vfbase-x.raw fd9=closed"]
    bad = _run(uploads._VERIFY_AND_PUBLISH, bin_dir, "sha256", "0" * 64, str(size), dev, "/dev/vg/vfbase-y.raw",
               "vg", "", "python3")
    assert bad.returncode == 3 and len(log.read_text().splitlines()) == 2  # a mismatch publishes nothing
