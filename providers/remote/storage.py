"""Storage on a host: the pool, volumes, sparse uploads, backing-file users.  Not-found aware."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt

from .. import clustermap, xmlgen
from ..clustermap import extents
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


CHUNK = 256 << 10  # one libvirt stream message (VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX)


def _send(stream: libvirt.virStream, fd: int, offset: int, length: int, done: Callable[[int], None]) -> None:
    os.lseek(fd, offset, os.SEEK_SET)
    remaining = length
    while remaining:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            raise OSError(f"the image ended {remaining} bytes early (changed while uploading?)")
        while chunk:
            n = stream.send(chunk)  # type: ignore[arg-type]
            chunk = chunk[n:]
            remaining -= n
            done(n)


def pool_type(p: libvirt.virStoragePool) -> str:
    """'dir', 'logical', ... as libvirt defines the pool."""
    return ET.fromstring(p.XMLDesc(0)).get("type", "")


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
           progress: Progress | None = None, sparse: bool = True) -> int:
    """Upload a local file into a volume.  Returns the bytes sent.

    sparse=True: holes never cross the wire (the target must read holes as zeros: a file volume).
    sparse=False: every byte is sent, zeros included (block devices such as LVs keep old data).
    progress(bytes sent, bytes to send) is called about once a second.
    """
    size = os.path.getsize(path)
    sent = [0]
    last = [time.monotonic()]
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = list(extents(fd, size)) if sparse else [(True, 0, size)]
        total = sum(n for is_data, _, n in runs if is_data)

        def done(n: int) -> None:
            sent[0] += n
            if progress and time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                progress(sent[0], total)

        flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
        with _upload_stream(conn, vol, 0, size, flags) as stream:
            for is_data, offset, length in runs:  # holes as hole messages: never read, never sent
                if is_data:
                    _send(stream, fd, offset, length, done)
                else:
                    stream.sendHole(length, 0)
    finally:
        os.close(fd)
    if progress:
        progress(total, total)
    return sent[0]


def upload_ranges(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
                  ranges: list[tuple[int, int]]) -> int:
    """Write only the given (offset, length) ranges of a local file into a volume.  Returns bytes sent."""
    sent = [0]

    def done(n: int) -> None:
        sent[0] += n

    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in ranges:
            with _upload_stream(conn, vol, offset, length, 0) as stream:
                _send(stream, fd, offset, length, done)
    finally:
        os.close(fd)
    return sent[0]


_VERIFY_AND_PUBLISH = r"""
algo=$1 want=$2 size=$3 src=$4 dst=$5 prog=$7
if [ "$algo" = digest ]; then
  command -v python3 >/dev/null 2>&1 || exit 5
  got=$(python3 -c "$prog" "$src" "$size") || { [ $? = 3 ] && { echo "$got"; exit 3; }; exit 5; }
else
  if [ "$algo" = crc ]; then h=cksum
  elif command -v openssl >/dev/null 2>&1; then h="openssl dgst -sha256 -r"
  else h=sha256sum; fi
  if [ -f "$src" ]; then
    have=$(stat -c %s -- "$src") || exit 4
    [ "$have" = "$size" ] || { echo "size $have"; exit 3; }
    got=$($h < "$src") || exit 4
  else
    got=$(head -c "$size" -- "$src" | $h) || exit 4
  fi
  got=${got%% *}
fi
[ "$got" = "$want" ] || { echo "$algo $got"; exit 3; }
if [ -f "$src" ]; then chmod 0444 -- "$src" && mv -T -- "$src" "$dst"
else lvrename "$6" "${src##*/}" "${dst##*/}" && lvchange --permission r "$dst"; fi
"""
_CLUSTERMAP_SOURCE = Path(clustermap.__file__).read_text()


def verify_and_publish(c: Connection, src: str, dst: str, size: int, algo: str, want: str) -> bool:
    """On the host, in one command: check the first `size` bytes of `src` (a file or an LV) against
    `want`, then make it read-only and give it its published name `dst`.  A mismatch raises HostError.

    algo "digest": the content digest, computed on the host by `clustermap`'s own source under the
    host's python3, reading only the data the host stores; False (nothing changed) when the host has no
    usable python3, so the caller can fall back to "crc": POSIX cksum of every byte (CRC-32), or
    "sha256": openssl or sha256sum.
    """
    vg = os.path.basename(os.path.dirname(src)) if src.startswith("/dev/") else ""
    rc, out, err = session.run(c, ["sh", "-c", _VERIFY_AND_PUBLISH, "sh", algo, want, str(size), src, dst, vg,
                                   _CLUSTERMAP_SOURCE if algo == "digest" else ""], timeout=1800, check=False)
    if rc == 5:
        return False
    if rc == 3:
        raise HostError(c.host, f"verifying the upload {os.path.basename(src)}",
                        f"{out.strip()} on the host, expected {algo} {want[:16]} (size {size})",
                        "The upload was discarded; run `pulumi up` again")
    if rc != 0:
        raise HostError(c.host, f"publishing {os.path.basename(dst)}", f"exit {rc}: {err.strip()[:300]}")
    return True
