"""What a guest or host answers is data: addresses only in canonical form, a neighbour table of any
shape read without a crash (issue 26, items 7 and 8)."""

from __future__ import annotations

import json

import pytest

from providers.model import addresses
from providers.remote.addresses import neighbour_table

pytestmark = pytest.mark.unit
MAC = "52:54:00:12:34:56"


def test_only_canonical_addresses_are_kept() -> None:
    answer = {"eth0": {"hwaddr": MAC, "addrs": [
        {"addr": "fe80::1%x -oProxyCommand=touch /tmp/p"}, {"addr": "2001:db8::1%eth0"}, {"addr": "10.0.0.5 x"},
        {"addr": "host.example"}, {"addr": "2001:0db8:0000::0002"}, {"addr": "192.168.1.7"}, {"addr": 7},
        {"addr": "127.0.0.1"}, {"addr": "fe80::2"}]},
        "bad": {"hwaddr": "52:54:00:12:34:56 -oX", "addrs": [{"addr": "10.0.0.9"}]}, "lo": "not a dict"}
    assert addresses.by_mac(answer) == {MAC: ["192.168.1.7", "2001:db8::2"]}


def test_a_neighbour_table_of_another_shape_is_read_without_a_crash() -> None:
    good = {"dst": "10.0.0.8", "lladdr": MAC, "state": ["REACHABLE"]}
    for out in ("", "not json", "{}", "[1, 2]", json.dumps([{"lladdr": 5}, {"state": "x", "lladdr": MAC}]),
                "[" * 100000, json.dumps([{"dst": ["x"], "lladdr": MAC, "state": [{"a": 1}]}])):
        assert not [a for found in addresses.by_mac(neighbour_table(out)).values() for a in found], out[:80]
    table = neighbour_table(json.dumps([good, {"dst": "10.0.0.9", "lladdr": MAC, "state": ["FAILED"]}]))
    assert addresses.by_mac(table) == {MAC: ["10.0.0.8"]}


def test_a_base_name_from_a_host_never_becomes_a_path_outside_the_cache(tmp_path, monkeypatch) -> None:
    from providers.local import delta
    monkeypatch.setattr(delta, "CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "secret.idx").write_bytes(b"not an index")
    (tmp_path / "secret.map").write_bytes(b"not a map")
    for name in ("../secret", "../" * 8 + "etc/passwd", "", "A" * 64, "0" * 63 + "/"):
        assert delta.load_index(name) is None and delta.load(name) is None, name
