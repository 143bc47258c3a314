"""Who manages a guest: the owner written into its domain and onto its disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Owner:
    """Who manages a guest; written into the domain's <metadata>."""

    project: str
    stack: str
    resource: str


def _owner(p: dict[str, Any]) -> Owner:
    owner = p.get("owner") or {}
    return Owner(str(owner.get("project", "")), str(owner.get("stack", "")), str(owner.get("resource", "")))
