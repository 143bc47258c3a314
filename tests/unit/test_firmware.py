"""UEFI, Secure Boot and TPM in the domain XML (providers/xml/firmware.py): what emit writes, what libvirt's own
parser makes of it (the in-process test:///default driver), what observe reads back from every form libvirt
stores, bad combinations, and a golden XML validated with virt-xml-validate."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import libvirt
import pytest

from providers.model.errors import ConfigError
from providers.xml import firmware

pytestmark = pytest.mark.unit
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "domain-uefi-secureboot-tpm.xml")
UUID = "3f0b6a52-2d0e-4c55-9a1e-2f7f3a1b5c01"
NVRAM = firmware.nvram_path("vm1")

# a domain as xmlgen builds one for a cloud guest: machine pc, the seed on IDE
BASE = f"""<domain type='qemu'><name>vm1</name><uuid>{UUID}</uuid><memory unit='KiB'>524288</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><features><acpi/></features>
<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/var/lib/virtfleet/guests/vm1.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
<source file='/var/lib/virtfleet/guests/vm1-cidata-ab12.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
<serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial' port='0'/></console>
<memballoon model='virtio'/></devices></domain>"""

COMBINATIONS = [("bios", False, False), ("uefi", False, False), ("uefi", False, True), ("uefi", True, False),
                ("uefi", True, True)]


def emitted(fw: str, secure_boot: bool, tpm: bool, memory_kib: int = 524288) -> ET.Element:
    root = ET.fromstring(BASE.replace("524288", str(memory_kib)))
    firmware.emit(root, fw, secure_boot, tpm, NVRAM)
    return root


def xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def test_bios_adds_nothing() -> None:
    assert xml(emitted("bios", False, False)) == xml(ET.fromstring(BASE))


def test_uefi_keeps_machine_pc_and_the_ide_seed() -> None:
    root = emitted("uefi", False, False)
    os_el = root.find("os")
    assert os_el is not None and os_el.get("firmware") == "efi"
    assert [el.tag for el in os_el] == ["type", "firmware", "nvram", "boot"]
    assert root.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    assert {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")} == \
        {"secure-boot": "no", "enrolled-keys": "no"}
    assert root.findtext("os/nvram") == "/var/lib/libvirt/qemu/nvram/vm1_VARS.fd"
    assert root.find("os/loader") is None  # libvirt picks it from the host's firmware descriptors
    assert root.find("devices/disk[@device='cdrom']/target").attrib == {"dev": "hdc", "bus": "ide"}  # type: ignore[union-attr]
    assert root.find("features/smm") is None and root.find("devices/tpm") is None


def test_secure_boot_means_q35_smm_enrolled_keys_and_the_seed_on_virtio_scsi() -> None:
    root = emitted("uefi", True, False)
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    assert root.find("features/smm").get("state") == "on"  # type: ignore[union-attr]
    assert {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")} == \
        {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert root.find("devices/disk[@device='cdrom']/target").attrib == {"dev": "sdc", "bus": "scsi"}  # type: ignore[union-attr]
    assert [c.attrib for c in root.iterfind("devices/controller")] == [{"type": "scsi", "model": "virtio-scsi"}]


def test_tpm_is_an_emulated_tpm2_crb() -> None:
    tpm = emitted("uefi", False, True).find("devices/tpm")
    assert tpm is not None and tpm.get("model") == "tpm-crb"
    assert tpm.find("backend").attrib == {"type": "emulator", "version": "2.0"}  # type: ignore[union-attr]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=lambda c: "-".join(map(str, c)))
def test_libvirt_reads_it_back_as_defined_and_a_redefinition_changes_nothing(
        test_driver: libvirt.virConnect, combo: tuple[str, bool, bool]) -> None:
    ours = emitted(*combo)
    wanted = firmware.observe(ours)
    assert wanted == {"firmware": combo[0], "secureBoot": combo[1], "tpm": combo[2],
                      "nvram": NVRAM if combo[0] == "uefi" else ""}
    dom = test_driver.defineXML(xml(ours))
    back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert firmware.observe(ET.fromstring(back)) == wanted
    # an update: the same UUID, more memory; the firmware and its NVRAM path stay
    again = test_driver.defineXML(xml(emitted(*combo, memory_kib=1048576)))
    assert again.UUIDString() == UUID
    assert firmware.observe(ET.fromstring(again.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))) == wanted
    dom.undefine()


# what libvirt 9.0 shows for a running domain (autoselection resolved: loader and template, no
# firmware attribute), and what libvirt >= 9.2 stores at define (resolved and recorded in the inactive XML)
RUNNING = f"""<domain type='qemu'><name>vm1</name><os>
<type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
<firmware><feature enabled='yes' name='enrolled-keys'/><feature enabled='yes' name='secure-boot'/></firmware>
<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
<nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>{NVRAM}</nvram><boot dev='hd'/></os>
<devices><tpm model='tpm-crb'><backend type='emulator' version='2.0'/><alias name='tpm0'/></tpm></devices></domain>"""
RESOLVED = f"""<domain type='qemu'><name>vm1</name><os firmware='efi'>
<type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
<firmware><feature enabled='no' name='enrolled-keys'/><feature enabled='no' name='secure-boot'/></firmware>
<loader readonly='yes' type='pflash' format='raw'>/usr/share/edk2/ovmf/OVMF_CODE.fd</loader>
<nvram template='/usr/share/edk2/ovmf/OVMF_VARS.fd' format='raw'>{NVRAM}</nvram></os><devices/></domain>"""
# UEFI chosen by hand (virt-install --boot uefi on older libvirt): no features, the loader says secure
EXPLICIT = f"""<domain type='kvm'><name>vm1</name><os><type arch='x86_64' machine='q35'>hvm</type>
<loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>
<nvram>{NVRAM}</nvram></os><devices/></domain>"""


@pytest.mark.parametrize("doc, seen", [
    (RUNNING, {"firmware": "uefi", "secureBoot": True, "tpm": True, "nvram": NVRAM}),
    (RESOLVED, {"firmware": "uefi", "secureBoot": False, "tpm": False, "nvram": NVRAM}),
    (EXPLICIT, {"firmware": "uefi", "secureBoot": True, "tpm": False, "nvram": NVRAM}),
    (BASE, {"firmware": "bios", "secureBoot": False, "tpm": False, "nvram": ""}),
], ids=["running", "resolved-at-define", "explicit-loader", "bios"])
def test_observe_reads_every_form_libvirt_stores(doc: str, seen: dict) -> None:
    root = ET.fromstring(doc)
    assert firmware.observe(root) == seen
    assert (firmware.observe_firmware(root), firmware.observe_secure_boot(root), firmware.observe_tpm(root)) == \
        (seen["firmware"], seen["secureBoot"], seen["tpm"])


def test_merge_drops_a_tpm_and_smm_we_no_longer_want_and_never_doubles_the_scsi_controller() -> None:
    live = emitted("uefi", True, True)
    ET.SubElement(live.find("devices/controller"), "address", type="pci", bus="0x01", slot="0x00")  # type: ignore[arg-type]
    ours = emitted("uefi", True, False)
    firmware.merge(live, ours)
    assert live.find("devices/tpm") is None
    assert [s.attrib for s in live.iterfind("features/smm")] == [{"state": "on"}]
    assert ours.find("devices/controller") is None  # libvirt's one (with its address) is kept
    plain = emitted("uefi", False, False)
    firmware.merge(live, plain)
    assert live.find("features/smm") is None


@pytest.mark.parametrize("fw, sb, tpm, key", [("bios", True, False, "secureBoot"), ("bios", False, True, "tpm")])
def test_secure_boot_and_tpm_need_uefi(fw: str, sb: bool, tpm: bool, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        firmware.check_combination("hosts.h1.guests.vm1", fw, sb, tpm)
    assert err.value.key == f"hosts.h1.guests.vm1.{key}"
    assert "firmware: uefi" in err.value.problem and "hosts.h1.guests.vm1.firmware" in err.value.fix


def test_good_combinations_pass_and_a_bad_firmware_names_its_key() -> None:
    for fw, sb, tpm in COMBINATIONS:
        firmware.check_combination("hosts.h1.guests.vm1", fw, sb, tpm)
    assert firmware.check_firmware("k", "uefi") == "uefi"
    with pytest.raises(ConfigError) as err:
        firmware.check_firmware("hosts.h1.guests.vm1.firmware", "efi")
    assert err.value.key == "hosts.h1.guests.vm1.firmware" and "bios" in err.value.fix


def test_golden_and_valid(tmp_path) -> None:
    doc = xml(emitted("uefi", True, True)) + "\n"
    if os.environ.get("VIRTFLEET_REGEN_GOLDEN") or not os.path.exists(GOLDEN):
        with open(GOLDEN, "w") as f:
            f.write(doc)
    with open(GOLDEN) as f:
        assert doc == f.read(), "differs from its golden file (VIRTFLEET_REGEN_GOLDEN=1 to accept)"
    path = tmp_path / "doc.xml"
    path.write_text(doc)
    proc = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
