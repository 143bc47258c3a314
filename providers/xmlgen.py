"""libvirt XML from specs, with ElementTree only (names and paths are escaped by the serializer).

Small functions named after the libvirt elements they build, plus `observe_domain`, which reads any
domain XML (ours or libvirt's live one, with its addresses, aliases and seclabels) back into the
canonical dict that the diff compares.  Pure: no host is touched here.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import xml.etree.ElementTree as ET
from typing import Any

from . import fields, firmware
from .guestxml import AGENT_CHANNEL, observe_owner
from .spec import GuestSpec, NetworkSpec, PoolSpec
from .xmlutil import OWNER_NS, attr, sub, text, to_string

_sub, _attr, _text = sub, attr, text  # the short names the builders below use


# ---- storage ---------------------------------------------------------------------------------------

def pool(spec: PoolSpec) -> str:
    root = ET.Element("pool", type=spec.type)
    _sub(root, "name", spec.name)
    if spec.type == "logical":
        src = _sub(root, "source")
        _sub(src, "name", spec.vg)
        _sub(src, "format", type="lvm2")
    _sub(_sub(root, "target"), "path", spec.path)
    return to_string(root)


def volume(name: str, capacity: int, fmt: str, backing_path: str = "", backing_fmt: str = "",
           mode: str = "", allocation: int = 0) -> str:
    """A volume; allocation 0 keeps file volumes sparse (libvirt preallocates raw ones otherwise).

    For LVM volumes give allocation = capacity: a smaller one asks for a sparse snapshot LV.
    """
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", str(capacity), unit="bytes")
    _sub(root, "allocation", str(allocation), unit="bytes")
    target = _sub(root, "target")
    _sub(target, "format", type=fmt)
    if mode:
        _sub(_sub(target, "permissions"), "mode", mode)
    if backing_path:
        bs = _sub(root, "backingStore")
        _sub(bs, "path", backing_path)
        _sub(bs, "format", type=backing_fmt)
    return to_string(root)


# ---- networks ----------------------------------------------------------------------------------------

def network(spec: NetworkSpec, uuid: str = "") -> str:
    root = ET.Element("network")
    _sub(root, "name", spec.name)
    if uuid:
        _sub(root, "uuid", uuid)
    _sub(root, "forward", mode=spec.mode)
    if spec.mode == "bridge":
        _sub(root, "bridge", name=spec.bridge)
        return to_string(root)
    _sub(root, "bridge", name=spec.bridge, stp="on", delay="0")
    iface = ipaddress.IPv4Interface(spec.address)
    ip = _sub(root, "ip", address=str(iface.ip), prefix=str(iface.network.prefixlen))
    if spec.dhcp_start:
        _sub(_sub(ip, "dhcp"), "range", start=spec.dhcp_start, end=spec.dhcp_end)
    return to_string(root)


def observe_network(xml: str) -> dict[str, Any]:
    """The managed fields of a network's XML (libvirt's own additions, e.g. its MAC, are ignored)."""
    root = ET.fromstring(xml)
    ip = root.find("ip")
    address = ""
    if ip is not None and ip.get("address"):
        prefix = ip.get("prefix") or str(ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen)
        address = f"{ip.get('address')}/{prefix}"
    rng = root.find("ip/dhcp/range")
    return {"name": _text(root, "name"), "mode": _attr(root, "forward", "mode", "isolated"),
            "bridge": _attr(root, "bridge", "name"), "address": address,
            "dhcp": {"start": rng.get("start", ""), "end": rng.get("end", "")} if rng is not None else None}


# ---- domain ------------------------------------------------------------------------------------------

def serial_console(devices: ET.Element) -> None:
    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")


def domain(spec: GuestSpec, uuid: str = "") -> str:
    """The whole domain definition: each field's part (GuestSpec's declarations, in their order) in a fixed
    frame.  `uuid` is passed on every redefinition so it never changes."""
    root = ET.Element("domain")
    fields.emit(root, spec, "top")
    if uuid:
        root.insert(1, ET.Element("uuid"))
        root[1].text = uuid
    _sub(_sub(root, "os"), "type", "hvm", arch="x86_64", machine="pc")
    fields.emit(root, spec, "os")
    _sub(_sub(root, "features"), "acpi")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    fields.emit(root, spec, "devices")
    serial_console(devices)
    _sub(devices, "memballoon", model="virtio")
    return to_string(root)


# ---- observation -------------------------------------------------------------------------------------

def observe_domain(xml: str) -> dict[str, Any]:
    """The managed fields of any domain XML, as a canonical dict (what libvirt adds is ignored)."""
    return _observed(ET.fromstring(xml))


def observe_managed(xml: str, macs: set[str]) -> dict[str, Any]:
    """The managed fields of a definition without the devices virtfleet does not manage: what drift compares
    (a device added outside is never drift), read on every refresh."""
    root = ET.fromstring(xml)
    _drop_foreign_devices(root, macs)
    return _observed(root)


def _observed(root: ET.Element) -> dict[str, Any]:
    return {"uuid": _text(root, "uuid"), **fields.observe(GuestSpec, root)}


def observe_volume(xml: str) -> dict[str, Any]:
    root = ET.fromstring(xml)
    return {"name": _text(root, "name"), "path": _text(root, "target/path"),
            "capacity": int(_text(root, "capacity", "0") or 0), "format": _attr(root, "target/format", "type"),
            "backingPath": _text(root, "backingStore/path"),
            "backingFormat": _attr(root, "backingStore/format", "type")}


def disk_sources(xml: str) -> list[str]:
    """The files and block devices behind a domain's disks (a path is compared whole, never as a part)."""
    return disk_users(xml)[1]


def disk_users(xml: str) -> tuple[dict[str, str] | None, list[str]]:
    """A domain's owner metadata (None: not virtfleet's) and the files and block devices behind its disks."""
    root = ET.fromstring(xml)
    who = observe_owner(root)
    found = []
    for src in root.findall("devices/disk/source"):
        path = src.get("file") or src.get("dev")
        if path:
            found.append(path)
    return who, found


def network_sources(xml: str) -> list[str]:
    """The libvirt networks a domain's interfaces are plugged into."""
    return [src.get("network", "") for src in ET.fromstring(xml).findall("devices/interface[@type='network']/source")]


# ---- keeping what virtfleet does not manage ------------------------------------------------------------

# the top-level elements an update replaces (the frame of `domain` and the fields' own); the rest is kept
MANAGED_TOP = ("uuid", *fields.managed_tags(GuestSpec), "os", "on_poweroff", "on_reboot", "on_crash")


def _ours(dev: ET.Element, macs: set[str]) -> bool:
    """Whether a device of a domain is one virtfleet defines (see `domain`), whatever libvirt added to it."""
    tag = dev.tag
    if tag == "disk":
        if dev.get("device") == "cdrom":
            return "-cidata-" in (_attr(dev, "source", "file") or _attr(dev, "source", "dev"))
        return dev.get("device", "disk") == "disk" and _attr(dev, "target", "dev") == "vda"
    if tag == "interface":
        return _attr(dev, "mac", "address").lower() in macs
    if tag == "input":
        return dev.get("type") == "keyboard" and dev.get("bus") == "usb"
    if tag == "channel":
        return _attr(dev, "target", "name") == AGENT_CHANNEL
    return tag in ("serial", "console", "graphics", "video", "memballoon", "tpm")


def _signature(dev: ET.Element) -> str:
    """A device as libvirt keeps it, without the addresses and aliases it assigns."""
    bare = copy.deepcopy(dev)
    for parent in bare.iter():
        for child in [c for c in parent if c.tag in ("address", "alias")]:
            parent.remove(child)
    for el in bare.iter():
        el.text = (el.text or "").strip() or None
        el.tail = None
    return ET.tostring(bare, encoding="unicode")


def describe(signature: str) -> str:
    """A device signature in a few words, e.g. `disk vdb /var/lib/x.qcow2`, `hostdev usb 046d:c52b`."""
    dev = ET.fromstring(signature)
    words = [dev.tag, dev.get("type", "") if dev.tag not in ("disk",) else _attr(dev, "target", "dev"),
             _attr(dev, "source", "file") or _attr(dev, "source", "dev") or _attr(dev, "source", "bridge")
             or _attr(dev, "source/vendor", "id") + (":" + _attr(dev, "source/product", "id")
                                                     if dev.find("source/product") is not None else ""),
             _attr(dev, "mac", "address")]
    return " ".join(w for w in words if w)


def _device_id(dev: ET.Element) -> str:
    return hashlib.sha256(_signature(dev).encode()).hexdigest()[:16]


SETTING = "s:"  # the prefix of a setting's id among the recorded ones


def _settings(root: ET.Element) -> list[ET.Element]:
    """The top-level elements of a definition that no field manages (cpu, clock, features, pm, ...)."""
    return [el for el in root if el.tag not in MANAGED_TOP and el.tag not in ("devices", "metadata")]


def _describe_setting(el: ET.Element) -> str:
    """A setting in a few words, e.g. `cpu mode=host-passthrough`, `clock offset=localtime`."""
    words = [el.tag, *(f"{k}={x}" for k, x in el.attrib.items()), (el.text or "").strip(),
             *(child.tag for child in el)]
    return " ".join(w for w in words if w)[:120]


def device_ids(xml: str, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Short ids of a definition's devices and settings (what libvirt made of virtfleet's definition,
    recorded after a define so that what it adds itself, controllers, clock and such, is never taken for
    something added outside)."""
    root = ET.fromstring(xml)
    ids = {_device_id(d) for d in root.findall("devices/*")} | {SETTING + _device_id(s) for s in _settings(root)}
    return sorted(ids - set(leave_out))


def unmanaged_devices(live_xml: str, defined: list[str], macs: set[str]) -> dict[str, str]:
    """{id: description} of the devices and settings in a live definition that virtfleet did not define and
    does not manage: added outside (virsh attach-device, virsh edit, virt-manager).  Settings are compared
    only when the recorded ids include settings (state recorded before they were has none)."""
    known = set(defined)
    root = ET.fromstring(live_xml)
    out = {i: describe(_signature(d)) for d in root.findall("devices/*")
           if not _ours(d, macs) and (i := _device_id(d)) not in known}
    if any(k.startswith(SETTING) for k in known):
        out.update({i: f"setting {_describe_setting(s)}" for s in _settings(root)
                    if (i := SETTING + _device_id(s)) not in known})
    return out


def _drop_foreign_devices(root: ET.Element, macs: set[str]) -> None:
    """Leave only the devices virtfleet manages, for comparing managed fields only."""
    devices = root.find("devices")
    if devices is not None:
        for dev in [d for d in devices if not _ours(d, macs)]:
            devices.remove(dev)


def merge(live_xml: str, ours_xml: str, macs: set[str]) -> str:
    """The live definition with virtfleet's managed parts replaced by `ours`, everything else kept: devices
    and settings added outside (a second disk, a USB device, CPU tuning) survive an update.  `macs`: the
    MACs of the interfaces virtfleet manages (before and after the change).  Replaced devices keep the
    PCI addresses libvirt gave them, so the guest sees the same hardware."""
    live, ours = ET.fromstring(live_xml), ET.fromstring(ours_xml)
    firmware.merge(live, ours)
    live.set("type", ours.get("type", live.get("type", "")))
    for tag in MANAGED_TOP:
        for el in live.findall(tag):
            live.remove(el)
    for n, tag in enumerate(MANAGED_TOP):
        for el in ours.findall(tag):
            live.insert(n, el)
    owner = ours.find(f"metadata/{{{OWNER_NS}}}owner")
    md = live.find("metadata")
    if md is None:
        md = ET.SubElement(live, "metadata")
    for old in md.findall(f"{{{OWNER_NS}}}owner"):
        md.remove(old)
    if owner is not None:
        md.append(owner)
    features = live.find("features")
    if features is None:
        features = ET.SubElement(live, "features")
    if features.find("acpi") is None:
        ET.SubElement(features, "acpi")
    devices = live.find("devices")
    if devices is None:
        devices = ET.SubElement(live, "devices")
    addresses: dict[tuple[str, str], ET.Element] = {}
    for dev in list(devices):
        if _ours(dev, macs):
            key = _attr(dev, "target", "dev") if dev.tag == "disk" else _attr(dev, "mac", "address").lower()
            address = dev.find("address")
            if dev.tag in ("disk", "interface") and address is not None:
                addresses[(dev.tag, key)] = address
            devices.remove(dev)
    for dev in ours.findall("devices/*"):
        key = _attr(dev, "target", "dev") if dev.tag == "disk" else _attr(dev, "mac", "address").lower()
        if (dev.tag, key) in addresses and dev.get("device") != "cdrom":
            dev.append(addresses[(dev.tag, key)])
        devices.append(dev)
    for el in live.iter():
        el.tail = None
        if el.text is not None and not el.text.strip():
            el.text = None
    return to_string(live)
