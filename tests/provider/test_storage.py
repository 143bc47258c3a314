"""BaseImage and Volume providers against the lab."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from providers.base_image import BaseImageProvider
from providers.host import HostProvider
from providers.local import image as localimage
from providers.model.errors import HostError, UnsafeChangeError
from providers.model.host import Connection
from providers.remote import session, transfer, uploads
from providers.volume import VolumeProvider
from tests import lab
from tests.provider.fixtures import host_props, image_props, volume_props

pytestmark = pytest.mark.provider


@pytest.fixture(scope="module")
def hosts() -> None:
    for h in ("h1", "h2"):
        HostProvider().create(host_props(h))


def _sparse_image(path: str, size: int, data_every: int = 16 << 20, seed: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, data_every):
            f.seek(off)
            f.write((seed + os.urandom(1 << 20))[: 1 << 20])


def _uploads(props: dict) -> list[str]:
    """The temporary volumes of uploads of this image on its host (other runs' leftovers are theirs)."""
    return [v for v in lab.volumes(props["connection"]["host"]) if v.startswith(f"vfupload-{props['digest'][:16]}-")]


def test_upload_verify_publish_then_skip(hosts, tmp_path, monkeypatch) -> None:
    src = tmp_path / "img.raw"
    _sparse_image(str(src), 256 << 20)  # 16 MiB of data in 256 MiB
    props = image_props("h2", str(src), name="sparse")
    bp = BaseImageProvider()
    first = bp.create(props)
    again = None
    try:
        outs = first.outs
        assert outs["reused"] is False and outs["volumeName"] == f"vfbase-{props['digest']}.raw"
        assert outs["bytesSent"] <= (16 << 20) + 4096, "only the data and its operations' heads, never the holes"
        # the published volume is the exact content, read-only, and no temporary upload remains
        script = f'head -c {256 << 20} {outs["path"]} | sha256sum; stat -c %a {outs["path"]}'
        digest, mode = lab.in_host("h2", "sh", "-c", script).stdout.split()[::2][:2]
        assert digest == localimage.sha256_file(str(src)) and mode == "444"
        assert not _uploads(props)
        # a killed run's leftover of another image goes at the next create on the host, even one that reuses
        monkeypatch.setattr(uploads, "UPLOAD_GRACE", 0)
        killed = "vfupload-0123456789abcdef-deadbeef"
        lab.virsh("h2", "vol-create-as", "guests", killed, "1M", "--format", "raw")
        again = bp.create(props)
        assert again.outs["reused"] is True and again.outs["bytesSent"] == 0
        assert killed not in lab.volumes("h2")
        assert bp.read(first.id, outs).id == first.id
        assert not bp.diff(first.id, outs, props).changes
        changed = dict(props, digest="0" * 64)
        assert bp.diff(first.id, outs, changed).replaces == ["digest"]
    finally:
        bp.delete(first.id, first.outs)
        if again is not None:  # the second holder: the last one to let go removes the base
            assert bp.read(first.id, first.outs).id == first.id
            bp.delete(again.id, again.outs)
    assert bp.read(first.id, first.outs).id is None
    bp.delete(first.id, first.outs)  # already gone: fine


def _master_of(c: Connection) -> list[int]:
    """The pid of the host's one SSH connection (the OpenSSH master all sessions ride on)."""
    needle = f"ControlPath={session.control_path(c)}".encode()
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd and b"ControlMaster=yes" in cmd:
            pids.append(int(pid))
    return pids


def test_upload_cut_in_the_middle_is_never_published(hosts, tmp_path) -> None:
    src = tmp_path / "dense.raw"
    with open(src, "wb") as f:
        for _ in range(768):
            f.write(os.urandom(1 << 20))
    props = image_props("h2", str(src), name="dense")
    bp = BaseImageProvider()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            bp.create(props)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _uploads(props):
        time.sleep(0.05)
    time.sleep(0.5)
    victims = _master_of(Connection.from_props(props["connection"]))
    assert victims, "no SSH connection to h2 found to cut"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    t.join(120)
    assert errors, "the cut upload must fail"
    assert f"vfbase-{props['digest']}.raw" not in lab.volumes("h2"), "a broken upload was published"
    done = bp.create(props)  # the next run completes and cleans the remnant
    try:
        assert done.outs["reused"] is False and 768 << 20 < done.outs["bytesSent"] < (768 << 20) + (64 << 10)
        assert not _uploads(props)
    finally:
        bp.delete(done.id, done.outs)


def test_two_stacks_uploading_one_image_to_one_host_both_succeed(hosts, tmp_path, monkeypatch) -> None:
    """Two stacks (two BaseImage resources) upload the same new image to h2, the second starting while the
    first's upload is under way: neither removes the other's temporary volume, both succeed, and one base
    remains with both holding it.  Killed runs' leftovers (of that image and another) are removed.  No grace period
    here: the receiver's lock alone must keep a live upload."""
    monkeypatch.setattr(uploads, "UPLOAD_GRACE", 0)
    src = tmp_path / "shared.raw"
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    props = image_props("h2", str(src), name="shared")
    for dead in (f"vfupload-{props['digest'][:16]}-deadbeef", "vfupload-fedcba9876543210-deadbeef"):
        lab.virsh("h2", "vol-create-as", "guests", dead, "1M", "--format", "raw")
    bp = BaseImageProvider()
    made: list = []
    errors: list[BaseException] = []
    real_send, sending = transfer._send_plan, threading.Event()

    def first_waits(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not sending.is_set():  # its temporary volume made, its receiver started: the second comes now
            sending.set()
            time.sleep(3)
        return real_send(*args, **kwargs)

    monkeypatch.setattr(transfer, "_send_plan", first_waits)

    def create() -> None:
        try:
            made.append(bp.create(props))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    first = threading.Thread(target=create)
    first.start()
    assert sending.wait(60)
    second = threading.Thread(target=create)
    second.start()
    first.join(300)
    second.join(300)
    try:
        assert not errors, errors
        assert len(made) == 2 and {m.outs["volumeName"] for m in made} == {f"vfbase-{props['digest']}.raw"}
        assert [m.outs["holder"] != "" for m in made] == [True, True]
        left = lab.volumes("h2")
        assert left.count(f"vfbase-{props['digest']}.raw") == 1
        assert not [v for v in left if v.startswith("vfupload-")], left
        bp.delete(made[0].id, made[0].outs)
        assert f"vfbase-{props['digest']}.raw" in lab.volumes("h2"), "the other stack still holds it"
    finally:
        for m in made[1:]:
            bp.delete(m.id, m.outs)
        lab.virsh("h2", "vol-delete", "--pool", "guests", dead, check=False)
    assert f"vfbase-{props['digest']}.raw" not in lab.volumes("h2")


def test_volume_overlay_copy_grow_shrink_keep(hosts, unique) -> None:
    base = BaseImageProvider().create(image_props("h1")).outs
    vp = VolumeProvider()
    props = volume_props("h1", f"ov-{unique}.qcow2", base, deleteOnDestroy=False)
    made = vp.create(props)
    xml = lab.virsh("h1", "vol-dumpxml", "--pool", "guests", f"ov-{unique}.qcow2")
    assert base["path"] in xml and "<format type='qcow2'/>" in xml
    assert vp.read(made.id, made.outs).outs["spec"]["capacity"] == 1 << 30
    # grow in place
    bigger = dict(props, capacity=2 << 30)
    assert vp.diff(made.id, made.outs, bigger).changes and not vp.diff(made.id, made.outs, bigger).replaces
    grown = vp.update(made.id, made.outs, bigger)
    assert vp.read(made.id, grown.outs).outs["spec"]["capacity"] == 2 << 30
    # shrink refused before anything runs
    failures = vp.check(grown.outs, dict(props, capacity=1 << 30)).failures
    assert failures and failures[0].property == "capacity" and "refused" in failures[0].reason
    with pytest.raises(UnsafeChangeError):
        vp.update(made.id, grown.outs, dict(props, capacity=1 << 30))
    # the base cannot go while the disk uses it
    BaseImageProvider().delete("x", {**image_props("h1"), **base})
    assert base["volumeName"] in lab.volumes("h1")
    # delete keeps it; a new create reuses it (same backing); another backing is refused
    vp.delete(made.id, grown.outs)
    assert f"ov-{unique}.qcow2" in lab.volumes("h1")
    reused = vp.create(bigger)
    assert reused.outs["reused"] is True
    with pytest.raises(UnsafeChangeError, match="shrinking is refused"):
        vp.create(props)
    lab.virsh("h1", "vol-delete", "--pool", "guests", f"ov-{unique}.qcow2")
    # a full copy, deleted on destroy
    copy = vp.create(volume_props("h1", f"cp-{unique}.qcow2", base, mode="copy"))
    assert "<backingStore/>" in lab.virsh("h1", "vol-dumpxml", "--pool", "guests", f"cp-{unique}.qcow2") or \
        base["path"] not in lab.virsh("h1", "vol-dumpxml", "--pool", "guests", f"cp-{unique}.qcow2")
    vp.delete(copy.id, copy.outs)
    assert f"cp-{unique}.qcow2" not in lab.volumes("h1")
    vp.delete(copy.id, copy.outs)  # already gone
    assert vp.read(copy.id, copy.outs).id is None


def test_a_base_goes_with_the_last_of_its_holders_and_disks(hosts, tmp_path, unique) -> None:
    """Two stacks deploy the same image to h1 (two BaseImage resources) and one disk is made from it:
    the base stays while either holds it or the disk exists, and goes with the last of them."""
    src = tmp_path / "img.raw"
    _sparse_image(str(src), 32 << 20, seed=b"holders")
    props = image_props("h1", str(src), name="held")
    bp, vp = BaseImageProvider(), VolumeProvider()
    a, b = bp.create(props), bp.create(props)
    assert b.outs["reused"] is True and a.outs["holder"] and b.outs["holder"] not in ("", a.outs["holder"])
    name = a.outs["volumeName"]
    disk = vp.create(volume_props("h1", f"held-{unique}.qcow2", a.outs))
    bp.delete(a.id, a.outs)
    assert name in lab.volumes("h1"), "another stack's BaseImage still holds it"
    bp.delete(b.id, b.outs)
    assert name in lab.volumes("h1"), "a disk is made from it"
    vp.delete(disk.id, disk.outs)
    assert name not in lab.volumes("h1"), "its last disk is gone and nobody holds it: removed, not orphaned"
    again = bp.create(props)  # nothing left on the host: uploaded again
    assert again.outs["reused"] is False
    bp.delete(again.id, again.outs)
    assert name not in lab.volumes("h1")


def test_missing_base_is_a_clear_error(hosts, unique) -> None:
    fake = {"volumeName": "vfbase-" + "0" * 64 + ".qcow2", "format": "qcow2"}
    with pytest.raises(HostError, match="base volume .* is missing"):
        VolumeProvider().create(volume_props("h1", f"nb-{unique}.qcow2", fake))


def test_rebuilt_image_sends_only_changed_clusters(hosts, tmp_path) -> None:
    old = tmp_path / "v1.raw"
    _sparse_image(str(old), 256 << 20, data_every=2 << 20)  # 128 MiB of data
    bp = BaseImageProvider()
    first = bp.create(image_props("h2", str(old), name="rebuilt"))
    new = tmp_path / "v2.raw"
    subprocess.run(["cp", "--sparse=always", str(old), str(new)], check=True)
    with open(new, "r+b") as f:  # change ~2 % of the 64 KiB clusters, scattered
        for i in range(0, 4096, 50):
            f.seek(i * (64 << 10) + 100)
            f.write(os.urandom(512))
    props = image_props("h2", str(new), name="rebuilt")
    second = bp.create(props)
    try:
        assert second.outs["reused"] is False
        assert second.outs["bytesSent"] <= 0.05 * (256 << 20), second.outs["bytesSent"]
        digest = lab.in_host("h2", "sh", "-c", f"sha256sum {second.outs['path']}").stdout.split()[0]
        assert digest == localimage.sha256_file(str(new)), "the delta result is the new image exactly"
        assert first.outs["volumeName"] in lab.volumes("h2"), "the previous base stays until it is deleted"
    finally:
        bp.delete(second.id, second.outs)
        bp.delete(first.id, first.outs)


def _descendants(root: int) -> set[int]:
    parent: dict[int, int] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in found} - found
        found |= new
        grew = bool(new)
    return found


def test_everything_rides_one_ssh_connection_per_host(hosts, unique) -> None:
    """libvirt RPC, an upload stream, volume calls and remote commands: one TCP connection to h1's sshd."""
    c = Connection.from_props(lab.connection_props("h1"))
    base = BaseImageProvider().create(image_props("h1")).outs
    vp = VolumeProvider()
    made = vp.create(volume_props("h1", f"one-{unique}.qcow2", base))
    session.run(c, ["true"])
    vp.delete(made.id, made.outs)
    BaseImageProvider().delete("base", base)
    ss = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"{c.address}", "dport", "=", ":22"],
                        capture_output=True, text=True, check=True).stdout
    owners = [int(p) for p in re.findall(r"pid=(\d+)", ss)]
    master = _master_of(c)
    assert len(master) == 1
    ours = _descendants(os.getpid()) | set(master)
    assert [p for p in owners if p in ours] == master, ss


def test_a_failed_verification_is_never_published(hosts, tmp_path) -> None:
    """The host computes the written volume's digest itself; one that is not the published name's is
    refused and the upload discarded."""
    src = tmp_path / "img.raw"
    _sparse_image(str(src), 32 << 20, seed=b"verify")
    props = dict(image_props("h2", str(src), name="verify"), digest="f" * 64)  # not what the host computes
    with pytest.raises(HostError) as err:
        BaseImageProvider().create(props)
    real = image_props("h2", str(src), name="verify")["digest"]
    assert "verifying the upload" in str(err.value) and f"digest {real}" in str(err.value), err.value
    assert "pulumi up" in str(err.value)
    left = lab.volumes("h2")
    assert f"vfbase-{'f' * 64}.raw" not in left and not _uploads(props)


def test_a_host_without_python_checks_the_crc_of_every_byte(hosts, tmp_path, monkeypatch) -> None:
    """No usable python3 on the host: the whole volume's POSIX cksum is checked instead, and a
    mismatch there is refused the same way."""
    src = tmp_path / "img.raw"
    _sparse_image(str(src), 32 << 20, seed=b"nopython")
    props = image_props("h2", str(src), name="nopython")
    monkeypatch.setattr(transfer, "HOST_PYTHON", "python3-not-on-this-host")
    monkeypatch.setattr(localimage, "posix_cksum", lambda _path: "1234567")
    with pytest.raises(HostError) as err:
        BaseImageProvider().create(props)
    assert "verifying the upload" in str(err.value) and "crc" in str(err.value), err.value
    monkeypatch.setattr(localimage, "posix_cksum", _real_cksum)
    made = BaseImageProvider().create(props)
    try:
        assert made.outs["reused"] is False and made.outs["volumeName"] == f"vfbase-{props['digest']}.raw"
        assert not _uploads(props)
    finally:
        BaseImageProvider().delete(made.id, made.outs)


_real_cksum = localimage.posix_cksum
