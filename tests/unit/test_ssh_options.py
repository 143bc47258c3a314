"""What virtfleet's ssh processes get: keys kept apart, no inherited secrets, no extra sources of trust."""

from __future__ import annotations

import os
import subprocess

import pytest

from providers.model.host import Connection
from providers.remote import ssh

pytestmark = pytest.mark.unit
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKMXPZbrtpy4ToAGYPKvES0bow1xtrIrOLpw5kCD8SGy"
C = Connection(host="h", address="192.0.2.10", host_key=KEY)


@pytest.fixture
def no_key():
    yield
    ssh.set_private_key(None)


def test_a_master_opened_with_one_key_is_never_reused_for_another(no_key) -> None:
    ssh.set_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nKEYMATERIALONE\n-----END OPENSSH PRIVATE KEY-----\n")
    first = (ssh.cache_key(C), ssh.control_path(C))
    ssh.set_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nKEYMATERIALTWO\n-----END OPENSSH PRIVATE KEY-----\n")
    second = (ssh.cache_key(C), ssh.control_path(C))
    ssh.set_private_key(None)
    assert first[0] != second[0] and first[1] != second[1] != ssh.control_path(C)
    assert not any("KEYMATERIAL" in str(part) for part in (*first[0], *second[0]))


def test_ssh_processes_do_not_inherit_pulumis_variables(monkeypatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", '{"virtfleet:sshPrivateKey": "secret"}')
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "secret")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent")
    env = ssh.ssh_env()
    assert not [k for k in env if k.startswith("PULUMI_")] and env["SSH_AUTH_SOCK"] == "/run/agent"


def test_only_the_pin_or_known_hosts_files_are_trusted() -> None:
    opts = ssh.ssh_options(C)
    for option in ("StrictHostKeyChecking=yes", "KnownHostsCommand=none", "VerifyHostKeyDNS=no",
                   "UpdateHostKeys=no", "GlobalKnownHostsFile=/dev/null"):
        assert option in opts


def test_key_files_of_killed_processes_are_swept(tmp_path) -> None:
    dead = 2**22 + 7  # above pid_max's default: no such process
    (tmp_path / f"id-{dead}-1").write_text("key")
    (tmp_path / f"id-{os.getpid()}-1").write_text("key")
    (tmp_path / "known_hosts-x").write_text("")
    ssh.sweep(str(tmp_path), "id", 3, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"id-{os.getpid()}-1", "known_hosts-x"])


def test_an_ssh_config_that_forwards_or_runs_commands_reaches_no_host(tmp_path) -> None:
    """What ssh itself would do with a user's config (`ssh -G` prints the settings in effect)."""
    config = tmp_path / "config"
    config.write_text("Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ForwardX11Trusted yes\n"
                      "  LocalForward 5555 127.0.0.1:22\n  DynamicForward 1080\n  RemoteForward 6666 127.0.0.1:22\n"
                      "  PermitLocalCommand yes\n  LocalCommand touch /tmp/pwned\n  RemoteCommand id\n"
                      "  RequestTTY force\n  Tunnel yes\n")
    seen = subprocess.run(["ssh", "-G", "-F", str(config), *ssh.ssh_options(C), "h"], capture_output=True,
                          text=True, check=True).stdout.lower().splitlines()
    for setting in ("forwardagent no", "forwardx11 no", "forwardx11trusted no", "clearallforwardings yes",
                    "permitlocalcommand no", "requesttty false", "tunnel false"):
        assert setting in seen, (setting, seen)
    assert not [ln for ln in seen if ln.startswith(("localforward", "dynamicforward", "remoteforward",
                                                    "remotecommand"))]
