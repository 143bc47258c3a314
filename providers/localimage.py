"""Local image files: format, virtual size and a cached sha256 (local I/O only, no host)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
from dataclasses import dataclass

from .errors import ConfigError

QCOW2_MAGIC = b"QFI\xfb"
CACHE = os.path.expanduser(os.environ.get("VIRTFLEET_DIGEST_CACHE", "~/.cache/virtfleet/digests.json"))


@dataclass(frozen=True)
class LocalImage:
    path: str
    format: str
    size: int          # bytes of the file
    virtual_size: int  # bytes the guest sees
    sha256: str


def _format_and_virtual_size(path: str) -> tuple[str, int]:
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] == QCOW2_MAGIC and len(head) >= 32:
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", os.path.getsize(path)


def sha256_file(path: str) -> str:
    """sha256 of a file; holes are hashed as zeros without reading them from disk."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    zeros = bytes(1 << 20)
    with open(path, "rb") as f:
        fd, pos = f.fileno(), 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                data = size
            while pos < data:  # a hole: zeros
                n = min(len(zeros), data - pos)
                h.update(zeros[:n])
                pos += n
            if pos >= size:
                break
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = size
            os.lseek(fd, pos, os.SEEK_SET)
            while pos < hole:
                chunk = os.read(fd, min(8 << 20, hole - pos))
                if not chunk:
                    break
                h.update(chunk)
                pos += len(chunk)
    return h.hexdigest()


def _cached_digest(path: str) -> str:
    st = os.stat(path)
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    try:
        with open(CACHE) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(os.path.abspath(path))
    if entry and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    digest = sha256_file(path)
    cache[os.path.abspath(path)] = {"stamp": stamp, "sha256": digest}
    try:
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        tmp = f"{CACHE}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, CACHE)
    except OSError:
        pass  # the cache is an optimisation only
    return digest


def load(key: str, path: str, build: str = "", cwd: str = ".") -> LocalImage:
    """Run the optional build command, then describe the image file.  Errors name the config key."""
    if build:
        proc = subprocess.run(build, shell=True, cwd=cwd, capture_output=True, text=True)  # noqa: S602 - the user's own build command
        if proc.returncode != 0:
            raise ConfigError(f"{key}.build", f"build command failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-400:]}", "Fix the build, or remove `build`")
    full = os.path.join(cwd, os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ConfigError(f"{key}.path", f"image file {full!r} does not exist",
                          "Build the image first (or give `build`), or correct the path")
    fmt, vsize = _format_and_virtual_size(full)
    return LocalImage(os.path.abspath(full), fmt, os.path.getsize(full), vsize, _cached_digest(full))
