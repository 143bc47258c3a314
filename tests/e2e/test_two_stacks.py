"""Two teams' stacks on one host, with the real CLI: neither can grow, take or delete the other's disk,
and a network both use stays until neither uses it."""

from __future__ import annotations

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e
POOL = "/var/lib/virtfleet/guests"
MARK = "write -P 0x5a 1M 64k"


def _capacity(host: str, disk: str) -> int:
    out = lab.virsh(host, "vol-info", "--pool", "guests", disk, "--bytes")
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("Capacity")))


def _marked(host: str, disk: str) -> bool:
    """Team A's data is still on its disk (read while its guest may run: a shared read)."""
    read = lab.in_host(host, "qemu-io", "-r", "-U", "-f", "qcow2", "-c", MARK.replace("write", "read"),
                       f"{POOL}/{disk}", check=False)
    return read.returncode == 0 and "Pattern verification failed" not in read.stdout


def _resources(stack: Stack, kind: str) -> list[dict]:
    return [r for r in stack.export()["deployment"].get("resources") or [] if r["type"].endswith(f"virtfleet:{kind}")]


def test_another_stack_never_grows_takes_or_deletes_a_teams_disk(tmp_path, unique) -> None:
    web, disk = f"web-{unique}", f"web-{unique}.qcow2"
    a = Stack(str(tmp_path / "a"), f"teama-{unique}", config({"h2": {web: guest(web, running=False)}}))
    b_guest = guest(web, diskSize=2, deleteDiskOnDestroy=True)
    b = Stack(str(tmp_path / "b"), f"teamb-{unique}", config({"h2": {web: b_guest}}))
    try:
        a.up()
        (base,) = [r["outputs"]["volumeName"] for r in _resources(a, "BaseImage")]
        lab.in_host("h2", "qemu-io", "-f", "qcow2", "-c", MARK, f"{POOL}/{disk}")  # team A's data
        a.write_config(config({"h2": {web: guest(web)}}))
        a.up()
        assert lab.domain_state("h2", web) == "running" and _capacity("h2", disk) == 1 << 30

        # team B declares the same guest: refused in preview and in up, nothing of A's touched or recorded
        pv = b.preview(check=False)
        said = pv.stdout + pv.stderr
        assert pv.returncode != 0 and f"disk '{disk}' already exists and belongs to the guest(s) {web} (managed " \
            f"by virtfleet/teama-{unique}/{web})" in said, said
        up = b.up(check=False)
        assert up.returncode != 0 and "belongs to the guest(s)" in up.stdout + up.stderr
        assert _capacity("h2", disk) == 1 << 30, "B's up grew A's disk"
        assert not _resources(b, "Volume"), "B recorded A's disk as its own"
        b.destroy()
        assert disk in lab.volumes("h2") and lab.domain_state("h2", web) == "running" and _marked("h2", disk)

        # A removes its guest and keeps the disk: B still cannot take it, A puts its guest back on it
        a.write_config(config({"h2": {}}))
        assert f"kept disk {disk}" in a.up().stdout
        pv = b.preview(check=False)
        assert pv.returncode != 0 and f"kept for virtfleet/teama-{unique}/{web}" in pv.stdout + pv.stderr
        assert b.up(check=False).returncode != 0 and _capacity("h2", disk) == 1 << 30
        b.destroy()
        assert disk in lab.volumes("h2") and _marked("h2", disk)
        a.write_config(config({"h2": {web: guest(web, running=False, deleteDiskOnDestroy=True)}}))
        assert f"reusing kept disk {disk}" in a.up().stdout and _marked("h2", disk)
        # its own disk, so deleteDiskOnDestroy deletes it, and the base goes with its last disk (unless
        # another stack on the lab's h2, from another test, holds it too: then the destroy says so)
        gone = a.destroy().stdout
        assert disk not in lab.volumes("h2")
        assert base not in lab.volumes("h2") or f"kept base volume {base}: " in gone and "other BaseImage" in gone
    finally:
        a.destroy(check=False)
        b.destroy(check=False)
        lab.virsh("h2", "destroy", web, check=False)
        lab.virsh("h2", "undefine", web, check=False)
        lab.virsh("h2", "vol-delete", "--pool", "guests", disk, check=False)


def test_a_network_two_stacks_use_stays_until_neither_does(tmp_path, unique) -> None:
    net = f"n-{unique}"
    third = 100 + int(unique[:2], 16) % 100
    networks = {net: {"mode": "nat", "address": f"10.91.{third}.1/24", "dhcp": True}}

    def cfg(guests: dict) -> dict:
        c = config({"h2": guests})
        c["hosts"]["h2"]["networks"] = networks
        return c

    ga, gb = f"na-{unique}", f"nb-{unique}"
    nic = lambda key: {"interfaces": [{"type": "network", "source": net, "mac": guest(key)["mac"]}]}  # noqa: E731
    a = Stack(str(tmp_path / "a"), f"neta-{unique}", cfg({ga: guest(ga, running=False, **nic(ga))}))
    b = Stack(str(tmp_path / "b"), f"netb-{unique}", cfg({gb: guest(gb, running=False, **nic(gb))}))
    try:
        a.up()
        assert "using the existing network" in b.up().stdout
        # B goes: A's stopped guest keeps its network
        assert f"kept network {net}: 1 other stack(s) still use it" in b.destroy().stdout
        assert net in lab.virsh("h2", "net-list", "--all", "--name") and lab.domain_state("h2", ga) == "shut off"
        # and the other way round: A made it, B uses it; A goes, B's stopped guest keeps it
        b.up()
        a.destroy()
        assert net in lab.virsh("h2", "net-list", "--all", "--name") and lab.domain_state("h2", gb) == "shut off"
        # the last one out removes it
        assert f"removed network {net}" in b.destroy().stdout
        assert net not in lab.virsh("h2", "net-list", "--all", "--name")
    finally:
        a.destroy(check=False)
        b.destroy(check=False)
        for g in (ga, gb):
            lab.virsh("h2", "undefine", g, check=False)
            lab.virsh("h2", "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)
        lab.virsh("h2", "net-destroy", net, check=False)
        lab.virsh("h2", "net-undefine", net, check=False)
