"""Keeping what virtfleet does not manage: which devices are ours, ids of the others, and the
merge of our definition into the live one (the UUID and foreign devices and settings kept)."""

from __future__ import annotations

import copy
import hashlib
import xml.etree.ElementTree as ET
from typing import Any

from providers.model import fields
from providers.model.guest import GuestSpec
from providers.xml import domain as domain_xml
from providers.xml import firmware
from providers.xml.domain import observe_root
from providers.xml.util import OWNER_NS, attr, sub, text, to_string

_sub, _attr, _text = sub, attr, text  # the short names the builders below use


def observe_managed(xml: str, macs: set[str]) -> dict[str, Any]:
    """The managed fields of a definition without the devices virtfleet does not manage: what drift compares
    (a device added outside is never drift), read on every refresh."""
    root = ET.fromstring(xml)
    _drop_foreign_devices(root, macs)
    return observe_root(root)


# the top-level elements an update replaces (the frame of `domain` and the fields' own); the rest is kept
MANAGED_TOP = ("uuid", *fields.managed_tags(GuestSpec), "os", "on_poweroff", "on_reboot", "on_crash")


_ours = domain_xml.owns_device


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
