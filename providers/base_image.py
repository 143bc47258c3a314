"""BaseImage: one local image on one host, as a read-only volume named by its content digest.

create: nothing is sent when the host already has the digest.  Otherwise the image's data runs go into a
temporary volume (holes never sent) and the host computes its content digest itself, as the data
arrives (`transfer.receive`), or after libvirt's sparse stream for LVs and hosts without python3; only
a volume whose digest is the one it is named by is renamed to its published name: a broken upload is
never used.  A rebuilt image sends only its changed clusters (`delta`).  Replace-only.
delete: lets go of the base (`holders`): it is removed at once when no other stack's BaseImage holds it
and no disk is made from it, otherwise by whichever of those goes last; never while a disk uses it.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import libvirt
import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from providers.base import BaseProvider, inputs_of, say
from providers.local import delta
from providers.local import image as localimage
from providers.local.trace import trace
from providers.model import changes
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.model.storage import BaseImageSpec, base_digest
from providers.remote import bases, session, storage, transfer, uploads
from providers.xml import storage as storage_xml

UPLOAD_PREFIX = "vfupload-"


def _clear_dead_uploads(c: Connection, p: libvirt.virStoragePool) -> None:
    """Remove what killed runs left of uploads of any image in the pool; another run's upload in progress
    is alive and kept (`uploads.remove_dead_uploads`)."""
    paths = [vol.path() for name in storage.volume_names(p) if name.startswith(UPLOAD_PREFIX)
             if (vol := storage.lookup_volume(p, name)) is not None]
    if uploads.remove_dead_uploads(c, paths):
        storage.refresh(p)


def _discard(spec: BaseImageSpec, tmp_name: str) -> None:
    """Best effort removal of a failed upload (the connection may be the thing that broke).

    Whatever stays behind is never published, and the next create of this digest removes it.
    """
    try:
        if not session.virt(spec.conn).isAlive():
            session.forget(spec.conn)
        p = storage.pool(spec.conn, spec.pool)
        storage.refresh(p)  # the host's end of an upload removes its file itself
        storage.delete(p, tmp_name)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
        session.forget(spec.conn)
        say(f"{spec.conn.host}: could not remove the partial upload {tmp_name} yet ({exc}); it is never used")


def _plan(spec: BaseImageSpec, p: libvirt.virStoragePool) -> tuple[delta.Plan | None, tuple[str, ...]]:
    """How to make the image on the host from what it has: its raw bases whose block index is known
    here (made by an upload from this machine) are where its blocks are copied from; the rest is sent.
    (None, ()) when the host has none: everything is sent."""
    paths, indexes = [], []
    for name in storage.volume_names(p):
        if (digest := base_digest(name, "raw")) and name != spec.volume_name:
            index = delta.load_index(digest)
            vol = storage.lookup_volume(p, name) if index else None
            if index and vol is not None:
                paths.append(vol.path())
                indexes.append(index)
    if not indexes:
        return None, ()
    plan = delta.plan(delta.remember_index(spec.digest, spec.source), indexes)
    return plan, tuple(paths[i] for i in plan.sources)


def _delta_source(spec: BaseImageSpec, p: libvirt.virStoragePool) -> tuple[str, list[tuple[int, int]]] | None:
    """For a host without python3: the base already there that this image differs least from at the same
    offsets, and the extents to send; only when its cluster map is known here and under half changed."""
    old_maps = {}
    for name in storage.volume_names(p):
        if (digest := base_digest(name, spec.format)) and name != spec.volume_name:
            old_map = delta.load(digest)
            if old_map:
                old_maps[name] = old_map
    if not old_maps:  # nothing to compare with: a full upload (the new map is made after it)
        return None
    new_map = delta.remember(spec.digest, spec.source)
    best: tuple[int, str, list[tuple[int, int]]] | None = None
    for name, old_map in old_maps.items():
        extents = delta.changed_extents(old_map, new_map)
        if extents is not None:
            cost = sum(n for _, n in extents)
            if best is None or cost < best[0]:
                best = (cost, name, extents)
    if best is None or best[0] > spec.size // 2:
        return None
    vol = storage.lookup_volume(p, best[1])
    return (vol.path(), best[2]) if vol is not None else None


def _account(spec: BaseImageSpec, sent: int, plan: delta.Plan | None, bases: tuple[str, ...]) -> str:
    """What an upload cost against the file as built, and why: `6.1 MiB sent for 118 MiB (5 %): ...`."""
    mib = 1 << 20
    file_size = spec.file_size or spec.size
    if plan is None:
        data = transfer.full_plan(spec.source, spec.size).literal
        why = f"all {data / mib:.1f} MiB of the disk's data, compressed (no base here to copy from)"
    else:
        why = (f"{plan.literal / mib:.1f} MiB of the disk not on the host, compressed; {plan.copied / mib:.1f} MiB "
               f"copied there from {len(bases)} base(s)")
    return f"{sent / mib:.1f} MiB sent for {file_size / mib:.0f} MiB ({100 * sent / max(file_size, 1):.0f} %): {why}"


def _progress(spec: BaseImageSpec) -> transfer.Progress:
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        rate = done / 2**20 / max(time.monotonic() - t0, 1e-3)
        say(f"{spec.conn.host}: uploading {spec.image} {100 * done // max(total, 1)}% of {total / 2**20:.0f} MiB "
            f"({rate:.0f} MiB/s)")
    return progress


def _fill(spec: BaseImageSpec, p: libvirt.virStoragePool,
          tmp_name: str) -> tuple[libvirt.virStorageVol, int, str, str | None]:
    """Create the temporary volume with the image's bytes.  Returns (volume, bytes sent, how, and its
    published path when the host has already checked and published it)."""
    c = spec.conn
    logical = storage.pool_type(p) == "logical"
    if not logical:  # the host writes, hashes and publishes as the data arrives
        plan, bases = _plan(spec, p)
        vol = storage.create(p, storage_xml.volume(tmp_name, spec.size, "raw", allocation=0))
        final = os.path.join(os.path.dirname(vol.path()), spec.volume_name)
        received = transfer.receive(c, spec.source, vol.path(), final, spec.digest, _progress(spec), plan, bases)
        if received is not None:
            return vol, received, _account(spec, received, plan, bases), final
        storage.delete(p, tmp_name)  # no python3 on the host: libvirt's streams, checked afterwards
    source = None if logical else _delta_source(spec, p)  # (previous base on the host, changed ranges)
    conn = session.virt(c)
    if source is not None:  # clone the previous base on the host (no network), send the changed clusters
        old_path, extents = source
        tmp_path = os.path.join(os.path.dirname(old_path), tmp_name)
        storage.clone_file(c, old_path, tmp_path)
        storage.refresh(p)
        vol = storage.lookup_volume(p, tmp_name)
        if vol is not None:
            how = f"delta over {os.path.basename(old_path)[:23]}..., {len(extents)} extents"
            return vol, transfer.upload_ranges(conn, vol, spec.source, extents), how, None
    # an LV is not zeroed: every byte is sent, holes included; a file volume stays sparse
    vol = storage.create(p, storage_xml.volume(tmp_name, spec.size, "raw", allocation=spec.size if logical else 0))
    return vol, transfer.upload(conn, vol, spec.source, _progress(spec), sparse=not logical), "full", None


def _publish(spec: BaseImageSpec, vol: libvirt.virStorageVol) -> str:
    """Verify the temporary volume ON THE HOST, then give it its published name (one command).

    The host computes the volume's content digest itself (reading only the data it stores) and it must
    be the one the volume is published under: that proves the write path of a full upload and, for a
    delta, the old base's bytes it was cloned from.  A host without python3 checks the POSIX cksum of
    the whole volume instead (computed here then), or sha256 without `cksum` here.
    """
    c = spec.conn
    tmp_path = vol.path()
    final = os.path.join(os.path.dirname(tmp_path), spec.volume_name)
    trace(f"begin verify {c.host}")
    if not uploads.verify_and_publish(c, tmp_path, final, spec.size, "digest", spec.digest):
        crc = localimage.posix_cksum(spec.source)
        algo, want = ("crc", crc) if crc else ("sha256", localimage.sha256_file(spec.source))
        uploads.verify_and_publish(c, tmp_path, final, spec.size, algo, want)
    trace(f"end verify {c.host}")
    return final


def _upload(spec: BaseImageSpec, p: libvirt.virStoragePool) -> tuple[int, str]:
    """Fill a temporary volume, verify, publish.  Returns (bytes sent, published path)."""
    c = spec.conn
    if not os.path.isfile(spec.source) or os.path.getsize(spec.source) != spec.size:
        raise HostError(c.host, f"uploading image {spec.image!r}",
                        f"local file {spec.source!r} is missing or changed since the preview", "Run `pulumi up` again")
    tmp_name = f"{UPLOAD_PREFIX}{spec.digest[:16]}-{secrets.token_hex(4)}"
    t0 = time.monotonic()
    try:
        trace(f"begin fill {c.host}")
        vol, sent, how, final = _fill(spec, p, tmp_name)
        trace(f"end fill {c.host}")
        final = final or _publish(spec, vol)
    except BaseException:
        _discard(spec, tmp_name)
        raise
    say(f"{c.host}: {spec.image} uploaded in {time.monotonic() - t0:.1f}s, {how}")
    storage.refresh(p)
    trace(f"begin clustermap {c.host}")
    delta.remember(spec.digest, spec.source)
    trace(f"end clustermap {c.host}")
    return sent, final


class BaseImageProvider(BaseProvider):
    spec_type = BaseImageSpec
    table = changes.BASE_IMAGE_TABLE

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = BaseImageSpec.from_props(props)
        p = storage.pool(spec.conn, spec.pool)
        storage.refresh(p)
        _clear_dead_uploads(spec.conn, p)
        for _attempt in range(3):  # a base removed by its last user while we looked is uploaded again
            vol = storage.lookup_volume(p, spec.volume_name)
            if vol is not None:
                sent, path, reused = 0, vol.path(), True
            else:
                sent, path = _upload(spec, p)
                reused = False
            holder = secrets.token_hex(8)
            answer = bases.act(spec.conn, "hold", path, holder)
            if answer.state != "missing":
                break
            storage.refresh(p)
        else:
            raise HostError(spec.conn.host, f"holding base volume {spec.volume_name}",
                            "it was removed each time right after it was found or uploaded",
                            "Another run is removing it: let that finish, then run `pulumi up` again")
        outs = {**inputs_of(props), "volumeName": spec.volume_name, "path": path, "bytesSent": sent,
                "reused": reused, "holder": holder if answer.state == "held" else ""}
        return CreateResult(f"{spec.conn.host}:{spec.volume_name}", outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = BaseImageSpec.from_props(props)
        p = storage.lookup_pool(session.virt(spec.conn), spec.pool)
        if p is None or storage.lookup_volume(p, spec.volume_name) is None:
            return ReadResult(None, {})
        return ReadResult(id_, inputs_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Let go of the base; it is removed when no other BaseImage (another stack's) holds it and no
        disk is made from it, else by the delete of its last disk (`holders`)."""
        spec = BaseImageSpec.from_props(props)
        p = storage.lookup_pool(session.virt(spec.conn), spec.pool)
        if p is None:
            return
        vol = storage.lookup_volume(p, spec.volume_name)
        if vol is None:
            return
        answer = bases.act(spec.conn, "release", vol.path(), str(props.get("holder") or ""))
        if answer.state == "removed":
            storage.refresh(p)
        elif answer.state == "kept held":
            say(f"{spec.conn.host}: kept base volume {spec.volume_name}: {answer.detail} other BaseImage "
                "resource(s) (other stacks) still hold it")
        elif answer.state == "kept used":
            say(f"{spec.conn.host}: kept base volume {spec.volume_name}: still the backing file of "
                f"{answer.detail}; it is removed with the last disk made from it")
        elif answer.state == "kept pinned":
            say(f"{spec.conn.host}: kept base volume {spec.volume_name}: pinned (more holders than its "
                "attributes could list); remove it with `virsh vol-delete` once no disk uses it")
        elif answer.state == "untracked":  # a base from before holders, an LV, or no python3: only its users count
            users = storage.users_of(p, vol.path())
            if users:
                say(f"{spec.conn.host}: kept base volume {spec.volume_name}: still the backing file of "
                    f"{', '.join(users)}")
                return
            storage.delete(p, spec.volume_name)


class BaseImage(Resource, module="virtfleet", name="BaseImage"):
    volumeName: pulumi.Output[str]
    path: pulumi.Output[str]
    bytesSent: pulumi.Output[int]
    reused: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(BaseImageProvider(), name,
                         {**props, "volumeName": None, "path": None, "bytesSent": None, "reused": None},
                         opts)
