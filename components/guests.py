"""A guest's resources: its disk (Volume, `KEY-disk`) and its domain (Guest, `KEY`).

Both are named by the guest key only (not parented to their host), so moving a guest to another host
keeps its URNs and Pulumi plans a replacement (old one removed first), not an unrelated create.
"""

from __future__ import annotations

import pulumi

from providers.guest import Guest
from providers.model import fields
from providers.model.storage import Takeover, VolumeSpec
from providers.volume import Volume

from .config import GuestConf
from .hypervisor import Hypervisor


class GuestResources:
    """The two resources of one guest, registered at the top level: a component per guest (`Machine`, as
    older stacks have it) doubled the resources in the state and the engine's steps (the file backend
    rewrites the whole state at every step).  The aliases keep the URNs stacks made under that component
    (`virtfleet:fleet:Machine$...`)."""

    def __init__(self, conf: GuestConf, hv: Hypervisor) -> None:
        self.key = conf.key
        # the URN as a string: `pulumi.create_urn` is an Output, one more for the SDK to wait on per guest
        was = [pulumi.Alias(parent=f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::"
                                   f"virtfleet:fleet:Machine::{conf.key}")]
        host, spec = hv.conf.spec, conf.spec
        base = hv.base_images[conf.image]
        # adopt: true: the disk's Volume takes an existing volume as is, and refuses what the guest would
        adopt = Takeover(spec.name, spec.owner) if spec.adopt else None
        self.volume = Volume(
            f"{conf.key}-disk",
            fields.props_of(VolumeSpec, conn=host.conn, pool=host.pool.name, name=conf.disk_name,
                            capacity=conf.disk_size, mode=conf.disk_mode, base_volume=hv.base_volume_names[conf.image],
                            base_format=hv.images_format[conf.image], delete_on_destroy=conf.delete_disk,
                            adopt=adopt, owner=spec.owner),
            pulumi.ResourceOptions(aliases=was, depends_on=[hv.host, base]))
        networks = [hv.networks[i.source] for i in spec.interfaces if i.type == "network" and i.source in hv.networks]
        props = spec.to_props()
        # user-data may hold passwords and keys: a secret in the state and the preview, always
        if props["cloudInit"] is not None:
            props["cloudInit"] = pulumi.Output.secret(props["cloudInit"])
        self.guest = Guest(conf.key, props, pulumi.ResourceOptions(aliases=was, depends_on=[self.volume, *networks]))
        # one Output per guest for the stack's `guests` export (the guest's `status`): the SDK waits on every
        # pending Output at each step, and a dict of eleven would be eleven of them per guest until its create
        static = {"host": conf.host, "mac": spec.interfaces[0].mac, "ip": spec.ip,
                  "virtManager": f"virt-manager --connect '{host.conn.uri}' --show-domain-console {spec.name}",
                  "disk": spec.disk_path}
        self.outputs = self.guest.status.apply(lambda s: _export(static, s or {}))


def _export(static: dict[str, str], status: dict) -> dict:
    """One guest's entry in the stack's `guests` export."""
    return {**static, **{k: status.get(k) for k in ("uuid", "address", "addresses", "state", "uri")},
            "console": status.get("consoleCommand")}
