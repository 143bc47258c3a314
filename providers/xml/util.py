"""ElementTree helpers shared by the XML builders and readers (names and paths are escaped by the serializer)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

OWNER_NS = "urn:virtfleet:owner:1"
ET.register_namespace("virtfleet", OWNER_NS)


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """A child element; a trailing '_' in an attribute name is dropped (`type_` for a Python keyword)."""
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def part(root: ET.Element, tag: str) -> ET.Element:
    """The child `tag` of `root`, made (at the end) when missing."""
    el = root.find(tag)
    return el if el is not None else ET.SubElement(root, tag)


def attr(root: ET.Element, path: str, name: str, default: str = "") -> str:
    el = root.find(path)
    return el.get(name, default) if el is not None else default


def text(root: ET.Element, path: str, default: str = "") -> str:
    el = root.find(path)
    return (el.text or "").strip() if el is not None else default


def to_string(el: ET.Element) -> str:
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")
