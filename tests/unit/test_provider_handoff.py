"""The provider's fast start: the plugin hands the engine's process state to a provider process started
early, or starts one itself when there is none.  Real processes: the built plugin (Go) and the
provider host (Python), with this test process in the CLI's place."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests import lab

pytestmark = pytest.mark.unit

PLUGIN = os.path.join(lab.ROOT, "tools", "pulumi", "pulumi-resource-pulumi-python")
HOST = os.path.join(lab.ROOT, "scripts", "pulumi_dynamic_host.py")


def _handoff() -> Any:
    return lab.script_module("provider_handoff")


def _port_owner(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))  # type: ignore[union-attr]


def _wait_listening(name: bytes, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/net/unix") as f:
            if name[1:].decode() in f.read():
                return
        time.sleep(0.05)
    raise AssertionError("the early provider never listened")


def _start_plugin() -> tuple[subprocess.Popen[str], int]:
    plugin = subprocess.Popen([PLUGIN, "127.0.0.1:1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=lab.ROOT)
    line = plugin.stdout.readline()  # type: ignore[union-attr]
    assert line.strip().isdigit(), (line, plugin.stderr.read() if plugin.poll() is not None else "")  # type: ignore[union-attr]
    return plugin, int(line)


@pytest.fixture(autouse=True)
def _no_waiting_process_left() -> Any:
    """This test process plays the CLI in every test here: a waiting process one test leaves (the copy a
    hand-over leaves for the CLI's next run) must be gone, socket name and all, before the next test."""
    yield
    for pid in _zygotes_of(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    name = _handoff().name(os.getpid())[1:].decode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/net/unix") as f:
            if name not in f.read():
                return
        time.sleep(0.05)
    raise AssertionError("a waiting process of this test still listens")


# The engine sends SIGINT to the plugin when a run is over and kills it 5 s later if it is still there.
ENGINE_KILLS_AFTER = 5.0


@pytest.mark.parametrize("attempt", range(4))  # the stop once depended on which thread Linux chose
def test_the_plugin_hands_over_to_the_early_provider_and_relays_its_stop(attempt: int) -> None:
    provider_handoff = _handoff()
    early = subprocess.Popen([sys.executable, "-u", HOST, "--zygote", str(os.getpid())], cwd=lab.ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(provider_handoff.name(os.getpid()))
        plugin, port = _start_plugin()
        assert _port_owner(port) == early.pid, "the early process serves the engine's port"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it answers
        plugin.send_signal(signal.SIGINT)  # how the engine stops a plugin at the end of a run
        # it must stop on the signal itself, before the engine would kill it (not a speed target)
        assert early.wait(timeout=ENGINE_KILLS_AFTER - 1) == 0
        assert plugin.wait(timeout=ENGINE_KILLS_AFTER - 1) == 0
    finally:
        for p in (early,):
            if p.poll() is None:
                p.kill()


def test_without_an_early_provider_the_plugin_starts_one_itself() -> None:
    plugin, port = _start_plugin()  # no early process for this test's pid right now
    try:
        owner = _port_owner(port)
        with open(f"/proc/{owner}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        assert owner == plugin.pid and any(a.endswith(b"pulumi_dynamic_host.py") for a in cmd), cmd
        assert b"--zygote" not in cmd
        plugin.send_signal(signal.SIGINT)
        assert plugin.wait(timeout=20) == 0
    finally:
        if plugin.poll() is None:
            plugin.kill()


def test_a_name_held_by_another_process_is_not_used() -> None:
    """Someone else's socket under the name (here: one that is not a provider and never answers) is
    refused by the checks and the plugin starts its own provider."""
    provider_handoff = _handoff()
    squatter = subprocess.Popen(["/usr/bin/python3", "-c", (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(b'\\0' + sys.argv[1].encode()); s.listen(1)\n"
        "c, _ = s.accept(); time.sleep(30)\n"), provider_handoff.name(os.getpid())[1:].decode()],
        user=65534 if os.getuid() == 0 else None)
    try:
        _wait_listening(provider_handoff.name(os.getpid()))
        plugin, port = _start_plugin()
        assert _port_owner(port) == plugin.pid
        plugin.send_signal(signal.SIGINT)
        assert plugin.wait(timeout=20) == 0
    finally:
        squatter.kill()


LANGHOST = os.path.join(lab.ROOT, "tools", "pulumi", "pulumi-language-python")


def _zygotes_of(cli_pid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if b"--zygote" in cmd and cmd[cmd.index(b"--zygote") + 1] == str(cli_pid).encode():
            found.append(int(pid))
    return found


def test_the_language_host_starts_the_waiting_provider_when_asked_for_the_programs_plugins() -> None:
    """The CLI asks a language host for the program's plugins well before it runs the program: the
    provider process is started then (once), and the plugin hands over to it."""
    import grpc
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import language_pb2, language_pb2_grpc

    provider_handoff = _handoff()
    options = struct_pb2.Struct()
    options.update({"virtualenv": ".venv"})
    info = language_pb2.ProgramInfo(root_directory=lab.ROOT, program_directory=lab.ROOT, entry_point=".",
                                    options=options)
    host = subprocess.Popen([LANGHOST, "127.0.0.1:1"], stdout=subprocess.PIPE, text=True, cwd=lab.ROOT)
    early: list[int] = []
    try:
        port = int(host.stdout.readline())  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = language_pb2_grpc.LanguageRuntimeStub(channel)
            stub.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(info=info), timeout=10)
            stub.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(info=info), timeout=10)
            about = stub.About(language_pb2.AboutRequest(info=info), timeout=10)
        _wait_listening(provider_handoff.name(os.getpid()))
        early = _zygotes_of(os.getpid())
        assert len(early) == 1, early
        venv_python = os.path.join(lab.ROOT, ".venv", "bin", "python")
        version = subprocess.run([venv_python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert (about.executable, about.version) == (venv_python, version)
        plugin, port = _start_plugin()
        assert _port_owner(port) == early[0], "the early process serves the engine's port"
        plugin.send_signal(signal.SIGINT)
        assert plugin.wait(timeout=ENGINE_KILLS_AFTER - 1) == 0
    finally:
        host.kill()
        for pid in early:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)



def test_the_program_is_forked_only_from_a_process_with_one_thread() -> None:
    """A fork copies only the calling thread: a process with more (its connections being opened, say)
    never forks the program; the language host then runs it in a new interpreter."""
    provider_handoff = _handoff()
    mine, theirs = socket.socketpair()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        run = {"argv": ["--dry_run", "false"], "env": ["PULUMI_CONFIG={}"], "cwd": "/"}
        assert provider_handoff._run_program(mine, run, [], mine) is None  # no fork, nothing to connect with
        theirs.settimeout(0.5)
        with pytest.raises(TimeoutError):
            theirs.recv(1)  # no 'S': nothing started
    finally:
        stop.set()
        other.join()
        mine.close()
        theirs.close()
