"""Hypervisor: a Host with its pool and the BaseImages its guests need, under one component."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pulumi

from providers.base_image import BaseImage
from providers.host import Host
from providers.local.image import LocalImage
from providers.model import fields
from providers.model.storage import BaseImageSpec, base_volume_name
from providers.network import Network

from .config import HostConf


def _digest_output(img: LocalImage) -> pulumi.Output[str]:
    """The image's content digest as an Output: a new image is still being hashed while its hosts connect."""
    if img.digest.done():
        return pulumi.Output.from_input(img.digest.result())
    return pulumi.Output.from_input(asyncio.wrap_future(img.digest))


def _volume_name(fmt: str) -> Callable[[str], str]:
    return lambda digest: base_volume_name(digest, fmt)


class Hypervisor(pulumi.ComponentResource):
    """Children: `<host>` (Host), `<host>-<image>` (BaseImage) for every image its guests use, and
    `<host>-net-<network>` (Network) for every network declared on the host."""

    def __init__(self, conf: HostConf, images: dict[str, LocalImage],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("virtfleet:fleet:Hypervisor", conf.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.conf = conf
        self.host = Host(conf.key, conf.spec.to_props(), child)
        self.base_images: dict[str, BaseImage] = {}
        self.images_format = {name: img.format for name, img in images.items()}
        digests = {name: _digest_output(img) for name, img in images.items()}
        self.base_volume_names = {name: digests[name].apply(_volume_name(img.format))
                                  for name, img in images.items()}
        self.networks = {n.name: Network(f"{conf.key}-net-{n.name}", n.to_props(),
                                         pulumi.ResourceOptions(parent=self, depends_on=[self.host]))
                         for n in conf.networks}
        for name in sorted({g.image for g in conf.guests}):
            img = images[name]
            self.base_images[name] = BaseImage(
                f"{conf.key}-{name}",
                fields.props_of(BaseImageSpec, conn=conf.spec.conn, pool=conf.spec.pool.name, image=name,
                                source=img.path, digest=digests[name], size=img.size, format=img.format,
                                file_size=img.file_size),
                pulumi.ResourceOptions(parent=self, depends_on=[self.host]))
