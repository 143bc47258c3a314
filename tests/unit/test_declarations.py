"""Every resource's spec is declared one field at a time (model.fields): properties, change tables, config
keys and device ownership follow from the declarations, and a half-declared field is refused."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from components import config
from providers.base_image import BaseImageProvider
from providers.guest import GuestProvider
from providers.host import HostProvider
from providers.model import changes, fields
from providers.model.errors import ConfigError
from providers.model.guest import GuestSpec, InterfaceSpec
from providers.model.host import Connection, HostSpec, PoolSpec
from providers.model.network import DhcpRange, NetworkSpec
from providers.model.owner import Owner
from providers.model.storage import BaseImageSpec, Takeover, VolumeSpec, base_digest, base_volume_name
from providers.network import NetworkProvider
from providers.volume import VolumeProvider
from providers.xml import domain as domain_xml
from providers.xml.util import part
from tests.unit.test_offline_driver import GUESTS

pytestmark = pytest.mark.unit

CONN = Connection("athens", "192.0.2.10", 2222, "ops", "", "/keys/athens")
OWNER = Owner("virtfleet", "prod", "web")
SPECS: list[Any] = [
    CONN,
    PoolSpec(),
    PoolSpec("fast", "logical", "/dev/fast", "fast"),
    HostSpec(CONN, PoolSpec(), "eth0", "qemu"),
    NetworkSpec(CONN, "lab", "nat", "vf-lab", "192.168.150.1/24", DhcpRange("192.168.150.128", "192.168.150.254")),
    NetworkSpec(CONN, "r", "route", "vf-r", "10.9.0.1/16", None, False),
    NetworkSpec(CONN, "lan", "bridge", "br0"),
    VolumeSpec(CONN, "guests", "web.qcow2", 1 << 30, "overlay", base_volume_name("a" * 64, "raw"), "raw"),
    VolumeSpec(CONN, "guests", "db", 8 << 30, "copy", base_volume_name("b" * 64, "qcow2"), "qcow2", True,
               Takeover("db", OWNER), OWNER),
    BaseImageSpec(CONN, "guests", "debian", "/images/debian.qcow2", "c" * 64, 2 << 30, "qcow2", 300 << 20),
    *GUESTS.values(),
]
PROVIDERS = [(HostProvider, HostSpec), (NetworkProvider, NetworkSpec), (VolumeProvider, VolumeSpec),
             (BaseImageProvider, BaseImageSpec), (GuestProvider, GuestSpec)]


@pytest.mark.parametrize("spec_type", sorted({type(s) for s in SPECS}, key=lambda t: t.__name__))
def test_every_field_of_every_spec_is_declared_once_with_a_unique_key(spec_type: type) -> None:
    declared = fields.metas(spec_type)
    assert [n for n, _ in declared] == [f.name for f in dataclasses.fields(spec_type)]
    keys = [m.key for _, m in declared]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_properties_round_trip(spec: Any) -> None:
    assert type(spec).from_props(spec.to_props()) == spec


@pytest.mark.parametrize("provider, spec_type", PROVIDERS, ids=lambda x: getattr(x, "__name__", ""))
def test_each_resources_change_table_is_its_declarations(provider: Any, spec_type: type) -> None:
    table = provider.table
    assert provider.spec_type is spec_type
    for _, m in fields.metas(spec_type):
        assert table[m.key] == m.change
    extra = {"cloudInit", "xmlDrift"} if spec_type is GuestSpec else set()
    assert set(table) - {m.key for _, m in fields.metas(spec_type)} == extra


def test_config_keys_are_the_declared_ones() -> None:
    assert config.HOST_KEYS == {"address", "port", "user", "hostKey", "sshKeyFile", "hostNic", "virtType",
                                "pool", "networks", "guests"}
    assert config.NETWORK_KEYS == {"mode", "bridge", "address", "dhcp", "autostart"}
    assert config.POOL_KEYS == {"name", "type", "path", "vg"}


def test_a_host_config_key_is_checked_by_its_declaration_and_named_in_full() -> None:
    with pytest.raises(ConfigError) as err:
        config._host("athens", {"address": "192.0.2.10", "virtType": "xen"}, {}, "virtfleet", "test")
    assert err.value.key == "hosts.athens.virtType" and "kvm, qemu" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config._host("athens", {"address": "192.0.2.10", "port": 70000}, {}, "virtfleet", "test")
    assert err.value.key == "hosts.athens.port"


def test_the_network_dhcp_class_follows_the_values() -> None:
    a, b = {"start": "10.0.0.10", "end": "10.0.0.20"}, {"start": "10.0.0.30", "end": "10.0.0.40"}
    table = changes.NETWORK_TABLE
    assert table.kind("dhcp", a, b) == "inplace"
    assert table.kind("dhcp", a, None) == table.kind("dhcp", None, b) == "restart"
    assert [table[k] for k in ("mode", "bridge", "address")] == ["restart"] * 3
    old = NetworkSpec.from_props({"name": "lab", "address": "10.0.0.1/24", "dhcp": a, "connection": CONN.to_props()})
    news = {**old.to_props(), "dhcp": b}
    assert changes.plan(table, old.to_props(), news).restart == []
    assert changes.plan(table, old.to_props(), {**news, "mode": "route"}).restart == ["mode"]


def test_the_preview_names_what_restarts_a_network_and_only_then() -> None:
    old = NetworkSpec(CONN, "lab", "nat", "vf-lab", "10.0.0.1/24").to_props()
    checked = NetworkProvider().check(old, {**old, "address": "10.0.1.1/24"}).inputs
    assert checked["restartOnUpdate"] == "address"
    assert "restartOnUpdate" not in NetworkProvider().check(old, {**old, "autostart": False}).inputs
    assert "restartOnUpdate" not in NetworkProvider().check({}, old).inputs  # a create restarts nothing


def test_a_device_field_must_say_which_devices_are_its_own() -> None:
    with pytest.raises(ValueError, match="owns"):
        fields.field_of(key="sound", change="restart", check=lambda k, x: x,
                        xml=fields.Xml(lambda r: None, lambda r, s: None, "devices"))


def _frame() -> ET.Element:
    root = ET.Element("domain")
    ET.SubElement(ET.SubElement(root, "os"), "type").text = "hvm"
    part(root, "devices")
    return root


@pytest.mark.parametrize("name", sorted(GUESTS))
def test_every_device_a_field_emits_is_its_own_and_no_other_fields(name: str) -> None:
    spec = GUESTS[name]
    macs = {i.mac for i in spec.interfaces}
    for _, m in fields.metas(GuestSpec):
        if m.xml is None or m.xml.part != "devices" or m.xml.emit is None:
            continue
        root = _frame()
        m.xml.emit(root, spec)
        for dev in root.findall("devices/*"):
            if dev.tag == "controller":  # the virtio-SCSI bus Secure Boot puts the seed on: libvirt's kind
                continue
            owners = [k for _, o in fields.metas(GuestSpec)
                      if o.xml is not None and o.xml.owns is not None and o.xml.owns(dev, macs) and (k := o.key)]
            assert owners == [m.key], f"{dev.tag} emitted by {m.key} is owned by {owners}"


@pytest.mark.parametrize("name", sorted(GUESTS))
def test_every_device_of_a_domain_virtfleet_defines_is_owned(name: str) -> None:
    spec = GUESTS[name]
    root = ET.fromstring(domain_xml.domain(spec))
    macs = {i.mac for i in spec.interfaces}
    for dev in root.findall("devices/*"):
        assert dev.tag == "controller" or domain_xml.owns_device(dev, macs), dev.tag


def test_a_device_added_outside_is_nobodys() -> None:
    macs = {"52:54:00:00:00:01"}
    for added in ("<disk type='file' device='disk'><source file='/x/data.qcow2'/><target dev='vdb'/></disk>",
                  "<interface type='network'><mac address='52:54:00:99:99:99'/></interface>",
                  "<hostdev mode='subsystem' type='usb'/>", "<audio id='2' type='pulseaudio'/>",
                  "<channel type='unix'><target type='virtio' name='org.example.other'/></channel>"):
        assert not domain_xml.owns_device(ET.fromstring(added), macs), added


def test_props_of_takes_attribute_names_and_refuses_what_the_spec_does_not_declare() -> None:
    props = fields.props_of(BaseImageSpec, conn=CONN, pool="guests", image="debian", source="/i.qcow2",
                            digest="c" * 64, size=1, format="qcow2")
    assert BaseImageSpec.from_props(props).conn == CONN
    with pytest.raises(TypeError, match="no field colour"):
        fields.props_of(BaseImageSpec, colour="red", **{k: None for k in ("conn", "pool", "image", "source",
                                                                           "digest", "size", "format")})
    with pytest.raises(TypeError, match="needs digest"):
        fields.props_of(BaseImageSpec, conn=CONN, pool="guests", image="d", source="", size=1, format="raw")


def test_a_base_volume_name_is_made_and_read_in_one_place() -> None:
    name = base_volume_name("d" * 64, "raw")
    assert base_digest(name, "raw") == "d" * 64
    assert base_digest(name, "qcow2") == "" and base_digest("web.qcow2", "qcow2") == ""


def test_props_of_dumps_typed_attributes() -> None:
    iface = InterfaceSpec("network", "lab", "52:54:00:00:00:09")
    props = fields.props_of(GuestSpec, memory=1 << 30, conn=CONN, name="web", owner=OWNER,
                            disk_path="/var/lib/virtfleet/guests/web.qcow2", interfaces=(iface,))
    assert GuestSpec.from_props(props).interfaces == (iface,)
