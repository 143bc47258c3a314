"""One declaration per field of every resource's spec, and what follows from it.

Each field is declared once (`field_of`): its key (the stack config key and the property name), how a
value is checked, its default, its change class (inplace / restart / replace / ignore) and, for a guest,
its mapping to and from the domain XML.  The config parser, the resource's properties, the spec, the
change table and the XML builder and reader all iterate over these declarations, as virt-manager's
virtinst maps one XMLProperty both ways.  Pure: nothing here touches a host.
"""

from __future__ import annotations

import dataclasses
import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHANGES = ("inplace", "restart", "replace", "ignore")
PARTS = ("top", "os", "devices")

# a change class that depends on the values: (old, new) normalised property values -> one of CHANGES
Classify = Callable[[Any, Any], str]


@dataclass(frozen=True)
class Xml:
    """Where a field lives in the domain XML.  `emit(root, spec)` writes it under `part` (called in the order
    the fields are declared); `observe(root)` reads it back from any definition, ours or libvirt's, as the
    canonical value that drift detection compares.  `tags`: the top-level elements the field owns, replaced
    at an update while everything else of the live definition is kept.  `owns(device, macs)`: whether a
    device of any definition is one this field emits (a field of the devices part must say), which is what
    an update replaces and drift compares; every other device is kept and never drift."""

    observe: Callable[[ET.Element], Any]
    emit: Callable[[ET.Element, Any], None] | None = None
    part: str = "top"
    tags: tuple[str, ...] = ()
    seen_as: str = ""  # the key in the observed dict, when it is not the field's key
    owns: Callable[[ET.Element, set[str]], bool] | None = None


@dataclass(frozen=True)
class Meta:
    key: str
    change: str | Classify
    check: Callable[[str, Any], Any] | None = None   # (error key, property value) -> spec value
    conf: Callable[[str, Any], Any] | None = None    # (error key, stack config value) -> spec value
    load: Callable[[dict[str, Any], str], Any] | None = None  # composite: (whole properties, key prefix) -> value
    dump: Callable[[Any], Any] | None = None         # spec value -> property value (default: as is)
    xml: Xml | None = None
    norm: Callable[[Any], Any] | None = None         # what the diff compares (default: the property value)
    doc: str = ""
    in_config: bool = False  # a key of the stack config (the others are set by the program)


def field_of(*, key: str, change: str | Classify, default: Any = dataclasses.MISSING,
             check: Callable[[str, Any], Any] | None = None, conf: Callable[[str, Any], Any] | bool | None = None,
             load: Callable[[dict[str, Any], str], Any] | None = None, dump: Callable[[Any], Any] | None = None,
             xml: Xml | None = None, norm: Callable[[Any], Any] | None = None, doc: str = "") -> Any:
    """A dataclass field carrying its declaration.  `conf=True`: a stack config key parsed like the
    property (`check`, or with the whole spec for a composite); a function: parsed by it; None: not a
    config key.  `change`: a class, or a
    function of the old and new values choosing one (say which in `doc`)."""
    if not callable(change) and change not in CHANGES:
        raise ValueError(f"{key}: change {change!r} is not one of {CHANGES}")
    if callable(change) and not doc:
        raise ValueError(f"{key}: a change class chosen by the values needs `doc` saying when it is which")
    if xml is not None and xml.part not in PARTS:
        raise ValueError(f"{key}: xml part {xml.part!r} is not one of {PARTS}")
    if xml is not None and xml.part == "devices" and xml.emit is not None and xml.owns is None:
        raise ValueError(f"{key}: a field that emits devices must say which devices are its own (`owns`)")
    if (check is None) == (load is None):
        raise ValueError(f"{key}: give exactly one of check (one property) or load (composite)")
    meta = Meta(key, change, check, check if conf is True else conf or None, load, dump, xml, norm, doc,
                bool(conf))
    return dataclasses.field(default=default, metadata={"virtfleet": meta})


@functools.cache
def metas(cls: type) -> tuple[tuple[str, Meta], ...]:
    """(attribute name, declaration) of each declared field of a spec class, in declaration order (read once
    per class: every provider call parses a spec)."""
    return tuple((f.name, f.metadata["virtfleet"]) for f in dataclasses.fields(cls) if "virtfleet" in f.metadata)


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _default(cls: type, name: str) -> Any:
    """A field's default (a factory's made anew each time), or MISSING for a required field."""
    f = _fields(cls)[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def dump(meta: Meta, value: Any) -> Any:
    return meta.dump(value) if meta.dump else value


def from_props(cls: type, p: dict[str, Any], at: str = "") -> dict[str, Any]:
    """The constructor arguments of `cls` from stored/new properties: a missing key takes the default
    (state written before the field existed); a present one is checked.  `at`: the prefix of the keys that
    errors name (e.g. `connection.`, `hosts.athens.networks.lab.`)."""
    out = {}
    for name, m in metas(cls):
        if m.load is not None:
            out[name] = m.load(p, at)
            continue
        assert m.check is not None
        raw, default = p.get(m.key), _default(cls, name)
        out[name] = default if raw is None and default is not dataclasses.MISSING else m.check(at + m.key, raw)
    return out


def to_props(spec: Any) -> dict[str, Any]:
    cls: type = type(spec)
    return {m.key: dump(m, getattr(spec, name)) for name, m in metas(cls)}


def props_of(cls: type, **values: Any) -> dict[str, Any]:
    """The properties of a resource the program registers, from its spec's attribute names: values may be
    Outputs (known once another resource exists), checked by the provider when they are known."""
    declared = dict(metas(cls))
    unknown = set(values) - set(declared)
    if unknown:
        raise TypeError(f"{cls.__name__} declares no field {', '.join(sorted(unknown))}")
    missing = [n for n in declared if n not in values and _default(cls, n) is dataclasses.MISSING]
    if missing:
        raise TypeError(f"{cls.__name__} needs {', '.join(missing)}")
    return {declared[n].key: dump(declared[n], x) for n, x in values.items()}


def config_keys(cls: type) -> set[str]:
    return {m.key for _, m in metas(cls) if m.in_config}


def config_values(cls: type, at: str, g: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of `cls` that one guest's or host's stack config gives (`at`: its key,
    for errors); absent keys take the default."""
    out = {}
    for name, m in metas(cls):
        if not m.in_config:
            continue
        if m.conf is None:
            raise TypeError(f"{cls.__name__}.{name}: a composite config key is parsed with its whole spec")
        raw, default = g.get(m.key), _default(cls, name)
        out[name] = default if raw is None and default is not dataclasses.MISSING else m.conf(f"{at}.{m.key}", raw)
    return out


def from_config(cls: type, at: str, g: dict[str, Any]) -> dict[str, Any]:
    """{property key: value} of the config keys of one stack config entry (`config_values`)."""
    declared = dict(metas(cls))
    return {declared[n].key: dump(declared[n], x) for n, x in config_values(cls, at, g).items()}


def change_table(cls: type) -> dict[str, str | Classify]:
    return {m.key: m.change for _, m in metas(cls)}


def defaults(cls: type) -> dict[str, Any]:
    """The property value that a key missing from older state stands for."""
    out = {}
    for name, m in metas(cls):
        d = _default(cls, name)
        if d is not dataclasses.MISSING:
            out[m.key] = dump(m, d)
    return out


def norms(cls: type) -> dict[str, Callable[[Any], Any]]:
    return {m.key: m.norm for _, m in metas(cls) if m.norm is not None}


def emit(root: ET.Element, spec: Any, part: str) -> None:
    """Write the fields of one part of the domain XML, in declaration order."""
    cls: type = type(spec)
    for _, m in metas(cls):
        if m.xml is not None and m.xml.emit is not None and m.xml.part == part:
            m.xml.emit(root, spec)


def observe(cls: type, root: ET.Element) -> dict[str, Any]:
    """What a definition says of every field with an XML mapping."""
    return {m.xml.seen_as or m.key: m.xml.observe(root) for _, m in metas(cls) if m.xml is not None}


def owns_device(cls: type, dev: ET.Element, macs: set[str]) -> bool:
    """Whether a device of a definition is one that a declared field emits (see Xml.owns)."""
    return any(m.xml.owns(dev, macs) for _, m in metas(cls) if m.xml is not None and m.xml.owns is not None)


def managed_tags(cls: type) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for _, m in metas(cls):
        for tag in m.xml.tags if m.xml is not None else ():
            seen[tag] = None
    return tuple(seen)
