"""B4: a fleet of N guests across 3 lab hosts, `pulumi up` vs a parallel virsh-over-SSH shell baseline,
and a no-op `pulumi preview` vs the floor of the same number of do-nothing dynamic resources.

Baseline: 8 parallel workers (xargs -P 8), per guest `virsh vol-create-as` (overlay on the same base),
`virsh define`, `virsh start`, each virsh call opening its own SSH connection (qemu+ssh, pinned key).
virtfleet: `pulumi up` of a stack with the same guests (one SSH connection per host, reused by libvirt
and commands), on Pulumi's official toolchain.  The SDK's dynamic-provider process would serve at most 4
calls at once; the project's provider host (plugin/, Pulumi.yaml `plugins:`) has 64 threads, so the
engine's --parallel is the limit: 32 as scripts/env.sh sets it (PULUMI_PARALLEL; the engine's own
default is 8 on 2 cores).

Both sides define the same headless guests (`graphics: none`): on a real fleet the guests run on the
hypervisors' own CPUs, here all of them share the 2 cores with both control planes, and a spice display
(QXL) costs every TCG guest a steady share of a core: bare libvirt, one connection per host, 8 workers,
started 60 guests in 41.7 s with spice and 16.3 s without (measured here).  With displays, B4 measured
QEMU's display emulation, not the control plane.  `--graphics spice` runs it with displays.
`--cpu-priority idle` gives both sides' guests idle-priority vCPUs (`cpuPriority: idle`): booting TCG
guests then only use CPU time the control planes leave, as on hardware of their own.

Rounds: a fleet of 10 is measured in 5 rounds (baseline, then virtfleet, each on a settled machine) and
the row gives the medians and each round's ratio: one round of either side varied by up to 1.6x here
(the baseline took 6.0-9.7 s for the same 10 guests, virtfleet 3.7-5.2 s), so the median of 3 rounds
still moved by 0.1x between runs.  Larger fleets take one round (`--rounds R` sets it for every N).

usage: bench/fleet.py [--graphics none|spice] [--cpu-priority normal|idle] [--rounds R] [N ...]
       (defaults: none, normal, 5 rounds for N <= 10 else 1, N = 10 30 60; the lab up with 3 hosts)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers.base_image import BaseImageProvider
from providers.host import HostProvider
from providers.local.trace import trace
from providers.model.guest import GuestSpec, InterfaceSpec
from providers.model.host import Connection
from providers.model.owner import Owner
from providers.xml import domain as domain_xml
from tests import lab  # noqa: E402
from tests.e2e.fleet import config, guest, mac_for  # noqa: E402
from tests.provider.fixtures import host_props, image_props  # noqa: E402
from tests.pulumi_cli import Stack, python_project  # noqa: E402

HOSTS = ("h1", "h2", "h3")
MEMORY = "96MiB"
GRAPHICS = "none"
PRIORITY = "normal"

# the provider lives in a module of the project, as virtfleet's do: the engine then stores a class reference
# (a provider defined in __main__ is pickled whole, and the SDK's pickling nests deeper with every resource:
# RecursionError after ~300 of them)
FLOOR_MODULE = '''
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

class Nothing(ResourceProvider):
    serialize_as_secret_always = False  # as virtfleet's: a class reference holds no secret

    def create(self, props):
        return CreateResult("x", props)

    def diff(self, _id, olds, news):
        return DiffResult(changes=olds.get("v") != news.get("v"))

    def update(self, _id, _olds, news):
        return UpdateResult(news)

class R(Resource):
    def __init__(self, name, v=1):
        super().__init__(Nothing(), name, {"v": v})
'''
FLOOR_PROGRAM = '''
import pulumi
from nothing import R

config = pulumi.Config()
for i in range(config.require_int("n")):
    R(f"r{i}", config.get_int(f"v{i}") or 1)  # `v0: 2` is one resource changed
'''


def names(n: int, tag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {h: [] for h in HOSTS}
    for i in range(n):
        out[HOSTS[i % 3]].append(f"f{tag}-{i:02d}")
    return out


def baseline(tmp: str, n: int, base_volume: str, base_path: str) -> float:
    info = lab.info()
    wrapper = f"{tmp}/ssh"
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec ssh -o UserKnownHostsFile={info['knownHosts']} -o StrictHostKeyChecking=yes "
                "-o BatchMode=yes \"$@\"\n")
    os.chmod(wrapper, 0o700)
    lines = []
    for host, gs in names(n, "s").items():
        h = info["hosts"][host]
        uri = f"qemu+ssh://root@{h['address']}/system?keyfile={info['sshKeyFile']}&command={wrapper}"
        for g in gs:
            spec = GuestSpec(conn=Connection(host=host, address=h["address"]), name=g,
                             owner=Owner("baseline", "bench", g), memory=96 << 20, vcpus=1, virt_type="qemu",
                             graphics=GRAPHICS, cpu_priority=PRIORITY,
                             disk_path=f"/var/lib/virtfleet/guests/{g}.qcow2",
                             interfaces=(InterfaceSpec("direct", "eth0", mac_for(g)),))
            xml_path = f"{tmp}/{g}.xml"
            with open(xml_path, "w") as f:
                f.write(domain_xml.domain(spec))
            lines.append(f"virsh -q -c '{uri}' vol-create-as guests {g}.qcow2 1G --format qcow2 "
                         f"--backing-vol {base_path} --backing-vol-format qcow2 >/dev/null && "
                         f"virsh -q -c '{uri}' define {xml_path} >/dev/null && "
                         f"virsh -q -c '{uri}' start {g} >/dev/null")
    script = f"{tmp}/jobs.txt"
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", f"tr '\\n' '\\0' < {script} | xargs -0 -P 8 -I CMD sh -c 'CMD'"], check=True)
    wall = time.monotonic() - t0
    for host, gs in names(n, "s").items():
        for g in gs:
            lab.virsh(host, "destroy", g, check=False)
            lab.virsh(host, "undefine", g, check=False)
            lab.virsh(host, "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)
    return wall


def floor_stack_of(tmp: str, count: int, up: bool = True, provider_host: bool = True) -> Stack:
    """A stack of `count` do-nothing dynamic resources, up unless told (the floor's previews then change
    nothing); `provider_host`: on the project's dynamic-provider host, and refreshing first, as virtfleet
    runs."""
    project = python_project(f"{tmp}/floor", "floor", FLOOR_PROGRAM, provider_host, refresh=True)
    with open(os.path.join(project, "nothing.py"), "w") as f:
        f.write(FLOOR_MODULE)
    stack = Stack(f"{tmp}/floor-state-{count}", "floor", project_dir=project)
    stack.run("config", "set", "n", str(count))
    if up:
        stack.up()
    return stack


def _busy(interval: float = 2.0) -> float:
    """Fraction of CPU time not idle over `interval` seconds, from /proc/stat."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t1, i1 = sample()
    time.sleep(interval)
    t2, i2 = sample()
    return 1 - (i2 - i1) / max(t2 - t1, 1)


def settle(limit: float = 1800) -> float:
    """Wait until the CPUs are mostly idle again (booting TCG guests load both cores; idle-priority
    ones take longer, using only the time nothing else wants), with earlier phases' writes on disk and
    no SSH master open.  The no-op previews are a steady-state measure: they wait for this too.  60
    guests booting at once on these 2 cores took from a few minutes to over 15 (each used ~35 s of CPU
    to boot, against ~5 s alone).  Returns the busy fraction last seen (printed with the previews)."""
    lab.quiesce()
    deadline = time.monotonic() + limit
    busy = _busy()
    while time.monotonic() < deadline and busy > 0.25:
        busy = _busy()
    return busy


def timed_preview(stack: Stack) -> float:
    t0 = time.monotonic()
    stack.preview("--expect-no-changes")
    return time.monotonic() - t0


def row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def remove_fleet(stack: Stack, gs: dict[str, list[str]]) -> None:
    """Destroy the stack's guests and their kept disks (deleteDiskOnDestroy is false by default)."""
    stack.destroy()
    for host, g_list in gs.items():
        for g in g_list:
            lab.virsh(host, "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)


def main() -> int:
    global GRAPHICS, PRIORITY
    args = sys.argv[1:]
    rounds = 0
    while args[:1] in (["--graphics"], ["--cpu-priority"], ["--rounds"]):
        if args[0] == "--graphics":
            GRAPHICS = args[1]
        elif args[0] == "--rounds":
            rounds = int(args[1])
        else:
            PRIORITY = args[1]
        args = args[2:]
    sizes = [int(a) for a in args] or [10, 30, 60]
    print(f"guests: graphics {GRAPHICS}, cpuPriority {PRIORITY}", flush=True)
    tmp = tempfile.mkdtemp(prefix="virtfleet-fleet-", dir=os.path.join(lab.ROOT, ".state"))
    row(["N guests", "baseline virsh (s)", "virtfleet up (s)", "ratio", "each round", "no-op preview (s)",
         "floor preview, same #resources (s)", "ratio", "CPU busy before the previews"])
    row(["---"] * 9)
    for n in sizes:
        gs = names(n, "v")
        one = {"memory": MEMORY, "shutdownTimeout": 0, "graphics": GRAPHICS, "cpuPriority": PRIORITY}
        cfg = config({h: {g: guest(g, **one) for g in g_list} for h, g_list in gs.items()})
        stack = Stack(f"{tmp}/v{n}", f"fleet{n}", cfg)
        # the base image once per host, not timed on either side (B1 measures distribution)
        held = {}
        for h in HOSTS:
            HostProvider().create(host_props(h))
            held[h] = BaseImageProvider().create(image_props(h)).outs
        bases_path = held[HOSTS[-1]]["path"]
        bs, vs = [], []
        for r in range(rounds or (5 if n <= 10 else 1)):
            if r:
                remove_fleet(stack, gs)
            settle()
            bs.append(baseline(tmp, n, os.path.basename(bases_path), bases_path))
            settle()
            t0 = time.monotonic()
            trace(f"B4 {n} up begin")
            stack.up()
            trace(f"B4 {n} up end")
            vs.append(time.monotonic() - t0)
        resources = len(stack.export()["deployment"]["resources"])
        busy = settle()  # the new guests boot under TCG and load both cores: let them finish first
        floor_stack = floor_stack_of(tmp, resources)
        ps, fs = [], []
        for _ in range(2):  # alternating, so both see the same machine
            ps.append(timed_preview(stack))
            fs.append(timed_preview(floor_stack))
        p, f = min(ps), min(fs)
        pairs = list(zip(bs, vs, strict=True))
        row([str(n), f"{statistics.median(bs):.1f}", f"{statistics.median(vs):.1f}",
             f"{statistics.median(v / b for b, v in pairs):.2f}x", " ".join(f"{b:.1f}/{v:.1f}" for b, v in pairs),
             f"{p:.1f}", f"{f:.1f} ({resources} res.)", f"{p / f:.2f}x", f"{busy:.0%}"])
        remove_fleet(stack, gs)
        for outs in held.values():  # let go of the bases (kept while the baseline's disks use them)
            BaseImageProvider().delete("base", outs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
