"""Test access to the lab, independent of virtfleet's own code where the test must not trust it."""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import threading
import time
from typing import Any

import libvirt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_DIR = os.environ.get("VIRTFLEET_LAB_DIR", os.path.join(ROOT, ".lab"))
LAB_SH = os.path.join(ROOT, "lab", "lab.sh")


def info() -> dict[str, Any]:
    path = os.path.join(LAB_DIR, "lab.json")
    if not os.path.exists(path):
        raise RuntimeError(f"the lab is not up ({path} missing): run scripts/setup.sh")
    with open(path) as f:
        data = json.load(f)
    if len(data["hosts"]) < 2:
        raise RuntimeError("the tests need at least 2 lab hosts: run scripts/setup.sh 3")
    return data


def connection_props(host: str) -> dict[str, Any]:
    lab = info()
    h = lab["hosts"][host]
    return {"host": host, "address": h["address"], "port": h["port"], "user": h["user"], "hostKey": h["hostKey"],
            "sshKeyFile": lab["sshKeyFile"]}


def virsh(host: str, *args: str, check: bool = True) -> str:
    """virsh run INSIDE the lab host (its own libvirtd), not through virtfleet."""
    n = host.lstrip("h")
    proc = subprocess.run(["bash", LAB_SH, "exec", n, "virsh", "-q", "-c", "qemu:///system", *args],
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)} on {host}: {proc.stderr.strip()}")
    return proc.stdout


def in_host(host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", LAB_SH, "exec", host.lstrip("h"), *argv], capture_output=True, text=True,
                          timeout=300, check=check)


def ssh_guest(host: str, address: str, known_hosts: str, *command: str) -> subprocess.CompletedProcess[str]:
    """ssh as root from inside a lab host into one of its guests with the lab's client key, the guest's host
    key pinned by `known_hosts` (never trusted on first sight)."""
    return in_host(host, "ssh", "-i", info()["sshKeyFile"], "-o", f"UserKnownHostsFile={known_hosts}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                   f"root@{address}", *command, check=False)


def domain_state(host: str, name: str) -> str:
    """'running', 'shut off', or 'missing'."""
    out = subprocess.run(["bash", LAB_SH, "exec", host.lstrip("h"), "virsh", "-q", "domstate", name],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else "missing"


def domains(host: str) -> list[str]:
    return sorted(virsh(host, "list", "--all", "--name").split())


def volumes(host: str, pool: str = "guests") -> list[str]:
    out = virsh(host, "vol-list", pool, check=False)
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def uptime_of(host: str, name: str) -> float:
    """CPU time of the guest's QEMU process start, as a restart detector: the qemu pid."""
    out = in_host(host, "cat", f"/run/libvirt/qemu/{name}.pid", check=False)
    return float(out.stdout.strip() or -1)


def read_console(host: str, uuid: str, markers: list[str], timeout: float = 90,
                 send: bytes = b"") -> tuple[dict[str, float], bytes]:
    """Open the guest's serial console through the API over qemu+ssh, optionally type `send`, and wait
    for every marker.  Start the domain paused first to see its whole boot.

    The console gets a libvirt connection of its own: a blocking recv() holds its connection, so calls
    on a shared one (destroy, ...) would wait for it.  The reader ends when the console closes.
    """
    from providers.model.host import Connection
    from providers.remote import session

    c = Connection.from_props(connection_props(host))
    session.connect(c)  # a session of its own on the host's one SSH connection
    conn = libvirt.open(session.libvirt_uri(c))
    dom = conn.lookupByUUIDString(uuid)
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    q: queue.Queue[bytes | None] = queue.Queue()

    def reader() -> None:
        try:
            while True:
                data = stream.recv(4096)
                if not isinstance(data, bytes) or not data:
                    break
                q.put(data)
        except libvirt.libvirtError:
            pass
        q.put(None)

    # Every call on this connection happens before the reader starts: a call while recv() blocks on
    # the same connection deadlocks.  Console output waits in the stream until it is read.
    if send:
        stream.send(send)
    if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
        dom.resume()
    threading.Thread(target=reader, daemon=True).start()
    t0, buf, found = time.monotonic(), b"", {}
    while len(found) < len(markers) and time.monotonic() - t0 < timeout:
        try:
            data = q.get(timeout=max(0.05, timeout - (time.monotonic() - t0)))
        except queue.Empty:
            break
        if data is None:
            break
        buf += data
        for m in markers:
            if m not in found and m.encode() in buf:
                found[m] = time.monotonic() - t0
    # No abort here: aborting while the reader thread sits in recv() can deadlock the client.  The
    # reader ends by itself when the console closes (the guest stops or is destroyed).
    return found, buf


def quiesce() -> None:
    """Before a timed benchmark phase: what earlier phases wrote is on disk (their dirty pages would be
    written back during the next phase and slow it), and no virtfleet SSH master is left open (every
    timed run starts cold)."""
    os.sync()
    from providers.remote import session
    runtime = session.runtime_dir()
    for name in os.listdir(runtime):
        path = os.path.join(runtime, name)
        if name.startswith("cm-") and stat.S_ISSOCK(os.lstat(path).st_mode):  # not the .lock files
            subprocess.run(["ssh", "-o", f"ControlPath={path}", "-O", "exit", "lab"],
                           capture_output=True, check=False, timeout=10)

