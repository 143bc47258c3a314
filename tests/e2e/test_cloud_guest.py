"""A real Debian 12 cloud guest in the lab, through the real CLI: cloud-init from a NoCloud seed, addresses
from DHCP leases and the guest agent in the stack outputs, SSH in with the key from the stack (the guest's
own host key pinned, not ignored), a re-seed as previewed, and secrets kept out of the state."""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest

from tests import lab
from tests.e2e.fleet import config, mac_for
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e
IMAGE = os.path.join(lab.LAB_DIR, "cloud", "debian12.qcow2")
def wait_ssh(host: str, address: str, known_hosts: str, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    while True:
        proc = lab.ssh_guest(host, address, known_hosts, "hostname")
        if proc.returncode == 0 or time.monotonic() > deadline:
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.strip()
        time.sleep(2)


@pytest.fixture
def cloud(tmp_path, unique):
    assert os.path.exists(IMAGE), f"{IMAGE} is missing: scripts/setup.sh builds it (lab/cloudimage.sh)"
    key = f"deb-{unique}"
    hostkey = tmp_path / "guest_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey), "-C", key], check=True)
    client_pub = open(lab.info()["sshKeyFile"] + ".pub").read().strip()
    static = f"10.200.0.{200 + int(unique[:2], 16) % 50}"
    guest = {
        "memory": "512MiB", "vcpus": 1, "diskSize": 3, "image": "debian12", "agent": True, "waitForAddress": 400,
        "shutdownTimeout": 60, "autostart": False, "deleteDiskOnDestroy": True,
        "interfaces": [{"type": "network", "source": "cloud", "mac": mac_for(key)},
                       {"type": "direct", "source": "eth0", "mac": mac_for(key + "-lan")}],
        "cloudInit": {
            "hostname": "vf-cloud-1", "sshAuthorizedKeys": [client_pub],
            "userData": {"ssh_keys": {"ed25519_public": open(f"{hostkey}.pub").read().strip()}},
            "networkConfig": {"version": 2, "ethernets": {
                "nat": {"match": {"macaddress": mac_for(key)}, "dhcp4": True},
                "lan": {"match": {"macaddress": mac_for(key + "-lan")}, "addresses": [f"{static}/24"]}}}},
    }
    cfg = config({"h1": {key: guest}})
    cfg["images"] = {"debian12": {"path": IMAGE}}
    cfg["hosts"]["h1"]["networks"] = {"cloud": {"address": "192.168.140.1/24", "dhcp": True}}
    stack = Stack(str(tmp_path), f"cloud{unique}", cfg)
    # the guest's private host key goes in as a Pulumi secret, inside the user-data
    # (on stdin: a value starting with '-' is taken for a flag)
    subprocess.run(stack.argv("config", "set", "--secret", "--path",
                              f"virtfleet:hosts.h1.guests.{key}.cloudInit.userData.ssh_keys.ed25519_private"),
                   input=hostkey.read_text(), cwd=stack.project_dir, env=stack.env, check=True, capture_output=True,
                   text=True)
    known = tmp_path / "known_hosts"
    yield stack, key, static, known, hostkey
    if os.environ.get("VIRTFLEET_KEEP_CLOUD_GUEST"):  # to look at a failure: clean up by hand afterwards
        return
    stack.destroy(check=False)
    lab.virsh("h1", "destroy", key, check=False)
    lab.virsh("h1", "undefine", key, check=False)
    for vol in lab.volumes("h1"):
        if vol.startswith(key):
            lab.virsh("h1", "vol-delete", "--pool", "guests", vol, check=False)
    lab.virsh("h1", "net-destroy", "cloud", check=False)
    lab.virsh("h1", "net-undefine", "cloud", check=False)


def test_a_debian_cloud_guest_you_can_log_into(cloud) -> None:
    stack, key, static, known, hostkey = cloud
    t0 = time.monotonic()
    stack.up()
    print(f"[e2e time] up, cloud guest to its addresses: {time.monotonic() - t0:.1f}s")
    out = stack.outputs()["guests"][key]
    nat, lan = out["addresses"]
    # the first source to answer wins the wait: the neighbour table can see the guest a moment before
    # libvirt's lease file does (the refresh below proves the lease)
    assert nat["source"] in ("lease", "arp") and nat["addresses"][0].startswith("192.168.140."), out
    assert lan == {"mac": mac_for(key + "-lan"), "source": "agent", "addresses": [static]}, out
    assert out["address"] == nat["addresses"][0]

    # SSH in from the guest's host with the key from the stack, the guest's host key pinned
    pub = " ".join(open(f"{hostkey}.pub").read().split()[:2])
    known.write_text(f"{out['address']} {pub}\n{static} {pub}\n")
    assert wait_ssh("h1", out["address"], str(known)) == "vf-cloud-1"
    print(f"[e2e time] up to SSH login: {time.monotonic() - t0:.1f}s")
    stack.refresh()
    nat_now = stack.outputs()["guests"][key]["addresses"][0]
    assert nat_now == {**nat, "source": "lease"}, nat_now

    # the private host key was a secret: nowhere in the state in plaintext
    secret_line = hostkey.read_text().splitlines()[2]
    for state in glob.glob(os.path.join(stack.tmp, "backend", ".pulumi", "stacks", "**", "*.json"), recursive=True):
        assert secret_line not in open(state).read(), state
    assert stack.preview("--expect-no-changes").returncode == 0

    # new user-data: preview names the guest, its new seed and the restart; up re-seeds it
    seed_before = [v for v in lab.volumes("h1") if v.startswith(f"{key}-cidata-")]
    stack.run("config", "set", "--path", f"virtfleet:hosts.h1.guests.{key}.cloudInit.hostname", "vf-cloud-2")
    preview = stack.preview("--diff").stdout
    assert f"::{key}]" in preview and "seed" in preview and "restartOnUpdate" in preview, preview
    assert "1 to update" in preview, preview
    t1 = time.monotonic()
    stack.up()
    assert wait_ssh("h1", stack.outputs()["guests"][key]["address"], str(known)) == "vf-cloud-2"
    print(f"[e2e time] re-seed to SSH login: {time.monotonic() - t1:.1f}s")
    seeds = [v for v in lab.volumes("h1") if v.startswith(f"{key}-cidata-")]
    assert len(seeds) == 1 and seeds != seed_before

    stack.destroy()
    assert key not in lab.domains("h1") and not [v for v in lab.volumes("h1") if v.startswith(key)]
    assert "cloud" not in lab.virsh("h1", "net-list", "--all", "--name")
