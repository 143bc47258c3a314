"""Desired state of each resource as frozen dataclasses, built and validated at the provider boundary.

Raw Pulumi property dicts (camelCase) stop here: `*.from_props` validates and returns a spec, `to_props`
returns the dict the engine stores.  Nothing in this module touches a host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import validate as v
from .cloudinit import Seed, volume_name

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

    @property
    def volume_name(self) -> str:
        return f"vfbase-{self.digest}.{self.format}"

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "pool": self.pool, "image": self.image,
                "source": self.source, "digest": self.digest, "size": self.size, "format": self.format}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> BaseImageSpec:
        digest = str(p.get("digest", ""))
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise v.ConfigError("digest", f"{digest!r} is not a 64-digit hex content digest")
        return cls(conn=Connection.from_props(p.get("connection") or {}), pool=v.name("pool", p.get("pool")),
                   image=v.name("image", p.get("image"), "image name"), source=str(p.get("source", "")),
                   digest=digest, size=int(p.get("size", 0)),
                   format=v.choice("format", p.get("format"), ("raw", "qcow2"), "image format"))


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

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "pool": self.pool, "name": self.name,
                "capacity": self.capacity, "mode": self.mode, "baseVolume": self.base_volume,
                "baseFormat": self.base_format, "deleteOnDestroy": self.delete_on_destroy}

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> VolumeSpec:
        return cls(conn=Connection.from_props(p.get("connection") or {}), pool=v.name("pool", p.get("pool")),
                   name=v.name("name", p.get("name"), "volume name", 255),
                   capacity=v.integer("capacity", p.get("capacity"), 1 << 20, 1 << 50, "capacity"),
                   mode=v.choice("mode", p.get("mode", "overlay"), DISK_MODES, "disk"),
                   base_volume=v.name("baseVolume", p.get("baseVolume"), "base volume", 255),
                   base_format=v.choice("baseFormat", p.get("baseFormat"), ("raw", "qcow2"), "base format"),
                   delete_on_destroy=v.boolean("deleteOnDestroy", p.get("deleteOnDestroy", False)))


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


@dataclass(frozen=True)
class GuestSpec:
    conn: Connection
    name: str
    owner: Owner
    memory: int  # bytes
    vcpus: int
    virt_type: str
    disk_path: str
    disk_format: str = "qcow2"
    interfaces: tuple[InterfaceSpec, ...] = ()
    graphics: str = "spice"
    running: bool = True
    autostart: bool = True
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    ip: str = ""
    cpu_priority: str = "normal"
    agent: bool = False          # the qemu-guest-agent channel
    seed: SeedSpec | None = None  # the cloud-init NoCloud seed, attached as a read-only CD-ROM
    wait_for_address: int = 0    # seconds create/update wait for every interface's address (0: no wait)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def replace(self, **changes: Any) -> GuestSpec:
        return dataclasses.replace(self, **changes)

    def to_props(self) -> dict[str, Any]:
        return {"connection": self.conn.to_props(), "name": self.name,
                "owner": dataclasses.asdict(self.owner), "memory": self.memory, "vcpus": self.vcpus,
                "virtType": self.virt_type, "diskPath": self.disk_path, "diskFormat": self.disk_format,
                "interfaces": [i.to_props() for i in self.interfaces], "graphics": self.graphics,
                "running": self.running, "autostart": self.autostart, "kernel": self.kernel,
                "initrd": self.initrd, "cmdline": self.cmdline, "shutdownTimeout": self.shutdown_timeout,
                "ip": self.ip, "cpuPriority": self.cpu_priority, "agent": self.agent,
                "waitForAddress": self.wait_for_address,
                "seed": self.seed.to_props() if self.seed else None,
                "cloudInit": self.seed.seed.to_props() if self.seed else None}

    @property
    def address_sources(self) -> str:
        """Why a wait for an address could never end, or '' when some source can answer."""
        if self.agent or any(i.type == "network" for i in self.interfaces):
            return ""
        return "the guest has no guest agent (agent: true) and no interface on a libvirt network (DHCP leases)"

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> GuestSpec:
        spec = cls._from_props(p)
        if spec.wait_for_address and spec.address_sources:
            raise v.ConfigError("waitForAddress", f"nothing can tell this guest's address: {spec.address_sources}",
                                "Set `agent: true` (the image needs qemu-guest-agent), or put an interface on a "
                                "libvirt network, or remove waitForAddress")
        return spec

    @classmethod
    def _from_props(cls, p: dict[str, Any]) -> GuestSpec:
        owner = p.get("owner") or {}
        ifaces = p.get("interfaces") or []
        if not isinstance(ifaces, list):
            raise v.ConfigError("interfaces", "must be a list of {type, source, mac}")
        return cls(
            conn=Connection.from_props(p.get("connection") or {}), name=v.name("name", p.get("name"), "guest name"),
            owner=Owner(str(owner.get("project", "")), str(owner.get("stack", "")), str(owner.get("resource", ""))),
            memory=v.size("memory", p.get("memory"), "memory", 16 << 20, v.MAX_MEMORY, 1),
            vcpus=v.integer("vcpus", p.get("vcpus", 1), 1, v.MAX_VCPUS, "vcpus"),
            virt_type=v.choice("virtType", p.get("virtType", "kvm"), VIRT_TYPES, "virtType"),
            disk_path=v.abs_path("diskPath", p.get("diskPath"), "disk path"),
            disk_format=v.choice("diskFormat", p.get("diskFormat", "qcow2"), ("raw", "qcow2"), "disk format"),
            interfaces=tuple(InterfaceSpec.from_props(i, f"interfaces[{n}]") for n, i in enumerate(ifaces)),
            graphics=v.choice("graphics", p.get("graphics", "spice"), GRAPHICS, "graphics"),
            running=v.boolean("running", p.get("running", True)),
            autostart=v.boolean("autostart", p.get("autostart", True)),
            kernel=v.abs_path("kernel", p["kernel"], "kernel") if p.get("kernel") else "",
            initrd=v.abs_path("initrd", p["initrd"], "initrd") if p.get("initrd") else "",
            cmdline=v.cmdline("cmdline", p.get("cmdline")),
            shutdown_timeout=v.integer("shutdownTimeout", p.get("shutdownTimeout", DEFAULT_SHUTDOWN_TIMEOUT),
                                       0, 3600, "shutdownTimeout"),
            ip=v.ip("ip", p.get("ip")),
            cpu_priority=v.choice("cpuPriority", p.get("cpuPriority", "normal"), CPU_PRIORITIES, "cpuPriority"),
            agent=v.boolean("agent", p.get("agent", False)),
            seed=_seed(p),
            wait_for_address=v.integer("waitForAddress", p.get("waitForAddress") or 0, 0, MAX_ADDRESS_WAIT,
                                       "waitForAddress"))


def _seed(p: dict[str, Any]) -> SeedSpec | None:
    where, files = p.get("seed"), p.get("cloudInit")
    if not where and not files:
        return None
    if not isinstance(where, dict) or not isinstance(files, dict):
        raise v.ConfigError("cloudInit", "the seed's files and its volume go together", "Set both or neither")
    return SeedSpec(v.name("seed.pool", where.get("pool"), "pool name"),
                    v.abs_path("seed.poolPath", where.get("poolPath"), "pool path"), Seed.from_props(files),
                    v.name("name", p.get("name"), "guest name"))
