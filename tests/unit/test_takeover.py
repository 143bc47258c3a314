"""Adoption (`adopt: true`) without a host: what is refused, what the takeover defines, changes and keeps.
Foreign domains go through libvirt's own parser (the in-process `test:///default` driver) as a host's would."""

from __future__ import annotations

import libvirt
import pytest

from providers.model import takeover
from providers.model.guest import GuestSpec, InterfaceSpec
from providers.model.host import Connection
from providers.model.owner import Owner
from providers.model.storage import Takeover, VolumeSpec
from providers.xml import domain as domain_xml

pytestmark = pytest.mark.unit
CONN = Connection(host="h1", address="192.0.2.1")
DISK = "/var/lib/virtfleet/guests/web.qcow2"
OWNER = Owner("virtfleet", "prod", "web")


def spec(**changes: object) -> GuestSpec:
    s = GuestSpec(conn=CONN, name="web", owner=OWNER, memory=256 << 20, vcpus=2, virt_type="qemu",
                  disk_path=DISK, interfaces=(InterfaceSpec("network", "default", "52:54:00:00:00:01"),), adopt=True)
    return s.replace(**changes)


def foreign(disk: str = DISK, target: str = "vda", bus: str = "virtio", owner: str = "", extra: str = "") -> str:
    """A domain as `virsh define` or virt-install would leave it: its own NIC, an extra disk, a tablet."""
    return f"""<domain type='qemu'><name>web</name><uuid>8a3e5a8e-2f4b-4c55-9d2c-0000000000aa</uuid>
      <metadata>{owner}</metadata><memory unit='KiB'>131072</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>
          <target dev='{target}' bus='{bus}'/></disk>
        <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/data.raw'/>
          <target dev='vdb' bus='virtio'/></disk>
        <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>
          <model type='virtio'/></interface>
        <input type='tablet' bus='usb'/>{extra}
      </devices></domain>"""


def as_libvirt_has_it(driver: libvirt.virConnect, xml: str) -> str:
    return driver.defineXML(xml).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_a_foreign_domain_on_the_guest_s_disk_is_not_refused(test_driver) -> None:
    live = as_libvirt_has_it(test_driver, foreign())
    assert takeover.refusal("h1", "web", OWNER, DISK, live) == ""


def test_a_main_disk_elsewhere_is_refused_naming_both_paths_and_the_fix(test_driver) -> None:
    live = as_libvirt_has_it(test_driver, foreign(disk="/var/lib/libvirt/images/web.qcow2"))
    why = takeover.refusal("h1", "web", OWNER, DISK, live)
    assert "'/var/lib/libvirt/images/web.qcow2'" in why and f"'{DISK}'" in why and "nothing changed" in why
    assert "pool-refresh" in why and "virsh edit web" in why


def test_another_virtfleet_owner_is_refused_naming_both_and_its_own_leftover_is_not() -> None:
    theirs = ("<virtfleet:owner xmlns:virtfleet='urn:virtfleet:owner:1'>"
              "<virtfleet:project>virtfleet</virtfleet:project><virtfleet:stack>other</virtfleet:stack><virtfleet:resource>web</virtfleet:resource></virtfleet:owner>")
    why = takeover.refusal("h1", "web", OWNER, DISK, foreign(owner=theirs))
    assert "managed by virtfleet/other/web, not by virtfleet/prod/web" in why and "even with adopt" in why
    own = theirs.replace(">other<", ">prod<")
    assert takeover.refusal("h1", "web", OWNER, "/elsewhere", foreign(owner=own)) == ""


def test_takeover_keeps_uuid_and_foreign_devices_and_writes_the_owner(test_driver) -> None:
    live = as_libvirt_has_it(test_driver, foreign())
    t = takeover.plan(live, spec())
    dom = test_driver.defineXML(t.xml)  # libvirt accepts it, over the same domain (same name and UUID)
    back = domain_xml.observe_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert back["uuid"] == "8a3e5a8e-2f4b-4c55-9d2c-0000000000aa" and back["owner"] == OWNER.__dict__
    assert back["memory"] == 256 << 20 and back["vcpus"] == 2
    assert "/srv/data.raw" in domain_xml.disk_sources(t.xml)
    assert sorted(t.kept.values()) == ["disk vdb /srv/data.raw", "input tablet"]  # no controllers, no PS/2
    assert dict((k, (a, b)) for k, a, b in t.changes) == {"memory": (128 << 20, 256 << 20), "vcpus": (1, 2),
                                                           "graphics": ("none", "spice")}
    assert set(t.restart) == {"memory", "vcpus", "graphics"}


def test_nothing_to_change_is_said_so(test_driver) -> None:
    live = as_libvirt_has_it(test_driver, foreign())
    t = takeover.plan(live, spec(memory=128 << 20, vcpus=1, graphics="none"))
    assert t.changes == () and t.restart == ()
    line = takeover.summary("h1", spec(), t, active=True, autostart=True)
    assert line == ("h1: taking over web (defined outside virtfleet): nothing changes; "
                    "kept: disk vdb /srv/data.raw; input tablet")


def test_a_main_disk_on_another_bus_is_replaced_not_doubled(test_driver) -> None:
    live = as_libvirt_has_it(test_driver, foreign(target="sda", bus="sata"))
    t = takeover.plan(live, spec(memory=128 << 20, vcpus=1, graphics="none"))
    assert domain_xml.disk_sources(t.xml).count(DISK) == 1
    assert t.changes == (("disk", "sda sata", "vda virtio"),) and t.restart == ("disk",)
    test_driver.defineXML(t.xml)


def test_the_preview_line_says_each_change_and_the_restart() -> None:
    t = takeover.Plan("<domain/>", (("memory", 1 << 30, 2 << 30), ("vcpus", 1, 2)), ("memory", "vcpus"),
                          {"x": "disk vdb /var/lib/x.qcow2"})
    line = takeover.summary("h1", spec(autostart=True), t, active=True, autostart=False)
    assert line == ("h1: taking over web (defined outside virtfleet): memory 1073741824 -> 2147483648, vcpus 1 -> 2, "
                    "autostart false -> true, graceful restart (it is running; memory, vcpus need it); "
                    "kept: disk vdb /var/lib/x.qcow2")
    assert takeover.summary("h1", spec(), t, active=False, autostart=True).endswith(
        "started; kept: disk vdb /var/lib/x.qcow2")


def test_the_volume_carries_the_adoption_in_its_properties() -> None:
    v = VolumeSpec(CONN, "guests", "web.qcow2", 1 << 30, "overlay", "vfbase-x.qcow2", "qcow2",
                   adopt=Takeover("web", OWNER))
    assert VolumeSpec.from_props(v.to_props()) == v
    assert VolumeSpec.from_props({**v.to_props(), "adopt": None}).adopt is None
