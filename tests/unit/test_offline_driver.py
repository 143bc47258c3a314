"""The fast offline tier: our XML through libvirt's own parser and serializer (the in-process
`test:///default` driver), read back as virtfleet reads a host's.  Seconds, no lab; never instead of it.

What libvirt rewrites (defaults, order, units, addresses) must never look like a change: every managed
field read back from libvirt's serialization equals the one read from ours.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from providers.local import cloudinit
from providers.model.guest import GuestSpec, InterfaceSpec, SeedSpec
from providers.model.host import Connection, PoolSpec
from providers.model.network import DhcpRange, NetworkSpec
from providers.model.owner import Owner
from providers.xml import domain as domain_xml
from providers.xml import merge as merge_xml
from providers.xml import network as network_xml
from providers.xml import storage as storage_xml

pytestmark = pytest.mark.unit
CONN = Connection(host="t", address="192.0.2.1")


def guest(**changes: object) -> GuestSpec:
    spec = GuestSpec(conn=CONN, name="vm1", owner=Owner("virtfleet", "prod", "vm1"), memory=4 << 30, vcpus=2,
                     virt_type="qemu", disk_path="/var/lib/virtfleet/guests/vm1.qcow2",
                     interfaces=(InterfaceSpec("direct", "eth0", "52:54:00:00:00:01"),))
    return spec.replace(**changes)


SEED = SeedSpec("guests", "/var/lib/virtfleet/guests", cloudinit.render("k", {"hostname": "web-1"}, "vm1"), "vm1")
GUESTS = {
    "article": guest(),
    "cloud": guest(agent=True, seed=SEED, description="a cloud guest & <friends>", graphics="none", memory=512 << 20,
                   interfaces=(InterfaceSpec("network", "default", "52:54:00:00:00:02"),
                               InterfaceSpec("bridge", "br0", "52:54:00:00:00:03", "e1000"))),
    "kernel-boot": guest(kernel="/boot/vmlinuz", initrd="/boot/initrd.img", cmdline="console=ttyS0 root=/dev/vda",
                         graphics="vnc", cpu_priority="idle", vcpus=4),
    "uefi-secure-boot": guest(firmware="uefi", secure_boot=True, tpm=True, seed=SEED, agent=True),
    "lvm-disk": guest(disk_path="/dev/guests/vm1", disk_format="raw", cpu_priority="batch"),
}


@pytest.mark.parametrize("name", sorted(GUESTS))
def test_domains_read_back_from_libvirt_as_defined(test_driver: libvirt.virConnect, name: str) -> None:
    ours = domain_xml.domain(GUESTS[name])
    dom = test_driver.defineXML(ours)
    back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert back != ours  # libvirt rewrote it (order, defaults, a UUID)...
    seen, wanted = domain_xml.observe_domain(back), domain_xml.observe_domain(ours)
    assert seen.pop("uuid") == dom.UUIDString() and wanted.pop("uuid") == ""
    assert seen == wanted  # ...and virtfleet reads back exactly what it defined: no false drift
    # redefined with its UUID (every update does this), nothing changes either
    again = test_driver.defineXML(domain_xml.domain(GUESTS[name], dom.UUIDString()))
    assert again.UUIDString() == dom.UUIDString()
    seen = domain_xml.observe_domain(again.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert seen == {**wanted, "uuid": dom.UUIDString()}


@pytest.mark.parametrize("spec", [
    NetworkSpec(CONN, "nat", "nat", "vf-nat", "192.168.150.1/24", DhcpRange("192.168.150.128", "192.168.150.254")),
    NetworkSpec(CONN, "routed", "route", "vf-routed", "10.9.0.1/16"),
    NetworkSpec(CONN, "lan", "bridge", "br0"),
], ids=lambda s: s.mode)
def test_networks_read_back_from_libvirt_as_defined(test_driver: libvirt.virConnect, spec: NetworkSpec) -> None:
    net = test_driver.networkDefineXML(network_xml.network(spec))
    seen = network_xml.observe_network(net.XMLDesc(0))  # the test driver has no INACTIVE flag for networks
    assert seen == {k: spec.to_props()[k] for k in ("name", "mode", "bridge", "address", "dhcp")}


def test_volumes_read_back_from_libvirt_as_defined(test_driver: libvirt.virConnect) -> None:
    pool = test_driver.storagePoolLookupByName("default-pool")
    vol = pool.createXML(storage_xml.volume("vm1.raw", 1 << 30, "raw"), 0)
    seen = storage_xml.observe_volume(vol.XMLDesc(0))
    assert (seen.name, seen.capacity) == ("vm1.raw", 1 << 30)
    assert storage_xml.pool(PoolSpec()).startswith("<pool type=\"dir\">")


EXTRA_DISK = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
              "<source file='/var/lib/virtfleet/guests/data.qcow2'/><target dev='vdb' bus='virtio'/></disk>")
EXTRA_NIC = "<interface type='bridge'><mac address='52:54:00:99:99:99'/><source bridge='br9'/></interface>"


def test_an_update_keeps_what_was_added_outside_and_lists_it(test_driver: libvirt.virConnect) -> None:
    spec = GUESTS["cloud"]
    dom = test_driver.defineXML(domain_xml.domain(spec))
    uuid = dom.UUIDString()
    defined = merge_xml.device_ids(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    macs = {i.mac for i in spec.interfaces}
    live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert merge_xml.unmanaged_devices(live, defined, macs) == {}  # libvirt's own additions are not "outside"

    edited = ET.fromstring(live)  # as `virsh edit` does (the test driver has no attach-device)
    for xml in (EXTRA_DISK, EXTRA_NIC):
        edited.find("devices").append(ET.fromstring(xml))
    dom = test_driver.defineXML(ET.tostring(edited, encoding="unicode"))
    live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    extra = merge_xml.unmanaged_devices(live, defined, macs)
    assert sorted(extra.values()) == ["disk vdb /var/lib/virtfleet/guests/data.qcow2",
                                      "interface bridge br9 52:54:00:99:99:99"]

    # a memory change and one managed NIC swapped for another: only the managed parts change
    new = spec.replace(memory=1 << 30, interfaces=(spec.interfaces[0], InterfaceSpec("bridge", "br0",
                                                                                     "52:54:00:00:00:04")))
    merged = merge_xml.merge(live, domain_xml.domain(new, uuid), macs | {i.mac for i in new.interfaces})
    back = test_driver.defineXML(merged).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    seen = merge_xml.observe_managed(back, {i.mac for i in new.interfaces})
    assert seen == {**domain_xml.observe_domain(domain_xml.domain(new, uuid))}
    assert "vdb" in back and "52:54:00:99:99:99" in back and "52:54:00:00:00:03" not in back
    assert back.count("<disk") == 3  # vda, the seed, vdb: nothing of ours twice
    carried = merge_xml.unmanaged_devices(back, defined, {i.mac for i in new.interfaces})
    assert sorted(carried.values()) == sorted(extra.values())  # the same devices, still listed as outside

    # the managed view ignores what was added outside: no drift, no restart for it
    assert merge_xml.observe_managed(back, {i.mac for i in new.interfaces})["interfaces"] == \
        domain_xml.observe_domain(domain_xml.domain(new, uuid))["interfaces"]


def test_a_setting_added_outside_is_kept_and_listed_and_libvirt_s_own_are_not(test_driver: libvirt.virConnect) -> None:
    spec = GUESTS["article"]
    dom = test_driver.defineXML(domain_xml.domain(spec))
    uuid, macs = dom.UUIDString(), {i.mac for i in spec.interfaces}
    live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    defined = merge_xml.device_ids(live)
    assert any(i.startswith(merge_xml.SETTING) for i in defined)  # what libvirt wrote (features...) is recorded
    assert merge_xml.unmanaged_devices(live, defined, macs) == {}

    edited = ET.fromstring(live)  # `virsh edit`: the clock libvirt wrote (utc) set to local time
    edited.find("clock").set("offset", "localtime")
    live = test_driver.defineXML(ET.tostring(edited, encoding="unicode")).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert list(merge_xml.unmanaged_devices(live, defined, macs).values()) == ["setting clock offset=localtime"]
    assert merge_xml.unmanaged_devices(live, [i for i in defined if not i.startswith(merge_xml.SETTING)], macs) == {}

    merged = merge_xml.merge(live, domain_xml.domain(spec.replace(vcpus=4), uuid), macs)
    back = test_driver.defineXML(merged).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "localtime" in back and domain_xml.observe_domain(back)["vcpus"] == 4
    assert list(merge_xml.unmanaged_devices(back, defined, macs).values()) == ["setting clock offset=localtime"]
