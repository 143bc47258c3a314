"""Keys: a host's pinned key, checked and written as the known_hosts file every ssh to it is given, and
the stack's private key, checked before anything connects."""

from __future__ import annotations

import io
import os
import threading
from typing import TYPE_CHECKING

from providers.model import validate
from providers.model.errors import ConfigError, HostError, HostKeyError
from providers.model.host import Connection

if TYPE_CHECKING:
    import paramiko


def entry(c: Connection) -> str:
    return c.address if c.port == 22 else f"[{c.address}]:{c.port}"


def pin_fix(c: Connection) -> str:
    return (f"Pin the host's key in the stack: `virtfleet:hosts.{c.host}.hostKey` = the output of "
            f"`ssh-keyscan -p {c.port} -t ed25519 {c.address}` (check it out of band), without the host name")


def check_pinned(c: Connection) -> None:
    """The pinned key must be an OpenSSH public key line, else a clear error before connecting (the same
    check as the config's; ssh itself then refuses a key that only looks right)."""
    try:
        validate.host_key("hostKey", c.host_key)
    except ConfigError as exc:
        raise HostKeyError(c.host, "reading the pinned host key", f"not a valid SSH public key ({exc})",
                           pin_fix(c)) from exc


def options(c: Connection, known: str) -> list[str]:
    """The ssh options that trust exactly the pinned key, from the file `known` (named by everything that
    authenticates the connection: written once per process)."""
    if not os.path.exists(known):
        check_pinned(c)
        tmp = f"{known}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w") as f:
            f.write(f"{entry(c)} {c.host_key}\n")
        os.replace(tmp, known)
    return ["-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"]


def _paramiko_pkey(material: str) -> paramiko.PKey:
    import paramiko  # noqa: PLC0415 - only for a configured private key: importing it costs 0.15 s
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(material))
        except (paramiko.SSHException, ValueError):
            continue
    raise HostError("-", "loading virtfleet:sshPrivateKey", "not an unencrypted OpenSSH/PEM private key",
                    "Set it with `pulumi config set --secret virtfleet:sshPrivateKey < KEYFILE`")


def check_private_key(material: str) -> None:
    """A configured `virtfleet:sshPrivateKey` must be a usable key: refused with the fix before connecting."""
    _paramiko_pkey(material)
