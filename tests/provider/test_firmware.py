"""UEFI guests on a lab host (providers/xml/firmware.py): a Debian cloud image with an EFI system partition
(lab/cloudimage.sh: debian12-uefi.qcow2) boots under OVMF with TCG; its NVRAM keeps a variable the guest
wrote across a redefinition, and goes with the guest; Secure Boot with Microsoft's keys enrolled and a
swtpm TPM 2.0 on q35, with the cloud-init seed on virtio-SCSI.  The guest agent says what the guest sees."""

from __future__ import annotations

import base64
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from providers.base_image import BaseImageProvider
from providers.guest import GuestProvider
from providers.local import cloudinit
from providers.model.host import Connection
from providers.remote import domains, session
from providers.volume import VolumeProvider
from providers.xml import firmware
from tests import lab
from tests.e2e.fleet import mac_for
from tests.provider.fixtures import guest_props, image_props, volume_props

pytestmark = pytest.mark.provider
IMAGE = os.path.join(lab.LAB_DIR, "cloud", "debian12-uefi.qcow2")
EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
OUR_GUID = "6a3c2f0e-5b1d-4e7a-9c2f-76697274666c"  # a vendor GUID of our own for the test variable
BOOT_TIMEOUT = 400  # a TCG boot takes 80-110 s on an idle 2-core machine


@pytest.fixture(scope="module")
def conn() -> libvirt.virConnect:
    return session.virt(Connection.from_props(lab.connection_props("h1")))


@pytest.fixture(scope="module")
def uefi_base() -> Iterator[dict]:
    assert os.path.exists(IMAGE), f"{IMAGE} is missing: scripts/setup.sh builds it (lab/cloudimage.sh)"
    outs = BaseImageProvider().create(image_props("h1", IMAGE, "debian12-uefi")).outs
    assert outs is not None
    yield outs
    BaseImageProvider().delete("base", outs)


@pytest.fixture
def uefi_disk(uefi_base, unique) -> Iterator[str]:
    vp = VolumeProvider()
    made = vp.create(volume_props("h1", f"fw-{unique}.qcow2", uefi_base, capacity=3 << 30))
    assert made.outs is not None
    yield made.outs["path"]
    vp.delete(made.id, made.outs)


def domain_xml(name: str, disk: str, memory_mib: int, fw: tuple[str, bool, bool], uuid: str = "",
               seed: str = "") -> str:
    """What xmlgen builds for a cloud guest (machine pc, agent channel, seed on IDE), then firmware.emit."""
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = name
    if uuid:
        ET.SubElement(root, "uuid").text = uuid
    ET.SubElement(root, "memory", unit="KiB").text = str(memory_mib * 1024)
    ET.SubElement(root, "vcpu").text = "1"
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    ET.SubElement(ET.SubElement(root, "features"), "acpi")
    devices = ET.SubElement(root, "devices")
    d = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(d, "driver", name="qemu", type="qcow2")
    ET.SubElement(d, "source", file=disk)
    ET.SubElement(d, "target", dev="vda", bus="virtio")
    if seed:
        cd = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(cd, "driver", name="qemu", type="raw")
        ET.SubElement(cd, "source", file=seed)
        ET.SubElement(cd, "target", dev="hdc", bus="ide")
        ET.SubElement(cd, "readonly")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "channel", type="unix"), "target", type="virtio",
                  name="org.qemu.guest_agent.0")
    firmware.emit(root, fw[0], fw[1], fw[2], firmware.nvram_path(name))
    return ET.tostring(root, encoding="unicode")


def agent(dom: libvirt.virDomain, command: str, **arguments: Any) -> Any:
    msg = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, msg, 10, 0))["return"]


def wait_agent(dom: libvirt.virDomain, timeout: float = BOOT_TIMEOUT) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            agent(dom, "guest-ping")
            return time.monotonic() - t0
        except libvirt.libvirtError:
            time.sleep(1)
    raise AssertionError(f"the guest agent did not answer within {timeout} s")


def read_file(dom: libvirt.virDomain, path: str) -> bytes:
    handle = agent(dom, "guest-file-open", path=path, mode="r")
    try:
        return base64.b64decode(agent(dom, "guest-file-read", handle=handle, count=65536)["buf-b64"])
    finally:
        agent(dom, "guest-file-close", handle=handle)


def run(dom: libvirt.virDomain, script: str) -> int:
    pid = agent(dom, "guest-exec", path="/bin/sh", arg=["-c", script], **{"capture-output": True})["pid"]
    for _ in range(100):
        status = agent(dom, "guest-exec-status", pid=pid)
        if status["exited"]:
            return int(status["exitcode"])
        time.sleep(0.2)
    raise AssertionError(f"{script!r} did not finish")


def host_file(path: str) -> dict[str, str]:
    """inode and sha256 of a file inside lab host h1, and how often our variable's name is in it."""
    code = ("import hashlib,os,sys; p=sys.argv[1]; b=open(p,'rb').read(); "
            "print(os.stat(p).st_ino, hashlib.sha256(b).hexdigest(), b.count('VirtfleetTest'.encode('utf-16-le')))")
    out = lab.in_host("h1", "python3", "-c", code, path, check=False)
    if out.returncode:
        return {}
    ino, digest, count = out.stdout.split()
    return {"inode": ino, "sha256": digest, "var": count}


def test_uefi_guest_boots_and_keeps_its_nvram_across_a_memory_change(conn, uefi_disk, unique, sweep,
                                                                      capfd) -> None:
    """Through the Guest provider: `firmware: uefi` boots, a memory change (a restart-class update: the live
    definition merged, redefined with the same UUID, graceful restart) keeps the NVRAM, delete removes it."""
    name = f"fw-{unique}"
    sweep.append(("h1", name))
    nvram = firmware.nvram_path(name)
    gp = GuestProvider()
    props = guest_props("h1", name, uefi_disk, mac_for(name), memory=512 << 20, agent=True, firmware="uefi",
                        graphics="none", shutdownTimeout=60)
    made = gp.create(props)
    assert made.outs is not None
    uuid, dom = made.id, conn.lookupByName(name)
    stored = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert firmware.observe(stored) == {"firmware": "uefi", "secureBoot": False, "tpm": False, "nvram": nvram}
    assert firmware.observe(ET.fromstring(dom.XMLDesc(0)))["firmware"] == "uefi"  # the running form too
    took = wait_agent(dom)
    print(f"[firmware] UEFI (pc, TCG) start to guest agent: {took:.1f}s")
    assert read_file(dom, "/sys/firmware/efi/fw_platform_size").strip() == b"64"  # booted by UEFI
    assert read_file(dom, f"/sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}")[4:] == b"\x00"
    # a non-volatile variable (attributes NV|BS|RT), written by the guest into the NVRAM on the host
    assert run(dom, "printf '\\007\\000\\000\\000virtfleet' > "
                    f"/sys/firmware/efi/efivars/VirtfleetTest-{OUR_GUID}") == 0
    before = host_file(nvram)
    assert before and int(before["var"]) >= 1, "the variable is not in the NVRAM file"
    assert not gp.read(uuid, made.outs).outs["xmlDrift"]  # what libvirt stored reads back as defined

    # the update, once the guest has finished booting: more memory, restarted gracefully
    deadline = time.monotonic() + BOOT_TIMEOUT
    while run(dom, "systemctl is-system-running | grep -qxE 'running|degraded'") and time.monotonic() < deadline:
        time.sleep(3)
    news = {**props, "memory": 768 << 20}
    assert gp.diff(uuid, made.outs, news).replaces == []
    capfd.readouterr()
    updated = gp.update(uuid, made.outs, news).outs
    assert f"restarted {name} (graceful shutdown)" in capfd.readouterr().err  # asked through its agent
    again = conn.lookupByUUIDString(uuid)
    assert again.maxMemory() == 768 << 10 and again.isActive()
    assert firmware.observe(ET.fromstring(again.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))["nvram"] == nvram
    after = host_file(nvram)
    assert after["inode"] == before["inode"] and int(after["var"]) >= 1, "the update lost the NVRAM's variable"
    wait_agent(again)
    assert read_file(again, f"/sys/firmware/efi/efivars/VirtfleetTest-{OUR_GUID}")[4:] == b"virtfleet"

    # removed the way virtfleet removes a guest: the NVRAM goes with it
    gp.delete(uuid, updated)
    assert not host_file(nvram), f"{nvram} is left behind on h1"


def _seed(name: str) -> str:
    """A NoCloud seed in h1's pool, written through the lab's bind mount (uploads are tested elsewhere)."""
    seed = cloudinit.render("seed", {"hostname": f"{name}-sb"}, name)
    iso = f"{name}-cidata-test.iso"
    local = os.path.join(lab.LAB_DIR, "hosts", "h1", "vf", "guests", iso)
    with open(local, "wb") as f:
        f.write(cloudinit.iso(seed))
    return local


def test_secure_boot_and_tpm_on_q35_with_the_seed_on_virtio_scsi(conn, uefi_disk, unique, sweep) -> None:
    name = f"sb-{unique}"
    sweep.append(("h1", name))
    nvram = firmware.nvram_path(name)
    local_seed = _seed(name)
    try:
        xml = domain_xml(name, uefi_disk, 512, ("uefi", True, True),
                         seed="/var/lib/virtfleet/guests/" + os.path.basename(local_seed))
        dom = conn.defineXML(xml)
        uuid = dom.UUIDString()
        stored = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert firmware.observe(stored) == {"firmware": "uefi", "secureBoot": True, "tpm": True, "nvram": nvram}
        assert stored.find("os/type").get("machine", "").startswith("pc-q35")  # type: ignore[union-attr]
        dom.create()  # swtpm starts inside the lab host (its own mount namespace)
        took = wait_agent(dom)
        print(f"[firmware] Secure Boot + TPM (q35, SMM, TCG) start to guest agent: {took:.1f}s")
        assert read_file(dom, f"/sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}")[4:] == b"\x01"
        assert read_file(dom, "/sys/class/tpm/tpm0/tpm_version_major").strip() == b"2"
        # cloud-init read the seed from the virtio-SCSI CD-ROM (the cloud kernel has no AHCI for SATA)
        deadline = time.monotonic() + 120
        while agent(dom, "guest-get-host-name")["host-name"] != f"{name}-sb" and time.monotonic() < deadline:
            time.sleep(2)
        assert agent(dom, "guest-get-host-name")["host-name"] == f"{name}-sb"
        swtpm_state = f"/var/lib/libvirt/swtpm/{uuid}"
        assert lab.in_host("h1", "test", "-d", swtpm_state, check=False).returncode == 0
        domains.remove(dom, 30)
        assert not host_file(nvram), f"{nvram} is left behind on h1"
        assert lab.in_host("h1", "test", "-e", swtpm_state, check=False).returncode != 0, "TPM state left behind"
    finally:
        os.unlink(local_seed)
