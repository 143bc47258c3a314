"""Hypervisor: a Host with its pool and the BaseImages its guests need, under one component."""

from __future__ import annotations

import pulumi

from providers.base_image import BaseImage
from providers.host import Host
from providers.localimage import LocalImage

from .config import HostConf


class Hypervisor(pulumi.ComponentResource):
    """Children: `<host>` (Host) and `<host>-<image>` (BaseImage) for every image its guests use."""

    def __init__(self, conf: HostConf, images: dict[str, LocalImage],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("virtfleet:fleet:Hypervisor", conf.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.conf = conf
        self.host = Host(conf.key, conf.spec.to_props(), child)
        self.base_images: dict[str, BaseImage] = {}
        self.images_format = {name: img.format for name, img in images.items()}
        self.base_volume_names = {name: f"vfbase-{img.sha256}.{img.format}" for name, img in images.items()}
        conn = conf.spec.conn.to_props()
        for name in sorted({g.image for g in conf.guests}):
            img = images[name]
            self.base_images[name] = BaseImage(
                f"{conf.key}-{name}",
                {"connection": conn, "pool": conf.spec.pool.name, "image": name, "source": img.path,
                 "sha256": img.sha256, "size": img.size, "format": img.format},
                pulumi.ResourceOptions(parent=self, depends_on=[self.host]))
        self.register_outputs({"uri": self.host.uri, "libvirtVersion": self.host.libvirtVersion,
                               "kvmUsable": self.host.kvmUsable})
