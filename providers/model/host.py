"""Where each host is and how it is reached: its connection, pool and host settings, one declaration per
field (`model.fields`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.model import fields
from providers.model import validate as v

VIRT_TYPES = ("kvm", "qemu")


POOL_TYPES = ("dir", "logical")


def _host_key(key: str, value: Any) -> str:
    return v.host_key(key, value) if value else ""


@dataclass(frozen=True)
class Connection:
    """How to reach one host over SSH.  The private key itself never lives here (see remote.credentials).
    Its config keys sit at the host's level of the stack config (hosts.NAME.address, ...)."""

    host: str = fields.field_of(key="host", change="ignore", check=lambda k, x: v.name(k, x, "host name"),
                                doc="the host's key in the stack config, set by the program")
    address: str = fields.field_of(key="address", change="replace", check=v.address, conf=True)
    port: int = fields.field_of(default=22, key="port", change="replace", conf=True,
                                check=lambda k, x: v.integer(k, x, 1, 65535, "port"))
    user: str = fields.field_of(default="root", key="user", change="ignore", conf=True,
                                check=lambda k, x: v.name(k, x, "user"))
    host_key: str = fields.field_of(default="", key="hostKey", change="ignore", check=_host_key, conf=True,
                                    doc="a re-pinned key is the same host")
    ssh_key_file: str = fields.field_of(default="", key="sshKeyFile", change="ignore", conf=True,
                                        check=lambda k, x: str(x or ""))

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
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "connection") -> Connection:
        return cls(**fields.from_props(cls, p, f"{key}."))

    @classmethod
    def from_host_config(cls, host: str, h: dict[str, Any], key: str) -> Connection:
        """From one host's stack config (virtfleet:hosts.NAME), `key` naming it in errors."""
        if "address" not in h:
            raise v.ConfigError(f"{key}.address", "is missing", "Give the host's IP address or DNS name")
        return cls.from_props({**{k: h.get(k) for k in fields.config_keys(cls)}, "host": host}, key)


def connection_of(p: dict[str, Any], _at: str = "") -> Connection:
    """A resource's `connection` property as a Connection."""
    return Connection.from_props(p.get("connection") or {})


def connection_field(doc: str) -> Any:
    """The `connection` field every resource's spec has: another host replaces the resource."""
    return fields.field_of(key="connection", change="replace", load=connection_of, dump=Connection.to_props,
                           norm=Connection.identity, doc=doc)


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


def _pool_type(p: dict[str, Any], at: str) -> str:
    return v.choice(f"{at}type", p.get("type") or "dir", POOL_TYPES, "pool type")


def _vg(p: dict[str, Any], at: str) -> str:
    """A logical pool's volume group: its own name unless given."""
    if _pool_type(p, at) != "logical":
        return ""
    return v.name(f"{at}vg", p.get("vg") or v.name(f"{at}name", p.get("name") or "guests", "pool name"),
                  "volume group")


def _pool_path(p: dict[str, Any], at: str) -> str:
    """A dir pool's directory; a logical pool's is its volume group's /dev/VG."""
    if _pool_type(p, at) == "logical":
        return f"/dev/{_vg(p, at)}"
    return v.pool_path(f"{at}path", p.get("path") or "/var/lib/virtfleet/guests")


@dataclass(frozen=True)
class PoolSpec:
    """The storage pool of a host's guests' disks and bases: a directory, or an LVM volume group."""

    name: str = fields.field_of(default="guests", key="name", change="replace", conf=True,
                                check=lambda k, x: v.name(k, x, "pool name"))
    type: str = fields.field_of(default="dir", key="type", change="replace", conf=True,
                                check=lambda k, x: v.choice(k, x, POOL_TYPES, "pool type"))
    path: str = fields.field_of(default="/var/lib/virtfleet/guests", key="path", change="replace", conf=True,
                                load=_pool_path)
    vg: str = fields.field_of(default="", key="vg", change="replace", conf=True, load=_vg)

    def volume_path(self, volume: str) -> str:
        """Where libvirt puts a volume of this pool (a file in a dir pool, an LV under /dev/VG)."""
        return f"{self.path}/{volume}"

    def to_props(self) -> dict[str, Any]:
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any], key: str = "pool") -> PoolSpec:
        return cls(**fields.from_props(cls, p, f"{key}."))


def _host_nic(key: str, value: Any) -> str:
    return v.nic(key, value) if value else ""


@dataclass(frozen=True)
class HostSpec:
    conn: Connection = connection_field("another host is another Host resource")
    pool: PoolSpec = fields.field_of(key="pool", change="replace", load=lambda p, _: PoolSpec.from_props(
        p.get("pool") or {}), dump=PoolSpec.to_props, doc="another pool: the Host is made anew (the old pool kept)")
    host_nic: str = fields.field_of(default="", key="hostNic", change="inplace", check=_host_nic, conf=True,
                                    doc="checked on the host at every update; used by new macvtap interfaces")
    virt_type: str = fields.field_of(default="kvm", key="virtType", change="inplace", conf=True,
                                     check=lambda k, x: v.choice(k, x, VIRT_TYPES, "virtType"),
                                     doc="the guests' domain type: each Guest restarts for its own")

    def to_props(self) -> dict[str, Any]:
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> HostSpec:
        return cls(**fields.from_props(cls, p))
