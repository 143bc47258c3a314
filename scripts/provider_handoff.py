"""The waiting side of the provider's fast start (see scripts/langhost/handoff.go for the plugin side).

`pulumi_dynamic_host.py --zygote CLI_PID [--connect]` is started by the language host at its first call
that names the program (scripts/langhost/main.go: the CLI asks for the program's plugins well before it
runs it), or else by scripts/pulumi_program_exec.py when the program starts (it then serves no Run).
It claims the abstract unix socket named after the user and the CLI's pid, imports what the provider and
the program need, then waits.  Three kinds of callers connect (same user, checked with SO_PEERCRED, and
started by the same CLI):
- the program, for `pulumi up`: {"connect": CONFIG} (the program's config; without a waiting process it
  starts one with --connect, which reads it from its own environment).  This process then opens the
  stack's hosts' SSH and libvirt connections in the background; nothing on a host changes.
- the language host's Run (the CLI's other child): {"run": {argv, env, cwd}} with its stdin/stdout/stderr.
  This process forks the program (_run_program): the fork has the SDK and the project's modules imported
  already and answers 'S', then the program's exit code.  For `pulumi up` this process then opens the
  hosts' connections, as for a connect request.
- the provider plugin, launched by the engine: it sends its arguments, environment, working directory
  and stdin/stdout/stderr; this process takes them over and returns, and pulumi_dynamic_host.py goes on
  as the provider.  Bytes from the plugin afterwards are the engine's signals to it ('I' SIGINT, 'T'
  SIGTERM); the plugin going away ends this process.
At a preview's hand-over a copy of this process stays waiting (_spare) for the update `pulumi up` runs
next; it leaves when the CLI exits.  Anything unexpected before the hand-over (the name taken, no launch
before the CLI exits) ends it quietly: the plugin then starts a provider the usual way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.spec import Connection

MAX_MESSAGE = 1 << 20


def name(cli_pid: int) -> bytes:
    return f"\0virtfleet-provider-{os.getuid()}-{cli_pid}".encode()


def ask(cli_pid: int, request: dict) -> bool:
    """Send a request to the waiting process of this CLI; False when none listens."""
    body = json.dumps(request).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(name(cli_pid))
            s.sendall(struct.pack(">I", len(body)) + body)
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_of(pid: int) -> int:
    """A process's parent pid (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _trace(event: str) -> None:
    with contextlib.suppress(ImportError):  # the project's own trace (VIRTFLEET_TRACE), once on the path
        from providers.trace import trace
        trace(event)


def _open(c: Connection) -> None:
    """A host's libvirt connection, then which machine it is (the group its guest starts share)."""
    from providers.remote import session, starts
    session.virt(c)
    starts.machine_of(c)


def _connect(config: dict) -> None:
    """The stack's hosts' connections (SSH master, then libvirt), each in a thread, from the program's
    config; failures are left to the provider's own calls, which report them."""
    try:
        from components.config import host_connections
        from providers.remote import session
        hosts = json.loads(config.get("virtfleet:hosts") or "{}")
        session.set_private_key(config.get("virtfleet:sshPrivateKey"))
        conns = host_connections(hosts)
    except Exception:  # noqa: BLE001 - not a virtfleet project, or a config the program will report
        return
    _connected.append(True)
    for c in conns:
        threading.Thread(target=session.quietly, args=(_open, c), name=f"virtfleet-warm-{c.host}",
                         daemon=True).start()
    _trace("zygote connecting")


def _preload() -> None:
    """What the provider imports (an optimisation: a failure here shows up, with its message, when the
    provider itself imports)."""
    with contextlib.suppress(Exception):
        import dill  # noqa: F401
        import grpc  # noqa: F401
        import pulumi.dynamic  # noqa: F401
        import pulumi.runtime  # noqa: F401
        from pulumi.runtime.proto import provider_pb2_grpc  # noqa: F401
    with contextlib.suppress(Exception):
        import providers.base_image  # noqa: F401
        import providers.guest  # noqa: F401
        import providers.host  # noqa: F401
        import providers.volume  # noqa: F401
    with contextlib.suppress(Exception):  # what a program forked from here imports (_run_program)
        import argparse  # noqa: F401
        import runpy  # noqa: F401

        import pulumi_program_exec  # noqa: F401
        import sdk_patches  # noqa: F401

        import components.hypervisor  # noqa: F401
        import components.machine  # noqa: F401


def _give_up(code: int) -> None:
    """Nothing to take over: close what was opened (connections, and the SSH masters) and leave."""
    session = sys.modules.get("providers.remote.session")
    if session is not None:
        with contextlib.suppress(Exception):
            session.close_all()
    os._exit(code)


def _started_by(pid: int, cli_pid: int) -> bool:
    """Whether `pid` is the CLI's child (the provider plugin) or grandchild (the program, under the
    language host)."""
    try:
        parent = parent_of(pid)
        return cli_pid in (parent, parent_of(parent))
    except (OSError, ValueError, IndexError):
        return False


def _accept(listener: socket.socket, cli_pid: int) -> socket.socket | None:
    """A caller's connection: same user, started by the same CLI.  None once the CLI is gone."""
    listener.settimeout(1.0)
    while _alive(cli_pid):
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid == os.getuid() and _started_by(pid, cli_pid):
            return conn
        conn.close()
    return None


def _plugin(listener: socket.socket, cli_pid: int) -> tuple[socket.socket, dict, list[int]] | None:
    """Wait for the provider plugin's hand-over; the program's connect request on the way is served
    (once).  None once the CLI is gone."""
    connecting = False
    while (conn := _accept(listener, cli_pid)) is not None:
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError, struct.error):
            conn.close()
            continue
        if "run" in request:
            config = _run_program(conn, request["run"], fds, listener)
        elif "connect" in request:
            config = request["connect"]
        else:
            return conn, request, fds
        _let_go(conn, fds)
        if not connecting and isinstance(config, dict):
            connecting = True
            _connect(config)
    return None


def is_update(argv: list[str]) -> bool:
    """Whether the SDK runner's arguments run the program for an update (`--dry_run false`)."""
    return "--dry_run" in argv and argv[argv.index("--dry_run") + 1:][:1] == ["false"]


def update_config(argv: list[str], env: Mapping[str, str]) -> dict | None:
    """The program's config (PULUMI_CONFIG in its environment) when it runs for an update, else None."""
    if not is_update(argv):
        return None
    try:
        config = json.loads(env.get("PULUMI_CONFIG") or "{}")
    except ValueError:
        return None  # the program reports it
    return config if isinstance(config, dict) else None


def _one_thread() -> bool:
    """Whether this process has only its main thread (a fork copies no other)."""
    return threading.active_count() == 1 and len(os.listdir("/proc/self/task")) == 1


def _take_over(request: dict, fds: list[int]) -> None:
    """The caller's stdin/stdout/stderr, environment and working directory, as sent with its request."""
    for target, fd in zip((0, 1, 2), fds, strict=False):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(_env_of(request))
    os.chdir(request["cwd"])


def _env_of(request: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in request["env"] if "=" in item)


def _run_program(conn: socket.socket, run: dict, fds: list[int], listener: socket.socket) -> dict | None:
    """The language host's Run: the program runs in a fork of this process, which has imported what it
    needs (the SDK, gRPC, the project's modules), instead of a new interpreter importing it all again
    (~0.4 s of CPU on the program's critical path).  Only while this process has one thread (a fork
    copies no other thread); else the connection closes unanswered and the host runs the program itself.
    The program is a grandchild (double fork: nothing here waits for it).  Returns the config to connect
    with for an update."""
    if not _one_thread():
        return None
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                _become_program(conn, run, fds, listener)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return update_config(run["argv"], _env_of(run))


def _become_program(conn: socket.socket, run: dict, fds: list[int], listener: socket.socket) -> None:
    """In the forked program: the host's stdin/stdout/stderr, environment and directory; 'S' (started),
    then the exit code as one byte when the program ends.  The host gone (EOF) ends the program."""
    code = 1
    try:
        listener.close()
        _take_over(run, fds)
        if sys.path and sys.path[0] == _project_root[0]:
            sys.path.pop(0)  # as `python pulumi_program_exec.py`: the scripts' directory first
        conn.sendall(b"S")
        threading.Thread(target=_until_host_gone, args=(conn,), name="virtfleet-program", daemon=True).start()
        import pulumi_program_exec
        code = pulumi_program_exec.run(run["argv"], forked=True)
    except BaseException:  # noqa: BLE001 - reported as the program's failure, exit code 1
        import traceback
        traceback.print_exc()
    with contextlib.suppress(OSError):
        conn.sendall(bytes([code & 0xFF]))
    os._exit(code)


def _until_host_gone(conn: socket.socket) -> None:
    conn.settimeout(None)
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os._exit(1)


def _spare(plugin: tuple[socket.socket, dict, list[int]]) -> bool:
    """At the hand-over, a process that opened no connections (a preview's) and has one thread leaves a
    copy of itself waiting on the same socket for the CLI's next run: `pulumi up` runs an update after
    its preview, whose program is then forked too.  (A copy of a process with connections would share
    their sockets.)  True in the copy (it lets go of the plugin's connection and descriptors), False in
    the process that becomes the provider."""
    if _connected or not _one_thread() or os.fork() != 0:
        return False
    conn, _request, fds = plugin
    _let_go(conn, fds)
    return True


def _let_go(conn: socket.socket, fds: list[int]) -> None:
    """Close a caller's connection and the descriptors it sent."""
    conn.close()
    for fd in fds:
        os.close(fd)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    conn.settimeout(10.0)
    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 3)
    (size,) = struct.unpack(">I", data[:4])
    body = data[4:]
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ConnectionError("the plugin went away during the hand-over")
        body += more
    return json.loads(body), fds


def _relay_signals(conn: socket.socket) -> None:
    """The engine's signals to the plugin, as bytes; the plugin gone (EOF) ends this process.

    Each is sent to the main thread itself (pthread_kill), never to the process: Linux (6.x) gives a
    process-directed signal to the thread that sends it when it can, and Python runs handlers only in
    the main thread, which, asleep in the provider's final wait, would then not wake.  The engine waited
    5 s and killed the provider in about half of all runs before this (no connections closed)."""
    main = threading.main_thread().ident
    conn.settimeout(None)
    while True:
        try:
            b = conn.recv(1)
        except OSError:
            b = b""
        if not b:
            os._exit(1)
        signal.pthread_kill(main, signal.SIGTERM if b == b"T" else signal.SIGINT)


def become_provider(cli_pid: int, connect: bool) -> None:
    """Wait for the plugin and take over its process state; exits when there is nothing to take over."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(name(cli_pid))
    except OSError:
        os._exit(0)  # another run's process holds the name: it serves this launch
    listener.listen(4)
    _project_root.append(os.getcwd())
    sys.path.insert(0, os.getcwd())  # the program's project: its providers and components packages
    if connect:
        _connect(json.loads(os.environ.get("PULUMI_CONFIG") or "{}"))
    _preload()
    _trace("zygote ready")
    while (plugin := _plugin(listener, cli_pid)) is not None and _spare(plugin):
        _trace("zygote spare ready")  # this is the copy: it waits for the CLI's next run
    sys.path.pop(0)
    listener.close()
    if plugin is None:
        _give_up(0)
    conn, request, fds = plugin
    _trace("zygote handed over")
    _take_over(request, fds)
    sys.argv = [sys.argv[0], *request["argv"]]
    _conn.append(conn)  # open while this process lives: its closing tells the plugin to exit
    hook = sys.excepthook

    def failed(*exc: object) -> None:  # an uncaught error: the plugin exits 1, as this process would
        hook(*exc)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):
            conn.sendall(bytes([1]))
    sys.excepthook = failed
    threading.Thread(target=_relay_signals, args=(conn,), name="virtfleet-handoff", daemon=True).start()


_conn: list[socket.socket] = []
_project_root: list[str] = []
_connected: list[bool] = []  # this process opened (or is opening) the hosts' connections
