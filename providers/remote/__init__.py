"""Everything that touches a host: sessions (SSH + libvirt), storage, domains, host facts."""

from __future__ import annotations

import libvirt

NOT_FOUND_CODES = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL}


def is_not_found(exc: libvirt.libvirtError) -> bool:
    """True only for a real "no such object" answer, never for a transport or daemon error."""
    return exc.get_error_code() in NOT_FOUND_CODES


__all__ = ["is_not_found"]
