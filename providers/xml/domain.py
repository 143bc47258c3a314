"""The domain definition: each field's part (GuestSpec's declarations) in a fixed frame, and
any domain XML (ours or libvirt's live one) read back into the canonical dict the diff compares."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from providers.model import fields
from providers.model.guest import GuestSpec
from providers.xml.guest import observe_owner
from providers.xml.util import attr, sub, text, to_string

_sub, _attr, _text = sub, attr, text  # the short names the builders below use


FRAME_DEVICES = ("serial", "console", "memballoon")  # the devices of every domain, whatever its fields


def serial_console(devices: ET.Element) -> None:
    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")


def owns_device(dev: ET.Element, macs: set[str]) -> bool:
    """Whether a device of a domain is one virtfleet defines (the frame's or a field's, see `domain`),
    whatever libvirt added to it.  `macs`: the MACs of the interfaces virtfleet manages."""
    return dev.tag in FRAME_DEVICES or fields.owns_device(GuestSpec, dev, macs)


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


def observe_domain(xml: str) -> dict[str, Any]:
    """The managed fields of any domain XML, as a canonical dict (what libvirt adds is ignored)."""
    return observe_root(ET.fromstring(xml))


def observe_root(root: ET.Element) -> dict[str, Any]:
    return {"uuid": _text(root, "uuid"), **fields.observe(GuestSpec, root)}


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
