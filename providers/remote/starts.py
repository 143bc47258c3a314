"""Guest starts that run together on one machine release their guests together.

Most of a start is QEMU's and libvirtd's own work (libvirt reads every new x86 guest's CPU through
hundreds of QMP round trips), and a guest that has begun to boot competes with the starts still running
on the same CPUs. Started in the usual way, the first guests of a fleet
booted while the others were still starting, and slowed them down. So a guest is started paused; when
its start is done it waits for the starts that are still running on its machine at that moment (those
only, and HOLD s at most), and is then resumed. The run ends no later for it: it waits for those starts
anyway.

"Its machine" is the host's running kernel (its boot_id), read once per host and process: separate
hypervisors never hold each other's guests, while hosts that share one kernel (containers, network
namespaces such as the lab's) share their CPUs and are one group.  The caller removes a new definition
whose start or resume fails (providers/guest.py), as for any failed start.
"""

from __future__ import annotations

import threading
import time

import libvirt

from providers.local.trace import trace
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import ssh

HOLD = 10.0  # the longest a started guest waits for the other starts on its machine (s)
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class _Machine:
    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.starting: set[int] = set()
        self.tickets = 0


_machines: dict[str, _Machine] = {}
_machine_of: dict[ssh.CacheKey, str] = {}
_guard = threading.Lock()


def machine_of(c: Connection) -> str:
    """The host's kernel boot_id, or the host itself when it cannot be read (the host is then its own group)."""
    key = ssh.cache_key(c)
    found = _machine_of.get(key)
    if found is None:
        with ssh.host_lock(c, "machine"):
            found = _machine_of.get(key)
            if found is None:
                try:
                    rc, out, _ = ssh.run(c, ["cat", BOOT_ID], timeout=30, check=False)
                except HostError:
                    rc, out = 1, ""  # the start itself reports an unreachable host
                found = f"boot:{out.strip()}" if rc == 0 and out.strip() else f"host:{ssh.tag(c)}"
                _machine_of[key] = found
    return found


def _machine(name: str) -> _Machine:
    with _guard:
        return _machines.setdefault(name, _Machine())


def start(c: Connection, dom: libvirt.virDomain) -> None:
    """Start `dom` (defined, not running) and have it running on return; see the module's doc."""
    m = _machine(machine_of(c))
    with m.changed:
        ticket = m.tickets
        m.tickets += 1
        m.starting.add(ticket)
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    finally:
        with m.changed:
            m.starting.discard(ticket)
            others = set(m.starting)
            m.changed.notify_all()
    if others:
        held = time.monotonic()
        with m.changed:
            m.changed.wait_for(lambda: not others & m.starting, timeout=HOLD)
        trace(f"start hold {dom.name()} {time.monotonic() - held:.3f}")
    dom.resume()
