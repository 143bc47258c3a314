"""Volume: a guest disk in the host's pool, a qcow2 overlay on a base volume or a full copy of it.

A disk already there is reused only when no other guest, file or resource has it (`diskuse`; checked in
preview too) and its backing file is the expected base; with `adopt` (its guest takes over a domain made
outside virtfleet) it is taken as it is (never rewritten; grown if diskSize is larger).  The host records
each disk's owner, so a disk this resource did not make or take over is never grown or deleted.
Growing resizes in place (online through the guest when it runs); shrinking is refused in `check`.
delete keeps the disk unless deleteOnDestroy is true, and whenever anything else still uses it.
"""

from __future__ import annotations

import os
from typing import Any

import libvirt
import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, Resource, UpdateResult

from providers.base import BaseProvider, has_unknowns, inputs_of, nested, say
from providers.model import changes, diskuse, takeover
from providers.model.errors import HostError, UnsafeChangeError
from providers.model.storage import VolumeSpec, is_base_volume
from providers.model.units import human
from providers.remote import bases, domains, session, storage
from providers.xml import storage as storage_xml

# outputs kept at the top level: `path`, `reused` (`adopted` in state written before), and the provider's
# `basePath` and `owned`; the inputs are nested (`base.nested`)
TOP_KEYS = frozenset(("path", "reused", "adopted", "basePath", "owned"))


def _base(spec: VolumeSpec, p: libvirt.virStoragePool) -> libvirt.virStorageVol:
    base = storage.lookup_volume(p, spec.base_volume)
    if base is None:
        raise HostError(spec.conn.host, f"creating disk {spec.name!r}", f"base volume {spec.base_volume!r} is missing",
                        "Run `pulumi up --refresh` so the BaseImage is uploaded again")
    return base


def _check_reusable(spec: VolumeSpec, vol: libvirt.virStorageVol, base_path: str) -> None:
    seen = storage.facts(vol)
    if spec.mode == "overlay" and seen.backing_path != base_path:
        raise UnsafeChangeError(f"host {spec.conn.host}: disk {spec.name!r} already exists with backing file "
                           f"{seen.backing_path or 'none'!r}, not {base_path!r}: not reused, nothing changed. "
                           "Give the guest another name, or move that disk away if it is really unused")
    if seen.capacity > spec.capacity:
        raise UnsafeChangeError(f"host {spec.conn.host}: kept disk {spec.name!r} is {human(seen.capacity)}, "
                                f"larger than diskSize {human(spec.capacity)}: shrinking is refused. Raise diskSize")


def _check_takeover(spec: VolumeSpec, p: libvirt.virStoragePool) -> None:
    """The disk of a guest with `adopt: true`: refuse before anything changes what the guest's create would
    refuse (the domain is another virtfleet resource's, or its main disk is not this volume)."""
    assert spec.adopt is not None
    dom = domains.by_name(session.virt(spec.conn), spec.adopt.domain)
    if dom is None:
        return
    path = f"{storage.pool_path(p)}/{spec.name}"
    why = takeover.refusal(spec.conn.host, spec.adopt.domain, spec.adopt.owner, path, domains.inactive_xml(dom))
    if why:
        raise UnsafeChangeError(why)


def _as_is_refusal(spec: VolumeSpec, seen: storage_xml.VolumeFacts, logical: bool, path: str) -> tuple[str, str]:
    """(the key, why) an existing disk cannot be taken over as it is: larger than diskSize (it would never
    shrink) or not the format virtfleet defines for the pool; ("", "") when it can."""
    if seen.capacity > spec.capacity:
        return "capacity", (f"host {spec.conn.host}: disk {spec.name!r} is {human(seen.capacity)}, larger "
                            f"than diskSize {human(spec.capacity)}: a disk taken over is kept as it is and never "
                            f"shrunk, nothing changed. Set diskSize to at least {human(seen.capacity)}")
    if not logical and seen.format != "qcow2":
        return "adopt", (f"host {spec.conn.host}: disk {spec.name!r} is {seen.format or 'of unknown format'}, "
                         "but guests' disks in a dir pool are qcow2: not taken over, nothing changed. Convert it "
                         f"first (`qemu-img convert -O qcow2 OLD {path}`, with the guest shut down)")
    return "", ""


def _take_as_is(spec: VolumeSpec, vol: libvirt.virStorageVol, logical: bool) -> storage_xml.VolumeFacts:
    """An existing disk taken over with its guest: never rewritten (see `_as_is_refusal`)."""
    seen = storage.facts(vol)
    _, why = _as_is_refusal(spec, seen, logical, vol.path())
    if why:
        raise UnsafeChangeError(why)
    say(f"{spec.conn.host}: took over existing disk {spec.name} as it is (adopt: true)")
    return seen


def _ours(spec: VolumeSpec) -> str:
    return diskuse.label(spec.owner) if spec.owner is not None else ""


def _others(spec: VolumeSpec, users: list[domains.DiskUser]) -> list[str]:
    return diskuse.others(((u.name, u.owner) for u in users), _ours(spec), spec.adopt.domain if spec.adopt else "")


def _existing(spec: VolumeSpec, vol: libvirt.virStorageVol) -> tuple[str, bool]:
    """Why the disk already there may not be reused by this Volume ('' if it may), and whether it is this
    resource's own (recorded as its, or taken over with `adopt`)."""
    users = _others(spec, domains.disk_users(session.virt(spec.conn), vol.path()))
    record = bases.disk_record(spec.conn, vol.path())
    why = diskuse.reuse_refusal(spec.conn.host, spec.name, _ours(spec), users, record.backs, record.owner)
    owned = spec.adopt is not None or record.owner is not None and record.owner == _ours(spec)
    if not why and storage.capacity(vol) < spec.capacity:
        why = diskuse.grow_refusal(spec.conn.host, spec.name, [], owned)
    return why, owned


def _preview_existing(spec: VolumeSpec) -> tuple[str, str]:
    """At preview (check of a new disk): what create would refuse of a disk of that name already there."""
    p = storage.lookup_pool(session.virt(spec.conn), spec.pool)
    vol = storage.lookup_volume(p, spec.name) if p is not None else None
    if p is None or vol is None:
        return "", ""
    why, _ = _existing(spec, vol)
    if why:
        return "name", why
    if spec.adopt is None:
        try:
            _check_reusable(spec, vol, f"{storage.pool_path(p)}/{spec.base_volume}")
        except UnsafeChangeError as exc:
            return "name", str(exc)
        return "", ""
    seen = storage.facts(vol)
    return _as_is_refusal(spec, seen, storage.pool_type(p) == "logical", vol.path())


def _grow(spec: VolumeSpec, vol: libvirt.virStorageVol, owned: bool) -> None:
    """Resize to spec.capacity; through the guest (blockResize) when its running domain has the disk.
    Refused for a disk this resource does not own or that another domain has."""
    path = vol.path()
    users = domains.disk_users(session.virt(spec.conn), path)
    why = diskuse.grow_refusal(spec.conn.host, spec.name, _others(spec, users), owned)
    if why:
        raise UnsafeChangeError(why)
    storage.grow(vol, spec.capacity, next((u.dom for u in users if u.running), None))


def _copy_into_lv(spec: VolumeSpec, p: libvirt.virStoragePool, base: libvirt.virStorageVol) -> libvirt.virStorageVol:
    """The article's way: a full LV, filled by `qemu-img convert` on the host (no data over the network)."""
    if spec.mode != "copy":
        raise HostError(spec.conn.host, f"creating disk {spec.name!r}", "a qcow2 overlay cannot live in an LVM pool",
                        "Use `disk: copy` for guests on a logical pool, or a dir pool for overlays")
    vol = storage.create(p, storage_xml.volume(spec.name, spec.capacity, "raw", allocation=spec.capacity))
    try:
        storage.convert_into(spec.conn, base.path(), spec.base_format, vol.path())
    except BaseException:
        storage.delete(p, spec.name)
        raise
    return vol


class VolumeProvider(BaseProvider):
    spec_type = VolumeSpec
    table = changes.VOLUME_TABLE
    top = TOP_KEYS

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        result = super().check(olds, news)
        old_cap, new_cap = olds.get("capacity"), news.get("capacity")
        if not result.failures and isinstance(old_cap, (int, float)) and isinstance(new_cap, (int, float)) \
                and new_cap < old_cap:
            result.failures.append(CheckFailure(
                "capacity", f"diskSize {human(int(new_cap))} would shrink the existing disk {news.get('name')} "
                f"({human(int(old_cap))}): shrinking is refused because it loses data. "
                f"Keep diskSize >= {human(int(old_cap))}"))
        # a new disk where one of that name already is: what create would refuse is said now (the only host
        # access of check, as the guest's)
        if not olds and not result.failures and not has_unknowns(news):
            key, why = _preview_existing(VolumeSpec.from_props(news))
            if why:
                result.failures.append(CheckFailure(key, why))
        return result

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = VolumeSpec.from_props(props)
        p = storage.pool(spec.conn, spec.pool)
        base = _base(spec, p)
        vol = storage.lookup_volume(p, spec.name)
        reused = vol is not None
        base_path = base.path()
        if spec.adopt is not None:
            _check_takeover(spec, p)
        owned = True
        if vol is not None:
            why, owned = _existing(spec, vol)
            if why:
                raise UnsafeChangeError(why)
        if vol is not None and spec.adopt is not None:
            base_path = _take_as_is(spec, vol, storage.pool_type(p) == "logical").backing_path
        elif vol is not None:
            _check_reusable(spec, vol, base.path())
            say(f"{spec.conn.host}: reusing kept disk {spec.name}")
        elif storage.pool_type(p) == "logical":
            vol = _copy_into_lv(spec, p, base)
        elif spec.mode == "overlay":
            definition = storage_xml.volume(spec.name, spec.capacity, "qcow2", base.path(), spec.base_format)
            vol = storage.create(p, definition)
        else:
            vol = storage.copy_from(p, storage_xml.volume(spec.name, spec.capacity, "qcow2"), base)
        if owned and spec.owner is not None:
            bases.claim_disk(spec.conn, vol.path(), _ours(spec))
        if storage.capacity(vol) < spec.capacity:
            _grow(spec, vol, owned)
        outs = {**inputs_of(props), "path": vol.path(), "reused": reused, "basePath": base_path, "owned": owned}
        return CreateResult(f"{spec.conn.host}:{spec.pool}/{spec.name}", outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = VolumeSpec.from_props(props)
        p = storage.lookup_pool(session.virt(spec.conn), spec.pool)
        vol = storage.lookup_volume(p, spec.name) if p is not None else None
        if vol is None:
            return ReadResult(None, {})
        seen = storage.facts(vol)
        return ReadResult(id_, {**inputs_of(props), "capacity": seen.capacity, "path": seen.path})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = VolumeSpec.from_props(news)
        p = storage.pool(spec.conn, spec.pool)
        vol = storage.lookup_volume(p, spec.name)
        if vol is None:
            raise HostError(spec.conn.host, f"resizing disk {spec.name!r}", "it is gone",
                            "Run `pulumi up --refresh` to recreate it")
        current = storage.capacity(vol)
        if spec.capacity < current:
            raise UnsafeChangeError(f"host {spec.conn.host}: disk {spec.name} is {human(current)}; diskSize "
                               f"{human(spec.capacity)} would shrink it: refused")
        owned = diskuse.owned(olds)
        if spec.capacity > current:
            _grow(spec, vol, owned)
        keep: dict[str, Any] = {k: olds[k] for k in ("baseVolume", "baseFormat", "basePath") if k in olds}
        return UpdateResult({**inputs_of(news), **keep, "path": vol.path(), "reused": diskuse.reused(olds),
                             "owned": owned})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = VolumeSpec.from_props(props)
        if not spec.delete_on_destroy:
            say(f"{spec.conn.host}: kept disk {spec.name} (deleteDiskOnDestroy is false)")
            return
        if not diskuse.owned(props):
            say(f"{spec.conn.host}: kept disk {spec.name}: virtfleet did not make it for this guest (it was on the "
                "host already), so it is never deleted; remove it by hand if it is unused")
            return
        p = storage.lookup_pool(session.virt(spec.conn), spec.pool)
        vol = storage.lookup_volume(p, spec.name) if p is not None else None
        if p is None or vol is None:
            return
        why = _in_use(spec, vol)
        if why:
            say(f"{spec.conn.host}: kept disk {spec.name} (deleteDiskOnDestroy): {why}")
            return
        if storage.delete(p, spec.name):
            _collect_base(spec, p, str(props.get("basePath") or ""))


def _in_use(spec: VolumeSpec, vol: libvirt.virStorageVol) -> str:
    """What still has the disk at delete (its own guest is gone by then), or ''."""
    users = domains.disk_users(session.virt(spec.conn), vol.path())
    if users:
        return f"still used by the guest(s) {', '.join(u.name for u in users)}"
    record = bases.disk_record(spec.conn, vol.path())
    if record.backs:
        return f"it is the backing file of {', '.join(record.backs)}"
    if record.owner is not None and record.owner != _ours(spec):
        return f"the host records it as {record.owner}'s"
    return ""


def _collect_base(spec: VolumeSpec, p: libvirt.virStoragePool, base: str) -> None:
    """After a disk is gone: its base goes too when no BaseImage holds it and no other disk uses it."""
    if is_base_volume(base) and bases.act(spec.conn, "collect", base).state == "removed":
        storage.refresh(p)
        say(f"{spec.conn.host}: removed base {os.path.basename(base)}: its last disk is gone and no BaseImage "
            "holds it")


class Volume(Resource, module="virtfleet", name="Volume"):
    """Registers no output for the program: a disk's path is known from the config (each Output the SDK
    waits on costs the program CPU at every step of a large stack)."""

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(VolumeProvider(), name, nested(props, TOP_KEYS), opts)
