"""Guest provider against the lab: every method, drift, restarts, transactional create."""

from __future__ import annotations

import os
import time

import pytest

from providers.guest import GuestProvider
from providers.model.errors import HostError, UnsafeChangeError
from providers.remote import starts
from tests import lab
from tests.provider.fixtures import guest_props

pytestmark = pytest.mark.provider


def _mac(unique: str) -> str:
    return f"52:54:00:{unique[0:2]}:{unique[2:4]}:{unique[4:6]}"


def wait_state(host: str, name: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state := lab.domain_state(host, name)) == want:
            return state
        time.sleep(0.2)
    return lab.domain_state(host, name)


def test_lifecycle(disk, unique, sweep) -> None:
    name = f"vm-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    props = guest_props("h1", name, disk, _mac(unique))
    made = gp.create(props)
    uuid = made.id
    assert lab.domain_state("h1", name) == "running"
    assert made.outs["status"]["uuid"] == uuid and made.outs["spec"]["running"] is True
    assert made.outs["xmlDrift"] is False
    assert "urn:virtfleet:owner:1" in lab.virsh("h1", "dumpxml", name)
    read = gp.read(uuid, made.outs)
    assert read.id == uuid and not gp.diff(uuid, read.outs, props).changes

    # memory change: update in place, same UUID, restarted (new QEMU process)
    pid_before = lab.uptime_of("h1", name)
    bigger = dict(props, memory=192 << 20)
    checked = gp.check(made.outs, bigger).inputs
    assert checked["restartOnUpdate"] == "memory"
    d = gp.diff(uuid, made.outs, checked)
    assert d.changes and not d.replaces
    updated = gp.update(uuid, made.outs, checked)
    assert updated.outs["status"]["uuid"] == uuid
    assert "196608" in lab.virsh("h1", "dumpxml", name, "--inactive")
    assert lab.domain_state("h1", name) == "running" and lab.uptime_of("h1", name) != pid_before

    # a cosmetic change (autostart) never restarts
    pid = lab.uptime_of("h1", name)
    flipped = gp.update(uuid, updated.outs, dict(bigger, autostart=True))
    assert flipped.outs["spec"]["autostart"] is True and lab.uptime_of("h1", name) == pid

    # stopped outside with virsh destroy: read as stopped; update starts it again
    lab.virsh("h1", "destroy", name)
    stopped = gp.read(uuid, flipped.outs)
    assert stopped.id == uuid and stopped.outs["spec"]["running"] is False
    assert stopped.outs["status"]["state"] == "shutoff"
    assert gp.diff(uuid, stopped.outs, dict(bigger, autostart=True)).changes
    restarted = gp.update(uuid, stopped.outs, dict(bigger, autostart=True))
    assert restarted.outs["spec"]["running"] is True and lab.domain_state("h1", name) == "running"

    # paused outside (or left paused by a run stopped before it released its guests): not running; resumed
    pid = lab.uptime_of("h1", name)
    lab.virsh("h1", "suspend", name)
    paused = gp.read(uuid, restarted.outs)
    assert paused.outs["spec"]["running"] is False and paused.outs["status"]["state"] == "paused"
    assert gp.diff(uuid, paused.outs, dict(bigger, autostart=True)).changes
    resumed = gp.update(uuid, paused.outs, dict(bigger, autostart=True))
    assert resumed.outs["spec"]["running"] is True and resumed.outs["status"]["state"] == "running"
    assert lab.domain_state("h1", name) == "running" and lab.uptime_of("h1", name) == pid  # the same QEMU

    # definition edited outside: drift seen, update restores it with the same UUID
    lab.virsh("h1", "setmaxmem", name, "262144", "--config")
    drifted = gp.read(uuid, restarted.outs)
    assert drifted.outs["xmlDrift"] is True
    fixed = gp.update(uuid, drifted.outs, dict(bigger, autostart=True))
    assert fixed.outs["xmlDrift"] is False and fixed.outs["status"]["uuid"] == uuid

    # delete: graceful shutdown -> undefine; deleting again is fine; read says gone
    t0 = time.monotonic()
    gp.delete(uuid, fixed.outs)
    assert lab.domain_state("h1", name) == "missing"
    assert time.monotonic() - t0 < 15 + 5
    gp.delete(uuid, fixed.outs)
    assert gp.read(uuid, fixed.outs).id is None


def test_undefined_outside_is_read_as_gone(disk, unique, sweep) -> None:
    name = f"ud-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    made = gp.create(guest_props("h1", name, disk, _mac(unique), running=False))
    assert lab.domain_state("h1", name) == "shut off"
    lab.virsh("h1", "undefine", name)
    assert gp.read(made.id, made.outs).id is None


def test_failed_start_leaves_nothing_defined(unique, sweep) -> None:
    name = f"fail-{unique}"
    sweep.append(("h1", name))
    props = guest_props("h1", name, f"/var/lib/virtfleet/guests/no-such-disk-{unique}.qcow2", _mac(unique))
    with pytest.raises(HostError) as err:
        GuestProvider().create(props)
    assert "removed again" in str(err.value)
    assert lab.domain_state("h1", name) == "missing"


def test_a_start_failing_outside_libvirt_leaves_nothing_defined(disk, unique, sweep, monkeypatch) -> None:
    name = f"lost-{unique}"
    sweep.append(("h1", name))

    def lost(c, dom):
        raise HostError(c.host, "starting", "the SSH connection was lost")

    monkeypatch.setattr(starts, "start", lost)
    with pytest.raises(HostError, match="SSH connection was lost"):
        GuestProvider().create(guest_props("h1", name, disk, _mac(unique)))
    assert lab.domain_state("h1", name) == "missing"


def test_foreign_name_is_not_taken_over_but_own_leftover_is_reclaimed(disk, unique, sweep) -> None:
    name = f"own-{unique}"
    sweep.append(("h1", name))
    xml = f"<domain type='qemu'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
    lab.in_host("h1", "sh", "-c", f"echo \"{xml}\" > /tmp/{name}.xml && virsh -q define /tmp/{name}.xml")
    gp = GuestProvider()
    props = guest_props("h1", name, disk, _mac(unique), running=False)
    with pytest.raises(UnsafeChangeError, match="already exists, managed by something outside virtfleet"):
        gp.create(props)
    assert "65536" in lab.virsh("h1", "dumpxml", name)  # untouched
    lab.virsh("h1", "undefine", name)
    # our own domain left behind by an interrupted run (state lost) is reclaimed, not duplicated
    first = gp.create(props)
    again = gp.create(props)
    assert again.id == first.id and lab.domains("h1").count(name) == 1
    gp.delete(first.id, first.outs)


def test_replace_fields_and_delete_before_replace(disk, unique) -> None:
    props = guest_props("h1", f"r-{unique}", disk, _mac(unique))
    outs = dict(props, uuid="u", running=True)
    moved = dict(props, connection=dict(props["connection"], address="10.200.0.12"))
    d = GuestProvider().diff("u", outs, moved)
    assert d.replaces == ["spec"] and d.delete_before_replace is True  # the connection, in the nested inputs


def _vcpu_policies(name: str) -> dict[str, int]:
    """Scheduler policy of every thread of the guest's QEMU process (lab hosts share this pid namespace)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"guest={name},".encode() not in f.read():
                    continue
            threads = {}
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    threads[f"{f.read().strip()}#{tid}"] = os.sched_getscheduler(int(tid))
            return threads
        except OSError:
            continue
    return {}


def test_cpu_priority_idle_applies_to_the_whole_guest(disk, unique, sweep) -> None:
    """vCPU threads and QEMU's own threads (device emulation, as busy as a vCPU while a TCG guest boots)
    are idle class; back to normal, all are normal again."""
    name = f"idle-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    made = gp.create(guest_props("h1", name, disk, _mac(unique), cpuPriority="idle", vcpus=2, shutdownTimeout=0))
    threads = _vcpu_policies(name)
    vcpus = {t: p for t, p in threads.items() if "/TCG" in t or "/KVM" in t}
    assert len(vcpus) == 2 and set(vcpus.values()) == {os.SCHED_IDLE}, threads
    assert threads[next(t for t in threads if t.startswith("qemu-system"))] == os.SCHED_IDLE, threads
    assert gp.read(made.id, made.outs).outs["xmlDrift"] is False
    back = gp.update(made.id, made.outs, guest_props("h1", name, disk, _mac(unique), vcpus=2, cpuPriority="normal",
                                                 shutdownTimeout=0))
    assert back.outs["spec"]["cpuPriority"] == "normal"
    assert set(_vcpu_policies(name).values()) == {os.SCHED_OTHER}, "restarted with normal vCPUs"
    gp.delete(made.id, back.outs)


def test_a_device_added_with_virsh_survives_an_update(disk, unique, sweep) -> None:
    name = f"um-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    props = guest_props("h1", name, disk, _mac(unique))
    made = gp.create(props)
    assert made.outs["status"]["unmanaged"] == []
    extra = f"extra-{unique}.raw"
    lab.virsh("h1", "vol-create-as", "guests", extra, "16M")
    try:
        lab.virsh("h1", "attach-disk", name, f"/var/lib/virtfleet/guests/{extra}", "vdb", "--config")
        seen = gp.read(made.id, made.outs).outs
        assert seen["status"]["unmanaged"] == [f"disk vdb /var/lib/virtfleet/guests/{extra}"]
        assert seen["xmlDrift"] is False
        assert not gp.diff(made.id, seen, props).changes  # listed, not drift: nothing to do for it
        news = {**props, "memory": 160 << 20}
        updated = gp.update(made.id, seen, news).outs
        inactive = lab.virsh("h1", "dumpxml", name, "--inactive")
        assert f"/var/lib/virtfleet/guests/{extra}" in inactive and "<memory unit='KiB'>163840</memory>" in inactive
        assert updated["status"]["unmanaged"] == seen["status"]["unmanaged"] and updated["xmlDrift"] is False
        assert lab.domain_state("h1", name) == "running"
        gp.delete(made.id, updated)
    finally:
        lab.virsh("h1", "vol-delete", "--pool", "guests", extra, check=False)
