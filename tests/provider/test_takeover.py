"""`adopt: true` against the lab: a domain defined with virsh is taken over with its UUID, disk and devices;
what must be refused is refused before anything on the host changes."""

from __future__ import annotations

import pytest

from providers.guest import GuestProvider
from providers.model.errors import UnsafeChangeError
from providers.volume import VolumeProvider
from tests import lab
from tests.provider.fixtures import guest_props, volume_props

pytestmark = pytest.mark.provider
POOL = "/var/lib/virtfleet/guests"
MARK = "write -P 0x5a 1M 64k"


def _mac(unique: str) -> str:
    return f"52:54:00:{unique[0:2]}:{unique[2:4]}:{unique[4:6]}"


def hand_made(name: str, disk: str, extra: str = "", start: bool = False) -> None:
    """A domain as an operator defines it with virsh on h1: its disk (with data on it) and maybe a second one."""
    lab.virsh("h1", "vol-create-as", "guests", disk.rsplit("/", 1)[1], "64M", "--format", "qcow2")
    lab.in_host("h1", "qemu-io", "-f", "qcow2", "-c", MARK, disk)
    second = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{extra}'/>"
              "<target dev='vdb' bus='virtio'/></disk>") if extra else ""
    xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
           f"<target dev='vda' bus='virtio'/></disk>{second}</devices></domain>")
    lab.in_host("h1", "sh", "-c", f"cat > /tmp/{name}.xml <<'EOF'\n{xml}\nEOF\nvirsh -q define /tmp/{name}.xml")
    if start:
        lab.virsh("h1", "start", name)


def _cleanup(name: str, *volumes: str) -> None:
    lab.virsh("h1", "destroy", name, check=False)
    lab.virsh("h1", "undefine", name, check=False)
    for vol in volumes:
        lab.virsh("h1", "vol-delete", "--pool", "guests", vol, check=False)


def _owner(name: str, stack: str = "provider-tests") -> dict[str, str]:
    return {"project": "virtfleet", "stack": stack, "resource": name}


def test_adoption_keeps_uuid_disk_content_and_an_extra_device(base, unique, capsys) -> None:
    name, extra = f"ad-{unique}", f"{POOL}/adx-{unique}.raw"
    disk = f"{POOL}/{name}.qcow2"
    try:
        lab.virsh("h1", "vol-create-as", "guests", f"adx-{unique}.raw", "16M")
        hand_made(name, disk, extra, start=True)
        uuid = lab.virsh("h1", "domuuid", name).strip()
        vol = VolumeProvider().create(volume_props("h1", f"{name}.qcow2", base, deleteOnDestroy=False,
                                                   adopt={"domain": name, "owner": _owner(name)}))
        assert vol.outs["path"] == disk and lab.virsh("h1", "vol-info", disk, "--bytes").count(str(1 << 30)) == 1
        gp = GuestProvider()
        props = guest_props("h1", name, disk, _mac(unique), adopt=True, shutdownTimeout=2)
        capsys.readouterr()
        assert not gp.check({}, props).failures
        said = capsys.readouterr().err
        assert f"h1: taking over {name} (defined outside virtfleet): memory 67108864 -> 134217728" in said, said
        assert f"graceful restart (it is running; memory, interfaces, graphics need it); kept: disk vdb {extra}" in said
        made = gp.create(props)
        assert made.id == uuid and made.outs["status"]["uuid"] == uuid
        inactive = lab.virsh("h1", "dumpxml", name, "--inactive")
        assert "urn:virtfleet:owner:1" in inactive and extra in inactive and "131072" in inactive
        assert made.outs["status"]["unmanaged"] == [f"disk vdb {extra}"] and made.outs["xmlDrift"] is False
        assert lab.domain_state("h1", name) == "running"
        assert not gp.diff(uuid, gp.read(uuid, made.outs).outs, props).changes
        gp.delete(uuid, made.outs)
        VolumeProvider().delete(vol.id, vol.outs)  # deleteOnDestroy false: kept
        assert lab.domain_state("h1", name) == "missing" and f"{name}.qcow2" in lab.volumes("h1")
        read = lab.in_host("h1", "qemu-io", "-f", "qcow2", "-c", MARK.replace("write", "read"), disk, check=False)
        assert read.returncode == 0 and "Pattern verification failed" not in read.stdout, read.stdout
    finally:
        _cleanup(name, f"{name}.qcow2", f"adx-{unique}.raw")


def test_a_foreign_domain_without_adopt_is_refused_and_untouched(unique) -> None:
    name = f"fo-{unique}"
    disk = f"{POOL}/{name}.qcow2"
    try:
        hand_made(name, disk)
        before = lab.virsh("h1", "dumpxml", name, "--inactive")
        with pytest.raises(UnsafeChangeError, match="managed by something outside virtfleet.*adopt: true"):
            GuestProvider().create(guest_props("h1", name, disk, _mac(unique), running=False))
        assert lab.virsh("h1", "dumpxml", name, "--inactive") == before
    finally:
        _cleanup(name, f"{name}.qcow2")


def test_a_guest_of_another_stack_is_refused_even_with_adopt(base, unique, sweep) -> None:
    name = f"os-{unique}"
    sweep.append(("h1", name))
    vp, gp = VolumeProvider(), GuestProvider()
    vol = vp.create(volume_props("h1", f"{name}.qcow2", base))
    theirs = gp.create(guest_props("h1", name, vol.outs["path"], _mac(unique), running=False,
                                   owner=_owner(name, "other")))
    try:
        before = lab.virsh("h1", "dumpxml", name, "--inactive")
        mine = guest_props("h1", name, vol.outs["path"], _mac(unique), running=False, adopt=True)
        why = f"managed by virtfleet/other/{name}, not by virtfleet/provider-tests/{name}"
        assert why in gp.check({}, mine).failures[0].reason
        with pytest.raises(UnsafeChangeError, match=why):
            gp.create(mine)
        with pytest.raises(UnsafeChangeError, match=why):  # its disk is refused first, before it could grow
            vp.create(volume_props("h1", f"{name}.qcow2", base, capacity=2 << 30,
                                   adopt={"domain": name, "owner": _owner(name)}))
        assert lab.virsh("h1", "dumpxml", name, "--inactive") == before
        assert str(1 << 30) in lab.virsh("h1", "vol-info", vol.outs["path"], "--bytes")
    finally:
        gp.delete(theirs.id, theirs.outs)
        vp.delete(vol.id, vol.outs)


def test_a_disk_elsewhere_is_refused_before_any_change(base, unique) -> None:
    name = f"dm-{unique}"
    elsewhere = f"{POOL}/else-{unique}.qcow2"
    try:
        hand_made(name, elsewhere)
        before, volumes = lab.virsh("h1", "dumpxml", name, "--inactive"), lab.volumes("h1")
        expected = f"its main disk is '{elsewhere}', but virtfleet expects the guest's volume '{POOL}/{name}.qcow2'"
        with pytest.raises(UnsafeChangeError, match=expected):
            VolumeProvider().create(volume_props("h1", f"{name}.qcow2", base,
                                                 adopt={"domain": name, "owner": _owner(name)}))
        props = guest_props("h1", name, f"{POOL}/{name}.qcow2", _mac(unique), adopt=True)
        assert expected in GuestProvider().check({}, props).failures[0].reason
        with pytest.raises(UnsafeChangeError, match=expected):
            GuestProvider().create(props)
        assert lab.volumes("h1") == volumes and lab.virsh("h1", "dumpxml", name, "--inactive") == before
    finally:
        _cleanup(name, f"else-{unique}.qcow2")


@pytest.mark.parametrize("shape", ["larger", "raw"])
def test_a_disk_that_cannot_be_taken_as_it_is_is_refused_in_preview(base, unique, shape) -> None:
    """An existing disk larger than diskSize, or raw in a dir pool, is refused by the preview's check (naming
    the key and the fix), and again by create; nothing on the host changes."""
    name = f"as{shape[0]}-{unique}"
    disk = f"{name}.qcow2"
    try:
        lab.virsh("h1", "vol-create-as", "guests", disk, "64M", "--format", "qcow2" if shape == "larger" else "raw")
        props = volume_props("h1", disk, base, deleteOnDestroy=False, adopt={"domain": name, "owner": _owner(name)},
                             capacity=(32 << 20) if shape == "larger" else (1 << 30))
        before = lab.virsh("h1", "vol-dumpxml", "--pool", "guests", disk)
        failures = VolumeProvider().check({}, props).failures
        key, fix = {"larger": ("capacity", "Set diskSize to at least 64 MiB"),
                    "raw": ("adopt", "qemu-img convert")}[shape]
        assert [f.property for f in failures] == [key] and fix in failures[0].reason, failures
        with pytest.raises(UnsafeChangeError, match="nothing changed"):
            VolumeProvider().create(props)
        assert lab.virsh("h1", "vol-dumpxml", "--pool", "guests", disk) == before
        # without adopt the disk is not this guest's to take: refused too, naming the disk
        assert [f.property for f in VolumeProvider().check({}, {**props, "adopt": None}).failures] == ["name"]
    finally:
        _cleanup(name, disk)
