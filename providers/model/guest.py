"""A guest, one declaration per field (`model.fields`): the stack config, the properties, the change
table and the domain XML all follow from `GuestSpec`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from providers.local.cloudinit import Seed, volume_name
from providers.model import fields
from providers.model import validate as v
from providers.model.fields import Xml
from providers.model.host import VIRT_TYPES, Connection, connection_field
from providers.model.owner import Owner, _owner
from providers.xml import firmware as fw
from providers.xml import guest as guest_xml

IFACE_TYPES = ("direct", "bridge", "network")


GRAPHICS = ("spice", "vnc", "none")


CPU_PRIORITIES = ("normal", "batch", "idle")  # the Linux scheduler class of the guest's vCPU threads


DEFAULT_SHUTDOWN_TIMEOUT = 60


MAX_ADDRESS_WAIT = 3600


@dataclass(frozen=True)
class InterfaceSpec:
    type: str
    source: str
    mac: str
    model: str = "virtio"

    def to_props(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "mac": self.mac, "model": self.model}

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str) -> InterfaceSpec:
        itype = v.choice(f"{key}.type", p.get("type", "direct"), IFACE_TYPES, "interface type")
        source = v.nic(f"{key}.source", p.get("source")) if itype != "network" else \
            v.name(f"{key}.source", p.get("source"), "network name")
        return cls(type=itype, source=source, mac=v.mac(f"{key}.mac", p.get("mac")),
                   model=v.choice(f"{key}.model", p.get("model", "virtio"), ("virtio", "e1000", "rtl8139"), "model"))


@dataclass(frozen=True)
class SeedSpec:
    """A guest's cloud-init seed: its files, and the volume of the guest's pool that holds it."""

    pool: str
    pool_path: str
    seed: Seed
    guest: str

    @property
    def volume(self) -> str:
        return volume_name(self.guest, self.seed)

    @property
    def path(self) -> str:
        return f"{self.pool_path}/{self.volume}"

    def to_props(self) -> dict[str, Any]:
        return {"pool": self.pool, "poolPath": self.pool_path, "volume": self.volume,
                "instanceId": self.seed.instance_id}


def _choice(allowed: tuple[str, ...], what: str) -> Any:
    return lambda key, value: v.choice(key, value, allowed, what)


def _int(lo: int, hi: int, what: str) -> Any:
    return lambda key, value: v.integer(key, value, lo, hi, what)


def _optional_path(what: str) -> Any:
    return lambda key, value: v.abs_path(key, value, what) if value else ""


def _memory(default_unit: int) -> Any:
    return lambda key, value: v.size(key, value, "memory", 16 << 20, v.MAX_MEMORY, default_unit)


def _wait_conf(key: str, value: Any) -> int:
    """`waitForAddress: true` waits the usual 300 s; a number is seconds."""
    if isinstance(value, bool):
        return 300 if value else 0
    return int(v.integer(key, value, 0, MAX_ADDRESS_WAIT, "waitForAddress (seconds)"))


def _interfaces(p: dict[str, Any], _at: str) -> tuple[InterfaceSpec, ...]:
    ifaces = p.get("interfaces") or []
    if not isinstance(ifaces, list):
        raise v.ConfigError("interfaces", "must be a list of {type, source, mac}")
    return tuple(InterfaceSpec.from_props(i, f"interfaces[{n}]") for n, i in enumerate(ifaces))


def _norm_interfaces(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [{k: (str(i.get(k) or "").lower() if k == "mac" else i.get(k)) for k in ("type", "source", "mac", "model")}
            for i in value]


@dataclass(frozen=True)
class GuestSpec:
    """A guest, one declaration per field (providers/model/fields.py): the stack config, the properties, the diff
    table and the domain XML all follow from these.  `conf=True` makes a field a key of each guest in the
    stack config; the others are set by the program from the host and the guest's disk."""

    conn: Connection = connection_field("another host: a new domain there, the old one removed first")
    name: str = fields.field_of(
        key="name", change="replace", check=lambda k, x: v.name(k, x, "guest name"), xml=guest_xml.NAME,
        doc="libvirt cannot rename a running domain; names are unique per host")
    owner: Owner = fields.field_of(key="owner", change="inplace", load=lambda p, _: _owner(p),
                                   dump=dataclasses.asdict,
                                   xml=guest_xml.OWNER, doc="metadata only")
    memory: int = fields.field_of(key="memory", change="restart", check=_memory(1), conf=_memory(1 << 30),
                                  xml=guest_xml.MEMORY, doc="bytes; the config takes a GiB number or a size")
    disk_path: str = fields.field_of(key="diskPath", change="restart",
                                     check=lambda k, x: v.abs_path(k, x, "disk path"), xml=guest_xml.DISK_PATH)
    description: str = fields.field_of(default="", key="description", change="inplace", check=v.free_text,
                                       conf=True, xml=guest_xml.DESCRIPTION, doc="shown by virsh and virt-manager")
    vcpus: int = fields.field_of(default=1, key="vcpus", change="restart", check=_int(1, v.MAX_VCPUS, "vcpus"),
                                 conf=True, xml=guest_xml.VCPUS)
    virt_type: str = fields.field_of(default="kvm", key="virtType", change="restart",
                                     check=_choice(VIRT_TYPES, "virtType"), xml=guest_xml.VIRT_TYPE)
    cpu_priority: str = fields.field_of(
        default="normal", key="cpuPriority", change="restart", check=_choice(CPU_PRIORITIES, "cpuPriority"),
        conf=True, xml=guest_xml.CPU_PRIORITY, doc="the scheduler class, set when the vCPU threads start")
    kernel: str = fields.field_of(default="", key="kernel", change="restart", check=_optional_path("kernel"),
                                  conf=True, xml=guest_xml.KERNEL)
    initrd: str = fields.field_of(default="", key="initrd", change="restart", check=_optional_path("initrd"),
                                  conf=True, xml=guest_xml.INITRD)
    cmdline: str = fields.field_of(default="", key="cmdline", change="restart", check=v.cmdline, conf=True,
                                   xml=guest_xml.CMDLINE)
    disk_format: str = fields.field_of(default="qcow2", key="diskFormat", change="restart",
                                       check=_choice(("raw", "qcow2"), "disk format"), xml=guest_xml.DISK_FORMAT)
    seed: SeedSpec | None = fields.field_of(
        default=None, key="seed", change="restart", load=lambda p, _: _seed(p),
        dump=lambda s: s.to_props() if s else None, xml=guest_xml.SEED,
        doc="the cloud-init NoCloud seed (new content, new instance-id): read at boot")
    interfaces: tuple[InterfaceSpec, ...] = fields.field_of(
        default=(), key="interfaces", change="restart", load=_interfaces,
        dump=lambda ifaces: [i.to_props() for i in ifaces], norm=_norm_interfaces, xml=guest_xml.INTERFACES)
    graphics: str = fields.field_of(default="spice", key="graphics", change="restart",
                                    check=_choice(GRAPHICS, "graphics"), conf=True, xml=guest_xml.GRAPHICS)
    agent: bool = fields.field_of(default=False, key="agent", change="restart", check=v.boolean, conf=True,
                                  xml=guest_xml.AGENT, doc="the qemu-guest-agent channel")
    firmware: str = fields.field_of(
        default="bios", key="firmware", change="replace", check=fw.check_firmware, conf=True,
        xml=Xml(fw.observe_firmware), doc="bios (SeaBIOS) or uefi (OVMF): a new domain with a fresh NVRAM")
    secure_boot: bool = fields.field_of(
        default=False, key="secureBoot", change="replace", check=v.boolean, conf=True,
        xml=Xml(fw.observe_secure_boot), doc="UEFI Secure Boot with enrolled keys (machine q35)")
    tpm: bool = fields.field_of(
        default=False, key="tpm", change="restart", check=v.boolean, conf=True, doc="an emulated TPM 2.0 (swtpm)",
        xml=Xml(fw.observe_tpm, lambda root, s: fw.emit(root, s.firmware, s.secure_boot, s.tpm, fw.nvram_path(s.name)),
                "devices", owns=fw.owns_tpm))  # after `seed`: Secure Boot moves the seed CD-ROM onto virtio-SCSI
    running: bool = fields.field_of(default=True, key="running", change="inplace", check=v.boolean, conf=True,
                                    doc="start / graceful shutdown")
    autostart: bool = fields.field_of(default=True, key="autostart", change="inplace", check=v.boolean, conf=True)
    shutdown_timeout: int = fields.field_of(
        default=DEFAULT_SHUTDOWN_TIMEOUT, key="shutdownTimeout", change="inplace",
        check=_int(0, 3600, "shutdownTimeout"), conf=True, doc="seconds of graceful shutdown before power-off")
    ip: str = fields.field_of(default="", key="ip", change="inplace", check=v.ip, conf=True, doc="informational")
    wait_for_address: int = fields.field_of(
        default=0, key="waitForAddress", change="ignore", check=_int(0, MAX_ADDRESS_WAIT, "waitForAddress"),
        conf=_wait_conf, doc="seconds create/update wait for every interface's address (0: no wait)")
    adopt: bool = fields.field_of(default=False, key="adopt", change="ignore", check=v.boolean, conf=True,
                                  doc="take over a domain of this name defined outside virtfleet (create only)")

    def replace(self, **changes: Any) -> GuestSpec:
        return dataclasses.replace(self, **changes)

    def to_props(self) -> dict[str, Any]:
        return {**fields.to_props(self), "cloudInit": self.seed.seed.to_props() if self.seed else None}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> GuestSpec:
        spec = cls(**fields.from_props(cls, p))
        fw.check_combination("", spec.firmware, spec.secure_boot, spec.tpm)
        check_address_wait("", spec.wait_for_address, spec.agent, spec.interfaces)
        return spec


def check_address_wait(at: str, wait: int, agent: bool, interfaces: tuple[InterfaceSpec, ...]) -> None:
    """A wait for addresses needs a source that can answer: the guest agent or a libvirt network's leases.
    `at`: the guest's config path, e.g. hosts.athens.guests.web-1 ('' for a resource's own properties)."""
    if wait and not agent and not any(i.type == "network" for i in interfaces):
        raise v.ConfigError(f"{at}.waitForAddress" if at else "waitForAddress",
                            "nothing can tell this guest's address: it has no guest agent (agent: true) and no "
                            "interface on a libvirt network (DHCP leases)",
                            "Set `agent: true` (the image needs qemu-guest-agent), or put an interface on a "
                            "network (`interfaces: [{type: network, source: NAME, mac: ...}]`), or remove "
                            "waitForAddress")


def _seed(p: dict[str, Any]) -> SeedSpec | None:
    where, files = p.get("seed"), p.get("cloudInit")
    if not where and not files:
        return None
    if not isinstance(where, dict) or not isinstance(files, dict):
        raise v.ConfigError("cloudInit", "the seed's files and its volume go together", "Set both or neither")
    return SeedSpec(v.name("seed.pool", where.get("pool"), "pool name"),
                    v.abs_path("seed.poolPath", where.get("poolPath"), "pool path"), Seed.from_props(files),
                    v.name("name", p.get("name"), "guest name"))
