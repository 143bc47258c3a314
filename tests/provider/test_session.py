"""A host's cached libvirt connection under many threads while its SSH master goes away and comes back."""

from __future__ import annotations

import subprocess
import threading
import time

import libvirt
import pytest

from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session, storage
from tests import lab

pytestmark = pytest.mark.provider


def test_connections_replaced_under_32_threads_are_never_closed_under_them() -> None:
    """Asking for the connection never fails in libvirt, and a connection handed out is never closed by
    another thread ("invalid connection pointer"); a call on one whose master died may fail, as on any
    broken transport, and so may the start of a master this test kills at once (a HostError)."""
    c = Connection.from_props(lab.connection_props("h3"))
    session.virt(c)
    asked: list[BaseException] = []
    used: list[BaseException] = []
    stop = time.monotonic() + 8

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                conn = session.virt(c)
            except HostError:
                continue  # the master killed while it started
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                asked.append(exc)
                return
            try:
                storage.lookup_pool(conn, "guests")
                conn.getLibVersion()
            except libvirt.libvirtError as exc:
                used.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    exits = 0
    while any(t.is_alive() for t in threads):  # the host's master goes away, as when it dies under load
        time.sleep(0.3)
        subprocess.run(["ssh", "-o", f"ControlPath={session.control_path(c)}", "-O", "exit", "h3"],
                       capture_output=True, check=False, timeout=10)
        exits += 1
    for t in threads:
        t.join()
    assert exits > 5
    assert not asked, f"{len(asked)} threads could not get the connection, e.g. {asked[0]!r}"
    closed = [e for e in used if "invalid connection pointer" in str(e)]
    assert not closed, f"{len(closed)} calls on a connection another thread closed, e.g. {closed[0]!r}"
    assert session.virt(c).getLibVersion() > 0


def test_a_master_started_by_the_provider_holds_none_of_its_secrets(monkeypatch) -> None:
    """A master outlives the run: it must not carry the decrypted stack config or any credential."""
    from tests.provider.test_storage import _master_of  # noqa: PLC0415 - a helper of another test module

    secrets = {"PULUMI_CONFIG": '{"virtfleet:sshPrivateKey": "x"}', "PULUMI_CONFIG_PASSPHRASE": "hunter2",
               "PULUMI_ACCESS_TOKEN": "pul-1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    c = Connection.from_props(lab.connection_props("h3"))
    session.forget(c)  # so that this process starts the host's master anew
    session.connect(c)
    (pid,) = _master_of(c)
    with open(f"/proc/{pid}/environ", "rb") as f:
        names = {kv.split(b"=", 1)[0].decode() for kv in f.read().split(b"\0") if kv}
    assert not set(secrets) & names and "PATH" in names
