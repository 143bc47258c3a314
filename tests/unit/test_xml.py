"""Golden XML per resource, each validated with virt-xml-validate; hostile names cannot inject XML.

Regenerate the golden files with VIRTFLEET_REGEN_GOLDEN=1 after an intended change, and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from providers.local import cloudinit
from providers.model.guest import GuestSpec, InterfaceSpec, SeedSpec
from providers.model.host import Connection, PoolSpec
from providers.model.network import DhcpRange, NetworkSpec
from providers.model.owner import Owner
from providers.xml import domain as domain_xml
from providers.xml import network as network_xml
from providers.xml import storage as storage_xml

pytestmark = pytest.mark.unit
GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden")
CONN = Connection(host="athens", address="192.0.2.10")
UUID = "6b9ff0a2-1c1b-4b2c-9f5f-2a2b2c2d2e2f"
SEED = cloudinit.render("k", {"hostname": "web-1"}, "some-athens-guest")


def article_guest(**changes: object) -> GuestSpec:
    spec = GuestSpec(conn=CONN, name="some-athens-guest", owner=Owner("virtfleet", "prod", "some-athens-guest"),
                     memory=4 << 30, vcpus=2, virt_type="kvm",
                     disk_path="/var/lib/virtfleet/guests/some-athens-guest.qcow2",
                     interfaces=(InterfaceSpec("direct", "enp30s0", "d2:91:69:c0:14:9a"),))
    return spec.replace(**changes)


CASES = {
    "domain-article.xml": ("domain", lambda: domain_xml.domain(article_guest(), UUID)),
    "domain-tcg-kernel-bridge.xml": ("domain", lambda: domain_xml.domain(article_guest(
        virt_type="qemu", graphics="none", kernel="/var/lib/virtfleet/boot/vmlinuz",
        initrd="/var/lib/virtfleet/boot/initrd.img", cmdline="console=ttyS0 root=/dev/vda", cpu_priority="idle",
        interfaces=(InterfaceSpec("bridge", "br0", "52:54:00:00:00:01"),
                    InterfaceSpec("network", "default", "52:54:00:00:00:02", "e1000"))), UUID)),
    "domain-cloud-guest.xml": ("domain", lambda: domain_xml.domain(article_guest(
        virt_type="qemu", graphics="none", agent=True,
        interfaces=(InterfaceSpec("network", "lab", "52:54:00:00:00:03"),),
        seed=SeedSpec("guests", "/var/lib/virtfleet/guests", SEED, "some-athens-guest")), UUID)),
    "network-nat.xml": ("network", lambda: network_xml.network(NetworkSpec(
        CONN, "lab", "nat", "vf-lab", "192.168.150.1/24", DhcpRange("192.168.150.128", "192.168.150.254")))),
    "network-route-nodhcp.xml": ("network", lambda: network_xml.network(NetworkSpec(CONN, "r", "route", "vf-r",
                                                                               "10.9.0.1/16"))),
    "network-bridge.xml": ("network", lambda: network_xml.network(NetworkSpec(CONN, "lan", "bridge", "br0"))),
    "pool-dir.xml": ("storagepool", lambda: storage_xml.pool(PoolSpec())),
    "pool-logical.xml": ("storagepool", lambda: storage_xml.pool(PoolSpec(name="guests", type="logical",
                                                                      path="/dev/guests", vg="guests"))),
    "volume-overlay.xml": ("storagevol", lambda: storage_xml.volume("g.qcow2", 50 << 30, "qcow2",
                                                                "/var/lib/virtfleet/guests/vfbase-ab.qcow2", "qcow2")),
    "volume-base.xml": ("storagevol", lambda: storage_xml.volume("vfbase-ab.raw", 1 << 30, "raw", mode="0444")),
}


def validate(xml: str, schema: str, tmp_path) -> None:
    path = tmp_path / "doc.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), schema], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_and_valid(name: str, tmp_path) -> None:
    schema, build = CASES[name]
    xml = build() + "\n"
    golden = os.path.join(GOLDEN, name)
    if os.environ.get("VIRTFLEET_REGEN_GOLDEN") or not os.path.exists(golden):
        with open(golden, "w") as f:
            f.write(xml)
    with open(golden) as f:
        assert xml == f.read(), f"{name} differs from its golden file (VIRTFLEET_REGEN_GOLDEN=1 to accept)"
    validate(xml, schema, tmp_path)


def test_article_domain_has_the_article_devices() -> None:
    root = ET.fromstring(domain_xml.domain(article_guest(), UUID))
    assert root.get("type") == "kvm" and root.findtext("uuid") == UUID
    assert root.find("memory").text == str(4 << 20) and root.findtext("vcpu") == "2"
    assert root.find("devices/disk/target").attrib == {"dev": "vda", "bus": "virtio"}
    assert root.find("devices/graphics").attrib["type"] == "spice"
    assert root.find("devices/graphics").attrib["autoport"] == "yes"
    assert root.find("devices/input").attrib == {"type": "keyboard", "bus": "usb"}
    iface = root.find("devices/interface")
    assert iface.get("type") == "direct"
    assert iface.find("source").attrib == {"dev": "enp30s0", "mode": "bridge"}
    assert iface.find("mac").get("address") == "d2:91:69:c0:14:9a" and iface.find("model").get("type") == "virtio"
    assert root.find("devices/serial").get("type") == "pty"
    owner = domain_xml.observe_domain(domain_xml.domain(article_guest(), UUID))["owner"]
    assert owner == {"project": "virtfleet", "stack": "prod", "resource": "some-athens-guest"}


@pytest.mark.parametrize("hostile", ["a'><b", "x</name><devices><disk/></devices><name>y", 'q"&<>'])
def test_hostile_values_cannot_inject_xml(hostile: str, tmp_path) -> None:
    spec = article_guest(name=hostile, cmdline=hostile, owner=Owner(hostile, hostile, hostile))
    xml = domain_xml.domain(spec, UUID)
    root = ET.fromstring(xml)
    assert root.findtext("name") == hostile
    assert len(root.findall("devices/disk")) == 1
    assert domain_xml.observe_domain(xml)["owner"] == {"project": hostile, "stack": hostile, "resource": hostile}
    pool = ET.fromstring(storage_xml.pool(PoolSpec(name=hostile, path=f"/x/{hostile}")))
    assert pool.findtext("name") == hostile and pool.findtext("target/path") == f"/x/{hostile}"


def test_observe_ignores_what_libvirt_adds() -> None:
    ours = domain_xml.domain(article_guest(), UUID)
    root = ET.fromstring(ours)
    dev = root.find("devices")
    for el in dev:  # libvirt adds addresses and aliases everywhere, a controller, a seclabel
        ET.SubElement(el, "address", type="pci", domain="0x0000", bus="0x00", slot="0x03", function="0x0")
        ET.SubElement(el, "alias", name="x")
    ET.SubElement(dev, "controller", type="usb", index="0")
    ET.SubElement(root, "seclabel", type="dynamic", model="dac")
    root.find("memory").set("unit", "KiB")
    ET.SubElement(root, "currentMemory", unit="KiB").text = str(4 << 20)
    assert domain_xml.observe_domain(ET.tostring(root, encoding="unicode")) == domain_xml.observe_domain(ours)


@pytest.mark.parametrize("priority", ["normal", "batch", "idle"])
def test_cpu_priority_round_trips(priority: str) -> None:
    xml = domain_xml.domain(article_guest(cpu_priority=priority), UUID)
    assert domain_xml.observe_domain(xml)["cpuPriority"] == priority
    assert (ET.fromstring(xml).find("cputune") is None) == (priority == "normal")  # default: libvirt's own


def test_disk_sources_are_whole_paths_never_parts_of_one() -> None:
    """Growing vm1's disk must not find it inside vm10's domain (LVM volumes have no suffix to tell them apart)."""
    xml = ("<domain type='qemu'><devices>"
           "<disk type='block' device='disk'><source dev='/dev/guests/vm10'/><target dev='vda'/></disk>"
           "<disk type='file' device='cdrom'><target dev='hdc'/></disk>"
           "<disk type='file' device='disk'><source file='/var/lib/virtfleet/guests/vm10.qcow2'/></disk>"
           "</devices></domain>")
    assert domain_xml.disk_sources(xml) == ["/dev/guests/vm10", "/var/lib/virtfleet/guests/vm10.qcow2"]
    assert "/dev/guests/vm1" not in domain_xml.disk_sources(xml)
    assert "/dev/guests/vm1" in xml  # what the old substring test matched


def test_seed_and_agent_round_trip_and_their_absence_too() -> None:
    seed = SeedSpec("guests", "/var/lib/virtfleet/guests", SEED, "some-athens-guest")
    seen = domain_xml.observe_domain(domain_xml.domain(article_guest(agent=True, seed=seed), UUID))
    assert seen["agent"] is True and seen["seedPath"] == seed.path
    assert seed.path.startswith("/var/lib/virtfleet/guests/some-athens-guest-cidata-")
    plain = domain_xml.observe_domain(domain_xml.domain(article_guest(), UUID))
    assert plain["agent"] is False and plain["seedPath"] == ""


@pytest.mark.parametrize("spec", [
    NetworkSpec(CONN, "lab", "nat", "vf-lab", "192.168.150.1/24", DhcpRange("192.168.150.128", "192.168.150.254")),
    NetworkSpec(CONN, "r", "open", "vf-r", "10.9.0.1/16"),
    NetworkSpec(CONN, "lan", "bridge", "br0"),
])
def test_network_round_trips(spec: NetworkSpec) -> None:
    seen = network_xml.observe_network(network_xml.network(spec, UUID))
    props = spec.to_props()
    assert {k: seen[k] for k in ("name", "mode", "bridge", "address", "dhcp")} == \
        {k: props[k] for k in ("name", "mode", "bridge", "address", "dhcp")}


def test_observe_network_reads_libvirts_netmask_form() -> None:
    xml = ("<network><name>n</name><forward mode='nat'/><bridge name='virbr1'/><mac address='52:54:00:1:2:3'/>"
           "<ip address='192.168.5.1' netmask='255.255.255.0'><dhcp><range start='192.168.5.2' "
           "end='192.168.5.9'/></dhcp></ip></network>")
    assert network_xml.observe_network(xml)["address"] == "192.168.5.1/24"
