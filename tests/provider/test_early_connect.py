"""The waiting provider opens the stack's hosts' connections when the program asks (for `pulumi up`),
and only when a process started by the same CLI asks.  Real processes and a real lab host, with this
test process in the CLI's place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import lab
from tests.e2e.fleet import config

pytestmark = pytest.mark.provider

SCRIPTS = os.path.join(lab.ROOT, "scripts")
HOST = os.path.join(SCRIPTS, "pulumi_dynamic_host.py")
PLUGIN = os.path.join(lab.ROOT, "tools", "pulumi", "pulumi-resource-pulumi-python")
# the asker stays a while after asking, as a program does: the waiting process checks who it is (its
# parent and grandparent) after it connected, and an asker gone by then is not the CLI's any more
ASK = ("import json, sys, time; sys.path.insert(0, sys.argv[1]); import provider_handoff; "
       "print(provider_handoff.ask(int(sys.argv[2]), json.loads(sys.argv[3])), flush=True); time.sleep(1)")


def _program_config() -> dict[str, str]:
    """PULUMI_CONFIG as the language host gives it to the program: every value a string."""
    return {f"virtfleet:{k}": json.dumps(v) for k, v in config({"h1": {}}).items()}


def _ask(depth: int, request: dict) -> str:
    """ask() from a process `depth` generations below this one."""
    argv = [sys.executable, "-c", ASK, SCRIPTS, str(os.getpid()), json.dumps(request)]
    for _ in range(depth - 1):
        argv = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)",
                *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def _events(trace: str) -> list[str]:
    if not os.path.exists(trace):
        return []
    with open(trace) as f:
        return [line.split(" ", 2)[2].strip() for line in f]


def _wait_for(trace: str, event: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event in _events(trace):
            return
        time.sleep(0.1)
    raise AssertionError(f"{event!r} never came: {_events(trace)}")


def test_the_program_asks_the_waiting_provider_to_connect(tmp_path) -> None:
    trace = str(tmp_path / "trace")
    env = {**os.environ, "VIRTFLEET_TRACE": trace}  # the CLI's environment, as both processes get it
    early = subprocess.Popen([sys.executable, "-u", HOST, "--zygote", str(os.getpid())], cwd=lab.ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(trace, "zygote ready")
        # a process not started by this CLI (three generations down) is not listened to (its connection is
        # closed unread, which may be before its request was sent)
        _ask(3, {"connect": _program_config()})
        time.sleep(2)
        assert "zygote connecting" not in _events(trace)
        # a preview's program: nothing to open
        assert _ask(2, {"connect": None}) == "True"
        time.sleep(1)
        assert "zygote connecting" not in _events(trace)
        # the program of `pulumi up` (the CLI's grandchild, under the language host)
        assert _ask(2, {"connect": _program_config()}) == "True"
        _wait_for(trace, "_open warm h1")  # its libvirt connection and its machine (boot_id) read
        plugin = subprocess.Popen([PLUGIN, "127.0.0.1:1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, cwd=lab.ROOT, env=env)
        assert plugin.stdout.readline().strip().isdigit()  # type: ignore[union-attr]
        plugin.send_signal(signal.SIGINT)
        assert plugin.wait(timeout=10) == 0
        assert early.wait(timeout=10) == 0
        assert "session close end" in _events(trace), "the provider closed the connections it opened early"
    finally:
        if early.poll() is None:
            early.kill()
    assert _ask(1, {"connect": None}) == "False", "nothing listens once the provider is gone"
