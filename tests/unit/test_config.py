"""The stack config parser: a valid fleet, and a table of bad inputs that must each name the key."""

from __future__ import annotations

import os

import pytest

from components.config import parse, unknown_top_keys
from providers.local.image import load
from providers.model.errors import ConfigError
from providers.model.host import host_connections
from tests.configedit import DELETE, with_value

pytestmark = pytest.mark.unit
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKMXPZbrtpy4ToAGYPKvES0bow1xtrIrOLpw5kCD8SGy"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("img") / "base.raw"
    with open(path, "wb") as f:
        f.write(b"virtfleet")
        f.truncate(64 << 20)
    return str(path)


def good(image: str) -> dict:
    return {
        "images": {"baseline": {"path": image}},
        "hosts": {
            "athens": {"address": "192.0.2.10", "user": "root", "port": 22, "hostKey": KEY, "hostNic": "enp30s0",
                       "pool": {"name": "guests", "type": "dir", "path": "/var/lib/virtfleet/guests"},
                       "guests": {"some-athens-guest": {"memory": 4, "vcpus": 2, "diskSize": 50,
                                                        "mac": "D2:91:69:C0:14:9A", "ip": "192.0.2.20",
                                                        "image": "baseline"}}},
            "rome": {"address": "rome.example.org", "hostNic": "eno1",
                     "guests": {"r1": {"memory": "512MiB", "mac": "52:54:00:00:00:02", "image": "baseline",
                                       "disk": "copy", "running": False, "autostart": "false"}}},
        },
    }


def parse_with(image: str, raw: dict):
    return parse(raw, lambda key, path, build, env: load(key, path, build, os.getcwd(), env), "virtfleet", "test")


def test_good_fleet(image: str) -> None:
    fleet = parse_with(image, good(image))
    athens = fleet.hosts[0]
    g = athens.guests[0]
    assert athens.spec.conn.host_key == KEY
    assert g.spec.memory == 4 << 30 and g.spec.vcpus == 2 and g.disk_size == 50 << 30
    assert g.interfaces[0].mac == "d2:91:69:c0:14:9a" and g.interfaces[0].source == "enp30s0"
    assert g.disk_mode == "overlay" and g.spec.running and g.spec.autostart and not g.delete_disk
    r1 = fleet.hosts[1].guests[0]
    assert r1.spec.memory == 512 << 20 and r1.disk_mode == "copy"
    assert not r1.spec.running and not r1.spec.autostart
    assert r1.disk_size == 1 << 30  # default: the image's size rounded up to whole GiB


def _set(raw: dict, path: str, value: object) -> dict:
    return with_value(raw, path, value)


G = "hosts.athens.guests.some-athens-guest"
H = "hosts.athens"
BAD = [
    # (path to change, new value, key named in the error, words in the error)
    (f"{G}.mac", "D2:91:69:C0:14", f"{G}.mac", "not a MAC"),
    (f"{G}.mac", "zz:91:69:C0:14:9A", f"{G}.mac", "not a MAC"),
    (f"{G}.mac", "01:00:5E:00:00:01", f"{G}.mac", "multicast"),
    (f"{G}.mac", "00:00:00:00:00:00", f"{G}.mac", "not a usable MAC"),
    ("hosts.rome.guests.r1.mac", "d2:91:69:c0:14:9a", "hosts.rome.guests.r1.mac", "also used"),
    (f"{G}.name", "a/b", f"{G}.name", "not allowed"),
    (f"{G}.name", "a..b", f"{G}.name", "not allowed"),
    (f"{G}.name", "has space", f"{G}.name", "not allowed"),
    (f"{G}.name", "it's", f"{G}.name", "not allowed"),
    (f"{G}.name", 'say"hi"', f"{G}.name", "not allowed"),
    (f"{G}.name", "a<b", f"{G}.name", "not allowed"),
    (f"{G}.name", "a>b", f"{G}.name", "not allowed"),
    (f"{G}.name", "a&b", f"{G}.name", "not allowed"),
    (f"{G}.name", "x" * 65, f"{G}.name", "limit is 64"),
    (f"{G}.memory", "four", f"{G}.memory", "not a size"),
    (f"{G}.memory", 0, f"{G}.memory", "too small"),
    (f"{G}.memory", -4, f"{G}.memory", "negative"),
    (f"{G}.memory", "900TiB", f"{G}.memory", "absurdly large"),
    (f"{G}.vcpus", 0, f"{G}.vcpus", "out of range"),
    (f"{G}.vcpus", "two", f"{G}.vcpus", "whole number"),
    (f"{G}.diskSize", "10MiB", f"{G}.diskSize", "smaller than image"),
    (f"{G}.image", "nosuch", f"{G}.image", "unknown image"),
    (f"{H}.port", 70000, f"{H}.port", "out of range"),
    (f"{H}.port", 0, f"{H}.port", "out of range"),
    (f"{H}.hostKey", "ssh-ed25519 not-base64!", f"{H}.hostKey", "does not decode"),
    (f"{H}.hostKey", "AAAAC3NzaC1lZDI1NTE5", f"{H}.hostKey", "not an OpenSSH public key"),
    (f"{H}.hostKey", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIKMXPZbrtpy4ToAGYPKvES0bow1xtrIrOLpw5kCD8SGy",
     f"{H}.hostKey", "holds a ssh-ed25519 key"),
    (f"{H}.address", DELETE, f"{H}.address", "missing"),
    (f"{H}.address", "root@192.0.2.10", f"{H}.address", "neither an IP"),
    (f"{H}.pool.path", "var/lib/guests", f"{H}.pool.path", "not an absolute path"),
    (f"{H}.pool.path", "/var/../etc", f"{H}.pool.path", "'..'"),
    (f"{H}.pool.type", "zfs", f"{H}.pool.type", "not one of"),
    (f"{G}.running", "yes", f"{G}.running", "not a boolean"),
    (f"{G}.autostart", 1, f"{G}.autostart", "not a boolean"),
    (f"{G}.deleteDiskOnDestroy", "maybe", f"{G}.deleteDiskOnDestroy", "not a boolean"),
    (f"{G}.disk", "thin", f"{G}.disk", "not one of"),
    (f"{H}.virtType", "xen", f"{H}.virtType", "not one of"),
    (f"{H}.hostNic", "eth 0", f"{H}.hostNic", "not a network interface"),
    (f"{G}.shutdownTimeout", -1, f"{G}.shutdownTimeout", "out of range"),
    (f"{G}.cpuPriority", "low", f"{G}.cpuPriority", "not one of"),
    ("images.baseline.path", "/nonexistent/image.qcow2", "images.baseline.path", "does not exist"),
    # a trailing newline must not slip past a pattern (it once let a duplicate or an all-zero MAC through)
    (f"{G}.mac", "00:00:00:00:00:00\n", f"{G}.mac", "not a MAC"),
    ("hosts.rome.guests.r1.mac", "d2:91:69:c0:14:9a\n", "hosts.rome.guests.r1.mac", "not a MAC"),
    (f"{G}.name", "vm1\n", f"{G}.name", "not allowed"),
    (f"{H}.hostNic", "eth0\n", f"{H}.hostNic", "not a network interface"),
    (f"{H}.address", "athens.example.org\n", f"{H}.address", "neither an IP"),
    (f"{G}.memory", "4GiB\nx", f"{G}.memory", "not a size"),
    (f"{G}.memory", float("inf"), f"{G}.memory", "not a finite number"),
    (f"{G}.memory", float("nan"), f"{G}.memory", "not a finite number"),
    (f"{G}.ip", "192.0.2.300", f"{G}.ip", "not an IP address"),
    (f"{G}.ip", ["192.0.2.20"], f"{G}.ip", "not an IP address"),
    (f"{G}.cmdline", "console=ttyS0\ninit=/bin/sh", f"{G}.cmdline", "control characters"),
    (f"{G}.cmdline", "x" * 5000, f"{G}.cmdline", "limit is 4096"),
    (f"{G}.cmdline", 42, f"{G}.cmdline", "must be a string"),
    (f"{H}.pool.path", "/", f"{H}.pool.path", "system directory"),
    (f"{H}.pool.path", "/etc", f"{H}.pool.path", "system directory"),
    (f"{H}.pool.path", "/var/lib/libvirt/", f"{H}.pool.path", "system directory"),
    ("hosts.athens.guests.some-athens-guest.memroy", 4, f"{G}.memroy", "Did you mean `memory`"),
    (f"{H}.adress", "x", f"{H}.adress", "Did you mean `address`"),
    ("hosts.rome.guests.r1.name", "some-athens-guest", None, None),  # same name, other host: fine
    # cloud-init, addresses, networks
    (f"{G}.cloudInit", "x", f"{G}.cloudInit", "must be a mapping"),
    (f"{G}.cloudInit", {"userData": "#cloud-config\nusers: [a\n"}, f"{G}.cloudInit.userData",
     "not valid YAML at line"),
    (f"{G}.cloudInit", {"userData": "#cloud-config\n- a list\n"}, f"{G}.cloudInit.userData", "must be a YAML mapping"),
    (f"{G}.cloudInit", {"userData": "hello"}, f"{G}.cloudInit.userData", "must start with '#cloud-config'"),
    (f"{G}.cloudInit", {"userData": 42}, f"{G}.cloudInit.userData", "must be a mapping or a YAML string"),
    (f"{G}.cloudInit", {"userData": "#!/bin/sh\necho hi", "sshAuthorizedKeys": [KEY]},
     f"{G}.cloudInit.sshAuthorizedKeys", "can only be merged"),
    (f"{G}.cloudInit", {"sshAuthorizedKeys": ["not a key"]}, f"{G}.cloudInit.sshAuthorizedKeys[0]",
     "not an OpenSSH public key"),
    (f"{G}.cloudInit", {"sshAuthorizedKeys": KEY}, f"{G}.cloudInit.sshAuthorizedKeys", "must be a list"),
    (f"{G}.cloudInit", {"userData": {"write_files": [{"path": "/x", "content": "a" * (100 << 10)}]}},
     f"{G}.cloudInit", "KiB limit"),
    (f"{G}.cloudInit", {"hostname": "bad_name"}, f"{G}.cloudInit.hostname", "not a host name"),
    (f"{G}.cloudInit", {"networkConfig": {"ethernets": {}}}, f"{G}.cloudInit.networkConfig", "version: 2"),
    (f"{G}.cloudInit", {"networkConfig": "version: [2"}, f"{G}.cloudInit.networkConfig", "not valid YAML"),
    (f"{G}.cloudInit", {"userdata": "x"}, f"{G}.cloudInit.userdata", "unknown key"),
    (f"{G}.waitForAddress", 60, f"{G}.waitForAddress", "nothing can tell"),
    (f"{G}.waitForAddress", -1, f"{G}.waitForAddress", "out of range"),
    (f"{G}.agent", "yes", f"{G}.agent", "not a boolean"),
    (f"{H}.networks", {"lab": {"address": "10.1.0.1"}}, f"{H}.networks.lab.address", "not an address with a prefix"),
    (f"{H}.networks", {"lab": {"address": "10.1.0.0/24"}}, f"{H}.networks.lab.address", "network/broadcast"),
    (f"{H}.networks", {"lab": {"address": "10.1.0.1/24", "dhcp": {"start": "10.2.0.1", "end": "10.2.0.9"}}},
     f"{H}.networks.lab.dhcp", "inside 10.1.0.0/24"),
    (f"{H}.networks", {"lab": {"address": "10.1.0.1/24", "dhcp": {"start": "10.1.0.1", "end": "10.1.0.9"}}},
     f"{H}.networks.lab.dhcp", "host's own address"),
    (f"{H}.networks", {"lab": {"address": "10.1.0.1/24", "dhcp": "yes"}}, f"{H}.networks.lab.dhcp",
     "not a DHCP range"),
    (f"{H}.networks", {"a": {"address": "10.1.0.1/24"}, "b": {"address": "10.1.0.129/25"}},
     f"{H}.networks.b.address", "overlaps network a"),
    (f"{H}.networks", {"a": {"address": "10.1.0.1/24", "bridge": "br9"}, "b": {"address": "10.2.0.1/24",
                                                                           "bridge": "br9"}},
     f"{H}.networks.b.bridge", "also the bridge"),
    (f"{H}.networks", {"lab": {"mode": "bridge"}}, f"{H}.networks.lab.bridge", "is missing"),
    (f"{H}.networks", {"lab": {"mode": "bridge", "bridge": "br0", "dhcp": True}}, f"{H}.networks.lab.dhcp",
     "no address or DHCP"),
    (f"{H}.networks", {"lab": {"mode": "vxlan", "address": "10.1.0.1/24"}}, f"{H}.networks.lab.mode", "not one of"),
    (f"{H}.networks", {"lab": {"adress": "10.1.0.1/24"}}, f"{H}.networks.lab.adress", "Did you mean `address`"),
    (f"{H}.networks", {"a/b": {"address": "10.1.0.1/24"}}, f"{H}.networks", "not allowed"),
]


@pytest.mark.parametrize("path,value,key,words", BAD, ids=[f"{i:02d}-{b[0].split('.')[-1]}" for i, b in enumerate(BAD)])
def test_bad_input_names_key(image: str, path: str, value: object, key: str | None, words: str | None) -> None:
    raw = _set(good(image), path, value)
    if key is None:
        parse_with(image, raw)
        return
    with pytest.raises(ConfigError) as err:
        parse_with(image, raw)
    assert err.value.key == key, str(err.value)
    assert words in str(err.value)
    assert str(err.value).startswith(f"virtfleet:{key}: ")


def test_duplicate_guest_name_on_one_host(image: str) -> None:
    raw = good(image)
    raw["hosts"]["athens"]["guests"]["second"] = {"name": "some-athens-guest", "memory": 1,
                                                  "mac": "52:54:00:00:00:09", "image": "baseline"}
    with pytest.raises(ConfigError, match="used twice on host athens"):
        parse_with(image, raw)


def test_duplicate_mac_within_host(image: str) -> None:
    raw = good(image)
    raw["hosts"]["athens"]["guests"]["second"] = {"memory": 1, "mac": "d2:91:69:c0:14:9a", "image": "baseline"}
    with pytest.raises(ConfigError, match="also used"):
        parse_with(image, raw)


def test_unknown_host_reference_and_top_key() -> None:
    with pytest.raises(ConfigError, match="Did you mean `virtfleet:hosts`"):
        unknown_top_keys(["images", "host"])
    unknown_top_keys(["images", "hosts", "sshPrivateKey"])


def test_no_hosts(image: str) -> None:
    with pytest.raises(ConfigError, match="no hosts"):
        parse_with(image, {"images": {}, "hosts": {}})


def test_build_command_runs_first(tmp_path) -> None:
    target = tmp_path / "built.raw"
    raw = {"images": {"b": {"path": str(target), "build": f"truncate -s 2M {target}"}},
           "hosts": {"a": {"address": "192.0.2.1", "hostNic": "eth0",
                           "guests": {"g": {"memory": 1, "mac": "52:54:00:00:00:01", "image": "b"}}}}}
    fleet = parse(raw, lambda key, path, build, env: load(key, path, build, str(tmp_path), env), "virtfleet", "test")
    assert fleet.images["b"].size == 2 << 20 and fleet.images["b"].format == "raw"
    raw["images"]["b"]["build"] = "exit 3"
    with pytest.raises(ConfigError, match="images.b.build: build command failed"):
        parse(raw, lambda key, path, build, env: load(key, path, build, str(tmp_path), env), "virtfleet", "test")


def test_lvm_pool_needs_copy_disks(image: str) -> None:
    raw = _set(good(image), f"{H}.pool", {"name": "guests", "type": "logical", "vg": "guests"})
    with pytest.raises(ConfigError) as err:
        parse_with(image, raw)
    assert err.value.key == f"{G}.disk" and "disk: copy" in str(err.value)
    fleet = parse_with(image, _set(raw, f"{G}.disk", "copy"))
    assert fleet.hosts[0].spec.pool.path == "/dev/guests"


def test_example_stack_parses_once_placeholders_are_replaced(image: str) -> None:
    import yaml

    from tests.lab import ROOT
    with open(os.path.join(ROOT, "stacks", "Pulumi.example.yaml")) as f:
        cfg = yaml.safe_load(f)["config"]
    raw = {"images": cfg["virtfleet:images"], "hosts": cfg["virtfleet:hosts"]}
    raw["images"]["baseline"] = {"path": image}
    with pytest.raises(ConfigError, match="hostKey"):  # the placeholder itself is refused, with the fix
        parse_with(image, raw)
    for h in raw["hosts"].values():
        h["hostKey"] = KEY
    fleet = parse_with(image, raw)
    g = fleet.hosts[0].guests[0]
    assert (g.name, g.spec.memory, g.disk_size, g.interfaces[0].mac, g.interfaces[0].source) == \
        ("some-athens-guest", 4 << 30, 50 << 30, "d2:91:69:c0:14:9a", "enp30s0")


def test_host_connections_for_early_ssh_are_the_parsed_ones_and_skip_bad_hosts(image: str) -> None:
    raw = good(image)
    parsed = [h.spec.conn for h in parse_with(image, raw).hosts]
    assert host_connections(raw["hosts"]) == parsed
    raw["hosts"]["bad"] = {"address": "root@nowhere"}  # left to the full parse to report
    raw["hosts"]["worse"] = "not a mapping"
    assert host_connections(raw["hosts"]) == parsed
    assert host_connections(None) == [] == host_connections("x")


def test_host_and_image_names_that_join_into_one_resource_name_are_refused(image: str) -> None:
    raw = good(image)
    raw["images"]["b-c"] = {"path": image}
    for host, addr, guest, mac, img in (("a-b", "192.0.2.30", "g1", "52:54:00:00:00:31", "c"),
                                        ("a", "192.0.2.31", "g2", "52:54:00:00:00:32", "b-c")):
        one = {"mac": mac, "image": img, "memory": 1}
        raw["hosts"][host] = {"address": addr, "hostNic": "eth0", "guests": {guest: one}}
    raw["images"]["c"] = {"path": image}
    with pytest.raises(ConfigError) as err:
        parse_with(image, raw)
    assert err.value.key in ("hosts.a", "hosts.a-b") and "'a-b-c'" in str(err.value)


def test_an_ipv6_host_is_bracketed_in_its_uri(image: str) -> None:
    raw = with_value(good(image), "hosts.athens.address", "2001:db8::10")
    conn = parse_with(image, raw).hosts[0].spec.conn
    assert conn.uri == "qemu+ssh://root@[2001:db8::10]/system"


def test_a_cloud_guest_on_a_network(image: str) -> None:
    raw = with_value(good(image), f"{H}.networks", {"lab": {"address": "192.168.150.1/24", "dhcp": True}})
    raw = with_value(raw, G, {"memory": 1, "image": "baseline", "agent": True, "waitForAddress": 120,
                              "interfaces": [{"type": "network", "source": "lab", "mac": "52:54:00:00:00:07"}],
                              "cloudInit": {"sshAuthorizedKeys": [KEY], "userData": {"packages": ["htop"]}}})
    host = parse_with(image, raw).hosts[0]
    (net,) = host.networks
    assert (net.name, net.mode, net.bridge, net.address, net.dhcp.start, net.dhcp.end) == \
        ("lab", "nat", "vf-lab", "192.168.150.1/24", "192.168.150.128", "192.168.150.254")
    g = host.guests[0]
    assert g.spec.agent and g.spec.wait_for_address == 120 and g.seed is not None
    assert "ssh_authorized_keys:\n- " + KEY in g.seed.user_data and "- htop" in g.seed.user_data
    assert "local-hostname: some-athens-guest" in g.seed.meta_data
    same = parse_with(image, raw).hosts[0].guests[0].seed
    changed = parse_with(image, with_value(raw, f"{G}.cloudInit.userData", {"packages": ["vim"]})).hosts[0].guests[0]
    assert same == g.seed and same.instance_id == g.seed.instance_id
    assert changed.seed is not None and changed.seed.instance_id != g.seed.instance_id
    # the lease source alone is enough to wait for an address
    assert parse_with(image, with_value(raw, f"{G}.agent", False)).hosts[0].guests[0].spec.wait_for_address == 120


@pytest.mark.parametrize(("build_env", "key", "message"), [
    ("AWS_PROFILE", "images.b.buildEnv", "must be a list"),
    (["AWS PROFILE"], "images.b.buildEnv[0]", "not an environment variable name"),
    (["AWS_PROFILE", 3], "images.b.buildEnv[1]", "not an environment variable name"),
    (["PULUMI_CONFIG_PASSPHRASE"], "images.b.buildEnv[0]", "never given to a build"),
    (["pulumi_config"], "images.b.buildEnv[0]", "never given to a build"),
])
def test_bad_build_env_is_refused_before_the_build_runs(tmp_path, build_env, key, message) -> None:
    marker = tmp_path / "ran"
    raw = {"images": {"b": {"path": str(tmp_path / "x.raw"), "build": f"touch {marker}", "buildEnv": build_env}},
           "hosts": {"a": {"address": "192.0.2.1", "hostNic": "eth0",
                           "guests": {"g": {"memory": 1, "mac": "52:54:00:00:00:01", "image": "b"}}}}}
    with pytest.raises(ConfigError) as err:
        parse(raw, lambda key, path, build, env: load(key, path, build, str(tmp_path), env), "virtfleet", "test")
    assert err.value.key == key and message in str(err.value)
    assert not marker.exists()


def test_build_env_without_build_is_refused(image: str) -> None:
    raw = good(image)
    raw["images"] = {k: {**v, "buildEnv": ["AWS_PROFILE"]} for k, v in raw["images"].items()}
    with pytest.raises(ConfigError) as err:
        parse_with(image, raw)
    assert err.value.key.endswith(".buildEnv") and "only used by `build`" in str(err.value)
