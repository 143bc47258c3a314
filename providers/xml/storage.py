"""Storage pools and volumes in libvirt XML, built and read back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from providers.model.host import PoolSpec
from providers.xml.util import attr, sub, text, to_string

_sub, _attr, _text = sub, attr, text  # the short names the builders below use


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


@dataclass(frozen=True)
class VolumeFacts:
    """A volume as libvirt describes it ('' for what it does not say)."""

    name: str
    path: str
    capacity: int
    format: str
    backing_path: str
    backing_format: str


def observe_volume(xml: str) -> VolumeFacts:
    root = ET.fromstring(xml)
    return VolumeFacts(_text(root, "name"), _text(root, "target/path"), int(_text(root, "capacity", "0") or 0),
                       _attr(root, "target/format", "type"), _text(root, "backingStore/path"),
                       _attr(root, "backingStore/format", "type"))
