"""Everything that touches a host: sessions (SSH + libvirt), storage, domains, host facts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

T = TypeVar("T")

NOT_FOUND_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL,
                   libvirt.VIR_ERR_NO_NETWORK}


def is_not_found(exc: libvirt.libvirtError) -> bool:
    """True only for a real "no such object" answer, never for a transport or daemon error."""
    return exc.get_error_code() in NOT_FOUND_CODES


def or_none(fn: Callable[..., T], *args: Any) -> T | None:
    """fn(*args), or None when libvirt answers that the object does not exist; other errors raise."""
    try:
        return fn(*args)
    except libvirt.libvirtError as exc:
        if is_not_found(exc):
            return None
        raise


__all__ = ["is_not_found", "or_none"]
