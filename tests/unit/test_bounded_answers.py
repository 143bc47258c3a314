"""A host's answers are bounded in size and time: a broken or hostile host can neither fill the
operator's memory nor hold the run (issue: untrusted answers)."""

from __future__ import annotations

import subprocess
import time

import pytest

from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import ssh

pytestmark = pytest.mark.unit


def test_output_and_exit_code_as_they_come() -> None:
    done = ssh.bounded(["sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")


def test_endless_output_is_cut_and_the_command_killed() -> None:
    with pytest.raises(OverflowError, match="more than 1 MiB"):
        ssh.bounded(["yes"], 30, limit=1 << 20)


@pytest.mark.parametrize("script", ["sleep 30", "exec >&- 2>&-; sleep 30"])
def test_a_command_that_never_ends_is_killed_at_its_deadline(script: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        ssh.bounded(["sh", "-c", script], 0.5)
    assert time.monotonic() - t0 < 10


def test_a_host_that_answers_without_end_fails_the_command_naming_it(monkeypatch) -> None:
    monkeypatch.setattr(ssh, "connect", lambda _c: None)
    monkeypatch.setattr(ssh, "_session_argv", lambda _c, _argv: ["yes", "a hostile answer"])
    monkeypatch.setattr(ssh, "MAX_ANSWER", 1 << 20)
    with pytest.raises(HostError, match="host athens: running virsh failed: printed more than 1 MiB"):
        ssh.run(Connection(host="athens", address="192.0.2.1"), ["virsh", "list"], timeout=30)
