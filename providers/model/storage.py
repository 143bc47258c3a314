"""Images and disks on a host: a base image (named by its disk's content) and a guest's disk."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from providers.model import validate as v
from providers.model.host import Connection
from providers.model.owner import Owner, _owner

DISK_MODES = ("overlay", "copy")


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
