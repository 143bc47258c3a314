"""Write stacks/Pulumi.lab.yaml from what `lab/lab.sh up` produced (.lab/lab.json).

Two small guests per lab host on the lab payload image.  Keys Pulumi itself keeps in the file
(encryptionsalt, secrets) are preserved.  usage: python lab/write_stack.py [GUESTS_PER_HOST]
"""

from __future__ import annotations

import json
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stack_config(lab: dict, per_host: int) -> dict:
    hosts = {}
    for n, (name, h) in enumerate(sorted(lab["hosts"].items())):
        guests = {f"{name}-vm{i}": {"memory": "128MiB", "vcpus": 1, "diskSize": 1, "image": "payload",
                                    "mac": f"52:54:00:fa:{n + 1:02x}:{i:02x}", "ip": f"10.200.1.{10 * (n + 1) + i}",
                                    "shutdownTimeout": 20}
                  for i in range(1, per_host + 1)}
        hosts[name] = {"address": h["address"], "port": h["port"], "user": h["user"], "hostKey": h["hostKey"],
                       "hostNic": h["hostNic"], "virtType": h["virtType"], "sshKeyFile": h["sshKeyFile"],
                       "pool": {"name": "guests", "type": "dir", "path": "/var/lib/virtfleet/guests"},
                       "guests": guests}
    return {"virtfleet:images": {"payload": {"path": lab["payload"]}}, "virtfleet:hosts": hosts}


def main() -> None:
    per_host = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    lab_dir = os.environ.get("VIRTFLEET_LAB_DIR", os.path.join(ROOT, ".lab"))
    with open(os.path.join(lab_dir, "lab.json")) as f:
        lab = json.load(f)
    path = os.path.join(ROOT, "stacks", "Pulumi.lab.yaml")
    doc: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    config = {k: val for k, val in (doc.get("config") or {}).items() if not k.startswith("virtfleet:")}
    config.update(stack_config(lab, per_host))
    doc["config"] = config
    with open(path, "w") as f:
        f.write("# Written by lab/write_stack.py from .lab/lab.json: the simulated hosts of `lab/lab.sh up`.\n")
        yaml.safe_dump(doc, f, sort_keys=False)
    print(path)


if __name__ == "__main__":
    main()
