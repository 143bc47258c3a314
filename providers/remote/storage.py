"""Storage on a host: the pool, volumes, sparse uploads, backing-file users.  Not-found aware."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import libvirt

from .. import xmlgen
from ..errors import HostError
from ..spec import Connection, PoolSpec
from . import is_not_found, or_none, session

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def lookup_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    return or_none(conn.storagePoolLookupByName, name)


def pool(c: Connection, name: str) -> libvirt.virStoragePool:
    p = lookup_pool(session.virt(c), name)
    if p is None:
        raise HostError(c.host, f"finding storage pool {name!r}", "it does not exist",
                        "Let the Host resource create it (check its pool settings), then run `pulumi up` again")
    if not p.isActive():
        p.create(0)
    return p


def ensure_pool(c: Connection, spec: PoolSpec) -> dict[str, object]:
    """Make the pool exist, built, active and autostarted.  Returns {"created": bool, "path": ...}."""
    conn = session.virt(c)
    p = lookup_pool(conn, spec.name)
    created = p is None
    if p is None:
        if spec.type == "logical":
            rc, _, _ = session.run(c, ["vgs", "--noheadings", spec.vg], check=False)
            if rc != 0:
                raise HostError(c.host, f"creating LVM pool {spec.name!r}", f"volume group {spec.vg!r} not found",
                                f"Create it on the host (`vgcreate {spec.vg} /dev/DEVICE`) or use a dir pool")
        p = conn.storagePoolDefineXML(xmlgen.pool(spec), 0)
        try:
            if spec.type == "dir":
                p.build(0)
            p.create(0)
        except libvirt.libvirtError as exc:
            p.undefine()
            raise HostError(c.host, f"creating pool {spec.name!r}", str(exc)) from exc
    elif not p.isActive():
        p.create(0)
    if not p.autostart():
        p.setAutostart(1)
    return {"created": created, "path": spec.path}


def lookup_volume(p: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    return or_none(p.storageVolLookupByName, name)


def volumes(p: libvirt.virStoragePool) -> list[dict[str, object]]:
    """Every volume of the pool, observed (name, path, capacity, backing file)."""
    out = []
    for vol in p.listAllVolumes(0):
        try:
            out.append(xmlgen.observe_volume(vol.XMLDesc(0)))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):  # removed while we listed: skip it
                raise
    return out


def users_of(p: libvirt.virStoragePool, path: str) -> list[str]:
    """Names of the volumes whose backing file is `path`."""
    return sorted(str(v["name"]) for v in volumes(p) if v["backingPath"] == path)


def create(p: libvirt.virStoragePool, xml: str) -> libvirt.virStorageVol:
    return p.createXML(xml, 0)


def delete(p: libvirt.virStoragePool, name: str) -> bool:
    """Delete a volume; a volume that is already gone counts as deleted.  Returns whether it existed."""
    vol = lookup_volume(p, name)
    if vol is None:
        return False
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if not is_not_found(exc):
            raise
    return True


@contextmanager
def _upload_stream(conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int,
                   flags: int) -> Iterator[libvirt.virStream]:
    """A stream uploading into vol[offset:offset+length]: finished on success, aborted on any error."""
    stream = conn.newStream(0)
    try:
        vol.upload(stream, offset, length, flags)
        yield stream
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise


def _hole_handler(size: int) -> Callable[[libvirt.virStream, int], list[object]]:
    def handler(_stream: libvirt.virStream, fd: int) -> list[object]:
        cur = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            data = os.lseek(fd, cur, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole up to the end
            data = size
        if data > cur:
            os.lseek(fd, cur, os.SEEK_SET)
            return [False, data - cur]  # in a hole of this length
        try:
            hole = os.lseek(fd, cur, os.SEEK_HOLE)
        except OSError:
            hole = size
        os.lseek(fd, cur, os.SEEK_SET)
        return [True, hole - cur]
    return handler


def pool_type(p: libvirt.virStoragePool) -> str:
    """'dir', 'logical', ... as libvirt defines the pool."""
    return ET.fromstring(p.XMLDesc(0)).get("type", "")


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
           progress: Progress | None = None, sparse: bool = True) -> int:
    """Upload a local file into a volume.  Returns the bytes sent.

    sparse=True: holes never cross the wire (the target must read holes as zeros: a file volume).
    sparse=False: every byte is sent, zeros included (block devices such as LVs keep old data).
    """
    if not sparse:
        return _upload_dense(conn, vol, path, progress)
    size = os.path.getsize(path)
    sent = [0]
    fd = os.open(path, os.O_RDONLY)
    last = [time.monotonic()]

    def read(_stream: libvirt.virStream, nbytes: int, fd: int) -> bytes:
        chunk = os.read(fd, nbytes)
        sent[0] += len(chunk)
        if progress and time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            progress(os.lseek(fd, 0, os.SEEK_CUR), size)
        return chunk

    def skip(_stream: libvirt.virStream, length: int, fd: int) -> int:
        return os.lseek(fd, length, os.SEEK_CUR)

    try:
        with _upload_stream(conn, vol, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM) as stream:
            stream.sparseSendAll(read, _hole_handler(size), skip, fd)
    finally:
        os.close(fd)
    if progress:
        progress(size, size)
    return sent[0]


def _upload_dense(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
                  progress: Progress | None) -> int:
    size = os.path.getsize(path)
    sent = [0]

    def read(_stream: libvirt.virStream, nbytes: int, f: object) -> bytes:
        chunk = f.read(nbytes)  # type: ignore[attr-defined]
        sent[0] += len(chunk)
        return chunk

    with open(path, "rb") as f, _upload_stream(conn, vol, 0, size, 0) as stream:
        stream.sendAll(read, f)
    if progress:
        progress(size, size)
    return sent[0]


def upload_ranges(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
                  extents: list[tuple[int, int]]) -> int:
    """Write only the given (offset, length) ranges of a local file into a volume.  Returns bytes sent."""
    sent = 0
    with open(path, "rb") as f:
        for offset, length in extents:
            f.seek(offset)
            with _upload_stream(conn, vol, offset, length, 0) as stream:
                remaining = length
                while remaining:
                    chunk = f.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise OSError(f"{path} ended at {offset + length - remaining}, expected more")
                    stream.send(chunk)  # type: ignore[arg-type]
                    remaining -= len(chunk)
            sent += length
    return sent


def sha256_on_host(c: Connection, path: str, size: int) -> str:
    """sha256 of the first `size` bytes of a file or block device, computed on the host."""
    # openssl uses the CPU's SHA extensions (about 5x sha256sum here); sha256sum where it is missing
    script = ('if command -v openssl >/dev/null; then h="openssl dgst -sha256 -r"; else h=sha256sum; fi; '
              'if [ -f "$2" ] && [ "$(stat -c %s -- "$2")" = "$1" ]; then $h < "$2"; '
              'else head -c "$1" -- "$2" | $h; fi')
    _, out, _ = session.run(c, ["sh", "-c", script, "sh", str(size), path], timeout=1800)
    return out.split()[0] if out else ""
