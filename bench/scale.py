"""B6: the control plane at scale, virtfleet vs OpenTofu + terraform-provider-libvirt 0.8.3 (the peer of B5), on
16 lab hosts, side by side in one run: N guests defined but NOT running (`running: false`; the peer's
`running = false`), so what is measured is the control plane, not TCG boots.

Per N, each side alone on the lab (the peer first, then virtfleet, then virtfleet-skip: virtfleet with Pulumi's
documented PULUMI_SKIP_CHECKPOINTS=true, README "Large fleets"; before every timed phase the machine
settles, SETTLE s at most, and no SSH connection is left open):
  create    `tofu apply` from empty              vs `pulumi up` from empty
  no-op     `tofu plan` (refreshes)              vs `pulumi preview` (the project's `refresh: always`)
  refresh   `tofu apply -refresh-only -auto-approve` vs `pulumi refresh --yes --skip-preview` (each reads every
            resource once; `pulumi refresh --yes` alone reads them all twice, first for its preview)
  change 1  one guest's memory 96 -> 128 MiB: `tofu apply` vs `pulumi up` (both refresh first; the peer's
            `memory` is ForceNew: it replaces that domain, virtfleet redefines it in place)
  destroy   `tofu destroy`                       vs `pulumi destroy`
Both sides' guests are the same: 96 MiB, 1 vCPU, TCG, a 1 GiB qcow2 overlay on the same base volume per
host (uploaded once per host beforehand, untimed, as in B5), a spice display (the peer's default,
virtfleet's default: no XSLT step on the peer's side), disks deleted with the guests.  N guests are spread
round-robin over all 16 hosts (400: 25 per host; 40: 2 or 3 per host).

The peer cannot define a guest without starting it: 0.8.3's create implements `running = false` by
starting the domain and then destroying it (resourceLibvirtDomainCreate: virDomainCreate, then
destroyDomainByUserRequest), so its create, and its replacement of the changed guest (`memory` is
ForceNew), start and power off every guest they make: those rows are marked, not like for like.
The peer's guests have no NIC: the lab's hosts are network namespaces sharing one /dev, where two hosts'
macvtap devices of the same ifindex share the node /dev/tapN, and starting guests on 16 fresh hosts at once
failed with "Unable to query TUNGETIFF on FD 35: Link has been severed"; virtfleet's, never started, keep
macvtap on eth0 with a fixed MAC.
The peer runs with its defaults (-parallelism 10; one provider process per host, as tofu runs one per
provider alias), virtfleet as `scripts/env.sh` sets it (PULUMI_PARALLEL=32, the project's provider host).

While every command runs, a sampler (every SAMPLE s, from /proc) records each side's established TCP
connections to every host's port 22 from the root namespace (virtfleet: its ssh masters and anything the
bench's child processes hold; the peer: tofu's provider processes, which speak SSH in-process), and the
memory and CPU time of each side's processes: virtfleet's provider host (`plugin/serve.py`, started by the
engine), the `pulumi` CLI and the program; the peer's `tofu` and its provider processes.  Memory: one
process's peak (VmHWM), and the RSS of all processes of a kind together (the peer runs several provider
processes at once).  CPU: the whole client side per operation (getrusage of the waited-for children),
and the hosts' libvirtd.  Before the run it prints the lab's own memory (RSS and PSS of every host's
libvirtd, virtlogd and sshd).

Every guest and disk made is removed on every exit path (the stack's destroy, then `virsh` on each
host for anything named b6*), and the base volumes are let go of.

Each side at each N is one section: the bases on every host (untimed), its five operations, the sweep
and the bases let go.  `--lock FILE` takes FILE (the lab's lock, /tmp/vf-lab.lock) with flock(2) for each
section, so other users of the lab wait only for one section, and one run still measures both sides; a
section that runs past SECTION_LIMIT s is stopped, swept and reported as failed.

usage: bench/scale.py [--lock FILE] [--only peer|virtfleet|virtfleet-skip] [--hosts H] [N ...]
       (default N: 40 400, H: 16)
       bench/scale.py --floor [N ...]      Pulumi's floor: as many do-nothing dynamic resources
       bench/scale.py --lab-memory
       after `. scripts/env.sh`, with `lab/lab.sh up 16` and bench/peer-build.sh built; VIRTFLEET_TRACE=FILE
       traces virtfleet's provider calls
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.fleet import floor_stack_of, row, settle  # noqa: E402
from bench.peer import PEER, Peer, tofu_config  # noqa: E402
from providers.base_image import BaseImageProvider
from providers.host import HostProvider
from providers.local.trace import trace
from tests import lab  # noqa: E402
from tests.e2e.fleet import config, guest  # noqa: E402
from tests.provider.fixtures import host_props, image_props  # noqa: E402
from tests.pulumi_cli import Stack  # noqa: E402

MEMORY_MIB, CHANGED_MIB = 96, 128
SAMPLE = 0.5  # seconds between samples of connections and memory
TICKS = os.sysconf("SC_CLK_TCK")
SECTION_LIMIT = 520  # seconds one side at one N may take (a hold of the lab lock, with --lock)
SETTLE = 5  # seconds at most that a phase waits for the CPUs to calm down (B6 boots no guest of its own; other
# users' guests may keep the CPUs a little busy for good, at nice 19)
PREFIX = "b6"
# the sides: the peer; virtfleet as set up by scripts/env.sh; virtfleet with Pulumi's documented
# PULUMI_SKIP_CHECKPOINTS (the state written once at the end, not after every step: README "Large fleets")
SIDES = ("peer", "virtfleet", "virtfleet-skip")
SKIP = {"PULUMI_SKIP_CHECKPOINTS": "true"}  # the state written once, at the end of a command
SIDE_ENV: dict[str, dict[str, str | None]] = {"virtfleet-skip": {**SKIP}}
LETTER = {"peer": "p", "virtfleet": "v", "virtfleet-skip": "s"}  # in the guests' names: b6p400-000, b6v.., b6s..
OPS = ("create", "no-op preview/plan", "refresh", "change 1 guest", "destroy")
NOTES = {"create": "not like for like: the peer starts, then powers off, every guest (its running = false)",
         "change 1 guest": "not like for like: the peer replaces the domain (memory is ForceNew), starting and "
                           "powering it off; virtfleet redefines it"}


def names(n: int, side: str, hosts: list[str]) -> dict[str, list[str]]:
    """N guests round-robin over the hosts, named by the side's letter: b6p400-000 (peer), b6v400-000, ..."""
    out: dict[str, list[str]] = {h: [] for h in hosts}
    for i in range(n):
        out[hosts[i % len(hosts)]].append(f"{PREFIX}{side}{n}-{i:03d}")
    return out


# ---- what the lab itself costs ---------------------------------------------------------------------------

def _kib(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def lab_memory() -> tuple[int, int, int]:
    """(hosts up, RSS KiB, PSS KiB) summed over every lab host's libvirtd, virtlogd and sshd listener."""
    base = os.path.join(lab.LAB_DIR, "hosts")
    hosts, rss, pss = 0, 0, 0
    for name in sorted(os.listdir(base)):
        if not (name.startswith("h") and name[1:].isdigit() and os.path.exists(f"/run/netns/{name}")):
            continue
        hosts += 1
        for daemon in ("libvirtd", "virtlogd", "sshd"):
            try:
                with open(os.path.join(base, name, f"{daemon}.pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError):
                continue
            rss += _kib(f"/proc/{pid}/status", "VmRSS")
            pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss")
    return hosts, rss, pss


# ---- the sampler -----------------------------------------------------------------------------------------

def _hex_addr(addr: str) -> str:
    return f"{struct.unpack('<I', socket.inet_aton(addr))[0]:08X}"


class Sampler(threading.Thread):
    """Samples, while a phase runs, each host's established SSH connections held by the phase's side and
    the VmHWM of that side's processes (see the module's doc)."""

    def __init__(self, addresses: dict[str, str]) -> None:
        super().__init__(daemon=True, name="sampler")
        self.by_hex = {_hex_addr(a): h for h, a in addresses.items()}
        self.guard = threading.Lock()
        self.side = ""
        self.stopping = threading.Event()
        self.reset()

    def reset(self) -> None:
        self.conns: dict[str, int] = {}  # host -> most connections seen at once
        self.hwm: dict[int, tuple[str, int]] = {}  # pid -> (kind, VmHWM KiB)
        self.at_once: dict[str, int] = {}  # kind -> the most VmRSS its processes had together in a sample
        self.cpu: dict[int, tuple[str, int]] = {}  # pid -> (kind, utime+stime ticks last seen)
        self.samples = 0

    def begin(self, side: str) -> None:
        with self.guard:
            self.reset()
            self.side = side
        self.sample()

    def end(self) -> dict[str, Any]:
        with self.guard:
            self.side = ""
            single: dict[str, int] = {}
            for kind, kib in self.hwm.values():
                single[kind] = max(single.get(kind, 0), kib)
            cpu: dict[str, float] = {}
            for kind, ticks in self.cpu.values():
                cpu[kind] = cpu.get(kind, 0) + ticks / TICKS
            return {"conns": dict(self.conns), "memory": single, "at_once": dict(self.at_once), "cpu": cpu,
                    "samples": self.samples,
                    "processes": {k: sum(1 for kk, _ in self.hwm.values() if kk == k) for k in single}}

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE):
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a sample lost must not end the benchmark
                print(f"sampler: {exc!r}", file=sys.stderr, flush=True)

    def _sockets(self) -> dict[str, str]:
        """inode -> host for established TCP connections to a lab host's port 22 (root namespace)."""
        out = {}
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                addr, port = parts[2].split(":")
                if parts[3] == "01" and port == "0016" and addr in self.by_hex:
                    out[parts[9]] = self.by_hex[addr]
        return out

    @staticmethod
    def _processes() -> dict[int, tuple[int, str, str, int]]:
        """pid -> (parent pid, comm, command line, CPU ticks used)."""
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            procs[int(d)] = (int(fields[1]), comm, cmdline, int(fields[11]) + int(fields[12]))
        return procs

    @staticmethod
    def _kind(comm: str, cmdline: str) -> str:
        if "plugin/serve.py" in cmdline or "pulumi.dynamic" in cmdline:
            return "virtfleet provider host"
        if comm == "pulumi":
            return "pulumi CLI"
        if "pulumi-language-python-exec" in cmdline:
            return "virtfleet program"
        if comm == "tofu":
            return "tofu"
        if "terraform-provider-libvirt" in cmdline:
            return "peer providers"
        return ""

    def sample(self) -> None:
        with self.guard:
            side = self.side
        if not side:
            return
        procs = self._processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in procs.items():
            children.setdefault(ppid, []).append(pid)
        mine, todo = set(), [os.getpid()]
        while todo:
            for c in children.get(todo.pop(), []):
                if c not in mine:
                    mine.add(c)
                    todo.append(c)
        holders = set(mine)
        if side.startswith("virtfleet"):  # its masters are daemons (`ssh -f`), no longer our descendants
            holders |= {pid for pid, (_, comm, cmd, _) in procs.items() if comm == "ssh" and "[mux]" in cmd}
        socks = self._sockets()
        counts: dict[str, int] = {}
        for pid in holders:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in socks:
                    host = socks[target[8:-1]]
                    counts[host] = counts.get(host, 0) + 1
        hwm: dict[int, tuple[str, int]] = {}
        rss: dict[str, int] = {}
        ticks: dict[int, tuple[str, int]] = {}
        for pid in mine:
            kind = self._kind(procs[pid][1], procs[pid][2])
            if kind:
                hwm[pid] = (kind, _kib(f"/proc/{pid}/status", "VmHWM"))
                ticks[pid] = (kind, procs[pid][3])
                rss[kind] = rss.get(kind, 0) + _kib(f"/proc/{pid}/status", "VmRSS")
        with self.guard:
            if self.side != side:
                return
            self.samples += 1
            for h, n in counts.items():
                self.conns[h] = max(self.conns.get(h, 0), n)
            for pid, (kind, kib) in hwm.items():
                if kib:
                    self.hwm[pid] = (kind, max(kib, self.hwm.get(pid, (kind, 0))[1]))
            for kind, kib in rss.items():
                self.at_once[kind] = max(self.at_once.get(kind, 0), kib)
            self.cpu.update(ticks)


# ---- the two sides ---------------------------------------------------------------------------------------

class ScalePeer(Peer):
    """B5's OpenTofu working directory, with N not-running guests over the given hosts."""

    def __init__(self, tmp: str, n: int, hosts: list[str], base: str) -> None:
        self.n, self.hosts = n, hosts
        self.memory: dict[str, int] = {}
        self.guests = names(n, "p", hosts)
        self.base = base
        super().__init__(tmp, n, base, "spice")

    def config(self, n: int, base: str, graphics: str) -> dict[str, Any]:  # type: ignore[override]
        return tofu_config(self.guests, base, lambda g: {"memory": self.memory.get(g, MEMORY_MIB), "running": False})

    def change(self, g: str, mib: int) -> None:
        self.memory[g] = mib
        with open(os.path.join(self.dir, "main.tf.json"), "w") as f:
            json.dump(self.config(self.n, self.base, "spice"), f, indent=1)

    def refresh(self) -> None:
        self.tofu("apply", "-refresh-only", "-auto-approve")


class ScaleFleet:
    """A virtfleet stack of N not-running guests over the given hosts, for one virtfleet side."""

    def __init__(self, tmp: str, n: int, hosts: list[str], side: str) -> None:
        self.letter = LETTER[side]
        self.guests = names(n, self.letter, hosts)
        self.memory: dict[str, int] = {}
        self.stack = Stack(os.path.join(tmp, f"{self.letter}{n}"), f"b6{self.letter}{n}", self.config(),
                           env=SIDE_ENV.get(side))

    def config(self) -> dict[str, Any]:
        one = {"graphics": "spice", "running": False, "autostart": False, "deleteDiskOnDestroy": True}
        return config({h: {g: guest(g, **one, memory=f"{self.memory.get(g, MEMORY_MIB)}MiB") for g in gs}
                       for h, gs in self.guests.items()})

    def change(self, g: str, mib: int) -> None:
        self.memory[g] = mib
        self.stack.write_config(self.config())


# ---- on the hosts, untimed -------------------------------------------------------------------------------

def on_hosts(hosts: list[str], fn: Callable[[str], Any]) -> dict[str, Any]:
    with futures.ThreadPoolExecutor(len(hosts)) as pool:
        return dict(zip(hosts, pool.map(fn, hosts), strict=True))


def census(hosts: list[str], prefix: str) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per host: (domains, of them running, volumes) named `prefix`*."""
    script = ("virsh -q list --all --name; echo ---; virsh -q list --name; echo ---; "
              "virsh -q vol-list guests | awk '{print $1}'")

    def one(h: str) -> tuple[list[str], list[str], list[str]]:
        out = lab.in_host(h, "sh", "-c", script).stdout.split("---")
        return tuple(sorted(x for x in part.split() if x.startswith(prefix)) for part in out)  # type: ignore[return-value]
    return on_hosts(hosts, one)


def check_fleet(hosts: list[str], guests: dict[str, list[str]], prefix: str, changed: str = "") -> None:
    """The hosts hold exactly these guests, none running, each with its disk (raises otherwise)."""
    for h, (doms, running, vols) in census(hosts, prefix).items():
        want = sorted(guests.get(h, []))
        if doms != want or running or vols != sorted(f"{g}.qcow2" for g in want):
            raise RuntimeError(f"{h}: expected guests {want[:3]}... ({len(want)}), none running; found "
                               f"{len(doms)} domains ({len(running)} running), {len(vols)} volumes")
    if changed:
        h = next(h for h, gs in guests.items() if changed in gs)
        mem = lab.virsh(h, "dominfo", changed)
        if f"{CHANGED_MIB * 1024} KiB" not in mem:
            raise RuntimeError(f"{h}: {changed} does not have {CHANGED_MIB} MiB after the change:\n{mem}")


def sweep(hosts: list[str]) -> dict[str, int]:
    """Remove every domain and volume named b6* from the hosts; returns what was left per host."""
    script = (f"n=0; for d in $(virsh -q list --all --name | grep '^{PREFIX}'); do "
              "virsh -q destroy $d >/dev/null 2>&1; virsh -q undefine $d >/dev/null 2>&1; n=$((n+1)); done; "
              f"for v in $(virsh -q vol-list guests 2>/dev/null | awk '{{print $1}}' | grep '^{PREFIX}'); do "
              "virsh -q vol-delete --pool guests $v >/dev/null 2>&1; n=$((n+1)); done; "
              "[ $n -gt 0 ] && virsh -q pool-refresh guests >/dev/null 2>&1; echo $n")
    left = on_hosts(hosts, lambda h: int(lab.in_host(h, "sh", "-c", script, check=False).stdout.strip() or 0))
    return {h: n for h, n in left.items() if n}


# ---- measuring -------------------------------------------------------------------------------------------

def libvirtd_ticks(hosts: list[str]) -> int:
    """CPU ticks the hosts' libvirtd have used so far (the host side of the control plane)."""
    total = 0
    for h in hosts:
        try:
            with open(os.path.join(lab.LAB_DIR, "hosts", h, "libvirtd.pid")) as f:
                pid = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


class Side:
    """One side's timed phases at one N: seconds, CPU and sampler results per operation."""

    def __init__(self, name: str, sampler: Sampler, hosts: list[str]) -> None:
        self.name, self.sampler, self.hosts = name, sampler, hosts
        self.seconds: dict[str, float] = {}
        self.samples: dict[str, dict[str, Any]] = {}
        self.cpu: dict[str, tuple[float, float]] = {}  # op -> (client CPU s, hosts' libvirtd CPU s)
        self.failed = ""

    def timed(self, op: str, fn: Callable[[], object]) -> None:
        busy = settle(SETTLE)
        trace(f"B6 {self.name} {op} begin")
        self.sampler.begin(self.name)
        r0, l0 = resource.getrusage(resource.RUSAGE_CHILDREN), libvirtd_ticks(self.hosts)
        t0 = time.monotonic()
        try:
            fn()
        finally:
            self.seconds[op] = time.monotonic() - t0
            r1, l1 = resource.getrusage(resource.RUSAGE_CHILDREN), libvirtd_ticks(self.hosts)
            self.samples[op] = self.sampler.end()
            self.cpu[op] = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, (l1 - l0) / TICKS)
            trace(f"B6 {self.name} {op} end")
        by_kind = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.samples[op]["cpu"].items()))
        print(f"  {self.name:9} {op:20} {self.seconds[op]:7.1f} s   (CPU busy before: {busy:.0%})   ssh/host max "
              f"{max(self.samples[op]['conns'].values(), default=0)}   CPU s: client {self.cpu[op][0]:.1f} "
              f"({by_kind}), hosts' libvirtd {self.cpu[op][1]:.1f}", flush=True)


def run_peer(side: Side, tmp: str, n: int, base: str) -> None:
    hosts = side.hosts
    peer = ScalePeer(tmp, n, hosts, base)
    changed = peer.guests[hosts[0]][0]
    try:
        side.timed("create", peer.create)
        check_fleet(hosts, peer.guests, f"{PREFIX}p{n}-")
        side.timed("no-op preview/plan", peer.plan)
        side.timed("refresh", peer.refresh)
        peer.change(changed, CHANGED_MIB)
        side.timed("change 1 guest", peer.create)
        check_fleet(hosts, peer.guests, f"{PREFIX}p{n}-", changed)
        side.timed("destroy", peer.destroy)
        check_fleet(hosts, {}, f"{PREFIX}p{n}-")
    finally:
        if "destroy" not in side.seconds and not isinstance(sys.exc_info()[1], SectionTimeout):
            peer.tofu("destroy", "-auto-approve", ok=(0, 1))


def run_virtfleet(side: Side, tmp: str, n: int) -> None:
    hosts = side.hosts
    fleet = ScaleFleet(tmp, n, hosts, side.name)
    stack = fleet.stack
    prefix = f"{PREFIX}{fleet.letter}{n}-"
    changed = fleet.guests[hosts[0]][0]
    try:
        side.timed("create", stack.up)
        check_fleet(hosts, fleet.guests, prefix)
        side.timed("no-op preview/plan", lambda: stack.preview("--expect-no-changes"))
        side.timed("refresh", functools.partial(stack.refresh, "--skip-preview"))
        fleet.change(changed, CHANGED_MIB)
        side.timed("change 1 guest", stack.up)
        check_fleet(hosts, fleet.guests, prefix, changed)
        side.timed("destroy", stack.destroy)
        check_fleet(hosts, {}, prefix)
    finally:
        if "destroy" not in side.seconds and not isinstance(sys.exc_info()[1], SectionTimeout):
            proc = stack.destroy(check=False)
            if proc.returncode:
                print(f"virtfleet cleanup destroy failed ({proc.returncode}): {proc.stdout[-1500:]}", flush=True)


def run_side(side: Side, tmp: str, n: int, held: dict[str, dict[str, Any]]) -> None:
    if side.name == "peer":
        run_peer(side, tmp, n, os.path.basename(held[side.hosts[0]]["path"]))
    else:
        run_virtfleet(side, tmp, n)


class SectionTimeout(BaseException):
    """A side at one N ran past SECTION_LIMIT: stopped, its guests swept away, the lock let go."""


def kill_descendants() -> None:
    """What a stopped section left running below this process (pulumi's plugins, tofu's providers)."""
    procs = Sampler._processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo, found = [os.getpid()], []
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    for pid in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def ensure_hosts(hosts: list[str]) -> None:
    """Start the lab hosts that are down (tests/provider/test_lab.py starts and stops h4 as its spare host)."""
    up = lab.info()["hosts"]
    for h in hosts:
        if h not in up:
            subprocess.run(["bash", lab.LAB_SH, "start-host", h[1:]], check=True, capture_output=True)
            # the root namespace may still know the old host's MAC for this address: ask again, and wait
            # for its sshd (the first SSH connection timed out here otherwise)
            addr = f"10.200.0.{10 + int(h[1:])}"
            subprocess.run(["ip", "neigh", "flush", "to", addr], check=False, capture_output=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection((addr, 22), timeout=1):
                    break
                time.sleep(0.2)
            print(f"  (lab host {h} was down: started it)", flush=True)


@contextlib.contextmanager
def lab_lock(path: str) -> Iterator[None]:
    """Hold the lab's lock (flock(2), as flock(1) takes it), when a path is given."""
    if not path:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by what we start (PEP 446)
    t0 = time.monotonic()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        print(f"  (lab lock {path} taken after {time.monotonic() - t0:.0f} s)", flush=True)
        yield
    finally:
        os.close(fd)


def section(side: Side, lock: str, run: Callable[[dict[str, dict[str, Any]]], None]) -> None:
    """One side at one N, as one hold of the lab lock: the bases (untimed, as in B5), the side's phases, and
    on every exit path the sweep of its guests and the bases let go, all within SECTION_LIMIT s."""
    hosts = side.hosts

    def hold(h: str) -> dict[str, Any]:
        HostProvider().create(host_props(h))
        return BaseImageProvider().create(image_props(h)).outs or {}

    def expire(*_: Any) -> None:
        raise SectionTimeout

    with lab_lock(lock):
        ensure_hosts(hosts)
        held: dict[str, dict[str, Any]] = {}
        old = signal.signal(signal.SIGALRM, expire)
        signal.alarm(SECTION_LIMIT)
        try:
            t0 = time.monotonic()
            held.update(on_hosts(hosts, hold))
            print(f"  bases on {len(hosts)} hosts in {time.monotonic() - t0:.1f} s (untimed)", flush=True)
            run(held)
        except SectionTimeout:
            side.failed = f"stopped after {SECTION_LIMIT} s (in {next((o for o in OPS if o not in side.seconds), '?')})"
            print(f"  {side.name}: {side.failed}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table; the other sections still run
            full = os.path.join(lab.ROOT, ".state", f"b6-failed-{side.name}-{int(time.time())}.txt")
            with open(full, "w") as f:
                f.write(f"{type(exc).__name__}: {exc}\n")
            side.failed = f"{type(exc).__name__}: {str(exc)[-2000:]} (all of it: {full})"
            print(f"  {side.name} failed: {side.failed}", flush=True)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            kill_descendants()
            left = sweep(hosts)
            if left:
                print(f"  cleanup: removed leftover domains/volumes: {left}", flush=True)
            for outs in held.values():
                BaseImageProvider().delete("base", outs)


# ---- reporting -------------------------------------------------------------------------------------------

def _cell(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def report(results: dict[int, dict[str, Side]], hosts: list[str]) -> None:
    sizes = sorted(results)
    print(flush=True)
    print(f"B6: {len(hosts)} hosts, guests defined, not running; seconds per operation", flush=True)
    print("virtfleet-skip: virtfleet with PULUMI_SKIP_CHECKPOINTS=true (the state written at the end of each "
          "command, not after every step)", flush=True)
    ours = SIDES[1:]
    row(["N", "guests/host", "operation", "peer (s)", *(f"{s} (s)" for s in ours), *(f"{s}/peer" for s in ours),
         "target <= 0.8x", "note"])
    row(["---"] * (6 + 2 * len(ours)))
    for n in sizes:
        per = f"{n // len(hosts)}" + (f"-{-(-n // len(hosts))}" if n % len(hosts) else "")
        for op in OPS:
            p = results[n].get("peer")
            ps = p.seconds.get(op) if p else None
            secs = [results[n][s].seconds.get(op) if s in results[n] else None for s in ours]
            ratios = [vs / ps if ps and vs else None for vs in secs]
            met = ", ".join(f"{s}: {'met' if r <= 0.8 else 'NOT met'}" for s, r in zip(ours, ratios, strict=True)
                            if r is not None) or "-"
            row([str(n), per, op, _cell(ps), *map(_cell, secs), *(_cell(r, "{:.2f}x") for r in ratios), met,
                 NOTES.get(op, "")])
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(flush=True)
        print(f"growth from {lo} to {hi} guests (seconds at {hi} / seconds at {lo}; guests x{hi / lo:.0f})",
              flush=True)
        row(["operation", *SIDES])
        row(["---"] * (1 + len(SIDES)))
        for op in OPS:
            cells = []
            for s in SIDES:
                a, b = results[lo].get(s), results[hi].get(s)
                x = a.seconds.get(op) if a else None
                y = b.seconds.get(op) if b else None
                cells.append(_cell(y / x if x and y else None, "{:.2f}x"))
            row([op, *cells])
        v_lo, v_hi = results[lo].get("virtfleet"), results[hi].get("virtfleet")
        if v_lo and v_hi and "no-op preview/plan" in v_lo.seconds and "no-op preview/plan" in v_hi.seconds:
            # the "within 2x of a 40-guest one (no quadratic step)": seconds per guest at the larger
            # size within 2x of seconds per guest at the smaller one
            g = v_hi.seconds["no-op preview/plan"] / v_lo.seconds["no-op preview/plan"]
            per = g * lo / hi
            print(f"virtfleet no-op preview at {hi} / at {lo}: {g:.2f}x; per guest {per:.2f}x (target <= 2x: "
                  f"{'met' if per <= 2 else 'NOT met'})", flush=True)
    print(flush=True)
    print("peak memory, MiB, the largest over the operations: one process's VmHWM, and the VmRSS of all of "
          "that kind's processes together (sampled; the peer runs one provider process per host)", flush=True)
    row(["N", "side", "process", "peak VmHWM, one process", "in operation", "peak RSS together",
         "processes in that operation"])
    row(["---"] * 7)
    for n in sizes:
        for s in SIDES:
            side = results[n].get(s)
            if not side:
                continue
            kinds = sorted({k for smp in side.samples.values() for k in smp["memory"]})
            for kind in kinds:
                op, smp = max(side.samples.items(), key=lambda kv: kv[1]["memory"].get(kind, 0))
                op2, smp2 = max(side.samples.items(), key=lambda kv: kv[1]["at_once"].get(kind, 0))
                row([str(n), s, kind, f"{smp['memory'][kind] / 1024:.0f}", op,
                     f"{smp2['at_once'].get(kind, 0) / 1024:.0f}", str(smp2["processes"].get(kind, 0))])
    print(flush=True)
    print("SSH connections per host (established TCP to port 22, most seen at once, over all hosts)", flush=True)
    row(["N", "side", *OPS, "hosts never above 1"])
    row(["---"] * (3 + len(OPS)))
    for n in sizes:
        for s in SIDES:
            side = results[n].get(s)
            if not side:
                continue
            cells = []
            for op in OPS:
                c = side.samples.get(op, {}).get("conns", {})
                cells.append(f"{max(c.values(), default=0)} (min {min((c.get(h, 0) for h in hosts), default=0)})"
                             if op in side.samples else "-")
            exact = sum(all(side.samples[op]["conns"].get(h, 0) <= 1 for op in side.samples) for h in hosts)
            row([str(n), s, *cells, f"{exact}/{len(hosts)}"])
    print(flush=True)
    print("CPU seconds per operation: the client side (the command and every process it waited for) and the "
          "hosts' libvirtd together", flush=True)
    row(["N", "operation", *(f"{s} {what}" for s in SIDES for what in ("client", "libvirtd"))])
    row(["---"] * (2 + 2 * len(SIDES)))
    for n in sizes:
        for op in OPS:
            cells = []
            for s in SIDES:
                side = results[n].get(s)
                c = side.cpu.get(op) if side else None
                cells += [_cell(c[0]), _cell(c[1])] if c else ["-", "-"]
            row([str(n), op, *cells])
    for n in sizes:
        for s, side in results[n].items():
            if side.failed:
                print(f"N = {n}, {s}: FAILED: {side.failed}", flush=True)


def floor_change(st: Stack) -> None:
    """One of the do-nothing resources changed, applied as virtfleet's "change 1 guest" is."""
    st.run("config", "set", "v0", "2")
    st.up()


def with_env(st: Stack, env: dict[str, str], fn: Callable[[], object]) -> None:
    saved, st.env = st.env, env
    try:
        fn()
    finally:
        st.env = saved


def floor(sizes: list[int], nhosts: int = 16) -> int:
    """Pulumi's own floor at B6's sizes: as many do-nothing dynamic resources as virtfleet registers for N
    guests on `nhosts` hosts (a Volume and a Guest per guest; a Hypervisor, Host and BaseImage per host), on
    the project's provider host, refreshing first as virtfleet does.  No lab needed."""
    tmp = tempfile.mkdtemp(prefix="virtfleet-b6floor-", dir=os.path.join(lab.ROOT, ".state"))
    print(f"B6 floor: do-nothing dynamic resources, as many as virtfleet's for N guests on {nhosts} hosts")
    row(["N", "resources", "operation", "floor (s)"])
    row(["---"] * 4)
    for n in sizes:
        count = 2 * n + 3 * nhosts
        st = floor_stack_of(tmp, count, up=False)
        skip = {**st.env, **SKIP}
        for op, run in (("create", st.up), ("no-op preview/plan", functools.partial(st.preview, "--expect-no-changes")),
                        ("refresh", functools.partial(st.refresh, "--skip-preview")),
                        ("change 1 guest", functools.partial(floor_change, st)), ("destroy", st.destroy),
                        ("create, skip-checkpoints", functools.partial(with_env, st, skip, st.up)),
                        ("destroy, skip-checkpoints", functools.partial(with_env, st, skip, st.destroy))):
            settle()
            t0 = time.monotonic()
            run()
            row([str(n), str(count), op, f"{time.monotonic() - t0:.1f}"])
    return 0


def main() -> int:
    args = sys.argv[1:]
    only, nhosts, lock = "", 16, ""
    if args[:1] == ["--floor"]:
        return floor(sorted(int(a) for a in args[1:]) or [40, 400])
    if args == ["--lab-memory"]:
        h, rss, pss = lab_memory()
        print(f"lab: {h} hosts up; libvirtd+virtlogd+sshd: RSS {rss / 1024:.0f} MiB ({rss / 1024 / max(h, 1):.1f} "
              f"per host), PSS {pss / 1024:.0f} MiB ({pss / 1024 / max(h, 1):.1f} per host)")
        return 0
    while args[:1] in (["--only"], ["--hosts"], ["--lock"]):
        if args[0] == "--only":
            only = args[1]
        elif args[0] == "--lock":
            lock = args[1]
        else:
            nhosts = int(args[1])
        args = args[2:]
    sizes = [int(a) for a in args] or [40, 400]
    if only not in ("", *SIDES):
        print("usage:" + __doc__.split("usage:")[1], file=sys.stderr)
        return 2
    if not os.path.exists(os.path.join(PEER, "plugins", "terraform-provider-libvirt")):
        print("bench/scale.py: build the peer first: bash bench/peer-build.sh", file=sys.stderr)
        return 2
    lab.info()  # the lab is up (raises otherwise)
    hosts = [f"h{i}" for i in range(1, nhosts + 1)]
    missing = [h for h in hosts if not os.path.exists(os.path.join(lab.LAB_DIR, "hosts", h, "host_key.pub"))]
    if missing:
        print(f"bench/scale.py: lab hosts {', '.join(missing)} were never up: bash lab/lab.sh up {nhosts}",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup runs on a timeout's TERM too
    h, rss, pss = lab_memory()
    print(f"B6: {len(hosts)} of {h} lab hosts; lab daemons (libvirtd+virtlogd+sshd) RSS {rss / 1024:.0f} MiB "
          f"({rss / 1024 / h:.1f} per host), PSS {pss / 1024:.0f} MiB; virtfleet: official toolchain, project "
          f"provider host, PULUMI_PARALLEL={os.environ.get('PULUMI_PARALLEL', 'engine default')}; "
          "peer: -parallelism 10", flush=True)
    tmp = tempfile.mkdtemp(prefix="virtfleet-b6-", dir=os.path.join(lab.ROOT, ".state"))
    sampler = Sampler({h: f"10.200.0.{10 + int(h[1:])}" for h in hosts})  # lab.sh's addresses
    sampler.start()
    results: dict[int, dict[str, Side]] = {}
    try:
        for n in sizes:
            results[n] = {}
            for name in SIDES:
                if only and only != name:
                    continue
                print(f"N = {n}, {name}", flush=True)
                side = results[n][name] = Side(name, sampler, hosts)
                section(side, lock, functools.partial(run_side, side, tmp, n))
    finally:
        sampler.stopping.set()
        if results:
            report(results, hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
