"""Machine: one guest = its disk (Volume, `KEY-disk`) + its domain (Guest, `KEY`).

Both are named by the guest key only (not parented to their host), so moving a guest to another host
keeps its URNs and Pulumi plans a replacement (old one removed first), not an unrelated create.
"""

from __future__ import annotations

import pulumi

from providers.guest import Guest
from providers.model import fields
from providers.model.guest import GuestSpec, SeedSpec
from providers.model.owner import Owner
from providers.model.storage import Adoption, VolumeSpec
from providers.volume import Volume

from .config import GuestConf
from .hypervisor import Hypervisor


class Machine:
    """Not a registered component: one per guest doubled the resources in the state and the engine's steps
    (the file backend rewrites the whole state at every step).  The aliases keep the URNs stacks made when
    it was one (`virtfleet:fleet:Machine$...`)."""

    def __init__(self, conf: GuestConf, hv: Hypervisor) -> None:
        self.key = conf.key
        # the URN as a string: `pulumi.create_urn` is an Output, one more for the SDK to wait on per guest
        was = [pulumi.Alias(parent=f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::"
                                   f"virtfleet:fleet:Machine::{conf.key}")]
        spec = hv.conf.spec
        base = hv.base_images[conf.image]
        lvm = spec.pool.type == "logical"
        disk_name = conf.name if lvm else f"{conf.name}.qcow2"
        owner = Owner(pulumi.get_project(), pulumi.get_stack(), conf.key)
        # adopt: true: the disk's Volume takes an existing volume as is, and refuses what the guest would
        adopt = Adoption(conf.name, owner) if conf.values["adopt"] else None
        self.volume = Volume(
            f"{conf.key}-disk",
            fields.props_of(VolumeSpec, conn=spec.conn, pool=spec.pool.name, name=disk_name, capacity=conf.disk_size,
                            mode=conf.disk_mode, base_volume=hv.base_volume_names[conf.image],
                            base_format=hv.images_format[conf.image], delete_on_destroy=conf.delete_disk,
                            adopt=adopt, owner=owner),
            pulumi.ResourceOptions(aliases=was, depends_on=[hv.host, base]))
        seed = SeedSpec(spec.pool.name, spec.pool.path, conf.seed, conf.name) if conf.seed else None
        networks = [hv.networks[i.source] for i in conf.interfaces if i.type == "network" and i.source in hv.networks]
        self.guest = Guest(
            conf.key,
            {**fields.props_of(GuestSpec, conf.values, conn=spec.conn, name=conf.name, owner=owner,
                               virt_type=spec.virt_type, disk_path=spec.pool.volume_path(disk_name),
                               disk_format="raw" if lvm else "qcow2", interfaces=conf.interfaces, seed=seed),
             # user-data may hold passwords and keys: a secret in the state and the preview, always
             "cloudInit": pulumi.Output.secret(seed.seed.to_props()) if seed else None},
            pulumi.ResourceOptions(aliases=was, depends_on=[self.volume, *networks]))
        # one Output per guest for the stack's `guests` export (the guest's `status`): the SDK waits on every
        # pending Output at each step, and a dict of eleven would be eleven of them per guest until its create
        static = {"host": conf.host, "mac": conf.interfaces[0].mac, "ip": conf.values["ip"],
                  "virtManager": f"virt-manager --connect '{spec.conn.uri}' --show-domain-console {conf.name}",
                  "disk": spec.pool.volume_path(disk_name)}
        self.outputs = self.guest.status.apply(lambda s: _export(static, s or {}))


def _export(static: dict[str, str], status: dict) -> dict:
    """One guest's entry in the stack's `guests` export."""
    return {**static, **{k: status.get(k) for k in ("uuid", "address", "addresses", "state", "uri")},
            "console": status.get("consoleCommand")}
