"""Boot to address: a Debian 12 cloud guest (the lab's image, cloud-init from a NoCloud seed, TCG) on a
libvirt NAT network, from the start of its `create` to the first answer of each address source, and to
an SSH login with the key from its seed (the guest's host key, also from its seed, pinned); in the same
run, the same guest through `pulumi up` with `waitForAddress` (the time until the run has the address in
its outputs).

Per round: the provider's own create (seed upload, define, start), then every 0.5 s each source is
asked through libvirt (DHCP lease, guest agent, the host's neighbour table) and an SSH login is tried
from the host, until all answered.  The guest has two interfaces: one on the network (lease, agent,
arp) and one macvtap with a static address from its network-config (only the agent can see it).

usage: bench/cloud.py [ROUNDS=2]    (after `. scripts/env.sh`, with the lab up and lab/cloudimage.sh built)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import libvirt  # noqa: E402

from bench.fleet import settle  # noqa: E402
from providers.base_image import BaseImageProvider
from providers.guest import GuestProvider
from providers.host import HostProvider
from providers.local import cloudinit
from providers.model import addresses
from providers.model.host import Connection
from providers.network import NetworkProvider
from providers.remote import addresses as remote_addresses
from providers.remote import domains, session
from providers.volume import VolumeProvider
from tests import lab  # noqa: E402
from tests.e2e.fleet import config  # noqa: E402
from tests.provider.fixtures import guest_props, host_props, image_props, volume_props  # noqa: E402
from tests.pulumi_cli import Stack  # noqa: E402

IMAGE = os.path.join(lab.LAB_DIR, "cloud", "debian12.qcow2")
NET = {"name": "bench-cloud", "mode": "nat", "bridge": "vf-benchcl", "address": "192.168.139.1/24",
       "dhcp": {"start": "192.168.139.100", "end": "192.168.139.200"}, "autostart": True}
MACS = ("52:54:00:be:c1:01", "52:54:00:be:c2:01")  # each round adds its number: no lease of an earlier round
STATIC = "10.200.0.251"
SOURCES = ("lease", "agent", "arp")


def macs(n: int) -> tuple[str, str]:
    return (f"{MACS[0][:-2]}{n:02x}", f"{MACS[1][:-2]}{n:02x}")


def guest_host_key(tmp: str) -> tuple[str, str]:
    """(private, public) of an ed25519 host key made for this run: every round's guest gets it through
    cloud-init, and SSH pins it."""
    path = os.path.join(tmp, "guest_host_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path, "-C", "bench-cloud"], check=True)
    with open(path) as private, open(f"{path}.pub") as public:
        return private.read(), " ".join(public.read().split()[:2])


def cloud_init(name: str, n: int, host_key: tuple[str, str]) -> dict:
    return {"hostname": name, "sshAuthorizedKeys": [open(lab.info()["sshKeyFile"] + ".pub").read().strip()],
            "userData": {"ssh_keys": {"ed25519_private": host_key[0], "ed25519_public": host_key[1]}},
            "networkConfig": {"version": 2, "ethernets": {
                "nat": {"match": {"macaddress": macs(n)[0]}, "dhcp4": True},
                "lan": {"match": {"macaddress": macs(n)[1]}, "addresses": [f"{STATIC}/24"]}}}}


def interfaces(n: int) -> list[dict]:
    return [{"type": "network", "source": NET["name"], "mac": macs(n)[0], "model": "virtio"},
            {"type": "direct", "source": "eth0", "mac": macs(n)[1], "model": "virtio"}]


def ssh_ok(address: str, host_key: tuple[str, str], tmp: str) -> bool:
    known = os.path.join(tmp, "known_hosts")
    with open(known, "w") as f:
        f.write(f"{address} {host_key[1]}\n")
    return lab.ssh_guest("h1", address, known, "true").returncode == 0


def provider_round(base: dict, n: int, host_key: tuple[str, str], tmp: str) -> dict[str, float]:
    """The provider's create, then first answers per source and SSH, in seconds from the create's start."""
    name = f"bcloud{n}"
    seed = cloudinit.render("cloudInit", cloud_init(name, n, host_key), name)
    vol = VolumeProvider().create(volume_props("h1", f"{name}.qcow2", base, capacity=3 << 30)).outs
    props = guest_props("h1", name, vol["path"], macs(n)[0], memory=512 << 20, agent=True, shutdownTimeout=60,
                        graphics="none", interfaces=interfaces(n), cloudInit=seed.to_props(),
                        seed={"pool": "guests", "poolPath": "/var/lib/virtfleet/guests",
                              "volume": cloudinit.volume_name(name, seed), "instanceId": seed.instance_id})
    gp = GuestProvider()
    t0 = time.monotonic()
    made = gp.create(props)
    seen = {"create returned": time.monotonic() - t0}
    dom = domains.by_name(session.virt(Connection.from_props(props["connection"])), name)
    assert dom is not None
    c = Connection.from_props(props["connection"])
    while not all(k in seen for k in (*SOURCES, "ssh")) and time.monotonic() - t0 < 300:
        found, _ = remote_addresses.query(dom, list(SOURCES), c)
        for src in SOURCES:
            if src not in seen and any(found.get(src, {}).values()):
                seen[src] = time.monotonic() - t0
                seen[f"{src} saw"] = ", ".join(f"{mac[-2:]}:{'/'.join(a)}" for mac, a in found[src].items() if a)
        lease = addresses.first(addresses.pick(interfaces(n)[:1], found, True))
        if "ssh" not in seen and lease and ssh_ok(lease, host_key, tmp):
            seen["ssh"] = time.monotonic() - t0
        time.sleep(0.5)
    gp.delete(made.id, made.outs)
    VolumeProvider().delete(vol["path"], vol)
    return seen


def pulumi_round(tmp: str, n: int, host_key: tuple[str, str]) -> float:
    """`pulumi up` of the same guest with waitForAddress: seconds until the run ends with its addresses."""
    name = f"bcloudp{n}"
    cfg = config({"h1": {name: {"memory": "512MiB", "image": "debian12", "diskSize": 3, "agent": True,
                                "graphics": "none", "shutdownTimeout": 60,
                                "waitForAddress": 600, "autostart": False, "deleteDiskOnDestroy": True,
                                "interfaces": [{"type": i["type"], "source": i["source"], "mac": i["mac"]}
                                               for i in interfaces(10 + n)],
                                "cloudInit": cloud_init(name, 10 + n, host_key)}}})
    cfg["images"] = {"debian12": {"path": IMAGE}}
    cfg["hosts"]["h1"]["networks"] = {NET["name"]: {k: NET[k] for k in ("mode", "bridge", "address", "dhcp")}}
    stack = Stack(tmp, f"bcloud{n}", cfg)
    try:
        t0 = time.monotonic()
        stack.up()
        took = time.monotonic() - t0
        got = stack.outputs()["guests"][name]["addresses"]
        assert all(i["addresses"] for i in got), got
        return took
    finally:
        stack.destroy(check=False)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    HostProvider().create(host_props("h1"))
    base = BaseImageProvider().create(image_props("h1", IMAGE, "debian12")).outs
    net = NetworkProvider().create({"connection": lab.connection_props("h1"), **NET})
    results, ups = [], []
    with tempfile.TemporaryDirectory() as tmp:
        host_key = guest_host_key(tmp)
        try:
            for n in range(rounds):
                settle()
                results.append(provider_round(base, n, host_key, tmp))
                print(f"round {n + 1}: " + ", ".join(f"{k} {v:.1f}s" if isinstance(v, float) else f"{k} [{v}]"
                                                      for k, v in results[-1].items()), flush=True)
            NetworkProvider().delete(net.id, net.outs)
            for n in range(rounds):
                settle()
                ups.append(pulumi_round(os.path.join(tmp, str(n)), n, host_key))
                print(f"pulumi up round {n + 1}: {ups[-1]:.1f}s", flush=True)
        finally:
            with_net = lab.virsh("h1", "net-list", "--all", "--name", check=False)
            if NET["name"] in with_net:
                lab.virsh("h1", "net-destroy", NET["name"], check=False)
                lab.virsh("h1", "net-undefine", NET["name"], check=False)
            BaseImageProvider().delete("base", base)
    print("\nB7 boot to address (Debian 12 cloud guest, 512 MiB, TCG, 2 NICs), median of", rounds, "rounds")
    print(f"{'from the start of create to':<34}{'median (s)':>11}{'rounds (s)':>24}")
    for key in ("create returned", *SOURCES, "ssh"):
        vals = [r[key] for r in results if key in r]
        if vals:
            print(f"{key:<34}{statistics.median(vals):>11.1f}{', '.join(f'{v:.1f}' for v in vals):>24}")
    for src in SOURCES:
        print(f"{src} answered with: {results[-1].get(f'{src} saw', 'nothing')}")
    each = ", ".join(f"{v:.1f}" for v in ups)
    print(f"{'pulumi up with waitForAddress':<34}{statistics.median(ups):>11.1f}{each:>24}")


if __name__ == "__main__":
    libvirt.registerErrorHandler(lambda *_: None, None)
    main()
