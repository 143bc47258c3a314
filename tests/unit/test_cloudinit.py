"""cloud-init seeds: what the guest reads (files, label, names), instance-ids, and the address picking."""

from __future__ import annotations

import io

import pycdlib
import pytest
import yaml

from providers.local import cloudinit
from providers.model import addresses

pytestmark = pytest.mark.unit
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKMXPZbrtpy4ToAGYPKvES0bow1xtrIrOLpw5kCD8SGy lab"


def read_iso(data: bytes) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """(volume label, files by Rock Ridge name, files by Joliet name) of an ISO image."""
    img = pycdlib.PyCdlib()
    img.open_fp(io.BytesIO(data))
    try:
        label = img.pvd.volume_identifier.decode().strip()
        rr, joliet = {}, {}
        for child in img.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                out = io.BytesIO()
                img.get_file_from_iso_fp(out, rr_path=f"/{name}")
                rr[name] = out.getvalue()
        for child in img.list_children(joliet_path="/"):
            if child.is_file():
                name = child.file_identifier().decode("utf-16-be").split(";")[0]
                out = io.BytesIO()
                img.get_file_from_iso_fp(out, joliet_path=f"/{name}")
                joliet[name] = out.getvalue()
        return label, rr, joliet
    finally:
        img.close()


def test_the_seed_iso_is_what_nocloud_reads() -> None:
    seed = cloudinit.render("g.cloudInit", {"sshAuthorizedKeys": [KEY], "hostname": "web-1",
                                            "networkConfig": {"version": 2, "ethernets": {"e": {"dhcp4": True}}}},
                            "vm1")
    label, rr, joliet = read_iso(cloudinit.iso(seed))
    assert label == "cidata"
    assert rr == joliet == seed.files()
    assert set(rr) == {"user-data", "meta-data", "network-config"}
    assert rr["user-data"].startswith(b"#cloud-config\n")
    assert yaml.safe_load(rr["user-data"]) == {"ssh_authorized_keys": [KEY]}
    meta = yaml.safe_load(rr["meta-data"])
    assert meta["local-hostname"] == "web-1" and meta["instance-id"].startswith("vm1-")
    assert yaml.safe_load(rr["network-config"])["version"] == 2


def test_instance_id_follows_the_content_unless_the_user_sets_it() -> None:
    a = cloudinit.render("k", {"userData": {"packages": ["htop"]}}, "vm1")
    assert cloudinit.render("k", {"userData": {"packages": ["htop"]}}, "vm1") == a
    b = cloudinit.render("k", {"userData": "#cloud-config\npackages: [vim]\n"}, "vm1")
    assert b.instance_id != a.instance_id and cloudinit.volume_name("vm1", b) != cloudinit.volume_name("vm1", a)
    fixed = cloudinit.render("k", {"userData": {"packages": ["vim"]}, "metaData": {"instance-id": "mine"}}, "vm1")
    assert fixed.instance_id == "mine"


def test_scripts_and_other_formats_pass_unchanged_and_keys_merge_into_cloud_config() -> None:
    script = "#!/bin/sh\necho hello > /tmp/x\n"
    assert cloudinit.render("k", {"userData": script}, "vm1").user_data == script
    merged = cloudinit.render("k", {"userData": {"ssh_authorized_keys": [KEY]}, "sshAuthorizedKeys": [KEY]}, "vm1")
    assert yaml.safe_load(merged.user_data)["ssh_authorized_keys"] == [KEY]  # not twice
    assert cloudinit.render("k", {}, "vm1").user_data == "#cloud-config\n"


def test_seed_round_trips_through_props() -> None:
    seed = cloudinit.render("k", {"sshAuthorizedKeys": [KEY]}, "vm1")
    assert cloudinit.Seed.from_props(seed.to_props()) == seed
    with pytest.raises(cloudinit.ConfigError, match="instance-id"):
        cloudinit.Seed.from_props({"userData": "#cloud-config\n", "metaData": "local-hostname: x\n"})


IFACES = [{"type": "network", "source": "lab", "mac": "52:54:00:00:00:01"},
          {"type": "direct", "source": "eth0", "mac": "52:54:00:00:00:02"},
          {"type": "bridge", "source": "br0", "mac": "52:54:00:00:00:03"}]


def answer(mac: str, *addrs: str) -> dict:
    return {"eth0": {"hwaddr": mac.upper(), "addrs": [{"type": 0, "addr": a, "prefix": 24} for a in addrs]},
            "lo": {"hwaddr": None, "addrs": [{"type": 0, "addr": "127.0.0.1", "prefix": 8}]}}


def test_addresses_by_mac_drop_loopback_and_link_local_and_list_ipv4_first() -> None:
    found = addresses.by_mac(answer("52:54:00:00:00:01", "fe80::1", "2001:db8::5", "192.168.150.130", "127.0.0.1"))
    assert found == {"52:54:00:00:00:01": ["192.168.150.130", "2001:db8::5"]}


def test_each_interface_type_asks_its_own_sources_in_order() -> None:
    assert addresses.sources_for(IFACES, agent=True) == ["lease", "agent", "arp"]
    assert addresses.sources_for(IFACES[1:2], agent=False) == []
    found = {"lease": addresses.by_mac(answer("52:54:00:00:00:01", "192.168.150.130")),
             "agent": {**addresses.by_mac(answer("52:54:00:00:00:01", "192.168.150.131")),
                       **addresses.by_mac(answer("52:54:00:00:00:02", "192.0.2.7"))},
             "arp": addresses.by_mac(answer("52:54:00:00:00:03", "192.0.2.8"))}
    picked = addresses.pick(IFACES, found, agent=True)
    assert [(p["source"], p["addresses"]) for p in picked] == \
        [("lease", ["192.168.150.130"]), ("agent", ["192.0.2.7"]), ("arp", ["192.0.2.8"])]
    assert addresses.first(picked) == "192.168.150.130"
    without_agent = addresses.pick(IFACES, found, agent=False)
    assert without_agent[1] == {"mac": "52:54:00:00:00:02", "source": "", "addresses": []}


def test_a_wait_that_gives_up_says_what_it_asked() -> None:
    picked = addresses.pick(IFACES[:1], {}, agent=True)
    said = addresses.waiting_for(IFACES[:1], picked, True, {"agent": "Guest agent is not responding"})
    assert said == ("interface 52:54:00:00:00:01 (network lab): asked lease, agent (Guest agent is not "
                    "responding), arp")
    assert addresses.first(picked) == ""


def test_a_private_host_key_keeps_its_final_newline() -> None:
    """`pulumi config set` (and YAML's `|-`) drop it, and sshd then finds no usable host key."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    keys = {"ed25519_private": key, "ed25519_public": "ssh-ed25519 A"}
    seed = cloudinit.render("k", {"userData": {"ssh_keys": keys}}, "vm1")
    assert yaml.safe_load(seed.user_data)["ssh_keys"] == {**keys, "ed25519_private": key + "\n"}
