"""Per-host sessions: the libvirt connection of each host, riding on its one SSH master (`ssh`).

libvirt connects to a local unix socket that the host's master forwards to libvirtd's socket on the host,
so a run pays one SSH handshake per host for libvirt, uploads and commands alike, and libvirt starts no
process of its own (a fork in the threaded provider process makes gRPC print warnings).  If the host's
sshd refuses the forwarding, libvirt's qemu+ssh transport runs `ssh` through a wrapper that opens a
session on the master instead, with the same strict host keys.
Connections are cached per process, lazily and thread-safely; nothing here is ever pickled with a provider.
The SSH side (masters, host keys, remote commands) is `ssh`; its public names are re-exported here.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shlex
import threading
import urllib.parse

import libvirt

from providers.local.childenv import denied
from providers.local.trace import trace
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import starts
from providers.remote.ssh import (
    CacheKey,
    alive,
    cache_key,
    connect,
    control_path,
    forward,
    host_lock,
    popen,
    release_masters,
    run,
    runtime_dir,
    set_private_key,
    ssh_binary,
    ssh_options,
    sweep,
    tag,
)
from providers.remote.ssh import forget_master as _forget_master

__all__ = ["close_all", "connect", "control_path", "forget", "libvirt_uri", "popen", "run", "runtime_dir",
           "set_private_key", "virt", "warm"]

libvirt.registerErrorHandler(lambda *_: None, None)  # lookups that miss must not print to stderr

# each host's connection with the master (see _master_id) it was opened on: one entry, read and replaced
# at once, so no thread ever pairs a connection with another connection's master
_virt: dict[CacheKey, tuple[libvirt.virConnect, int]] = {}
_warm_lock = threading.Lock()


def _ssh_wrapper(c: Connection) -> str:
    """A `command=` for libvirt's ssh transport: a session on the host's master, strict host keys."""
    path = os.path.join(runtime_dir(), f"ssh-{tag(c)}")
    # libvirt runs it with this process's environment: the credentials in it are dropped (by name only)
    unset = [a for k in sorted(os.environ) if denied(k) for a in ("-u", k)]
    quoted = " ".join(shlex.quote(o) for o in ["env", *unset, ssh_binary(), *ssh_options(c), "-o", "ControlMaster=no"])
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"  # other processes may be running it
    with open(tmp, "w") as f:
        f.write(f"#!/bin/sh\nexec {quoted} \"$@\"\n")
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    return path


def libvirt_uri(c: Connection) -> str:
    """A qemu+ssh URI whose ssh is a session on the host's master (started here when needed, so host-key
    and login problems get readable errors before libvirt tries)."""
    connect(c)
    return f"{c.uri}?{urllib.parse.urlencode({'command': _ssh_wrapper(c), 'no_tty': '1'})}"


REMOTE_SOCKET = "/var/run/libvirt/libvirt-sock"  # libvirtd's, or virtproxyd's with modular daemons
_sockets: dict[CacheKey, str] = {}
_forwards = itertools.count()


def _open(c: Connection) -> libvirt.virConnect:
    """A new libvirt connection over the host's master: a forwarded socket, else qemu+ssh."""
    k = cache_key(c)
    local = os.path.join(runtime_dir(), f"libvirt-{tag(c)}-{os.getpid()}-{next(_forwards)}")
    _drop_socket(k)
    # sockets nothing uses: of exited processes, and ours that no connection holds (a master that went
    # away mid-forward may have made one after it was given up)
    sweep(runtime_dir(), "libvirt", 4, 2, held=set(_sockets.values()))
    _sockets[k] = local  # from here on it is removed with the connection, whatever happens
    if forward(c, local, REMOTE_SOCKET):
        try:
            return libvirt.open("qemu+unix:///system?" + urllib.parse.urlencode({"socket": local}))
        except libvirt.libvirtError as exc:
            trace(f"forwarded libvirt socket refused on {c.host}: {exc}; using qemu+ssh")
    _drop_socket(k)  # a master that refused, or went away while forwarding, may have made it all the same
    return libvirt.open(libvirt_uri(c))


def _drop_socket(k: CacheKey) -> None:
    local = _sockets.pop(k, None)
    if local:
        with contextlib.suppress(OSError):
            os.unlink(local)


def _master_id(c: Connection) -> int:
    """Which master serves the host now (its control socket's inode), 0 when none does."""
    ctl = control_path(c)
    try:
        return os.stat(ctl).st_ino if alive(ctl) else 0
    except OSError:
        return 0


def _usable(c: Connection, conn: libvirt.virConnect, master: int) -> bool:
    """A cached connection is used only while the very master it rides on is up: libvirt notices a closed
    transport only at the next call, and a new master (started meanwhile for a command) is not its own.
    A connection libvirt refuses to check (closed, e.g. by `close_all`) is not usable either."""
    try:
        alive = conn.isAlive()
    except libvirt.libvirtError:
        return False
    return bool(alive) and master == _master_id(c) != 0


def virt(c: Connection) -> libvirt.virConnect:
    """The cached libvirt connection of a host; SSH host keys are checked first, with clear errors.

    A connection that is replaced is never closed here: other threads may have been handed it, or be
    checking it, without this lock.  It is dropped from the cache, and libvirt closes it when its last
    user lets go of it (`virConnect.__del__`)."""
    k = cache_key(c)
    cached = _virt.get(k)
    if cached is not None and _usable(c, *cached):
        return cached[0]
    with host_lock(c, "virt"):
        cached = _virt.get(k)
        if cached is not None and _usable(c, *cached):
            return cached[0]
        _virt.pop(k, None)
        try:
            conn = _open(c)
        except libvirt.libvirtError as exc:
            raise HostError(c.host, f"connecting libvirt at {c.uri}", str(exc),
                            "Check that libvirtd runs on the host and the user may use qemu:///system") from exc
        _virt[k] = (conn, _master_id(c))
        return conn


_warming: set[CacheKey] = set()


def warm(conns: list[Connection]) -> None:
    """Open these hosts' connections in the background: the providers call this when they are configured,
    so the SSH handshakes and libvirt connects overlap the engine's first steps.  A host already connected
    or connecting is skipped; errors are left for the calls that need the connection, which report them."""

    def one(c: Connection) -> None:
        try:
            with contextlib.suppress(Exception):
                virt(c)
                starts.machine_of(c)
                trace(f"warm {c.host}")
        finally:
            with _warm_lock:
                _warming.discard(cache_key(c))

    with _warm_lock:
        fresh = {cache_key(c): c for c in conns if cache_key(c) not in _warming and cache_key(c) not in _virt}
        _warming.update(fresh)
    for c in fresh.values():
        threading.Thread(target=one, args=(c,), name=f"warm-{c.host}", daemon=True).start()


def forget(c: Connection) -> None:
    """Drop a host's cached connections (after a failure), so the next call reconnects.  The libvirt
    connection is not closed here (other threads may hold it): it closes with its last user."""
    k = cache_key(c)
    with host_lock(c, "virt"):
        _virt.pop(k, None)
        _drop_socket(k)
    _forget_master(c)


def _close(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def close_all() -> None:
    """Close this process's libvirt connections at its end; the masters it used stay for the next process
    until unused for `ssh.PERSIST` (`ssh.release_masters`)."""
    trace("session close begin")
    conns = [conn for conn, _ in list(_virt.values())]
    _virt.clear()  # first: a call still running gets a new connection rather than a closed one
    closing = [threading.Thread(target=_close, args=(conn,), daemon=True) for conn in conns]
    for t in closing:  # each waits for its host's answer and its ssh process: all hosts at once
        t.start()
    for t in closing:
        t.join(timeout=10)
    for k in list(_sockets):
        _drop_socket(k)
    release_masters()
    trace("session close end")


atexit.register(close_all)
