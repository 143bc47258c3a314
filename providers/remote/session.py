"""Per-host sessions: one SSH client (paramiko) and one libvirt connection (qemu+ssh) per host and process.

Host keys are always verified: against the pinned `hostKey` when the stack gives one, otherwise against
the user's ~/.ssh/known_hosts, strictly.  An unknown or changed key is refused with the fix.  The private
key comes from the stack secret `virtfleet:sshPrivateKey` (held in memory and, for libvirt's ssh, in a
0600 file inside a private 0700 runtime directory removed at exit), else `sshKeyFile`, else the agent.

The cache is lazy and thread-safe; nothing here is ever pickled with a provider.
"""

from __future__ import annotations

import atexit
import base64
import io
import os
import shlex
import shutil
import tempfile
import threading
import urllib.parse
from typing import TypeVar

import libvirt
import paramiko

from ..errors import HostError, HostKeyError
from ..spec import Connection

libvirt.registerErrorHandler(lambda *_: None, None)  # lookups that miss must not print to stderr

T = TypeVar("T")
_lock = threading.Lock()
CacheKey = tuple[str, int, str, str, str]
_host_locks: dict[CacheKey, threading.Lock] = {}
_ssh: dict[CacheKey, paramiko.SSHClient] = {}
_virt: dict[CacheKey, libvirt.virConnect] = {}
_private_key: list[str] = []  # the secret key material, when configured
_runtime_dir: list[str] = []
SSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"


def set_private_key(material: str | None) -> None:
    """Called from the providers' `configure` with the stack secret; kept in this process only."""
    _private_key[:] = [material] if material else []


def _key(c: Connection) -> CacheKey:
    """Connections are shared only when everything that authenticates them is the same."""
    return (c.address, c.port, c.user, c.host_key, c.ssh_key_file)


def _runtime() -> str:
    with _lock:
        if not _runtime_dir:
            d = tempfile.mkdtemp(prefix="virtfleet-")
            os.chmod(d, 0o700)
            _runtime_dir.append(d)
            atexit.register(shutil.rmtree, d, True)
        return _runtime_dir[0]


def _host_lock(c: Connection) -> threading.Lock:
    with _lock:
        return _host_locks.setdefault(_key(c), threading.Lock())


def _known_hosts_entry(c: Connection) -> str:
    return c.address if c.port == 22 else f"[{c.address}]:{c.port}"


def _pin_fix(c: Connection) -> str:
    return (f"Pin the host's key in the stack: `virtfleet:hosts.{c.host}.hostKey` = the output of "
            f"`ssh-keyscan -p {c.port} -t ed25519 {c.address}` (check it out of band), without the host name")


def _paramiko_pkey(material: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(material))
        except (paramiko.SSHException, ValueError):
            continue
    raise HostError("-", "loading virtfleet:sshPrivateKey", "not an unencrypted OpenSSH/PEM private key",
                    "Set it with `pulumi config set --secret virtfleet:sshPrivateKey < KEYFILE`")


def _open_ssh(c: Connection) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if c.host_key:
        ktype, blob = c.host_key.split()[:2]
        client.get_host_keys().add(_known_hosts_entry(c), ktype,
                                   paramiko.PKey.from_type_string(ktype, base64.b64decode(blob)))
    else:
        known = os.path.expanduser("~/.ssh/known_hosts")
        if os.path.exists(known):
            client.load_host_keys(known)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kwargs: dict[str, object] = {"hostname": c.address, "port": c.port, "username": c.user, "timeout": 10,
                                 "banner_timeout": 10, "auth_timeout": 15}
    if _private_key:
        kwargs.update(pkey=_paramiko_pkey(_private_key[0]), allow_agent=False, look_for_keys=False)
    elif c.ssh_key_file:
        kwargs.update(key_filename=os.path.expanduser(c.ssh_key_file), allow_agent=False, look_for_keys=False)
    try:
        client.connect(**kwargs)  # type: ignore[arg-type]
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(c.host, f"SSH to {c.address}:{c.port}",
                           f"the host key does not match (got {exc.key.get_name()} "
                           f"{exc.key.get_base64()[:24]}..., expected the pinned/known key): refused",
                           "If the host was really reinstalled, " + _pin_fix(c)) from exc
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(c.host, f"SSH to {c.address}:{c.port}", "the host key is unknown: refused",
                               _pin_fix(c) + ", or add it to ~/.ssh/known_hosts") from exc
        raise HostError(c.host, f"SSH to {c.user}@{c.address}:{c.port}", str(exc) or type(exc).__name__,
                        "Check the user, the key (virtfleet:sshPrivateKey or sshKeyFile) and sshd on the host") from exc
    except (TimeoutError, OSError) as exc:
        raise HostError(c.host, f"SSH to {c.address}:{c.port}", str(exc) or type(exc).__name__,
                        "Check that the host is up and the address and port are right") from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def ssh(c: Connection) -> paramiko.SSHClient:
    """The cached SSH client of a host, reconnecting when the transport died."""
    k = _key(c)
    with _host_lock(c):
        client = _ssh.get(k)
        transport = client.get_transport() if client else None
        if client is None or transport is None or not transport.is_active():
            client = _ssh[k] = _open_ssh(c)
        return client


def _ssh_wrapper(c: Connection) -> str:
    """A `command=` for libvirt's ssh transport that enforces our host-key policy."""
    d = _runtime()
    opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=15", "-o", f"Ciphers={SSH_CIPHERS}"]
    if c.host_key:
        known = os.path.join(d, f"known_hosts-{c.host}")
        with open(known, "w") as f:
            f.write(f"{_known_hosts_entry(c)} {c.host_key}\n")
        opts += ["-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"]
    path = os.path.join(d, f"ssh-{c.host}")
    quoted = " ".join("'" + o.replace("'", "'\\''") + "'" for o in opts)
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec ssh {quoted} \"$@\"\n")
    os.chmod(path, 0o700)
    return path


def _key_file() -> str:
    d = _runtime()
    path = os.path.join(d, "id")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_private_key[0].rstrip("\n") + "\n")
    return path


def libvirt_uri(c: Connection) -> str:
    query = {"command": _ssh_wrapper(c), "no_tty": "1"}
    keyfile = _key_file() if _private_key else os.path.expanduser(c.ssh_key_file) if c.ssh_key_file else ""
    if keyfile:
        query["keyfile"] = keyfile
    return f"{c.uri}?{urllib.parse.urlencode(query)}"


def virt(c: Connection) -> libvirt.virConnect:
    """The cached libvirt connection of a host; SSH host keys are checked first, with clear errors."""
    k = _key(c)
    conn = _virt.get(k)
    if conn is not None and conn.isAlive():
        return conn
    ssh(c)  # verifies the host key and credentials with a readable error before libvirt tries
    with _host_lock(c):
        conn = _virt.get(k)
        if conn is None or not conn.isAlive():
            try:
                conn = _virt[k] = libvirt.open(libvirt_uri(c))
            except libvirt.libvirtError as exc:
                raise HostError(c.host, f"connecting libvirt at {c.uri}", str(exc),
                                "Check that libvirtd runs on the host and the user may use qemu:///system") from exc
        return conn


def forget(c: Connection) -> None:
    """Drop a host's cached connections (after a failure), so the next call reconnects."""
    k = _key(c)
    with _host_lock(c):
        for cache in (_virt, _ssh):
            obj = cache.pop(k, None)
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead connection may fail in any way
                pass


def run(c: Connection, argv: list[str], timeout: float = 300, check: bool = True) -> tuple[int, str, str]:
    """Run a command on the host.  argv is quoted word by word: names and paths cannot inject shell."""
    cmd = shlex.join(argv)
    client = ssh(c)
    try:
        _, out, err = client.exec_command(cmd, timeout=timeout)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        rc = out.channel.recv_exit_status()
    except (TimeoutError, paramiko.SSHException, OSError) as exc:
        forget(c)
        raise HostError(c.host, f"running {argv[0]}", str(exc) or type(exc).__name__,
                        "Check the host's SSH connection and retry") from exc
    if check and rc != 0:
        raise HostError(c.host, f"running {cmd}", f"exit {rc}: {stderr.strip()[:500]}")
    return rc, stdout, stderr
