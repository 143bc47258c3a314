"""One error hierarchy.  Every message says which host/resource/key, what went wrong and how to fix it."""

from __future__ import annotations


class VirtfleetError(Exception):
    """Base of every error virtfleet raises on purpose."""


class ConfigError(VirtfleetError):
    """A stack configuration value is wrong.  `key` is the full config path, e.g. hosts.athens.port."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key, self.problem, self.fix = key, problem, fix
        text = f"virtfleet:{key}: {problem}"
        super().__init__(f"{text}. {fix}" if fix else text)


class HostError(VirtfleetError):
    """A host cannot be reached or does not have what the stack needs."""

    def __init__(self, host: str, action: str, cause: str, fix: str = "") -> None:
        self.host = host
        text = f"host {host}: {action} failed: {cause}"
        super().__init__(f"{text}. {fix}" if fix else text)


class HostKeyError(HostError):
    """The SSH host key is unknown or does not match the pin: refused, never trusted silently."""


class UnsafeChangeError(VirtfleetError):
    """A change would lose data (shrink a disk, take over a foreign guest): refused."""
