"""What the processes virtfleet starts (image builds, ssh) inherit: no stack config, passphrase or token."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from providers.local import delta
from providers.local import image as localimage
from providers.local.childenv import child_env, denied
from providers.model.host import Connection
from providers.remote import session, ssh
from tests.lab import ROOT

pytestmark = pytest.mark.unit

SECRETS = {
    "PULUMI_CONFIG": '{"virtfleet:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----"}',
    "PULUMI_CONFIG_PASSPHRASE": "hunter2", "PULUMI_CONFIG_PASSPHRASE_FILE": "/secret/pass",
    "PULUMI_ACCESS_TOKEN": "pul-123", "PULUMI_CONFIG_SECRET_KEYS": '["virtfleet:sshPrivateKey"]',
    "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
    "AZURE_CLIENT_SECRET": "x", "ARM_CLIENT_SECRET": "x", "GOOGLE_CREDENTIALS": "{}", "GITHUB_TOKEN": "ghp",
    "VAULT_TOKEN": "v", "DIGITALOCEAN_TOKEN": "d", "MY_SERVICE_API_KEY": "k", "DB_PASSWORD": "p",
}
KEPT = {"PATH": "/usr/bin", "HOME": "/root", "NIX_PATH": "nixpkgs=/nix", "NIX_CONFIG": "access-tokens = x",
        "LANG": "C.UTF-8", "LC_ALL": "C", "SSH_AUTH_SOCK": "/run/agent", "XDG_RUNTIME_DIR": "/run/user/0",
        "VIRTFLEET_TRACE": "/tmp/t", "TMPDIR": "/tmp", "TOKENIZER_MODE": "x", "MAKEFLAGS": "-j4"}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_credentials_are_denied(name: str) -> None:
    assert denied(name)


@pytest.mark.parametrize("name", sorted(KEPT))
def test_what_builds_and_ssh_need_is_kept(name: str) -> None:
    assert not denied(name)


def test_child_env_is_the_environment_without_the_denied() -> None:
    assert child_env({**SECRETS, **KEPT}) == KEPT


def test_ssh_processes_get_the_same_environment(monkeypatch) -> None:
    for k, v in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(k, v)
    env = ssh.ssh_env()
    assert not set(SECRETS) & set(env) and all(env[k] == v for k, v in KEPT.items())


def test_a_build_command_sees_none_of_the_programs_secrets(tmp_path, monkeypatch) -> None:
    for k, v in {**SECRETS, **KEPT, "PATH": os.environ["PATH"]}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(localimage, "CACHE", str(tmp_path / "digests.json"))
    monkeypatch.setattr(delta, "CACHE_DIR", str(tmp_path / "clusters"))
    build = "env -0 > seen.env && head -c 65536 /dev/zero > image.raw"
    localimage.load("images.x", "image.raw", build=build, cwd=str(tmp_path)).digest.result(timeout=30)
    seen = dict(kv.split("=", 1) for kv in (tmp_path / "seen.env").read_text().split("\0") if kv)
    assert not sorted(set(SECRETS) & set(seen)), "the build saw the program's secrets"
    assert not [v for v in seen.values() if "hunter2" in v or "OPENSSH PRIVATE KEY" in v]
    assert seen["HOME"] == "/root" and seen["NIX_PATH"] == "nixpkgs=/nix" and seen["PATH"] == os.environ["PATH"]


def test_libvirts_ssh_wrapper_drops_the_secrets_by_name(tmp_path, monkeypatch) -> None:
    """libvirt's qemu+ssh fallback runs the wrapper with the provider's environment."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(session, "runtime_dir", lambda: str(tmp_path))
    text = open(session._ssh_wrapper(Connection(host="h", address="192.0.2.10"))).read()
    assert all(f"-u {k} " in text for k in SECRETS), text
    assert "hunter2" not in text and "PRIVATE KEY" not in text and "s3cr3t" not in text


def test_named_variables_pass_but_never_pulumi_ones() -> None:
    allow = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "PULUMI_CONFIG", "PULUMI_CONFIG_PASSPHRASE")
    env = child_env({**SECRETS, **KEPT, "AWS_PROFILE": "images"}, allow)
    assert env == {**KEPT, "AWS_PROFILE": "images", "AWS_ACCESS_KEY_ID": "AKIA"}


def test_a_build_gets_the_variables_its_build_env_names(tmp_path, monkeypatch) -> None:
    for k, v in {**SECRETS, "PATH": os.environ["PATH"]}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(localimage, "CACHE", str(tmp_path / "digests.json"))
    monkeypatch.setattr(delta, "CACHE_DIR", str(tmp_path / "clusters"))
    build = "env -0 > seen.env && head -c 65536 /dev/zero > image.raw"
    passed = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    localimage.load("images.x", "image.raw", build=build, cwd=str(tmp_path), build_env=passed).digest.result(timeout=30)
    seen = dict(kv.split("=", 1) for kv in (tmp_path / "seen.env").read_text().split("\0") if kv)
    assert {k: seen[k] for k in passed} == {k: SECRETS[k] for k in passed}
    assert not sorted((set(SECRETS) - set(passed)) & set(seen))


PROBE = r'''
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from providers.local.childenv import private_process
if sys.argv[2] == "private":
    assert private_process()
child = subprocess.run(["cat", "/proc/%d/environ" % __import__("os").getpid()], capture_output=True)
print("read" if child.returncode == 0 and b"VIRTFLEET_PROBE_SECRET=s3cret" in child.stdout else "refused")
'''


@pytest.mark.parametrize("mode, expected", [("private", "refused"), ("as-is", "read")])
def test_a_child_of_the_same_user_cannot_read_a_private_processs_environment(mode: str, expected: str) -> None:
    """As a `build:` command would try (`cat /proc/$PPID/environ`), under an ordinary user (root reads all)."""
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                          PROBE, ROOT, mode], capture_output=True, text=True, timeout=60, cwd="/",
                         env={"PATH": os.environ["PATH"], "VIRTFLEET_PROBE_SECRET": "s3cret"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
