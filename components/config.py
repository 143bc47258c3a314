"""The `virtfleet:` stack configuration, parsed and checked as a whole before any resource exists.

Every problem raises ConfigError naming the full key (e.g. hosts.athens.guests.web.memory), what is
wrong and how to fix it; a misspelt key gets the closest known key suggested.  Pure except for
reading the local image files (digest, virtual size).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.local import childenv, cloudinit
from providers.local.image import LocalImage
from providers.model import fields
from providers.model import validate as v
from providers.model.errors import ConfigError
from providers.model.guest import GuestSpec, InterfaceSpec, SeedSpec, check_address_wait
from providers.model.host import Connection, HostSpec, PoolSpec
from providers.model.network import NetworkSpec
from providers.model.owner import Owner
from providers.model.storage import DISK_MODES
from providers.xml import firmware

TOP_KEYS = {"images", "hosts", "sshPrivateKey"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IMAGE_KEYS = {"path", "build", "buildEnv"}
# a host's keys: its connection's and settings' (their declarations), and the mappings under it
HOST_KEYS = fields.config_keys(Connection) | fields.config_keys(HostSpec) | {"pool", "networks", "guests"}
NETWORK_KEYS = fields.config_keys(NetworkSpec)
POOL_KEYS = fields.config_keys(PoolSpec)
# a guest's keys: its fields' (GuestSpec declarations) and the ones about its disk, NICs and cloud-init
GUEST_KEYS = fields.config_keys(GuestSpec) | {"name", "diskSize", "mac", "image", "disk", "deleteDiskOnDestroy",
                                              "interfaces", "cloudInit"}
IFACE_KEYS = {"type", "source", "mac", "model"}


@dataclass(frozen=True)
class GuestConf:
    """One guest of the stack config: the spec of its domain, and what the program makes its disk from."""

    key: str
    host: str
    spec: GuestSpec
    disk_name: str
    disk_size: int
    image: str
    disk_mode: str
    delete_disk: bool

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def interfaces(self) -> tuple[InterfaceSpec, ...]:
        return self.spec.interfaces

    @property
    def seed(self) -> cloudinit.Seed | None:
        return self.spec.seed.seed if self.spec.seed else None


@dataclass(frozen=True)
class HostConf:
    key: str
    spec: HostSpec
    guests: tuple[GuestConf, ...]
    networks: tuple[NetworkSpec, ...] = ()


@dataclass(frozen=True)
class FleetConf:
    images: dict[str, LocalImage]
    hosts: tuple[HostConf, ...]


def _mapping(key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.5)
            hint = f"Did you mean `{close[0]}`?" if close else f"Known keys: {', '.join(sorted(allowed))}"
            raise ConfigError(f"{key}.{k}", "unknown key", hint)
    return value


def _images(raw: Any, load: Callable[[str, str, str, tuple[str, ...]], LocalImage]) -> dict[str, LocalImage]:
    images = _mapping("images", raw if raw is not None else {}, set(raw or {}))
    out = {}
    for name, conf in images.items():
        key = f"images.{v.name('images', name, 'image name')}"
        conf = _mapping(key, conf, IMAGE_KEYS)
        if not isinstance(conf.get("path"), str) or not conf["path"]:
            raise ConfigError(f"{key}.path", "is missing", "Give the image file, e.g. result/baseline.qcow2")
        build = str(conf.get("build") or "")
        out[name] = load(key, conf["path"], build, _build_env(f"{key}.buildEnv", conf.get("buildEnv"), build))
    return out


def _build_env(key: str, raw: Any, build: str) -> tuple[str, ...]:
    """The names of the variables a build command is given although they look like credentials."""
    if raw is None:
        return ()
    if not build:
        raise ConfigError(key, "is only used by `build`", "Remove buildEnv, or give the image a build command")
    if not isinstance(raw, list):
        raise ConfigError(key, f"must be a list of environment variable names, got {type(raw).__name__}",
                          "e.g. buildEnv: [AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]")
    for n, name in enumerate(raw):
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise ConfigError(f"{key}[{n}]", f"{name!r} is not an environment variable name",
                              "Use letters, digits and underscores, not starting with a digit")
        if not childenv.passable(name):
            raise ConfigError(f"{key}[{n}]", f"{name} is never given to a build: PULUMI_* variables hold the "
                              "decrypted stack config, its passphrase and the backend's token",
                              "Remove it; give the build what it needs under a name of its own")
    return tuple(raw)


def _interfaces(key: str, g: dict[str, Any], host_nic: str) -> tuple[InterfaceSpec, ...]:
    if "interfaces" in g:
        if not isinstance(g["interfaces"], list) or not g["interfaces"]:
            raise ConfigError(f"{key}.interfaces", "must be a non-empty list of {type, source, mac}")
        return tuple(InterfaceSpec.from_props(_mapping(f"{key}.interfaces[{n}]", i, IFACE_KEYS),
                                              f"{key}.interfaces[{n}]") for n, i in enumerate(g["interfaces"]))
    if "mac" not in g:
        raise ConfigError(f"{key}.mac", "is missing", "Give the guest a fixed MAC, e.g. 52:54:00:12:34:56")
    if not host_nic:
        raise ConfigError(f"{key}.mac", "a macvtap interface needs the host's NIC",
                          "Set hostNic on the host, or give the guest `interfaces`")
    return (InterfaceSpec("direct", host_nic, v.mac(f"{key}.mac", g["mac"])),)


def _guest(key: str, gkey: str, host: str, g: Any, on: HostSpec, owner: Owner,
           images: dict[str, LocalImage]) -> GuestConf:
    g = _mapping(key, g, GUEST_KEYS)
    image = g.get("image")
    if image not in images:
        raise ConfigError(f"{key}.image", f"unknown image {image!r}",
                          f"Use one of: {', '.join(sorted(images)) or '(define virtfleet:images first)'}")
    img = images[image]
    disk_size = v.size(f"{key}.diskSize", g.get("diskSize", max(1, -(-img.virtual_size // (1 << 30)))),
                       "diskSize", 1 << 20, 64 << 40)
    if disk_size < img.virtual_size:
        raise ConfigError(f"{key}.diskSize", f"{disk_size} bytes is smaller than image {image!r} "
                          f"({img.virtual_size} bytes)", "Make diskSize at least the image's size")
    name = v.name(f"{key}.name", g.get("name", gkey), "guest name")
    interfaces = _interfaces(key, g, on.host_nic)
    settings = fields.config_values(GuestSpec, key, g)
    seed = cloudinit.render(f"{key}.cloudInit", g["cloudInit"], name) if g.get("cloudInit") is not None else None
    lvm = on.pool.type == "logical"
    disk_name = name if lvm else f"{name}.qcow2"
    spec = GuestSpec(**settings, conn=on.conn, name=name, owner=owner, virt_type=on.virt_type,
                     disk_path=on.pool.volume_path(disk_name), disk_format="raw" if lvm else "qcow2",
                     interfaces=interfaces, seed=SeedSpec(on.pool.name, on.pool.path, seed, name) if seed else None)
    firmware.check_combination(key, spec.firmware, spec.secure_boot, spec.tpm)
    check_address_wait(key, spec.wait_for_address, spec.agent, spec.interfaces)
    return GuestConf(
        key=gkey, host=host, spec=spec, disk_name=disk_name, disk_size=disk_size, image=image,
        disk_mode=v.choice(f"{key}.disk", g.get("disk", "overlay"), DISK_MODES, "disk"),
        delete_disk=v.boolean(f"{key}.deleteDiskOnDestroy", g.get("deleteDiskOnDestroy", False)))


def _host(hkey: str, h: Any, images: dict[str, LocalImage], project: str, stack: str) -> HostConf:
    key = f"hosts.{v.name('hosts', hkey, 'host name')}"
    h = _mapping(key, h, HOST_KEYS)
    conn = Connection.from_host_config(hkey, h, key)
    pool = PoolSpec.from_props(_mapping(f"{key}.pool", h.get("pool") or {}, POOL_KEYS), f"{key}.pool")
    spec = HostSpec.from_props({**fields.from_config(HostSpec, key, h), "connection": conn.to_props(),
                                "pool": pool.to_props()})
    networks = _networks(key, h.get("networks"), conn)
    guests = _mapping(f"{key}.guests", h.get("guests") or {}, set(h.get("guests") or {}))
    confs = tuple(_guest(f"{key}.guests.{v.name(f'{key}.guests', g, 'guest key')}", g, hkey, gconf, spec,
                         Owner(project, stack, g), images) for g, gconf in guests.items())
    for g in confs:
        if pool.type == "logical" and g.disk_mode == "overlay":
            raise ConfigError(f"{key}.guests.{g.key}.disk", "overlay disks need a dir pool, this host's pool is LVM",
                              "Set `disk: copy` (a full LV, as the article did) or use a dir pool")
    return HostConf(hkey, spec, confs, networks)


def _networks(key: str, raw: Any, conn: Connection) -> tuple[NetworkSpec, ...]:
    nets = _mapping(f"{key}.networks", raw or {}, set(raw or {}) if isinstance(raw, dict) else set())
    out = []
    for name, conf in nets.items():
        at = f"{key}.networks.{v.name(f'{key}.networks', name, 'network name')}"
        conf = _mapping(at, conf if conf is not None else {}, NETWORK_KEYS)
        out.append(NetworkSpec.from_props({**conf, "name": name, "connection": conn.to_props()}, at))
    bridges: dict[str, str] = {}
    subnets: list[tuple[Any, str]] = []
    for n in out:
        at = f"{key}.networks.{n.name}"
        if n.bridge in bridges:
            raise ConfigError(f"{at}.bridge", f"bridge {n.bridge!r} is also the bridge of network {bridges[n.bridge]}",
                              "Give each network its own `bridge` name")
        bridges[n.bridge] = n.name
        if n.address:
            net = ipaddress.IPv4Interface(n.address).network
            for other, other_name in subnets:
                if net.overlaps(other):
                    raise ConfigError(f"{at}.address", f"{net} overlaps network {other_name}'s {other}",
                                      "Give each network its own subnet")
            subnets.append((net, n.name))
    return tuple(out)


def _base_image_names(hosts: tuple[HostConf, ...]) -> None:
    """Each host's BaseImage is the resource `HOST-IMAGE`: two pairs must not join into one name."""
    seen: dict[str, str] = {}
    for h in hosts:
        for image in sorted({g.image for g in h.guests}):
            joined, where = f"{h.key}-{image}", f"hosts.{h.key} with image {image!r}"
            if joined in seen:
                raise ConfigError(f"hosts.{h.key}", f"{where} and {seen[joined]} would both be the resource "
                                  f"{joined!r}", "Rename the host or the image so that HOST-IMAGE differs")
            seen[joined] = where


def _cross_checks(hosts: tuple[HostConf, ...]) -> None:
    _base_image_names(hosts)
    keys: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    macs: dict[str, str] = {}
    for h in hosts:
        for g in h.guests:
            where = f"hosts.{h.key}.guests.{g.key}"
            if g.key in keys:
                raise ConfigError(where, f"guest key {g.key!r} is also used at {keys[g.key]}",
                                  "Guest keys are the stack's identities: make them unique (set `name` to reuse a "
                                  "domain name on another host)")
            keys[g.key] = where
            addr = (h.spec.conn.address, g.name)
            if addr in names:
                raise ConfigError(f"{where}.name", f"guest name {g.name!r} is used twice on host {h.key} "
                                  f"(also {names[addr]})", "Domain names are unique per host: rename one")
            names[addr] = where
            for n, iface in enumerate(g.interfaces):
                if iface.mac in macs:
                    raise ConfigError(f"{where}.mac" if len(g.interfaces) == 1 else f"{where}.interfaces[{n}].mac",
                                      f"MAC {iface.mac} is also used at {macs[iface.mac]}",
                                      "Give every guest its own MAC")
                macs[iface.mac] = where


def parse(raw: dict[str, Any], load: Callable[[str, str, str, tuple[str, ...]], LocalImage], project: str,
          stack: str) -> FleetConf:
    """raw = {"images": ..., "hosts": ...} as read from the stack config; `load` describes an image file;
    each guest's owner is (project, stack, its key)."""
    images = _images(raw.get("images"), load)
    hosts_raw = raw.get("hosts")
    if not isinstance(hosts_raw, dict) or not hosts_raw:
        raise ConfigError("hosts", "no hosts are configured", "Add at least one host under virtfleet:hosts")
    hosts = tuple(_host(k, h, images, project, stack) for k, h in hosts_raw.items())
    _cross_checks(hosts)
    return FleetConf(images, hosts)


def unknown_top_keys(keys: list[str]) -> None:
    """Raise for a `virtfleet:` key the program does not know (e.g. virtfleet:host)."""
    for k in keys:
        if k not in TOP_KEYS:
            close = difflib.get_close_matches(k, sorted(TOP_KEYS), n=1, cutoff=0.5)
            raise ConfigError(k, "unknown key", f"Did you mean `virtfleet:{close[0]}`?" if close else
                              f"Known keys: {', '.join(sorted(TOP_KEYS))}")
