"""Each field's declared change class is what its update really does, on the lab: a "restart" field
restarts the guest (a new QEMU) or the network (a new bridge), an "inplace" one never does, and the
preview's `restartOnUpdate` names exactly the restart-class fields.  A new field without a case here
fails the coverage checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from providers.guest import GuestProvider
from providers.host import HostProvider
from providers.model import changes
from providers.network import NetworkProvider
from providers.volume import VolumeProvider
from tests import lab
from tests.provider.fixtures import guest_props, host_props, volume_props
from tests.provider.test_guest import _mac
from tests.provider.test_network import net_props

pytestmark = pytest.mark.provider

# restart- and inplace-class guest fields this test does not change, and why
GUEST_NOT_EXERCISED = {
    "kernel": "boots a kernel file the lab hosts do not have", "initrd": "goes with kernel",
    "cmdline": "goes with kernel", "virtType": "the lab has no KVM", "diskPath": "needs a second disk",
    "seed": "test_network.py::test_seed_is_uploaded_swapped_and_removed_with_the_guest restarts for it",
    "tpm": "needs swtpm; test_firmware.py covers it", "running": "starts or stops the guest: its own effect",
}


def _exercised(table: changes.Table, cases: list[tuple[str, Any]], skipped: dict[str, str]) -> None:
    """Every field that an update applies (inplace or restart) has a case, or a reason for none."""
    applied = {k for k, kind in table.items() if kind not in ("replace", "ignore") and k != "xmlDrift"}
    assert applied - {k for k, _ in cases} - set(skipped) == set()


def _restarts_named(checked: dict[str, Any]) -> set[str]:
    return {k.strip() for k in str(checked.get("restartOnUpdate") or "").split(",") if k.strip()}


def _ifindex(bridge: str) -> str:
    """The bridge's interface index in the host's network namespace ('' when there is none)."""
    out = lab.in_host("h1", "ip", "-o", "link", "show", "dev", bridge, check=False).stdout
    return out.split(":", 1)[0].strip()


@pytest.fixture
def network(unique) -> Iterator[tuple[str, int]]:
    name, third = f"cc-{unique}", int(unique[:2], 16)
    yield name, third
    lab.virsh("h1", "net-destroy", name, check=False)
    lab.virsh("h1", "net-undefine", name, check=False)


def test_a_network_restarts_for_exactly_its_restart_class_fields(network) -> None:
    name, third = network
    np = NetworkProvider()
    props = net_props(name, third)
    outs = {**props, **np.create(props).outs}
    cases: list[tuple[str, Any]] = [
        ("dhcp", {"start": f"10.77.{third}.50", "end": f"10.77.{third}.99"}),  # a new range
        ("autostart", False),
        ("mode", "route"),
        ("bridge", f"vfcc-{name[-6:]}"),
        ("address", f"10.77.{third}.2/24"),
        ("dhcp", None),  # off
        ("dhcp", {"start": f"10.77.{third}.100", "end": f"10.77.{third}.199"}),  # on again
    ]
    _exercised(changes.NETWORK_TABLE, cases, {})
    seen_kinds: dict[str, set[str]] = {}
    for key, value in cases:
        news = {**props, key: value}
        kind = changes.NETWORK_TABLE.kind(key, changes.NETWORK_TABLE.norm(key, props[key]),
                                          changes.NETWORK_TABLE.norm(key, value))
        seen_kinds.setdefault(key, set()).add(kind)
        checked = np.check(props, news).inputs
        assert _restarts_named(checked) == ({key} if kind == "restart" else set()), key
        before = _ifindex(props["bridge"])
        outs = {**news, **np.update(f"h1/{name}", outs, checked).outs}
        restarted = _ifindex(props["bridge"]) != before  # a restart makes the bridge anew (or another one)
        assert restarted == (kind == "restart"), f"{key} is declared {kind!r}, the update restarted: {restarted}"
        assert outs["drift"] is None
        props = news
    assert seen_kinds["dhcp"] == {"inplace", "restart"}  # both of its classes, chosen by the values


@pytest.fixture
def guest(disk, unique, sweep) -> tuple[str, dict[str, Any]]:
    name = f"cc-{unique}"
    sweep.append(("h1", name))
    # no graceful wait: the lab guest has no OS to answer the power button
    return name, guest_props("h1", name, disk, _mac(unique), shutdownTimeout=0)


def _qemu_pid(name: str) -> str:
    return lab.in_host("h1", "cat", f"/run/libvirt/qemu/{name}.pid").stdout.strip()


def test_a_guest_restarts_for_exactly_its_restart_class_fields(guest, unique) -> None:
    name, props = guest
    gp = GuestProvider()
    made = gp.create(props)
    uuid, outs = made.id, made.outs
    iface = {**props["interfaces"][0], "model": "e1000"}
    cases: list[tuple[str, Any]] = [
        ("memory", 192 << 20), ("vcpus", 2), ("cpuPriority", "batch"), ("graphics", "vnc"), ("agent", True),
        ("interfaces", [iface]), ("diskFormat", "raw"),
        ("description", "changed in place"), ("autostart", True), ("ip", "192.0.2.9"),
        ("owner", {**props["owner"], "resource": f"renamed-{unique}"}),
        ("shutdownTimeout", 5),  # last: a later restart would wait for it
    ]
    _exercised(changes.GUEST_TABLE, cases, GUEST_NOT_EXERCISED)
    for key, value in cases:
        news = {**props, key: value}
        kind = changes.GUEST_TABLE[key]
        checked = gp.check(outs, news).inputs
        assert _restarts_named(checked) == ({key} if kind == "restart" else set()), key
        before = _qemu_pid(name)
        outs = gp.update(uuid, outs, checked).outs
        restarted = _qemu_pid(name) != before
        assert restarted == (kind == "restart"), f"{key} is declared {kind!r}, the update restarted: {restarted}"
        assert lab.domain_state("h1", name) == "running" and outs["xmlDrift"] is False
        props = news
    gp.delete(uuid, outs)


def test_inplace_host_and_volume_fields_keep_the_pool_and_the_disk(base, unique) -> None:
    hp = HostProvider()
    props = host_props("h1")
    outs = {**props, **hp.create(props).outs}
    pool_uuid = lab.virsh("h1", "pool-uuid", "guests").strip()
    host_cases: list[tuple[str, Any]] = [("virtType", "kvm"), ("hostNic", "vfbr0")]
    _exercised(changes.HOST_TABLE, host_cases, {})
    for key, value in host_cases:
        assert changes.HOST_TABLE[key] == "inplace"
        outs = {**outs, **hp.update("h1", outs, {**props, key: value}).outs}
        assert lab.virsh("h1", "pool-uuid", "guests").strip() == pool_uuid

    vp = VolumeProvider()
    vprops = volume_props("h1", f"cc-{unique}.qcow2", base)
    made = vp.create(vprops)
    path = made.outs["path"]
    inode = lab.in_host("h1", "stat", "-c", "%i", path).stdout.strip()
    vol_cases: list[tuple[str, Any]] = [("capacity", 2 << 30), ("deleteOnDestroy", False), ("deleteOnDestroy", True)]
    _exercised(changes.VOLUME_TABLE, vol_cases, {})
    vouts = made.outs
    for key, value in vol_cases:
        assert changes.VOLUME_TABLE[key] == "inplace"
        vouts = {**vouts, **vp.update(made.id, vouts, {**vprops, key: value}).outs}
        vprops = {**vprops, key: value}
        assert lab.in_host("h1", "stat", "-c", "%i", path).stdout.strip() == inode  # the same disk, changed
    assert "2.00 GiB" in lab.virsh("h1", "vol-info", path)
    vp.delete(made.id, vouts)
