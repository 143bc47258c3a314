"""Props builders for provider tests on the lab."""

from __future__ import annotations

from typing import Any

from providers.local.image import load
from tests import lab

POOL = {"name": "guests", "type": "dir", "path": "/var/lib/virtfleet/guests", "vg": ""}


def host_props(host: str, **changes: Any) -> dict[str, Any]:
    return {"connection": lab.connection_props(host), "pool": dict(POOL), "hostNic": "eth0", "virtType": "qemu",
            **changes}


def image_props(host: str, path: str | None = None, name: str = "payload") -> dict[str, Any]:
    img = load("images.payload", path or lab.info()["payload"])
    return {"connection": lab.connection_props(host), "pool": "guests", "image": name, "source": img.path,
            "digest": img.hexdigest, "size": img.size, "format": img.format}


def volume_props(host: str, name: str, base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"connection": lab.connection_props(host), "pool": "guests", "name": name, "capacity": 1 << 30,
            "mode": "overlay", "baseVolume": base["volumeName"], "baseFormat": base["format"],
            "deleteOnDestroy": True, **changes}


def guest_props(host: str, name: str, disk_path: str, mac: str, **changes: Any) -> dict[str, Any]:
    return {"connection": lab.connection_props(host), "name": name,
            "owner": {"project": "virtfleet", "stack": "provider-tests", "resource": name},
            "memory": 128 << 20, "vcpus": 1, "virtType": "qemu", "diskPath": disk_path, "diskFormat": "qcow2",
            "interfaces": [{"type": "direct", "source": "eth0", "mac": mac, "model": "virtio"}],
            "graphics": "spice", "running": True, "autostart": False, "kernel": "", "initrd": "", "cmdline": "",
            "shutdownTimeout": 15, "ip": "", **changes}
