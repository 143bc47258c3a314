"""`adopt: true` with the real CLI: a guest defined by hand with virsh over SSH is shown in `pulumi preview`,
taken over by `pulumi up` (same UUID, same disk, its extra disk kept), and `pulumi destroy` keeps its disk."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e
POOL = "/var/lib/virtfleet/guests"
MARK = "write -P 0x5a 1M 64k"


def over_ssh(host: str, command: str, stdin: str = "") -> str:
    """A command on a lab host over plain SSH, as an operator would run it (not through virtfleet)."""
    info = lab.info()
    h = info["hosts"][host]
    proc = subprocess.run(["ssh", "-o", f"UserKnownHostsFile={info['knownHosts']}", "-o", "BatchMode=yes",
                           "-i", info["sshKeyFile"], "-p", str(h["port"]), f"root@{h['address']}", command],
                          input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    return proc.stdout


def by_hand(name: str, mac: str, extra: str) -> str:
    """The guest as virt-install or virsh leaves it: a 1 GiB qcow2 disk with data on it in the pool, a second
    disk, a macvtap NIC, 64 MiB, running.  Returns its UUID."""
    # the pool as a hand-made setup has it (a fresh lab host has none until a Host resource makes it)
    over_ssh("h1", f"virsh -q pool-info guests >/dev/null 2>&1 || {{ virsh -q pool-define-as guests dir --target "
                   f"{POOL} && virsh -q pool-build guests && virsh -q pool-start guests && "
                   "virsh -q pool-autostart guests; }")
    over_ssh("h1", f"virsh -q vol-create-as guests {name}.qcow2 1G --format qcow2 && "
                   f"qemu-io -f qcow2 -c '{MARK}' {POOL}/{name}.qcow2 >/dev/null && "
                   f"virsh -q vol-create-as guests {extra} 16M")
    xml = (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{POOL}/{name}.qcow2'/>"
           "<target dev='vda' bus='virtio'/></disk>"
           f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{POOL}/{extra}'/>"
           "<target dev='vdb' bus='virtio'/></disk>"
           f"<interface type='direct'><mac address='{mac}'/><source dev='eth0' mode='bridge'/>"
           "<model type='virtio'/></interface></devices></domain>")
    over_ssh("h1", f"cat > /tmp/{name}.xml && virsh -q define /tmp/{name}.xml && virsh -q start {name}", xml)
    return over_ssh("h1", f"virsh domuuid {name}").strip()


def test_a_guest_made_by_hand_is_taken_over_and_its_disk_kept(tmp_path, unique) -> None:
    t0 = time.monotonic()
    name, extra = f"hand-{unique}", f"hand-{unique}-data.raw"
    cfg = {"h1": {name: guest(name, adopt=True, shutdownTimeout=3)}}
    stack = Stack(str(tmp_path), f"adopt{unique}", config(cfg))
    try:
        uuid = by_hand(name, cfg["h1"][name]["mac"], extra)
        pv = stack.preview()
        out = pv.stdout + pv.stderr
        assert f"h1: taking over {name} (defined outside virtfleet): memory 67108864 -> 134217728" in out, out
        assert f"kept: disk vdb {POOL}/{extra}" in out, out
        assert lab.virsh("h1", "domuuid", name).strip() == uuid and "urn:virtfleet" not in lab.virsh(
            "h1", "dumpxml", name), "a preview changed the guest"

        up = stack.up()
        # said once by the provider (check, then create, in one process); the CLI lists each line again at the end
        said = up.stdout.rsplit("Diagnostics:", 1)[-1]
        assert said.count(f"h1: taking over {name} (defined outside virtfleet)") == 1, up.stdout
        inactive = lab.virsh("h1", "dumpxml", name, "--inactive")
        assert lab.virsh("h1", "domuuid", name).strip() == uuid and stack.outputs()["guests"][name]["uuid"] == uuid
        assert "urn:virtfleet:owner:1" in inactive and f"{POOL}/{extra}" in inactive and "131072" in inactive
        assert lab.domain_state("h1", name) == "running"
        quiet = stack.preview("--expect-no-changes")
        # the disk it had besides virtfleet's is kept and named in every preview, never counted as a change
        assert f"{name} has devices or settings virtfleet does not manage" in quiet.stdout + quiet.stderr
        assert f"disk vdb {POOL}/{extra}" in quiet.stdout + quiet.stderr

        d = stack.destroy()
        assert lab.domain_state("h1", name) == "missing" and f"kept disk {name}.qcow2" in d.stdout + d.stderr
        assert f"{name}.qcow2" in lab.volumes("h1")
        read = lab.in_host("h1", "qemu-io", "-f", "qcow2", "-c", MARK.replace("write", "read"),
                           f"{POOL}/{name}.qcow2", check=False)
        assert read.returncode == 0 and "Pattern verification failed" not in read.stdout, read.stdout
        print(f"[e2e time] adopt: define by hand, preview, up, preview, destroy: {time.monotonic() - t0:.1f}s")
    finally:
        stack.destroy(check=False)
        lab.virsh("h1", "destroy", name, check=False)
        lab.virsh("h1", "undefine", name, check=False)
        for vol in (f"{name}.qcow2", extra):
            lab.virsh("h1", "vol-delete", "--pool", "guests", vol, check=False)
