"""Images and disks on a host: a base image (named by its disk's content) and a guest's disk, one
declaration per field (`model.fields`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from providers.model import fields
from providers.model import validate as v
from providers.model.host import Connection, connection_field
from providers.model.owner import Owner, _owner

DISK_MODES = ("overlay", "copy")
FORMATS = ("raw", "qcow2")
BASE_PREFIX = "vfbase-"


def base_volume_name(digest: str, fmt: str) -> str:
    """The volume of a base image on a host: named by its content, so one name is one disk."""
    return f"{BASE_PREFIX}{digest}.{fmt}"


def base_digest(volume: str, fmt: str) -> str:
    """The content digest a base volume of format `fmt` is named by ('' for any other volume)."""
    suffix = f".{fmt}"
    if volume.startswith(BASE_PREFIX) and volume.endswith(suffix):
        return volume[len(BASE_PREFIX):-len(suffix)]
    return ""


def is_base_volume(path_or_name: str) -> bool:
    return path_or_name.rsplit("/", 1)[-1].startswith(BASE_PREFIX)


def _digest(key: str, value: Any) -> str:
    digest = str(value or "")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise v.ConfigError(key, f"{digest!r} is not a 64-digit hex content digest")
    return digest


def _size(key: str, value: Any) -> int:
    return int(value or 0)


def _format(what: str) -> Any:
    return lambda k, x: v.choice(k, x, FORMATS, what)


@dataclass(frozen=True)
class BaseImageSpec:
    """One image on one host: a read-only volume named by the content digest."""

    conn: Connection = connection_field("another host: its own base there")
    pool: str = fields.field_of(key="pool", change="replace", check=v.name)
    image: str = fields.field_of(key="image", change="inplace", check=lambda k, x: v.name(k, x, "image name"),
                                 doc="the image's name in the stack: a label")
    source: str = fields.field_of(key="source", change="inplace", check=lambda k, x: "" if x is None else str(x),
                                  doc="the local file it is read from: the digest says what it holds")
    digest: str = fields.field_of(key="digest", change="replace", check=_digest,
                                  doc="the content digest (delta.digest) of the guest-visible disk")
    size: int = fields.field_of(key="size", change="replace", check=_size)
    format: str = fields.field_of(key="format", change="replace", check=_format("image format"))
    file_size: int = fields.field_of(default=0, key="fileSize", change="ignore", check=_size,
                                     doc="the image file as built, for the upload's account")

    @property
    def volume_name(self) -> str:
        return base_volume_name(self.digest, self.format)

    def to_props(self) -> dict[str, Any]:
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> BaseImageSpec:
        return cls(**fields.from_props(cls, p))


@dataclass(frozen=True)
class Takeover:
    """The domain a guest with `adopt: true` takes over, and that guest's owner: its disk's Volume refuses,
    before anything changes, what the guest's create would refuse."""

    domain: str
    owner: Owner

    @classmethod
    def from_props(cls, p: Any) -> Takeover:
        if not isinstance(p, dict):
            raise v.ConfigError("adopt", f"{p!r} is not {{domain, owner}}")
        return cls(v.name("adopt.domain", p.get("domain"), "guest name"), _owner(p))


def _as_dict(x: Any) -> Any:
    return dataclasses.asdict(x) if x else None


@dataclass(frozen=True)
class VolumeSpec:
    """A guest disk: a qcow2 overlay on a base volume, or a full copy of it."""

    conn: Connection = connection_field("another host: a new disk there")
    pool: str = fields.field_of(key="pool", change="replace", check=v.name)
    name: str = fields.field_of(key="name", change="replace", check=lambda k, x: v.name(k, x, "volume name", 255))
    capacity: int = fields.field_of(key="capacity", change="inplace", doc="grown online; a shrink is refused",
                                    check=lambda k, x: v.integer(k, x, 1 << 20, 1 << 50, "capacity"))
    mode: str = fields.field_of(key="mode", change="replace",
                                check=lambda k, x: v.choice(k, x or "overlay", DISK_MODES, "disk"))
    base_volume: str = fields.field_of(key="baseVolume", change="ignore",
                                       check=lambda k, x: v.name(k, x, "base volume", 255),
                                       doc="an existing disk keeps its own backing file; new disks use the new base")
    base_format: str = fields.field_of(key="baseFormat", change="ignore", check=_format("base format"))
    delete_on_destroy: bool = fields.field_of(default=False, key="deleteOnDestroy", change="inplace",
                                              check=v.boolean)
    adopt: Takeover | None = fields.field_of(
        default=None, key="adopt", change="ignore", load=lambda p, _: Takeover.from_props(p["adopt"])
        if p.get("adopt") else None, dump=_as_dict,
        doc="the disk of a guest with `adopt: true`: an existing volume is taken as is, at create only")
    owner: Owner | None = fields.field_of(
        default=None, key="owner", change="ignore", load=lambda p, _: _owner(p) if p.get("owner") else None,
        dump=_as_dict, doc="the guest's owner: the host records it as the disk's at create (`diskuse`)")

    def to_props(self) -> dict[str, Any]:
        return fields.to_props(self)

    @classmethod
    def from_props(cls, p: dict[str, Any]) -> VolumeSpec:
        return cls(**fields.from_props(cls, p))
