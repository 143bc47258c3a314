"""Field validators shared by the stack config parser and the providers' `check`.

Each returns the normalised value or raises ConfigError naming the key, the problem and the fix.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import struct
from typing import Any

from providers.model.errors import ConfigError
from providers.model.units import parse_size

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # matched whole (fullmatch): no trailing newline
MAX_NAME = 64
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
NIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,14}")
DNS_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
# where a pool must not live: the root and the system's own directories
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
               "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/lib/libvirt", "/var/log"}
MAX_CMDLINE = 4096
HOST_KEY_TYPES = {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521"}
MAX_MEMORY = 16 << 40  # 16 TiB: anything larger is a typo
MAX_VCPUS = 1024


def name(key: str, value: Any, what: str = "name", max_len: int = MAX_NAME) -> str:
    """A libvirt-safe name: letters, digits, '.', '_', '-'; no '/', '..', spaces or quotes; <= max_len."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_len:
        raise ConfigError(key, f"{what} {value[:20]!r}... is {len(value)} characters, the limit is {max_len}",
                          "Use a shorter name")
    if not NAME_RE.fullmatch(value) or ".." in value:
        raise ConfigError(key, f"{what} {value!r} contains characters that are not allowed",
                          "Use only letters, digits, '.', '_' and '-' (no '/', '..', spaces, quotes, <, >, &), "
                          "starting with a letter or digit")
    return value


def mac(key: str, value: Any) -> str:
    """A unicast, non-zero MAC address, returned in lower case."""
    if not isinstance(value, str) or not MAC_RE.fullmatch(value):
        raise ConfigError(key, f"{value!r} is not a MAC address", "Write six hex pairs, e.g. D2:91:69:C0:14:9A")
    first = int(value[:2], 16)
    if first & 1:
        raise ConfigError(key, f"{value} is a multicast address (lowest bit of the first byte set)",
                          "Use a unicast locally administered MAC: the first byte's second hex digit must be "
                          "2, 6, A or E (e.g. 52:54:00:.. is QEMU's range)")
    if value.replace(":", "") == "0" * 12:
        raise ConfigError(key, "00:00:00:00:00:00 is not a usable MAC", "Pick a unicast MAC such as 52:54:00:12:34:56")
    return value.lower()


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, f"{value!r} is not a boolean", "Write true or false")


def integer(key: str, value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, float) and value.is_integer():  # numbers cross the engine's RPC as floats
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(key, f"{what} must be a whole number, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(key, f"{what} must be a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise ConfigError(key, f"{what} {n} is out of range", f"Use a value from {lo} to {hi}")
    return n


def size(key: str, value: Any, what: str, lo: int, hi: int, default_unit: int = 1 << 30) -> int:
    """Bytes for a size given as GiB number or a string with unit, within [lo, hi]."""
    try:
        n = parse_size(value, default_unit)
    except ValueError as exc:
        raise ConfigError(key, f"{what}: {exc}", "Write e.g. 4 (GiB), \"4GiB\" or \"512MiB\"") from None
    if n < lo:
        raise ConfigError(key, f"{what} {value!r} is too small", f"Use at least {lo >> 20} MiB")
    if n > hi:
        raise ConfigError(key, f"{what} {value!r} is absurdly large", f"Use at most {hi >> 30} GiB")
    return n


def address(key: str, value: Any) -> str:
    """An IP address or a DNS name (no user@, no port, no spaces)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, "address is missing", "Give the host's IP address or DNS name")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not DNS_RE.fullmatch(value):
        raise ConfigError(key, f"{value!r} is neither an IP address nor a DNS name",
                          "Put the user in `user` and the port in `port`, not in the address")
    return value


def host_key(key: str, value: Any) -> str:
    """An OpenSSH public key line 'TYPE BASE64 [comment]'; returns 'TYPE BASE64'."""
    fix = "Pin the key as printed by `ssh-keyscan -t ed25519 HOST` without the host name, e.g. \"ssh-ed25519 AAAA...\""
    if not isinstance(value, str):
        raise ConfigError(key, f"hostKey must be a string, got {value!r}", fix)
    parts = value.split()
    if len(parts) < 2 or parts[0] not in HOST_KEY_TYPES:
        raise ConfigError(key, f"hostKey {value[:40]!r} is not an OpenSSH public key", fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + n].decode()
    except Exception:  # noqa: BLE001 - any decoding failure is the same user error
        raise ConfigError(key, "hostKey's base64 part does not decode", fix) from None
    if inner != parts[0]:
        raise ConfigError(key, f"hostKey says {parts[0]} but holds a {inner} key", fix)
    return f"{parts[0]} {parts[1]}"


def abs_path(key: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(key, f"{what} {value!r} is not an absolute path", "Write a path starting with /")
    if "\n" in value or "\0" in value or any(p == ".." for p in value.split("/")):
        raise ConfigError(key, f"{what} {value!r} contains '..' or control characters", "Write a plain absolute path")
    return value.rstrip("/") or "/"


def pool_path(key: str, value: Any) -> str:
    """An absolute directory for a dir pool that is not the root or a system directory."""
    path = abs_path(key, value, "pool path")
    if path in SYSTEM_DIRS:
        raise ConfigError(key, f"pool path {path!r} is a system directory: volumes would be created among the "
                          "host's own files", "Use a directory of its own, e.g. /var/lib/virtfleet/guests")
    return path


def ip(key: str, value: Any) -> str:
    """An optional IP address (informational): empty, or an IPv4/IPv6 address."""
    if value in (None, ""):
        return ""
    try:
        return str(ipaddress.ip_address(value if isinstance(value, str) else ""))
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IP address", "Write e.g. 192.0.2.20, or leave `ip` out") from None


def cmdline(key: str, value: Any) -> str:
    """A kernel command line: one line of printable text, at most MAX_CMDLINE characters."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ConfigError(key, f"cmdline must be a string, got {value!r}", "Quote it, e.g. \"console=ttyS0\"")
    if len(value) > MAX_CMDLINE:
        raise ConfigError(key, f"cmdline is {len(value)} characters, the limit is {MAX_CMDLINE}", "Shorten it")
    if any(not ch.isprintable() for ch in value):
        raise ConfigError(key, "cmdline contains control characters (a newline?)", "Write it on one line")
    return value


def free_text(key: str, value: Any, max_len: int = 1024) -> str:
    """Free text for people (a description): printable, lines and tabs allowed, at most `max_len` characters."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ConfigError(key, f"must be text, got {value!r}", "Quote it")
    if len(value) > max_len:
        raise ConfigError(key, f"is {len(value)} characters, the limit is {max_len}", "Shorten it")
    if any(not (ch.isprintable() or ch in "\n\t") for ch in value):
        raise ConfigError(key, "contains control characters", "Use printable text (new lines and tabs are fine)")
    return value.strip()


def choice(key: str, value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ConfigError(key, f"{what} {value!r} is not one of {', '.join(allowed)}",
                          f"Use one of: {', '.join(allowed)}")
    return str(value)


def nic(key: str, value: Any) -> str:
    if not isinstance(value, str) or not NIC_RE.fullmatch(value):
        raise ConfigError(key, f"{value!r} is not a network interface name", "Use the host's NIC name, e.g. enp30s0")
    return value


def interface_network(key: str, value: Any) -> ipaddress.IPv4Interface:
    """The host's IPv4 address on a network with the prefix, e.g. 192.168.150.1/24."""
    fix = "Write the host's address on the network with its prefix, e.g. 192.168.150.1/24"
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(key, f"{value!r} is not an address with a prefix", fix)
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ConfigError(key, f"{value!r} is not an IPv4 address with a prefix", fix) from None
    net = iface.network
    if not 8 <= net.prefixlen <= 30 or iface.ip in (net.network_address, net.broadcast_address):
        raise ConfigError(key, f"{value} leaves no room for guests (or is the network/broadcast address)", fix)
    return iface


def dhcp_range(key: str, value: Any, iface: ipaddress.IPv4Interface) -> tuple[str, str]:
    """("", "") for no DHCP; `true` for the upper half of the subnet; or {start, end} inside it."""
    if value in (None, False, ""):
        return "", ""
    net = iface.network
    if value is True:
        hosts = net.num_addresses - 2
        start, end = net.network_address + 1 + hosts // 2, net.broadcast_address - 1
    elif isinstance(value, dict) and set(value) <= {"start", "end"} and value.get("start") and value.get("end"):
        try:
            start, end = ipaddress.IPv4Address(value["start"]), ipaddress.IPv4Address(value["end"])
        except ValueError:
            raise ConfigError(key, f"{value!r} has an address that is not IPv4", "e.g. {start: 192.168.150.100, "
                              "end: 192.168.150.200}") from None
    else:
        raise ConfigError(key, f"{value!r} is not a DHCP range", "Write `dhcp: true` (the upper half of the "
                          "subnet) or {start: ..., end: ...}")
    if not (start in net and end in net and start <= end) or start <= net.network_address or \
            end >= net.broadcast_address:
        raise ConfigError(key, f"DHCP range {start}-{end} is not an ordered range inside {net}",
                          f"Pick start <= end, both inside {net}")
    if start <= iface.ip <= end:
        raise ConfigError(key, f"DHCP range {start}-{end} contains the host's own address {iface.ip}",
                          "Move the range or the address")
    return str(start), str(end)
