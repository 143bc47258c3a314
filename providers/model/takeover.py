"""Taking over a domain defined outside virtfleet (`adopt: true`): what is refused, what changes, what is kept.

A domain is taken over only if no other virtfleet resource owns it and its main disk (target vda, else its
first disk) is the guest's own volume.  Its definition is then virtfleet's merged into the live one
(`merge_xml.merge`): the UUID and every device and setting virtfleet does not manage are kept.  The preview
(GuestProvider.check) and the create both use `plan`, so what the preview says is what is done.
Pure: the callers pass the live definition in.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from providers.model import fields
from providers.model.guest import GuestSpec
from providers.model.owner import Owner
from providers.xml import domain as domain_xml
from providers.xml import merge as merge_xml
from providers.xml.util import attr

# the change class of each key of `domain_xml.observe_domain`, from the field declarations
_CHANGE = {m.xml.seen_as or m.key: m.change for _, m in fields.metas(GuestSpec) if m.xml is not None}


def main_disk(root: ET.Element) -> ET.Element | None:
    """The disk a guest boots from as virtfleet sees it: target vda, else the first disk (not a CD-ROM)."""
    disks = [d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"]
    return next((d for d in disks if attr(d, "target", "dev") == "vda"), disks[0] if disks else None)


def disk_source(disk: ET.Element | None) -> str:
    return "" if disk is None else attr(disk, "source", "file") or attr(disk, "source", "dev")


def _who(owner: dict[str, str]) -> str:
    return f"{owner['project']}/{owner['stack']}/{owner['resource']}"


def refusal(host: str, name: str, owner: Owner, disk_path: str, live_xml: str) -> str:
    """Why domain `name` cannot be taken over by the guest of `owner` whose disk is `disk_path`, or ''.
    Its own domain (left by an interrupted run) is never refused."""
    root = ET.fromstring(live_xml)
    seen, ours = domain_xml.observe_domain(live_xml)["owner"], dataclasses.asdict(owner)
    if seen == ours:
        return ""
    if seen is not None:
        return (f"host {host}: a guest named {name!r} already exists, managed by {_who(seen)}, not by {_who(ours)}: "
                "not taken over even with adopt: true, nothing changed. Pick another name for this guest, or "
                "remove it from the other stack first")
    found = disk_source(main_disk(root))
    if found != disk_path:
        return (f"host {host}: cannot take over {name!r}: its main disk is {found or 'missing'!r}, but virtfleet "
                f"expects the guest's volume {disk_path!r}: nothing changed. Shut {name} down, move its disk there "
                f"(e.g. `mv {found or 'DISK'} {disk_path}` and `virsh pool-refresh POOL`, or copy it in with `virsh "
                f"vol-create-as` + `vol-upload`), point the domain at it (`virsh edit {name}`), then run "
                "`pulumi up` again")
    return ""


@dataclass(frozen=True)
class Plan:
    """What taking over a domain defines and changes."""

    xml: str                                  # the definition to define (same UUID)
    changes: tuple[tuple[str, Any, Any], ...]  # (key, live value, value after the takeover)
    restart: tuple[str, ...]                  # the restart-class keys among the changes
    kept: dict[str, str]                      # {device id: description} of the devices kept as they are


def _comparable(key: str, value: Any) -> Any:
    if key == "interfaces" and isinstance(value, list):  # merge appends virtfleet's NICs: order is not a change
        return sorted(value, key=lambda i: (i.get("mac", ""), i.get("source", "")))
    return value


def plan(live_xml: str, spec: GuestSpec) -> Plan:
    """What taking over the live definition with `spec` defines, changes and keeps.  A main disk on another
    target than vda is replaced by virtfleet's vda disk (same file), never doubled."""
    root = ET.fromstring(live_xml)
    disk, devices = main_disk(root), root.find("devices")
    target = (attr(disk, "target", "dev"), attr(disk, "target", "bus")) if disk is not None else ("", "")
    if disk is not None and devices is not None and target[0] != "vda":
        devices.remove(disk)
    live = ET.tostring(root, encoding="unicode")
    macs = {i.mac.lower() for i in spec.interfaces}
    ours = domain_xml.domain(spec, domain_xml.observe_domain(live_xml)["uuid"])
    merged = _vda_first(merge_xml.merge(live, ours, macs))
    before, after = domain_xml.observe_domain(live_xml), domain_xml.observe_domain(merged)
    changes = [(k, before.get(k), after[k]) for k in after if k not in ("uuid", "owner")
               and _comparable(k, before.get(k)) != _comparable(k, after[k])]
    if target[0] not in ("vda", ""):
        changes.append(("disk", " ".join(filter(None, target)), "vda virtio"))
    restart = tuple(k for k, _, _ in changes if _CHANGE.get(k, "restart") == "restart")
    return Plan(merged, tuple(changes), restart, _kept(root, macs))


def _vda_first(xml: str) -> str:
    """The definition with the vda disk first among the disks, where libvirt puts it (it sorts disks by
    target): the reader takes the first disk for the guest's disk."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    disks = root.findall("devices/disk")
    vda = next((d for d in disks if attr(d, "target", "dev") == "vda"), None)
    if devices is None or vda is None or disks[0] is vda:
        return xml
    devices.remove(vda)
    devices.insert(list(devices).index(disks[0]), vda)
    return ET.tostring(root, encoding="unicode")


def _kept(root: ET.Element, macs: set[str]) -> dict[str, str]:
    """The devices kept as they are, without what libvirt adds to every domain by itself (controllers, the
    emulator, the audio backend, the implicit PS/2 mouse and keyboard): virtfleet's own guests have those too."""
    devices = root.find("devices")
    if devices is not None:
        for dev in list(devices):
            if dev.tag in ("controller", "emulator", "audio") or dev.tag == "input" and dev.get("bus") == "ps2":
                devices.remove(dev)
    return merge_xml.unmanaged_devices(ET.tostring(root, encoding="unicode"), [], macs)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(" ".join(str(i.get(k)) for k in ("type", "source", "mac") if i.get(k))
                               for i in value) + "]"
    return "none" if value in ("", None) else str(value)


def summary(host: str, spec: GuestSpec, t: Plan, active: bool, autostart: bool) -> str:
    """The line the preview (and the create) prints: each field that changes, the power action, what is kept."""
    what = [f"{k} {_show(a)} -> {_show(b)}" for k, a, b in t.changes] or ["nothing changes"]
    if autostart != spec.autostart:
        what.append(f"autostart {str(autostart).lower()} -> {str(spec.autostart).lower()}")
    if active and spec.running and t.restart:
        what.append(f"graceful restart (it is running; {', '.join(t.restart)} need it)")
    elif active and not spec.running:
        what.append("shut down (running: false)")
    elif not active and spec.running:
        what.append("started")
    kept = f"; kept: {'; '.join(sorted(t.kept.values()))}" if t.kept else ""
    return f"{host}: taking over {spec.name} (defined outside virtfleet): {', '.join(what)}{kept}"
