"""Local image files: the disk the guest sees, and its cached content digest (local I/O only, no host).

An image is named by the content of its virtual disk, not by its file's bytes: a qcow2 (compressed or
not) is read through a raw view of it (`qemu-img convert`, sparse, kept in a local cache while its
file is unchanged), so raw, qcow2 and compressed qcow2 of one disk are one base, and hosts store it raw
(overlays read a raw backing file without decompressing).  The digest (`clustermap`) and the block
index (`delta`) are computed in the background (`LocalImage.digest` is a future), so the program can
register and connect its hosts while a new image is hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from providers.hostside.clustermap import extents
from providers.local import delta
from providers.local.childenv import child_env
from providers.local.trace import trace
from providers.model.errors import ConfigError

QCOW2_MAGIC = b"QFI\xfb"
CACHE = os.path.expanduser(os.environ.get("VIRTFLEET_DIGEST_CACHE", "~/.cache/virtfleet/disk-digests.json"))
VIEWS = os.path.join(os.path.dirname(CACHE), "views")


@dataclass(frozen=True)
class LocalImage:
    path: str          # the raw view of the guest's disk: what is hashed and uploaded
    format: str        # how hosts store it: raw
    size: int          # bytes of the view: the disk the guest sees
    virtual_size: int
    digest: Future[str]  # its content digest, hex
    file: str = ""     # the image file as built
    file_size: int = 0

    @property
    def hexdigest(self) -> str:
        return self.digest.result()


def _format_and_virtual_size(path: str) -> tuple[str, int]:
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] == QCOW2_MAGIC and len(head) >= 32:
        return "qcow2", struct.unpack(">Q", head[24:32])[0]
    return "raw", os.path.getsize(path)


def sha256_file(path: str) -> str:
    """sha256 of a file; holes are hashed as zeros without reading them from disk."""
    h = hashlib.sha256()
    zeros = bytes(1 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        for is_data, offset, length in extents(fd, os.path.getsize(path)):
            if not is_data:
                for _ in range(length // len(zeros)):
                    h.update(zeros)
                h.update(zeros[:length % len(zeros)])
                continue
            os.lseek(fd, offset, os.SEEK_SET)
            while length > 0:
                chunk = os.read(fd, min(8 << 20, length))
                if not chunk:
                    break
                h.update(chunk)
                length -= len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


_workers: list[ThreadPoolExecutor] = []
_started: dict[tuple[str, str], Future[str]] = {}
_started_lock = threading.Lock()


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _cached(path: str, stamp: str) -> str | None:
    try:
        with open(CACHE) as f:
            entry = json.load(f).get(os.path.abspath(path))
    except (OSError, ValueError, AttributeError):
        return None
    return str(entry["digest"]) if isinstance(entry, dict) and entry.get("stamp") == stamp and "digest" in entry \
        else None


def view_of(path: str, fmt: str) -> str:
    """Where the raw view of an image file is (the file itself when it is raw)."""
    if fmt == "raw":
        return os.path.abspath(path)
    return os.path.join(VIEWS, hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32] + ".raw")


def _view_stamp(view: str) -> str:
    try:
        with open(f"{view}.from") as f:
            return f.read()
    except OSError:
        return ""


def _make_view(path: str, stamp: str) -> str:
    """The raw view of a qcow2 file, made again only when the file changed (its stamp): sparse, so only
    the data the disk holds takes room."""
    view = view_of(path, "qcow2")
    if os.path.exists(view) and _view_stamp(view) == stamp:
        return view
    os.makedirs(VIEWS, exist_ok=True)
    tmp = f"{view}.{os.getpid()}.{threading.get_ident()}"
    proc = subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", "-S", "4k", path, tmp],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(f"qemu-img convert of {path} failed: {proc.stderr.strip()[-300:]}")
    os.replace(tmp, view)
    with open(f"{view}.from", "w") as f:
        f.write(stamp)
    return view


def digest_of(path: str, fmt: str = "raw") -> Future[str]:
    """The content digest of the image's disk: done at once from the cache, else computed in the background
    (with its cluster map and block index, stored for later uploads).  Asking again for the same file (same
    size, mtime and inode) in this process gives the same future: it is hashed once."""
    stamp = _stamp(path)
    key = (os.path.abspath(path), stamp)
    with _started_lock:
        if key in _started:
            return _started[key]
        view = view_of(path, fmt)
        fresh = fmt == "raw" or os.path.exists(view) and _view_stamp(view) == stamp
        hit = _cached(path, stamp) if fresh else None
        if hit is not None:
            done: Future[str] = Future()
            done.set_result(hit)
        else:
            if not _workers:
                _workers.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtfleet-digest"))
            done = _workers[0].submit(_cached_digest, path, stamp, fmt)
        _started[key] = done
        return done


def _cached_digest(path: str, stamp: str, fmt: str = "raw") -> str:
    with contextlib.suppress(OSError):  # the hosts' connections and the provider's start come first;
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # the hashing threads inherit it
    trace(f"begin digest {path}")
    view = path if fmt == "raw" else _make_view(path, stamp)
    cluster_map = delta.compute(view)
    digest = delta.digest(cluster_map)
    if delta.load_index(digest) is None:
        delta.store_index(digest, delta.block_index(view))
    trace(f"end digest {path}")
    delta.store(digest, cluster_map)
    try:
        with open(CACHE) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    cache[os.path.abspath(path)] = {"stamp": stamp, "digest": digest}
    try:
        os.makedirs(os.path.dirname(CACHE), exist_ok=True)
        tmp = f"{CACHE}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, CACHE)
    except OSError:
        pass  # the cache is an optimisation only
    return digest


_crcs: dict[tuple[str, str], str] = {}
_crc_lock = threading.Lock()


def posix_cksum(path: str) -> str:
    """The file's POSIX cksum CRC (what `cksum < FILE` prints first), or "" when `cksum` is missing here."""
    key = (os.path.abspath(path), _stamp(path))
    with _crc_lock:
        if key in _crcs:
            return _crcs[key]
        try:
            with open(path, "rb") as f:
                out = subprocess.run(["cksum"], stdin=f, capture_output=True, check=True).stdout.decode()
        except (OSError, subprocess.CalledProcessError):
            return ""
        _crcs[key] = out.split()[0]
        return _crcs[key]


def load(key: str, path: str, build: str = "", cwd: str = ".", build_env: tuple[str, ...] = ()) -> LocalImage:
    """Run the optional build command (in our environment without credentials: `childenv`, plus the
    variables `build_env` names), then describe the image file.  Errors name the config key."""
    if build:
        # the user's own command, without the program's secrets (the decrypted stack config, passphrase, tokens)
        proc = subprocess.run(build, shell=True, cwd=cwd, capture_output=True, text=True,  # noqa: S602
                              env=child_env(os.environ, build_env))
        if proc.returncode != 0:
            raise ConfigError(f"{key}.build", f"build command failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-400:]}", "Fix the build, or remove `build`")
    full = os.path.join(cwd, os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ConfigError(f"{key}.path", f"image file {full!r} does not exist",
                          "Build the image first (or give `build`), or correct the path")
    fmt, vsize = _format_and_virtual_size(full)
    return LocalImage(view_of(full, fmt), "raw", vsize, vsize, digest_of(full, fmt), os.path.abspath(full),
                      os.path.getsize(full))
