"""Where each host is and how it is reached: its connection, pool and host settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.model import validate as v

VIRT_TYPES = ("kvm", "qemu")


POOL_TYPES = ("dir", "logical")


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
