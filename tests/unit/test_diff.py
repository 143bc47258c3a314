"""The diff/restart table: what each guest/volume change does, in preview and in update alike."""

from __future__ import annotations

import pytest

from providers.model import changes

pytestmark = pytest.mark.unit

OLD = {"connection": {"address": "10.0.0.1", "port": 22, "hostKey": "k1"}, "name": "g", "memory": 1 << 30,
       "vcpus": 1, "virtType": "kvm", "diskPath": "/p/g.qcow2", "diskFormat": "qcow2",
       "interfaces": [{"type": "direct", "source": "eth0", "mac": "52:54:00:00:00:01", "model": "virtio"}],
       "graphics": "spice", "running": True, "autostart": True, "kernel": "", "initrd": "", "cmdline": "",
       "owner": {"project": "p", "stack": "s", "resource": "g"}, "shutdownTimeout": 60, "ip": "",
       "__provider": "pickled-1", "uuid": "u", "state": "running"}

GUEST_CASES = [
    # (change, expected kind: none / inplace / restart / replace)
    ({}, "none"),
    ({"__provider": "pickled-2"}, "none"),                      # a code change is not a change
    ({"connection": {"address": "10.0.0.1", "port": 22, "hostKey": "k2"}}, "none"),  # re-pinned key
    ({"connection": {"address": "10.0.0.2", "port": 22}}, "replace"),
    ({"name": "g2"}, "replace"),
    ({"memory": 2 << 30}, "restart"),
    ({"vcpus": 2}, "restart"),
    ({"cpuPriority": "idle"}, "restart"),
    ({"cpuPriority": "normal"}, "none"),  # state from before the key existed means the same
    ({"interfaces": [{"type": "direct", "source": "eth0", "mac": "52:54:00:00:00:02", "model": "virtio"}]}, "restart"),
    ({"interfaces": [{"type": "direct", "source": "eth0", "mac": "52:54:00:00:00:01".upper(), "model": "virtio"}]},
     "none"),
    ({"kernel": "/boot/vmlinuz"}, "restart"),
    ({"graphics": "none"}, "restart"),
    ({"running": False}, "inplace"),
    ({"autostart": False}, "inplace"),
    ({"shutdownTimeout": 5}, "inplace"),
    ({"ip": "10.0.0.9"}, "inplace"),
]


def kind(p: changes.Plan) -> str:
    if p.replaces:
        return "replace"
    if p.restart:
        return "restart"
    return "inplace" if p.changed else "none"


@pytest.mark.parametrize("change,expected", GUEST_CASES)
def test_guest_table(change: dict, expected: str) -> None:
    news = {k: v for k, v in OLD.items() if k not in ("uuid", "state")} | change
    assert kind(changes.plan(changes.GUEST_TABLE, OLD, news)) == expected


def test_drift_seen_by_read_is_a_change() -> None:
    news = {k: v for k, v in OLD.items() if k not in ("uuid", "state")}
    assert kind(changes.plan(changes.GUEST_TABLE, OLD | {"xmlDrift": True}, news)) == "inplace"
    # a guest stopped outside: read reports running=False, the stack wants True
    assert changes.plan(changes.GUEST_TABLE, OLD | {"running": False}, news).changed == ["running"]


def test_restart_only_for_running_guests() -> None:
    p = changes.plan(changes.GUEST_TABLE, OLD, OLD | {"memory": 2 << 30})
    assert changes.guest_needs_restart(p, was_running=True)
    assert not changes.guest_needs_restart(p, was_running=False)
    assert not changes.guest_needs_restart(changes.plan(changes.GUEST_TABLE, OLD, OLD | {"autostart": False}), True)


VOL = {"connection": {"address": "10.0.0.1", "port": 22}, "pool": "guests", "name": "g.qcow2", "capacity": 1 << 30,
       "mode": "overlay", "baseVolume": "vfbase-a.qcow2", "baseFormat": "qcow2", "deleteOnDestroy": False}


@pytest.mark.parametrize("change,expected", [
    ({"capacity": 2 << 30}, "inplace"),
    ({"deleteOnDestroy": True}, "inplace"),
    ({"baseVolume": "vfbase-b.qcow2"}, "none"),   # an existing disk keeps its backing file
    ({"mode": "copy"}, "replace"),
    ({"connection": {"address": "10.0.0.2", "port": 22}}, "replace"),
])
def test_volume_table(change: dict, expected: str) -> None:
    assert kind(changes.plan(changes.VOLUME_TABLE, VOL, VOL | change)) == expected


def test_base_image_is_replace_only_on_content() -> None:
    old = {"connection": {"address": "a", "port": 22}, "pool": "guests", "digest": "1" * 64, "format": "raw",
           "image": "i", "source": "/x", "size": 5}
    assert changes.plan(changes.BASE_IMAGE_TABLE, old, old | {"digest": "2" * 64}).replaces == ["digest"]
    assert not changes.plan(changes.BASE_IMAGE_TABLE, old, old | {"source": "/y"}).replaces
