"""A guest's firmware in its domain XML: BIOS (SeaBIOS, libvirt's default) or UEFI (OVMF), optional Secure
Boot and an emulated TPM 2.0.  Pure ElementTree; no host is touched here.

UEFI uses libvirt's firmware autoselection (`<os firmware='efi'>` with `<firmware><feature/>`): each host's
libvirt picks the OVMF build from its own firmware descriptors (/usr/share/qemu/firmware), so one
definition works whatever the distribution puts the files.  The NVRAM (the UEFI variable store) is
named explicitly at libvirt's own default place, so every redefinition names the same file and libvirt
copies the template only when that file does not exist yet; `undefine` with VIR_DOMAIN_UNDEFINE_NVRAM
removes it with the guest.

Secure Boot needs SMM, which OVMF supports only on machine q35 (the descriptors say so).  q35 has no IDE
bus, and Debian's cloud kernel has no AHCI driver: a CD-ROM on IDE moves to a virtio-SCSI controller.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from providers.model.errors import ConfigError
from providers.xml.util import attr, part, sub, text

FIRMWARES = ("bios", "uefi")
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"


def nvram_path(name: str) -> str:
    """libvirt's default NVRAM path of a domain, given explicitly so that a redefinition keeps the file."""
    return f"{NVRAM_DIR}/{name}_VARS.fd"


# ---- validation --------------------------------------------------------------------------------------

def check_firmware(key: str, value: Any) -> str:
    if value not in FIRMWARES:
        raise ConfigError(key, f"firmware {value!r} is not one of {', '.join(FIRMWARES)}",
                          "Use bios (SeaBIOS, for MBR images) or uefi (OVMF, for images with an EFI system "
                          "partition)")
    return str(value)


def check_combination(at: str, firmware: str, secure_boot: bool, tpm: bool) -> None:
    """secureBoot and tpm need UEFI.  `at`: the guest's config path, e.g. hosts.athens.guests.web-1 ('' for
    a resource's own properties)."""
    dot = f"{at}." if at else ""
    for key, on in (("secureBoot", secure_boot), ("tpm", tpm)):
        if on and firmware != "uefi":
            raise ConfigError(f"{dot}{key}", f"{key}: true needs firmware: uefi (firmware is {firmware})",
                              f"Set {dot}firmware to uefi (the image must boot with UEFI), or remove {key}")


def machine(secure_boot: bool) -> str:
    """The machine type: q35 for Secure Boot (SMM), else pc, which keeps the IDE seed CD-ROM."""
    return "q35" if secure_boot else "pc"


# ---- emit --------------------------------------------------------------------------------------------

def _feature(parent: ET.Element, name: str, on: bool) -> None:
    sub(parent, "feature", enabled="yes" if on else "no", name=name)


def _os(os_el: ET.Element, secure_boot: bool, nvram: str) -> None:
    os_el.set("firmware", "efi")
    fw = ET.Element("firmware")
    _feature(fw, "enrolled-keys", secure_boot)  # Microsoft's and the distribution's keys: enforcing
    _feature(fw, "secure-boot", secure_boot)
    nv = ET.Element("nvram")
    nv.text = nvram
    # libvirt's order: type, firmware, loader, nvram, then boot/kernel
    at = next((i + 1 for i, el in enumerate(os_el) if el.tag == "type"), 0)
    os_el.insert(at, fw)
    os_el.insert(at + 1, nv)


def _cdroms_to_scsi(devices: ET.Element) -> None:
    """IDE CD-ROMs (the cloud-init seed) onto a virtio-SCSI controller: q35 has no IDE."""
    moved = False
    for target in devices.findall("disk[@device='cdrom']/target[@bus='ide']"):
        target.set("bus", "scsi")
        target.set("dev", "sd" + target.get("dev", "hdc")[2:])
        moved = True
    if moved and devices.find("controller[@type='scsi']") is None:
        sub(devices, "controller", type="scsi", model="virtio-scsi")


def emit(root: ET.Element, firmware: str, secure_boot: bool, tpm: bool, nvram_path: str) -> None:
    """Add what the firmware needs to a domain element that has <os><type/></os> and <devices>.
    BIOS adds nothing (libvirt's default); combinations are checked before (`check_combination`)."""
    if firmware != "uefi":
        return
    os_el, devices = root.find("os"), part(root, "devices")
    assert os_el is not None, "emit firmware after <os>"
    _os(os_el, secure_boot, nvram_path)
    if secure_boot:
        type_el = os_el.find("type")
        assert type_el is not None, "emit firmware after <os><type>"
        type_el.set("machine", machine(True))
        sub(part(root, "features"), "smm", state="on")
        _cdroms_to_scsi(devices)
    if tpm:
        sub(sub(devices, "tpm", model="tpm-crb"), "backend", type="emulator", version="2.0")


# ---- observe -----------------------------------------------------------------------------------------

def _feature_on(root: ET.Element, name: str) -> bool | None:
    el = root.find(f"os/firmware/feature[@name='{name}']")
    return None if el is None else el.get("enabled") == "yes"


def observe(root: ET.Element) -> dict[str, Any]:
    """firmware, secureBoot, tpm and nvram of any definition: ours, libvirt's inactive one (autoselection
    kept as written in libvirt 9.0; newer versions also record the chosen loader) or a running domain's
    (loader and template filled in, no firmware attribute).  Only what we choose is read, never the paths
    libvirt picks, so no field differs between what we define and what libvirt stores."""
    loader = root.find("os/loader")
    uefi = attr(root, "os", "firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
    secure = _feature_on(root, "secure-boot")
    if secure is None:
        secure = loader is not None and loader.get("secure") == "yes"
    return {"firmware": "uefi" if uefi else "bios", "secureBoot": bool(uefi and secure),
            "tpm": root.find("devices/tpm") is not None, "nvram": text(root, "os/nvram") if uefi else ""}


def observe_firmware(root: ET.Element) -> str:
    return str(observe(root)["firmware"])


def observe_secure_boot(root: ET.Element) -> bool:
    return bool(observe(root)["secureBoot"])


def owns_tpm(dev: ET.Element, _macs: set[str]) -> bool:
    return dev.tag == "tpm"


def observe_tpm(root: ET.Element) -> bool:
    return bool(observe(root)["tpm"])


# ---- update --------------------------------------------------------------------------------------------

def merge(live: ET.Element, ours: ET.Element) -> None:
    """Before the generic merge of an update (which replaces <os> whole and appends all of `ours`'s
    devices): the live TPM goes (ours, if any, comes with the devices), SMM follows `ours`, and a virtio-SCSI
    controller that libvirt already has is kept with its address instead of being added twice."""
    live_dev, ours_dev = part(live, "devices"), part(ours, "devices")
    for old in live_dev.findall("tpm"):
        live_dev.remove(old)
    features = part(live, "features")
    for old in features.findall("smm"):
        features.remove(old)
    for new in ours.findall("features/smm"):
        sub(features, "smm", **new.attrib)
    if live_dev.find("controller[@type='scsi'][@model='virtio-scsi']") is not None:
        for dup in ours_dev.findall("controller[@type='scsi'][@model='virtio-scsi']"):
            ours_dev.remove(dup)
