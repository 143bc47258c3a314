"""Desired state of each resource as frozen dataclasses, built and validated at the provider boundary.

Raw Pulumi property dicts (camelCase) stop here: `*.from_props` validates and returns a spec, `to_props`
returns the dict the engine stores.  Nothing in this module touches a host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import fields, guestxml
from . import firmware as fw
from . import validate as v
from .cloudinit import Seed, volume_name
from .fields import Xml

VIRT_TYPES = ("kvm", "qemu")
POOL_TYPES = ("dir", "logical")
DISK_MODES = ("overlay", "copy")
IFACE_TYPES = ("direct", "bridge", "network")
GRAPHICS = ("spice", "vnc", "none")
CPU_PRIORITIES = ("normal", "batch", "idle")  # the Linux scheduler class of the guest's vCPU threads
DEFAULT_SHUTDOWN_TIMEOUT = 60
NETWORK_MODES = ("nat", "route", "open", "bridge")  # bridge: an existing bridge of the host, no DHCP
MAX_ADDRESS_WAIT = 3600


@dataclass(frozen=True)
class Connection:
    """How to reach one host over SSH.  The private key itself never lives here (see remote.credentials)."""

    host: str
    address: str
    port: int = 22
    user: str = "root"
    host_key: str = ""
    ssh_key_file: str = ""

    @property
    def uri(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        host = f"[{self.address}]" if ":" in self.address else self.address  # an IPv6 address
        return f"qemu+ssh://{self.user}@{host}{port}/system"

    @staticmethod
    def identity(props: Any) -> Any:
        """What a connection's properties compare by in a diff: where it points, not how we authenticate
        (a re-pinned host key or another key file is not another host)."""
        if isinstance(props, dict):
            return (props.get("address"), int(props.get("port") or 22))
        return props

    def to_props(self) -> dict[str, Any]:
        return {"host": self.host, "address": self.address, "port": self.port, "user": self.user,
                "hostKey": self.host_key, "sshKeyFile": self.ssh_key_file}

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "connection") -> Connection:
        host_key = p.get("hostKey") or ""
        return cls(host=v.name(f"{key}.host", p.get("host"), "host name"),
                   address=v.address(f"{key}.address", p.get("address")),
                   port=v.integer(f"{key}.port", p.get("port", 22), 1, 65535, "port"),
                   user=v.name(f"{key}.user", p.get("user", "root"), "user"),
                   host_key=v.host_key(f"{key}.hostKey", host_key) if host_key else "",
                   ssh_key_file=str(p.get("sshKeyFile") or ""))

    @classmethod
    def from_host_config(cls, host: str, h: dict[str, Any], key: str) -> Connection:
        """From one host's stack config (virtfleet:hosts.NAME), `key` naming it in errors."""
        if "address" not in h:
            raise v.ConfigError(f"{key}.address", "is missing", "Give the host's IP address or DNS name")
        return cls.from_props({"host": host, "address": h["address"], "port": h.get("port", 22),
                               "user": h.get("user", "root"), "hostKey": h.get("hostKey", ""),
                               "sshKeyFile": h.get("sshKeyFile", "")}, key)


def host_connections(hosts_raw: Any) -> list[Connection]:
    """The hosts' connections alone, leniently: the valid ones (used to open the SSH connections early;
    the program's full parse reports every error)."""
    out = []
    for host, h in (hosts_raw if isinstance(hosts_raw, dict) else {}).items():
        try:
            out.append(Connection.from_host_config(host, h if isinstance(h, dict) else {}, f"hosts.{host}"))
        except v.ConfigError:
            continue
    return out


@dataclass(frozen=True)
class PoolSpec:
    name: str = "guests"
    type: str = "dir"
    path: str = "/var/lib/virtfleet/guests"
    vg: str = ""

    def volume_path(self, volume: str) -> str:
        """Where libvirt puts a volume of this pool (a file in a dir pool, an LV under /dev/VG)."""
        return f"{self.path}/{volume}"

    def to_props(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "path": self.path, "vg": self.vg}

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "pool") -> PoolSpec:
        ptype = v.choice(f"{key}.type", p.get("type", "dir"), POOL_TYPES, "pool type")
        pname = v.name(f"{key}.name", p.get("name", "guests"), "pool name")
        if ptype == "logical":
            vg = v.name(f"{key}.vg", p.get("vg") or pname, "volume group")
            return cls(name=pname, type=ptype, path=f"/dev/{vg}", vg=vg)
        return cls(name=pname, type=ptype, path=v.pool_path(f"{key}.path", p.get("path", cls.path)))


@dataclass(frozen=True)
class HostSpec:
    conn: Connection
    pool: PoolSpec
    host_nic: str = ""
    virt_type: str = "kvm"

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "pool": self.pool.to_props(), "hostNic": self.host_nic,
                "virtType": self.virt_type}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> HostSpec:
        return cls(conn=Connection.from_props(p.get("connection") or {}),
                   pool=PoolSpec.from_props(p.get("pool") or {}),
                   host_nic=v.nic("hostNic", p["hostNic"]) if p.get("hostNic") else "",
                   virt_type=v.choice("virtType", p.get("virtType", "kvm"), VIRT_TYPES, "virtType"))


@dataclass(frozen=True)
class BaseImageSpec:
    """One image on one host: a read-only volume named by the content digest."""

    conn: Connection
    pool: str
    image: str
    source: str
    digest: str  # the content digest (delta.digest): sha256 of the image's cluster map
    size: int
    format: str
    file_size: int = 0  # the image file as built (a compressed qcow2 is smaller than its disk)

    @property
    def volume_name(self) -> str:
        return f"vfbase-{self.digest}.{self.format}"

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "pool": self.pool, "image": self.image,
                "source": self.source, "digest": self.digest, "size": self.size, "format": self.format,
                "fileSize": self.file_size}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> BaseImageSpec:
        digest = str(p.get("digest", ""))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise v.ConfigError("digest", f"{digest!r} is not a 64-digit hex content digest")
        return cls(conn=Connection.from_props(p.get("connection") or {}), pool=v.name("pool", p.get("pool")),
                   image=v.name("image", p.get("image"), "image name"), source=str(p.get("source", "")),
                   digest=digest, size=int(p.get("size", 0)),
                   format=v.choice("format", p.get("format"), ("raw", "qcow2"), "image format"),
                   file_size=int(p.get("fileSize") or 0))


@dataclass(frozen=True)
class VolumeSpec:
    """A guest disk: a qcow2 overlay on a base volume, or a full copy of it."""

    conn: Connection
    pool: str
    name: str
    capacity: int
    mode: str
    base_volume: str
    base_format: str
    delete_on_destroy: bool = False
    adopt: Adoption | None = None  # the disk of a guest with `adopt: true`: an existing volume is taken as is
    owner: Owner | None = None  # the guest's owner: the host records it as the disk's (`diskuse`)

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "pool": self.pool, "name": self.name,
                "capacity": self.capacity, "mode": self.mode, "baseVolume": self.base_volume,
                "baseFormat": self.base_format, "deleteOnDestroy": self.delete_on_destroy,
                "adopt": dataclasses.asdict(self.adopt) if self.adopt else None,
                "owner": dataclasses.asdict(self.owner) if self.owner else None}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> VolumeSpec:
        return cls(conn=Connection.from_props(p.get("connection") or {}), pool=v.name("pool", p.get("pool")),
                   name=v.name("name", p.get("name"), "volume name", 255),
                   capacity=v.integer("capacity", p.get("capacity"), 1 << 20, 1 << 50, "capacity"),
                   mode=v.choice("mode", p.get("mode", "overlay"), DISK_MODES, "disk"),
                   base_volume=v.name("baseVolume", p.get("baseVolume"), "base volume", 255),
                   base_format=v.choice("baseFormat", p.get("baseFormat"), ("raw", "qcow2"), "base format"),
                   delete_on_destroy=v.boolean("deleteOnDestroy", p.get("deleteOnDestroy", False)),
                   adopt=Adoption.from_props(p["adopt"]) if p.get("adopt") else None,
                   owner=_owner(p) if p.get("owner") else None)


@dataclass(frozen=True)
class Adoption:
    """The domain a guest with `adopt: true` takes over, and that guest's owner: its disk's Volume refuses,
    before anything changes, what the guest's create would refuse."""

    domain: str
    owner: Owner

    @classmethod
    def from_props(cls, p: Any) -> Adoption:
        if not isinstance(p, dict):
            raise v.ConfigError("adopt", f"{p!r} is not {{domain, owner}}")
        return cls(v.name("adopt.domain", p.get("domain"), "guest name"), _owner(p))


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
class NetworkSpec:
    """A libvirt network on one host: NAT, routed or open with its own bridge and DHCP, or a host bridge."""

    conn: Connection
    name: str
    mode: str
    bridge: str
    address: str = ""      # the host's address on the network with its prefix, e.g. 192.168.150.1/24
    dhcp_start: str = ""
    dhcp_end: str = ""
    autostart: bool = True

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "name": self.name, "mode": self.mode, "bridge": self.bridge,
                "address": self.address, "dhcp": {"start": self.dhcp_start, "end": self.dhcp_end}
                if self.dhcp_start else None, "autostart": self.autostart}

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "") -> NetworkSpec:
        at = f"{key}." if key else ""
        name = v.name(f"{at}name", p.get("name"), "network name")
        mode = v.choice(f"{at}mode", p.get("mode", "nat"), NETWORK_MODES, "network mode")
        bridge = v.nic(f"{at}bridge", p.get("bridge") or f"vf-{name[:12]}")
        autostart = v.boolean(f"{at}autostart", p.get("autostart", True))
        if mode == "bridge":
            if p.get("bridge") in (None, ""):
                raise v.ConfigError(f"{at}bridge", "is missing", "Name the host's existing bridge, e.g. br0")
            for k in ("address", "dhcp"):
                if p.get(k) not in (None, "", False):
                    raise v.ConfigError(f"{at}{k}", "a bridge-mode network has no address or DHCP of its own "
                                        "(the bridge's LAN provides them)", f"Remove `{k}`, or use mode nat/route")
            return cls(Connection.from_props(p.get("connection") or {}), name, mode, bridge, autostart=autostart)
        iface = v.interface_network(f"{at}address", p.get("address"))
        start, end = v.dhcp_range(f"{at}dhcp", p.get("dhcp"), iface)
        return cls(Connection.from_props(p.get("connection") or {}), name, mode, bridge, str(iface), start, end,
                   autostart)


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


@dataclass(frozen=True)
class Owner:
    """Who manages a guest; written into the domain's <metadata>."""

    project: str
    stack: str
    resource: str


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


def _interfaces(p: dict[str, Any]) -> tuple[InterfaceSpec, ...]:
    ifaces = p.get("interfaces") or []
    if not isinstance(ifaces, list):
        raise v.ConfigError("interfaces", "must be a list of {type, source, mac}")
    return tuple(InterfaceSpec.from_props(i, f"interfaces[{n}]") for n, i in enumerate(ifaces))


def _norm_interfaces(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    return [{k: (str(i.get(k) or "").lower() if k == "mac" else i.get(k)) for k in ("type", "source", "mac", "model")}
            for i in value]


def _owner(p: dict[str, Any]) -> Owner:
    owner = p.get("owner") or {}
    return Owner(str(owner.get("project", "")), str(owner.get("stack", "")), str(owner.get("resource", "")))


@dataclass(frozen=True)
class GuestSpec:
    """A guest, one declaration per field (providers/fields.py): the stack config, the properties, the diff
    table and the domain XML all follow from these.  `conf=True` makes a field a key of each guest in the
    stack config; the others are set by the program from the host and the guest's disk."""

    conn: Connection = fields.field_of(
        key="connection", change="replace", load=lambda p: Connection.from_props(p.get("connection") or {}),
        dump=Connection.to_props, norm=Connection.identity,
        doc="another host: a new domain there, the old one removed first")
    name: str = fields.field_of(
        key="name", change="replace", check=lambda k, x: v.name(k, x, "guest name"), xml=guestxml.NAME,
        doc="libvirt cannot rename a running domain; names are unique per host")
    owner: Owner = fields.field_of(key="owner", change="inplace", load=_owner, dump=dataclasses.asdict,
                                   xml=guestxml.OWNER, doc="metadata only")
    memory: int = fields.field_of(key="memory", change="restart", check=_memory(1), conf=_memory(1 << 30),
                                  xml=guestxml.MEMORY, doc="bytes; the config takes a GiB number or a size")
    disk_path: str = fields.field_of(key="diskPath", change="restart",
                                     check=lambda k, x: v.abs_path(k, x, "disk path"), xml=guestxml.DISK_PATH)
    description: str = fields.field_of(default="", key="description", change="inplace", check=v.free_text,
                                       conf=True, xml=guestxml.DESCRIPTION, doc="shown by virsh and virt-manager")
    vcpus: int = fields.field_of(default=1, key="vcpus", change="restart", check=_int(1, v.MAX_VCPUS, "vcpus"),
                                 conf=True, xml=guestxml.VCPUS)
    virt_type: str = fields.field_of(default="kvm", key="virtType", change="restart",
                                     check=_choice(VIRT_TYPES, "virtType"), xml=guestxml.VIRT_TYPE)
    cpu_priority: str = fields.field_of(
        default="normal", key="cpuPriority", change="restart", check=_choice(CPU_PRIORITIES, "cpuPriority"),
        conf=True, xml=guestxml.CPU_PRIORITY, doc="the scheduler class, set when the vCPU threads start")
    kernel: str = fields.field_of(default="", key="kernel", change="restart", check=_optional_path("kernel"),
                                  conf=True, xml=guestxml.KERNEL)
    initrd: str = fields.field_of(default="", key="initrd", change="restart", check=_optional_path("initrd"),
                                  conf=True, xml=guestxml.INITRD)
    cmdline: str = fields.field_of(default="", key="cmdline", change="restart", check=v.cmdline, conf=True,
                                   xml=guestxml.CMDLINE)
    disk_format: str = fields.field_of(default="qcow2", key="diskFormat", change="restart",
                                       check=_choice(("raw", "qcow2"), "disk format"), xml=guestxml.DISK_FORMAT)
    seed: SeedSpec | None = fields.field_of(
        default=None, key="seed", change="restart", load=lambda p: _seed(p),
        dump=lambda s: s.to_props() if s else None, xml=guestxml.SEED,
        doc="the cloud-init NoCloud seed (new content, new instance-id): read at boot")
    interfaces: tuple[InterfaceSpec, ...] = fields.field_of(
        default=(), key="interfaces", change="restart", load=_interfaces,
        dump=lambda ifaces: [i.to_props() for i in ifaces], norm=_norm_interfaces, xml=guestxml.INTERFACES)
    graphics: str = fields.field_of(default="spice", key="graphics", change="restart",
                                    check=_choice(GRAPHICS, "graphics"), conf=True, xml=guestxml.GRAPHICS)
    agent: bool = fields.field_of(default=False, key="agent", change="restart", check=v.boolean, conf=True,
                                  xml=guestxml.AGENT, doc="the qemu-guest-agent channel")
    firmware: str = fields.field_of(
        default="bios", key="firmware", change="replace", check=fw.check_firmware, conf=True,
        xml=Xml(fw.observe_firmware), doc="bios (SeaBIOS) or uefi (OVMF): a new domain with a fresh NVRAM")
    secure_boot: bool = fields.field_of(
        default=False, key="secureBoot", change="replace", check=v.boolean, conf=True,
        xml=Xml(fw.observe_secure_boot), doc="UEFI Secure Boot with enrolled keys (machine q35)")
    tpm: bool = fields.field_of(
        default=False, key="tpm", change="restart", check=v.boolean, conf=True, doc="an emulated TPM 2.0 (swtpm)",
        xml=Xml(fw.observe_tpm, lambda root, s: fw.emit(root, s.firmware, s.secure_boot, s.tpm, fw.nvram_path(s.name)),
                "devices"))  # declared after `seed`: Secure Boot moves the seed CD-ROM onto virtio-SCSI
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
