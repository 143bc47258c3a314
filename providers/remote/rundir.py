"""The user's virtfleet runtime directory: the SSH masters' sockets, pinned known_hosts files and, while
a master authenticates, the stack's key, shared by the processes of a run."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Collection
from dataclasses import dataclass

_lock = threading.Lock()


@dataclass
class _Dir:
    path: str = ""
    own: bool = False  # a directory of this process's own (the shared one was not private): removed at its end


_this = _Dir()


def _private_dir(path: str) -> bool:
    """A real directory (not a link), ours, that nobody else can enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def runtime_dir() -> str:
    """The user's virtfleet runtime directory: VIRTFLEET_RUNTIME_DIR, else $XDG_RUNTIME_DIR/virtfleet, else
    /tmp/virtfleet-UID.  One that is not a private directory of ours is never used: then this process
    gets a directory of its own (its masters are not shared)."""
    with _lock:
        if not _this.path:
            xdg = os.environ.get("XDG_RUNTIME_DIR", "")
            d = os.environ.get("VIRTFLEET_RUNTIME_DIR") or (
                os.path.join(xdg, "virtfleet") if xdg and os.path.isdir(xdg) else
                os.path.join(tempfile.gettempdir(), f"virtfleet-{os.geteuid()}"))
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
            if _private_dir(d):
                _this.path = d
            else:
                _this.path, _this.own = tempfile.mkdtemp(prefix="virtfleet-private-"), True
        return _this.path


def is_own() -> bool:
    return _this.own


def remove_own() -> None:
    if _this.own:
        shutil.rmtree(_this.path, ignore_errors=True)


def sweep(d: str, prefix: str, fields: int, pid_at: int, held: Collection[str] | None = None) -> None:
    """Remove the files of the runtime directory `d` named `prefix-...` (`fields` dash-separated fields, a
    process id at `pid_at`) that an exited process left; with `held`, also this process's own that are
    not in it."""
    for name in os.listdir(d):
        parts = name.split("-")
        if len(parts) != fields or parts[0] != prefix or not parts[pid_at].isdigit():
            continue
        path, pid = os.path.join(d, name), int(parts[pid_at])
        mine = pid == os.getpid()
        if (mine and held is not None and path not in held) or (not mine and not os.path.exists(f"/proc/{pid}")):
            with contextlib.suppress(OSError):
                os.unlink(path)
