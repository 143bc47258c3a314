"""Guests created at the same time on the lab begin to run together (providers/remote/starts.py)."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from providers.guest import GuestProvider
from providers.model.guest import GuestSpec
from providers.remote import starts
from providers.volume import VolumeProvider
from tests import lab
from tests.e2e.fleet import mac_for
from tests.provider.fixtures import guest_props, volume_props

pytestmark = pytest.mark.provider


def test_the_lab_hosts_are_one_machine_its_kernel() -> None:
    with open(starts.BOOT_ID) as f:
        here = f.read().strip()
    groups = {starts.machine_of(GuestSpec.from_props(guest_props(h, "x", "/d", "52:54:00:00:00:01")).conn)
              for h in ("h1", "h2", "h3")}
    assert groups == {f"boot:{here}"}


def test_guests_created_together_run_once_none_of_them_is_starting(base, unique, sweep, monkeypatch) -> None:  # noqa: F811
    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()
    create_with_flags, resume = libvirt.virDomain.createWithFlags, libvirt.virDomain.resume

    def recorded(name: str, fn):
        def call(dom: libvirt.virDomain, *args):
            with lock:
                events.append((time.monotonic(), f"{name} begin", dom.name()))
            result = fn(dom, *args)
            with lock:
                events.append((time.monotonic(), f"{name} end", dom.name()))
            return result
        return call

    monkeypatch.setattr(libvirt.virDomain, "createWithFlags", recorded("start", create_with_flags))
    monkeypatch.setattr(libvirt.virDomain, "resume", recorded("resume", resume))
    vp, gp = VolumeProvider(), GuestProvider()
    names = [f"tg{i}-{unique}" for i in range(3)]
    disks = [vp.create(volume_props("h1", f"{n}.qcow2", base)) for n in names]
    sweep.extend(("h1", n) for n in names)
    made: dict[str, str] = {}

    def create(n: str, disk: str) -> None:
        made[n] = gp.create(guest_props("h1", n, disk, mac_for(n))).outs["status"]["state"]

    threads = [threading.Thread(target=create, args=(n, d.outs["path"])) for n, d in zip(names, disks, strict=True)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert made == {n: "running" for n in names}
        assert all(lab.domain_state("h1", n) == "running" for n in names)
        at = {(what, n): t for t, what, n in events}
        for n in names:  # started paused, then resumed only once every start still running then was done
            done = at[("start end", n)]
            running_then = [m for m in names if m != n and at[("start begin", m)] < done < at[("start end", m)]]
            assert all(at[("resume begin", n)] >= at[("start end", m)] for m in running_then), (n, events)
        first = min(names, key=lambda n: at[("start end", n)])
        overlapping = [m for m in names if m != first and at[("start begin", m)] < at[("start end", first)]]
        assert overlapping, f"the starts did not overlap, nothing to hold: {events}"
        assert at[("resume begin", first)] >= max(at[("start end", m)] for m in overlapping)
    finally:
        for n in names:
            lab.virsh("h1", "destroy", n, check=False)
            lab.virsh("h1", "undefine", n, check=False)
        for d in disks:
            vp.delete(d.id, d.outs)
