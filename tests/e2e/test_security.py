"""Security: secrets never in plaintext, host keys verified by default, no shell injection."""

from __future__ import annotations

import os
import subprocess

import pytest

from providers.model.host import Connection
from providers.remote import session
from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e


def test_ssh_key_secret_never_in_plaintext(tmp_path, unique) -> None:
    info = lab.info()
    with open(info["sshKeyFile"]) as f:
        material = f.read()
    body = [line for line in material.splitlines() if line and "PRIVATE KEY" not in line]
    needles = [line for line in body if len(line) > 20]
    g = f"sec-{unique}"
    cfg = config({"h1": {g: guest(g)}})
    for h in cfg["hosts"].values():
        del h["sshKeyFile"]  # the key comes from the secret only
    stack = Stack(str(tmp_path), f"sec{unique}", cfg)
    subprocess.run(["pulumi", "config", "set", "--secret", "virtfleet:sshPrivateKey", "--stack", stack.name,
                    "--config-file", stack.config_file], input=material, text=True, cwd=lab.ROOT, env=stack.env,
                   check=True, capture_output=True)
    try:
        up = stack.run("up", "--yes", "--skip-preview", "-v=9", "--logtostderr", "--logflow")
        assert lab.domain_state("h1", g) == "running"
        export = stack.run("stack", "export").stdout
        texts = {"up output and logs": up.stdout + up.stderr, "stack export": export,
                 "config file": open(stack.config_file).read()}
        for root, _, files in os.walk(os.path.join(str(tmp_path), "backend")):
            for name in files:
                with open(os.path.join(root, name), errors="replace") as f:
                    texts[f"state file {name}"] = f.read()
        for where, text in texts.items():
            for needle in needles:
                assert needle not in text, f"a line of the private key appears in {where}"
    finally:
        stack.destroy(check=False)
        lab.virsh("h1", "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)


def test_remote_commands_cannot_be_injected(unique) -> None:
    c = Connection.from_props(lab.connection_props("h1"))
    marker = f"/tmp/virtfleet-pwned-{unique}"
    for hostile in (f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"' ; touch {marker}; '",
                    f"\" && touch {marker} && \""):
        rc, _, _ = session.run(c, ["ls", "--", hostile], check=False)
        assert rc != 0
    assert lab.in_host("h1", "test", "-e", marker, check=False).returncode != 0


def test_no_option_disables_host_key_verification() -> None:
    forbidden = ("no_verify", "StrictHostKeyChecking=no", "AutoAddPolicy", "WarningPolicy", "known_hosts_verify")
    for folder in ("providers", "components", "lab", "scripts", "bench", "plugin"):
        for root, _, files in os.walk(os.path.join(lab.ROOT, folder)):
            for name in files:
                if name.endswith((".py", ".sh")):
                    with open(os.path.join(root, name)) as f:
                        text = f.read()
                    for word in forbidden:
                        assert word not in text, f"{name} contains {word}"
