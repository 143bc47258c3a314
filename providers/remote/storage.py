"""Storage on a host: the pool, its volumes, backing-file users.  Not-found aware.  (Moving image bytes
into volumes is `transfer`.)"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt

from providers.model.errors import HostError
from providers.model.host import Connection, PoolSpec
from providers.remote import is_not_found, or_none, session
from providers.xml import domain as domain_xml
from providers.xml import storage as storage_xml


def lookup_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    return or_none(conn.storagePoolLookupByName, name)


def pool_active(c: Connection, name: str) -> bool:
    """Whether the host has a running pool of that name."""
    p = lookup_pool(session.virt(c), name)
    return bool(p is not None and p.isActive())


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
        p = conn.storagePoolDefineXML(storage_xml.pool(spec), 0)
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


def facts(vol: libvirt.virStorageVol) -> storage_xml.VolumeFacts:
    return storage_xml.observe_volume(vol.XMLDesc(0))


def volumes(p: libvirt.virStoragePool) -> list[storage_xml.VolumeFacts]:
    """Every volume of the pool, observed (name, path, capacity, backing file)."""
    out = []
    for vol in p.listAllVolumes(0):
        try:
            out.append(facts(vol))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):  # removed while we listed: skip it
                raise
    return out


def users_of(p: libvirt.virStoragePool, path: str) -> list[str]:
    """Names of the volumes whose backing file is `path`."""
    return sorted(v.name for v in volumes(p) if v.backing_path == path)


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


def pool_type(p: libvirt.virStoragePool) -> str:
    """'dir', 'logical', ... as libvirt defines the pool."""
    return ET.fromstring(p.XMLDesc(0)).get("type", "")


def pool_path(p: libvirt.virStoragePool) -> str:
    return ET.fromstring(p.XMLDesc(0)).findtext("target/path", "")


def refresh(p: libvirt.virStoragePool) -> None:
    """Have libvirt list the pool's files again; retried while another refresh of the pool is under way."""
    for attempt in range(20):
        try:
            p.refresh(0)
            return
        except libvirt.libvirtError:
            if attempt == 19:
                raise
            time.sleep(0.25)


def volume_names(p: libvirt.virStoragePool) -> list[str]:
    return list(p.listVolumes())


def capacity(vol: libvirt.virStorageVol) -> int:
    return int(vol.info()[1])


def copy_from(p: libvirt.virStoragePool, xml: str, source: libvirt.virStorageVol) -> libvirt.virStorageVol:
    """A new volume of `xml` with the content of `source` (libvirt copies it on the host)."""
    return p.createXMLFrom(xml, source, 0)


def grow(vol: libvirt.virStorageVol, size: int, through: libvirt.virDomain | None) -> None:
    """Resize to `size` bytes: through the running domain `through` that has it open (the guest sees the new
    size at once), or the file itself."""
    if through is not None:
        through.blockResize(vol.path(), size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    else:
        vol.resize(size, 0)


LV_EXTENT = 4 << 20  # LVM's default extent: an LV's size is a multiple of it


def put_bytes(c: Connection, p: libvirt.virStoragePool, name: str, data: bytes) -> libvirt.virStorageVol:
    """A small raw volume holding `data` (a cloud-init seed), uploaded over the host's libvirt connection.
    An existing volume of that name is written again unless a running guest has it open."""
    conn = session.virt(c)
    vol = lookup_volume(p, name)
    if vol is not None and vol.path() in active_sources(conn):
        return vol
    logical = pool_type(p) == "logical"
    capacity = -(-len(data) // LV_EXTENT) * LV_EXTENT if logical else len(data)
    if vol is None:
        vol = create(p, storage_xml.volume(name, capacity, "raw", allocation=capacity if logical else 0))
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, len(data), 0)
        for off in range(0, len(data), 256 << 10):
            stream.send(data[off:off + (256 << 10)])
        stream.finish()
    except BaseException:
        delete(p, name)
        raise
    return vol


def convert_into(c: Connection, source: str, source_format: str, target: str) -> None:
    """Write an image's disk into an existing raw volume on the host (no data over the network)."""
    session.run(c, ["qemu-img", "convert", "-n", "-f", source_format, "-O", "raw", source, target], timeout=3600)


def clone_file(c: Connection, source: str, target: str) -> None:
    """A sparse, world-readable copy of a file of the host's pool, made on the host."""
    session.run(c, ["sh", "-c", 'cp --sparse=always -- "$1" "$2" && chmod 0644 -- "$2"', "sh", source, target])


def active_sources(conn: libvirt.virConnect) -> set[str]:
    """Every disk and CD-ROM path that a running guest on the host has open."""
    paths: set[str] = set()
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            paths.update(domain_xml.disk_sources(dom.XMLDesc(0)))
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                raise
    return paths
