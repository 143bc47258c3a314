"""The per-host libvirt connection cache under many threads, on libvirt's in-process test:///default driver.

Only the SSH side is replaced (which master a connection rides on, and how it is opened); the connections
themselves are real libvirt ones, so a connection closed under another thread fails as it would on a host.
"""

from __future__ import annotations

import itertools
import threading
import time

import libvirt
import pytest

from providers.model.host import Connection
from providers.remote import session

pytestmark = pytest.mark.unit
C = Connection(host="h", address="192.0.2.10")


@pytest.fixture
def masters(monkeypatch):
    """A host whose master is replaced whenever the test bumps `current[0]`; connections open on test:///."""
    current = [1]
    opened: list[libvirt.virConnect] = []

    def open_test(_c: Connection) -> libvirt.virConnect:
        conn = libvirt.open("test:///default")
        opened.append(conn)
        return conn

    monkeypatch.setattr(session, "_virt", {})
    monkeypatch.setattr(session, "_rides_on", {}, raising=False)
    monkeypatch.setattr(session, "_open", open_test)
    monkeypatch.setattr(session, "_master_id", lambda _c: current[0])
    monkeypatch.setattr(session, "_forget_master", lambda _c: None)
    yield current, opened
    session._virt.clear()


def _hammer(seconds: float) -> tuple[list[BaseException], list[threading.Thread]]:
    """32 threads asking for the host's connection and using it, for `seconds`; returns their errors
    (filled in as they come) and the threads."""
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                conn = session.virt(C)
                conn.getLibVersion()
                conn.listAllDomains(0)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    return errors, threads


def test_a_replaced_master_never_closes_a_connection_another_thread_holds(masters) -> None:
    current, opened = masters
    errors, threads = _hammer(2.0)
    for n in itertools.count():  # a new master every few milliseconds, as when masters die under load
        if not any(t.is_alive() for t in threads):
            break
        current[0] = n + 2
        time.sleep(0.002)
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} threads failed, e.g. {errors[0]!r}"
    assert len(opened) > 10, "the master was replaced under the threads"


def test_forget_under_threads_never_breaks_a_connection_in_use(masters) -> None:
    errors, threads = _hammer(1.5)
    while any(t.is_alive() for t in threads):
        session.forget(C)
        time.sleep(0.002)
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} threads failed, e.g. {errors[0]!r}"


def test_a_connection_whose_liveness_check_fails_is_not_usable(masters) -> None:
    first = session.virt(C)
    first.close()  # e.g. closed by libvirt itself: isAlive raises "invalid connection pointer"
    second = session.virt(C)
    assert second is not first and second.isAlive()
