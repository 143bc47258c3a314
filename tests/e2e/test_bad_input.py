"""Bad input fails in `pulumi preview` naming the key and the fix, and leaves every host as it was."""

from __future__ import annotations

import pytest

from tests import lab
from tests.configedit import DELETE, with_value
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e


def host_state() -> dict[str, tuple[list[str], list[str], str]]:
    return {h: (lab.domains(h), lab.volumes(h), lab.virsh(h, "pool-list", "--all", "--name")) for h in ("h1", "h2")}


def _set(raw: dict, path: str, value: object) -> dict:
    return with_value(raw, path, value, sep="|")


def cases(g1: str, g2: str) -> list[tuple[str, object, str, str]]:
    g, h = f"hosts|h1|guests|{g1}", "hosts|h1"
    return [
        (f"{g}|mac", "D2:91:69:C0:14", "mac", "not a MAC"),
        (f"{g}|mac", "01:00:5E:00:00:01", "mac", "multicast"),
        (f"{g}|mac", "00:00:00:00:00:00", "mac", "not a usable MAC"),
        (f"hosts|h2|guests|{g2}|mac", "DUPLICATE", "mac", "also used"),
        (f"{g}|name", "a/b", "name", "not allowed"),
        (f"{g}|name", "a..b", "name", "not allowed"),
        (f"{g}|name", "has space", "name", "not allowed"),
        (f"{g}|name", "it's", "name", "not allowed"),
        (f"{g}|name", 'say"hi"', "name", "not allowed"),
        (f"{g}|name", "a<b", "name", "not allowed"),
        (f"{g}|name", "a>b", "name", "not allowed"),
        (f"{g}|name", "a&b", "name", "not allowed"),
        (f"{g}|name", "x" * 65, "name", "limit is 64"),
        (f"{g}|memory", "four", "memory", "not a size"),
        (f"{g}|memory", 0, "memory", "too small"),
        (f"{g}|memory", -4, "memory", "negative"),
        (f"{g}|memory", "900TiB", "memory", "absurdly large"),
        (f"{g}|vcpus", 0, "vcpus", "out of range"),
        (f"{g}|diskSize", "10MiB", "diskSize", "smaller than image"),
        (f"{g}|image", "nosuch", "image", "unknown image"),
        (f"{h}|port", 70000, "port", "out of range"),
        (f"{h}|hostKey", "ssh-ed25519 not-base64!", "hostKey", "does not decode"),
        (f"{h}|hostKey", "not-a-key", "hostKey", "not an OpenSSH public key"),
        (f"{h}|address", DELETE, "address", "missing"),
        (f"{h}|pool|path", "relative/guests", "pool.path", "not an absolute path"),
        (f"{h}|pool|type", "zfs", "pool.type", "not one of"),
        (f"{g}|running", "yes", "running", "not a boolean"),
        (f"{g}|autostart", 1, "autostart", "not a boolean"),
        (f"{g}|deleteDiskOnDestroy", "maybe", "deleteDiskOnDestroy", "not a boolean"),
        (f"{g}|adopt", "yes", f"hosts.h1.guests.{g1}.adopt", "not a boolean"),
        (f"{g}|secureBoot", True, f"hosts.h1.guests.{g1}.secureBoot", "needs firmware: uefi"),
        (f"{g}|firmware", "efi", f"hosts.h1.guests.{g1}.firmware", "not one of bios, uefi"),
        (f"{g}|description", "bell\x07", f"hosts.h1.guests.{g1}.description", "control characters"),
        (f"{g}|memroy", 4, "memroy", "Did you mean `memory`"),
        (f"{h}|virtType", "xen", "virtType", "not one of"),
        ("images|payload|path", "/nonexistent/x.qcow2", "images.payload.path", "does not exist"),
        ("images|payload|buildEnv", ["AWS_PROFILE"], "images.payload.buildEnv", "only used by `build`"),
        (f"{g}|disk", "thin", "disk", "not one of"),
        # cloud-init seeds, address waits, networks
        (f"{g}|cloudInit", {"userData": "#cloud-config\nusers: [a\n"}, "cloudInit.userData", "not valid YAML at line"),
        (f"{g}|cloudInit", {"userData": "hello"}, "cloudInit.userData", "must start with '#cloud-config'"),
        (f"{g}|cloudInit", {"userData": {"write_files": [{"path": "/x", "content": "a" * (100 << 10)}]}},
         "cloudInit", "KiB limit"),
        (f"{g}|cloudInit", {"sshAuthorizedKeys": ["ssh-ed25519"]}, "cloudInit.sshAuthorizedKeys[0]",
         "not an OpenSSH public key"),
        (f"{g}|waitForAddress", 60, "waitForAddress", "nothing can tell this guest's address"),
        (f"{h}|networks", {"n": {"address": "10.9.0.1/24", "dhcp": {"start": "10.8.0.2", "end": "10.8.0.9"}}},
         "networks.n.dhcp", "inside 10.9.0.0/24"),
    ]


def test_bad_input_fails_in_preview_and_touches_nothing(tmp_path, unique) -> None:
    g1, g2 = f"bi1-{unique}", f"bi2-{unique}"
    good = config({"h1": {g1: guest(g1)}, "h2": {g2: guest(g2)}})
    stack = Stack(str(tmp_path), f"bad{unique}", good)
    table = cases(g1, g2)
    assert len(table) >= 30
    before = host_state()
    failures = []
    for path, value, key, words in table:
        if value == "DUPLICATE":
            value = good["hosts"]["h1"]["guests"][g1]["mac"]
        stack.write_config(_set(good, path, value))
        res = stack.preview(check=False)
        text = res.stdout + res.stderr
        if res.returncode == 0 or key not in text or words not in text:
            failures.append(f"{path}={value!r}: rc={res.returncode}\n{text[-600:]}")
    assert not failures, "\n\n".join(failures)
    assert host_state() == before, "a failed preview changed a host"


def test_shrinking_disk_and_missing_nic_fail_before_changes(tmp_path, unique) -> None:
    g = f"sh-{unique}"
    cfg = config({"h1": {g: guest(g, diskSize=2)}})
    stack = Stack(str(tmp_path), f"shr{unique}", cfg)
    try:
        stack.up()
        size = lab.virsh("h1", "vol-info", "--pool", "guests", f"{g}.qcow2", "--bytes")
        cfg["hosts"]["h1"]["guests"][g]["diskSize"] = 1
        stack.write_config(cfg)
        res = stack.preview(check=False)
        assert res.returncode != 0 and "would shrink the existing disk" in res.stdout + res.stderr
        assert lab.virsh("h1", "vol-info", "--pool", "guests", f"{g}.qcow2", "--bytes") == size
        # a hostNic the host does not have: a clear error from the host check, nothing created
        g2 = f"nic-{unique}"
        bad = config({"h2": {g2: guest(g2)}})
        bad["hosts"]["h2"]["hostNic"] = "enp30s0"
        other = Stack(str(tmp_path / "nic"), f"nic{unique}", bad)
        before = host_state()
        res = other.up(check=False)
        assert res.returncode != 0 and "no interface 'enp30s0'" in res.stdout + res.stderr
        assert "hostNic" in res.stdout + res.stderr
        assert host_state() == before
        other.destroy(check=False)
    finally:
        stack.destroy(check=False)
        lab.virsh("h1", "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)
