"""Stack configs for end-to-end tests, built from the lab's facts."""

from __future__ import annotations

import hashlib
from typing import Any

from tests import lab


def mac_for(name: str) -> str:
    h = hashlib.sha256(name.encode()).hexdigest()
    return f"52:54:00:{h[0:2]}:{h[2:4]}:{h[4:6]}"


def guest(key: str, **extra: Any) -> dict[str, Any]:
    return {"memory": "128MiB", "vcpus": 1, "diskSize": 1, "image": "payload", "mac": mac_for(key),
            "shutdownTimeout": 15, "autostart": False, **extra}


def config(guests_by_host: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    info = lab.info()
    hosts = {}
    for host, guests in guests_by_host.items():
        h = info["hosts"][host]
        hosts[host] = {"address": h["address"], "user": "root", "hostKey": h["hostKey"], "hostNic": "eth0",
                       "virtType": "qemu", "sshKeyFile": info["sshKeyFile"],
                       "pool": {"name": "guests", "path": "/var/lib/virtfleet/guests"}, "guests": guests}
    return {"images": {"payload": {"path": info["payload"]}}, "hosts": hosts}
