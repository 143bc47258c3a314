"""The start group's rules (providers/remote/starts.py), with stand-in domains: who waits for whom, and how long.
The real starts on the lab are tests/provider/test_starts.py."""

from __future__ import annotations

import threading
import time

import pytest

from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import ssh, starts

HOST = Connection("h", "10.0.0.1")


class Dom:
    """A defined guest: its start blocks until `release` is set; records when it was resumed."""

    def __init__(self, name: str, blocks: bool = False) -> None:
        self._name = name
        self.release = threading.Event()
        if not blocks:
            self.release.set()
        self.started = threading.Event()
        self.resumed_at: float | None = None
        self.flags: int | None = None

    def name(self) -> str:
        return self._name

    def createWithFlags(self, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.flags = flags
        self.started.set()
        assert self.release.wait(30)

    def resume(self) -> None:
        self.resumed_at = time.monotonic()


@pytest.fixture
def machine(monkeypatch, unique) -> str:
    """Every start of the test on one machine of its own."""
    monkeypatch.setattr(starts, "machine_of", lambda c: f"test-{unique}")
    return f"test-{unique}"


def _start(dom: Dom) -> threading.Thread:
    t = threading.Thread(target=starts.start, args=(HOST, dom))
    t.start()
    assert dom.started.wait(10)
    return t


def test_a_guest_whose_start_is_done_waits_for_the_starts_still_running(machine) -> None:
    slow = Dom("slow", blocks=True)
    slow_thread = _start(slow)
    quick = Dom("quick")
    quick_thread = _start(quick)
    time.sleep(0.5)
    assert quick.flags == starts.libvirt.VIR_DOMAIN_START_PAUSED and quick.resumed_at is None  # held, paused
    released = time.monotonic()
    slow.release.set()
    for t in (slow_thread, quick_thread):
        t.join(10)
    assert quick.resumed_at is not None and slow.resumed_at is not None
    assert quick.resumed_at >= released


def test_starts_that_begin_later_do_not_hold_a_guest(machine) -> None:
    running = Dom("running", blocks=True)
    running_thread = _start(running)
    quick = Dom("quick")
    quick_thread = _start(quick)  # done while `running` runs: held for it
    time.sleep(0.3)
    later = Dom("later", blocks=True)
    later_thread = _start(later)  # begins while `quick` is held
    assert quick.resumed_at is None
    running.release.set()
    quick_thread.join(5)  # HOLD is 10 s: a wait for `later` would still be going on
    assert quick.resumed_at is not None and later.resumed_at is None
    later.release.set()
    for t in (running_thread, later_thread):
        t.join(10)
    assert later.resumed_at is not None


def test_a_hold_ends_after_HOLD_seconds_even_if_another_start_hangs(machine, monkeypatch) -> None:
    monkeypatch.setattr(starts, "HOLD", 0.3)
    hung = Dom("hung", blocks=True)
    t = _start(hung)
    quick = Dom("quick")
    t0 = time.monotonic()
    starts.start(HOST, quick)
    assert quick.resumed_at is not None and 0.25 <= quick.resumed_at - t0 < 3
    hung.release.set()
    t.join(10)


def test_a_failed_start_holds_no_one_and_is_not_resumed(machine) -> None:
    class Failing(Dom):
        def createWithFlags(self, flags: int) -> None:  # noqa: N802
            raise starts.libvirt.libvirtError("no such disk")

    bad = Failing("bad")
    with pytest.raises(starts.libvirt.libvirtError):
        starts.start(HOST, bad)
    assert bad.resumed_at is None
    ok = Dom("ok")
    t0 = time.monotonic()
    starts.start(HOST, ok)
    assert ok.resumed_at is not None and ok.resumed_at - t0 < 1


def test_other_machines_never_hold_a_guest(monkeypatch, unique) -> None:
    monkeypatch.setattr(starts, "machine_of", lambda c: f"{c.host}-{unique}")
    hung = Dom("hung", blocks=True)
    t = threading.Thread(target=starts.start, args=(Connection("a", "10.0.0.1"), hung))
    t.start()
    assert hung.started.wait(10)
    quick = Dom("quick")
    t0 = time.monotonic()
    starts.start(Connection("b", "10.0.0.2"), quick)
    assert quick.resumed_at is not None and quick.resumed_at - t0 < 1
    hung.release.set()
    t.join(10)


def test_a_host_whose_kernel_cannot_be_read_is_a_machine_of_its_own(monkeypatch, unique) -> None:
    def unreachable(c, argv, timeout=300, check=True):
        raise HostError(c.host, "running cat", "connection refused")

    monkeypatch.setattr(ssh, "run", unreachable)
    a, b = Connection(f"a{unique}", "10.0.0.1"), Connection(f"b{unique}", "10.0.0.2")
    assert starts.machine_of(a) != starts.machine_of(b)
    assert starts.machine_of(a).startswith("host:")
