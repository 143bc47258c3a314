"""The guest field table: every consumer (config, properties, spec, diff, XML both ways) follows from it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from components.config import GUEST_KEYS
from providers.model import changes, fields
from providers.model.errors import ConfigError
from providers.model.guest import GuestSpec, InterfaceSpec
from providers.model.host import Connection
from providers.model.owner import Owner
from providers.xml import domain as domain_xml

pytestmark = pytest.mark.unit

CONN = Connection("h1", "10.0.0.1")


def spec(**changes: Any) -> GuestSpec:
    base = GuestSpec(conn=CONN, name="web", owner=Owner("p", "s", "web"), memory=512 << 20,
                     disk_path="/var/lib/virtfleet/guests/web.qcow2",
                     interfaces=(InterfaceSpec("network", "lab", "52:54:00:00:00:01"),))
    return dataclasses.replace(base, **changes)


SPECS = [spec(), spec(description="web front end\nowner: ops", vcpus=4, virt_type="qemu", cpu_priority="idle",
                      graphics="none", agent=True),
         spec(kernel="/boot/vmlinuz", initrd="/boot/initrd", cmdline="console=ttyS0", running=False,
              autostart=False, shutdown_timeout=5, ip="192.0.2.4", wait_for_address=30),
         spec(firmware="uefi", secure_boot=True, tpm=True, memory=1 << 30)]


def test_every_spec_field_is_declared_once_with_a_unique_key() -> None:
    declared = fields.metas(GuestSpec)
    assert [n for n, _ in declared] == [f.name for f in dataclasses.fields(GuestSpec)]
    keys = [m.key for _, m in declared]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("s", SPECS)
def test_properties_round_trip(s: GuestSpec) -> None:
    assert GuestSpec.from_props(s.to_props()) == s


def test_a_key_missing_from_older_state_takes_the_default_and_is_no_change() -> None:
    props = spec().to_props()
    old = {k: x for k, x in props.items() if k not in ("cpuPriority", "agent", "graphics", "shutdownTimeout")}
    assert GuestSpec.from_props(old) == spec()
    assert not changes.plan(changes.GUEST_TABLE, old, props).changed


def test_the_diff_table_is_the_declarations() -> None:
    for _, m in fields.metas(GuestSpec):
        assert changes.GUEST_TABLE[m.key] == m.change
    assert set(changes.GUEST_TABLE) - {m.key for _, m in fields.metas(GuestSpec)} == {"cloudInit", "xmlDrift"}


@pytest.mark.parametrize("s", SPECS)
def test_what_is_written_into_the_xml_reads_back_as_the_property(s: GuestSpec) -> None:
    seen = domain_xml.observe_domain(domain_xml.domain(s, "8a3e5a8e-2f4b-4c55-9d2c-111111111111"))
    props = s.to_props()
    mapped = [m for _, m in fields.metas(GuestSpec) if m.xml is not None and not m.xml.seen_as]
    assert len(mapped) >= 12
    for m in mapped:
        assert seen[m.key] == props[m.key], m.key


def test_config_keys_are_the_declared_ones_plus_the_program_s() -> None:
    for _, m in fields.metas(GuestSpec):
        assert (m.key in GUEST_KEYS) == m.in_config or m.key in ("name", "interfaces"), m.key


@pytest.mark.parametrize("key", sorted(fields.config_keys(GuestSpec)))
def test_every_config_key_refuses_a_wrong_type_naming_itself(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        fields.from_config(GuestSpec, "hosts.h.guests.g", {"memory": 1, key: {"not": "a value"}})
    assert err.value.key == f"hosts.h.guests.g.{key}"


def test_config_values_are_properties_with_defaults_filled_in() -> None:
    values = fields.from_config(GuestSpec, "g", {"memory": "512MiB", "waitForAddress": True})
    assert values["memory"] == 512 << 20 and values["waitForAddress"] == 300
    assert values["running"] is True and values["cpuPriority"] == "normal"
    assert set(values) == fields.config_keys(GuestSpec)


def test_a_declaration_needs_a_known_change_class_and_one_way_to_read_it() -> None:
    with pytest.raises(ValueError, match="change"):
        fields.field_of(key="x", change="sometimes", check=lambda k, x: x)
    with pytest.raises(ValueError, match="exactly one"):
        fields.field_of(key="x", change="inplace")


@pytest.mark.parametrize("bad,why", [(7, "must be text"), ("x" * 1025, "the limit is 1024"),
                                     ("a\x1b[31m", "control characters")])
def test_a_description_is_printable_text(bad: object, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        fields.from_config(GuestSpec, "hosts.h.guests.g", {"memory": 1, "description": bad})
    assert err.value.key == "hosts.h.guests.g.description"


def test_secure_boot_and_tpm_need_uefi_in_the_properties_too() -> None:
    with pytest.raises(ConfigError) as err:
        GuestSpec.from_props({**spec().to_props(), "tpm": True})
    assert err.value.key == "tpm"
