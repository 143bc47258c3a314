"""Network provider and cloud-init seeds against the lab: networks kept, changed live or refused while in
use; seeds uploaded, swapped and removed with their guest; address waits that give up on time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from providers.guest import GuestProvider
from providers.local import cloudinit
from providers.model.errors import HostError, UnsafeChangeError
from providers.network import NetworkProvider
from tests import lab
from tests.provider.fixtures import guest_props
from tests.provider.test_guest import _mac

pytestmark = pytest.mark.provider


def net_props(name: str, third: int, **changes: object) -> dict:
    return {"connection": lab.connection_props("h1"), "name": name, "mode": "nat", "bridge": f"vf-{name[-8:]}",
            "address": f"10.77.{third}.1/24", "dhcp": {"start": f"10.77.{third}.100", "end": f"10.77.{third}.199"},
            "autostart": True, **changes}


def net_info(name: str) -> dict[str, str]:
    out = lab.virsh("h1", "net-info", name)
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


@pytest.fixture
def network(unique) -> Iterator[tuple[str, dict]]:
    name = f"pt-{unique}"
    third = int(unique[:2], 16)
    props = net_props(name, third)
    made = NetworkProvider().create(props)
    yield name, {**props, **made.outs}
    lab.virsh("h1", "net-destroy", name, check=False)
    lab.virsh("h1", "net-undefine", name, check=False)


def test_network_lifecycle_and_changes_that_would_disconnect_guests(network, disk, unique, sweep) -> None:
    name, outs = network
    np = NetworkProvider()
    assert net_info(name)["Active"] == "yes" and net_info(name)["Autostart"] == "yes"
    assert outs["active"] is True and outs["drift"] is None
    assert np.read(f"h1/{name}", outs).outs["drift"] is None

    # an identical definition is used as is (another stack's Network); a different one is refused, nothing changed
    second = np.create(outs).outs
    assert second["created"] is False and outs["created"] is True and second["holder"] != outs["holder"]
    np.delete(f"h1/{name}", second)  # that stack lets go: the first one still holds the network
    assert net_info(name)["Active"] == "yes"
    with pytest.raises(UnsafeChangeError, match="another definition"):
        np.create({**outs, "address": "10.78.0.1/24", "dhcp": None})

    guest = f"vm-{unique}"
    sweep.append(("h1", guest))
    gp = GuestProvider()
    g = gp.create(guest_props("h1", guest, disk, _mac(unique),
                              interfaces=[{"type": "network", "source": name, "mac": _mac(unique), "model": "virtio"}]))
    pid = lab.in_host("h1", "cat", f"/run/libvirt/qemu/{guest}.pid").stdout.strip()

    # the DHCP range changes live: the guest stays plugged in, same QEMU
    third = outs["address"].split(".")[2]
    new_range = {"start": f"10.77.{third}.50", "end": f"10.77.{third}.99"}
    changed = np.update(f"h1/{name}", outs, {**outs, "dhcp": new_range}).outs
    assert changed["drift"] is None and f"start='10.77.{third}.50'" in lab.virsh("h1", "net-dumpxml", name)
    assert lab.in_host("h1", "cat", f"/run/libvirt/qemu/{guest}.pid").stdout.strip() == pid
    assert lab.domain_state("h1", guest) == "running"

    # a new subnet needs a restart of the network: refused while the guest is plugged in, naming it
    with pytest.raises(UnsafeChangeError, match=f"disconnect the running guests {guest}"):
        np.update(f"h1/{name}", changed, {**changed, "address": f"10.77.{third}.1/25", "dhcp": None})
    assert f"10.77.{third}.50" in lab.virsh("h1", "net-dumpxml", name)
    with pytest.raises(UnsafeChangeError, match=f"still used by the running guests {guest}"):
        np.delete(f"h1/{name}", changed)

    gp.delete(g.id, g.outs)
    again = np.update(f"h1/{name}", changed, {**changed, "address": f"10.77.{third}.1/25", "dhcp": None}).outs
    assert again["drift"] is None and "prefix='25'" in lab.virsh("h1", "net-dumpxml", name)

    # stopped outside: seen by read, started again by update
    lab.virsh("h1", "net-destroy", name)
    seen = np.read(f"h1/{name}", again).outs
    assert seen["active"] is False and np.diff(f"h1/{name}", seen, again).changes
    np.update(f"h1/{name}", seen, again)
    assert net_info(name)["Active"] == "yes"

    np.delete(f"h1/{name}", again)
    assert name not in lab.virsh("h1", "net-list", "--all", "--name")
    np.delete(f"h1/{name}", again)  # gone already: fine
    assert np.read(f"h1/{name}", again).id is None


def seed_of(user: dict, name: str) -> dict:
    seed = cloudinit.render("cloudInit", {"userData": user}, name)
    return {"seed": {"pool": "guests", "poolPath": "/var/lib/virtfleet/guests",
                     "volume": cloudinit.volume_name(name, seed), "instanceId": seed.instance_id},
            "cloudInit": seed.to_props()}


def test_seed_is_uploaded_swapped_and_removed_with_the_guest(disk, unique, sweep) -> None:
    name = f"ci-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    first = seed_of({"packages": ["htop"]}, name)
    props = guest_props("h1", name, disk, _mac(unique), **first)
    made = gp.create(props)
    vol = first["seed"]["volume"]
    assert vol in lab.volumes("h1")
    size = int(lab.virsh("h1", "vol-info", "--pool", "guests", vol, "--bytes").split("Capacity:")[1].split()[0])
    assert size == len(cloudinit.iso(cloudinit.Seed.from_props(first["cloudInit"])))
    xml = lab.virsh("h1", "dumpxml", name)
    assert f"/var/lib/virtfleet/guests/{vol}" in xml and "<readonly/>" in xml

    second = seed_of({"packages": ["vim"]}, name)
    news = {**props, **second}
    check = gp.check(made.outs, news)
    assert check.inputs["restartOnUpdate"] == "seed"
    updated = gp.update(made.id, made.outs, news).outs
    volumes = lab.volumes("h1")
    assert second["seed"]["volume"] in volumes and vol not in volumes
    assert second["seed"]["volume"] in lab.virsh("h1", "dumpxml", name)
    assert lab.domain_state("h1", name) == "running"

    gp.delete(made.id, updated)
    assert second["seed"]["volume"] not in lab.volumes("h1") and name not in lab.domains("h1")


def test_a_failed_create_leaves_no_seed_behind(disk, unique, sweep) -> None:
    name = f"cf-{unique}"
    sweep.append(("h1", name))
    seed = seed_of({"packages": ["htop"]}, name)
    props = guest_props("h1", name, disk, _mac(unique), kernel="/nonexistent/vmlinuz", **seed)
    with pytest.raises(HostError, match="removed again"):
        GuestProvider().create(props)
    assert name not in lab.domains("h1") and seed["seed"]["volume"] not in lab.volumes("h1")


def test_an_address_wait_gives_up_on_time_and_keeps_the_guest(disk, unique, sweep, capsys) -> None:
    name = f"aw-{unique}"
    sweep.append(("h1", name))
    gp = GuestProvider()
    t0 = time.monotonic()
    made = gp.create(guest_props("h1", name, disk, _mac(unique), agent=True, waitForAddress=3))
    took = time.monotonic() - t0
    assert lab.domain_state("h1", name) == "running"
    assert made.outs["status"]["addresses"] == [{"mac": _mac(unique), "source": "", "addresses": []}]
    assert made.outs["status"]["address"] == ""
    err = capsys.readouterr().err
    assert "gave up after waitForAddress 3 s" in err and f"interface {_mac(unique)} (direct eth0): asked agent (" in err
    assert took < 3 + 20  # bounded: the wait plus one start, never the agent's own unbounded default
    gp.delete(made.id, made.outs)


def test_the_neighbour_table_is_read_over_the_hosts_ssh_connection() -> None:
    """libvirt 9.0's own ARP source fails here ("wrong nlmsg len"); virtfleet reads `ip -j neigh` instead."""
    from providers.model.host import Connection
    from providers.remote.addresses import neighbours

    table = neighbours(Connection.from_props(lab.connection_props("h1")))
    assert any("10.200.0.1" in addrs for addrs in table.values()), table  # this machine, h1's SSH client
    assert all(":" in mac and addrs for mac, addrs in table.items())


def test_an_address_wait_outlives_a_libvirtd_restart(disk, unique, sweep, capsys) -> None:
    """A restart of libvirtd cuts the connection under a waiting create: it reconnects and goes on."""
    import subprocess
    import threading

    name = f"ar-{unique}"
    sweep.append(("h1", name))
    restart = threading.Timer(4.0, lambda: subprocess.run(["bash", lab.LAB_SH, "restart-libvirtd", "1"], check=True))
    restart.start()
    try:
        made = GuestProvider().create(guest_props("h1", name, disk, _mac(unique), agent=True, waitForAddress=20))
    finally:
        restart.join()
    assert made.outs["status"]["address"] == "" and lab.domain_state("h1", name) == "running"
    assert "gave up after waitForAddress 20 s" in capsys.readouterr().err
    GuestProvider().delete(made.id, made.outs)
