"""B5: virtfleet vs the peer a user would pick instead, OpenTofu + terraform-provider-libvirt 0.8.3, on the
same N guests across the 3 lab hosts, side by side in one run, beside Pulumi's own floor.

Per N: create from empty, a no-op preview/plan (both refresh first: `tofu plan`, and `pulumi preview`
under the project's `refresh: always`), destroy.  Each side's guests are the same: 96 MiB, 1 vCPU, TCG,
a 1 GiB qcow2 overlay on the same base volume, macvtap on eth0 with a fixed MAC, no display (0.8.3 adds
a spice display by default: an XSLT in the domain's `xml` block, the provider's own mechanism, removes
it; `--graphics spice` gives both sides one).  virtfleet's guests are removed as it always does it
(graceful ACPI shutdown first), the peer's are powered off; both delete the disks
(`deleteDiskOnDestroy`).  The floor is the same number of do-nothing dynamic resources on the same
toolchain: what the Pulumi engine, language host and SDK cost whatever the provider does.

The peer runs with its defaults (-parallelism 10), virtfleet as `scripts/env.sh` sets it up (the
official CLI, language host and SDK; PULUMI_PARALLEL=16; the project's provider host).
`--sdk-host` runs virtfleet on the SDK's own dynamic-provider host instead (the project without its
Pulumi.yaml `plugins:` entry).  Before each create, and before the previews, the machine settles (the
previous guests' TCG boots load both cores).

usage: bench/peer.py [--graphics none|spice] [--sdk-host] [--rounds R] [N ...]   (default N: 10 30 60)
       after `. scripts/env.sh`, with the lab up (3 hosts) and bench/peer-build.sh built
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.fleet import HOSTS, floor_stack_of, names, row, settle  # noqa: E402
from providers.base_image import BaseImageProvider
from providers.host import HostProvider
from tests import lab  # noqa: E402
from tests.e2e.fleet import config, guest, mac_for  # noqa: E402
from tests.provider.fixtures import host_props, image_props  # noqa: E402
from tests.pulumi_cli import Stack, sdk_host_project  # noqa: E402

PEER = os.path.join(lab.ROOT, "tools", "peer")
MEMORY_MIB = 96
NO_DISPLAY = """<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output omit-xml-declaration="yes" indent="yes"/>
  <xsl:template match="node()|@*"><xsl:copy><xsl:apply-templates select="node()|@*"/></xsl:copy></xsl:template>
  <xsl:template match="/domain/devices/graphics"/>
</xsl:stylesheet>
"""


def tofu_config(guests: dict[str, list[str]], base: str, domain: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """main.tf.json for guests by lab host: a provider per host (the lab's key and pinned host keys), a 1 GiB
    qcow2 overlay on `base` per guest, and its domain: the keys every guest has, plus `domain(guest)`."""
    info = lab.info()
    providers, volumes, domains = [], {}, {}
    for host, gs in guests.items():
        addr = info["hosts"][host]["address"]
        providers.append({"alias": host, "uri": f"qemu+ssh://root@{addr}/system?keyfile={info['sshKeyFile']}"
                                                f"&knownhosts={info['knownHosts']}"})
        for g in gs:
            volumes[g] = {"provider": f"libvirt.{host}", "name": f"{g}.qcow2", "pool": "guests",
                          "base_volume_name": base, "base_volume_pool": "guests", "format": "qcow2",
                          "size": 1 << 30}
            domains[g] = {"provider": f"libvirt.{host}", "name": g, "type": "qemu", "vcpu": 1, "autostart": False,
                          "disk": [{"volume_id": f"${{libvirt_volume.{g}.id}}"}], **domain(g)}
    return {"terraform": {"required_providers": {"libvirt": {"source": "dmacvicar/libvirt"}}},
            "provider": {"libvirt": providers},
            "resource": {"libvirt_volume": volumes, "libvirt_domain": domains}}


class Peer:
    """An OpenTofu working directory with the guests of one N, on the dev-override provider build."""

    def __init__(self, tmp: str, n: int, base: str, graphics: str) -> None:
        self.dir = os.path.join(tmp, f"peer{n}")
        os.makedirs(self.dir, exist_ok=True)
        cli = os.path.join(self.dir, "tofu.rc")
        with open(cli, "w") as f:
            plugins = os.path.join(PEER, "plugins")
            f.write(f'provider_installation {{\n  dev_overrides {{ "dmacvicar/libvirt" = "{plugins}" }}\n'
                    '  direct {}\n}\n')
        self.env = {**os.environ, "TF_CLI_CONFIG_FILE": cli, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        with open(os.path.join(self.dir, "main.tf.json"), "w") as f:
            json.dump(self.config(n, base, graphics), f, indent=1)

    @staticmethod
    def config(n: int, base: str, graphics: str) -> dict[str, Any]:
        return tofu_config(names(n, "p"), base, lambda g: {
            "memory": MEMORY_MIB, "running": True,
            "network_interface": [{"macvtap": "eth0", "mac": mac_for(g).upper()}],
            **({"xml": [{"xslt": NO_DISPLAY}]} if graphics == "none" else {})})

    def tofu(self, *args: str, ok: tuple[int, ...] = (0,)) -> None:
        proc = subprocess.run([os.path.join(PEER, "tofu"), *args, "-input=false", "-no-color"], cwd=self.dir,
                              env=self.env, capture_output=True, text=True)
        if proc.returncode not in ok:
            raise RuntimeError(f"tofu {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")

    def create(self) -> None:
        self.tofu("apply", "-auto-approve")

    def plan(self) -> None:
        self.tofu("plan", "-detailed-exitcode")  # 0: no changes (2 would be a diff: a failure here)

    def destroy(self) -> None:
        self.tofu("destroy", "-auto-approve")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def virtfleet_stack(tmp: str, n: int, graphics: str, sdk_host: bool) -> Stack:
    gs = names(n, "v")
    one = {"memory": f"{MEMORY_MIB}MiB", "graphics": graphics, "deleteDiskOnDestroy": True}
    cfg = config({h: {g: guest(g, **one) for g in g_list} for h, g_list in gs.items()})
    project = sdk_host_project(tmp) if sdk_host else lab.ROOT
    return Stack(os.path.join(tmp, f"v{n}"), f"b5v{n}", cfg, project_dir=project)


def measure(create: Callable[[], object], preview: Callable[[], object],
            destroy: Callable[[], object]) -> tuple[float, float, float]:
    """Create from a settled machine, the better of two no-op previews once the guests booted, destroy."""
    settle()
    c = timed(create)
    settle()
    p = min(timed(preview), timed(preview))
    d = timed(destroy)
    return c, p, d


def main() -> int:
    args = sys.argv[1:]
    graphics, sdk_host, rounds = "none", False, 1
    while args[:1] in (["--graphics"], ["--sdk-host"], ["--rounds"]):
        if args[0] == "--sdk-host":
            sdk_host, args = True, args[1:]
            continue
        graphics, rounds = (args[1], rounds) if args[0] == "--graphics" else (graphics, int(args[1]))
        args = args[2:]
    sizes = [int(a) for a in args] or [10, 30, 60]
    if not os.path.exists(os.path.join(PEER, "plugins", "terraform-provider-libvirt")):
        print("bench/peer.py: build the peer first: bash bench/peer-build.sh", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="virtfleet-b5-", dir=os.path.join(lab.ROOT, ".state"))
    print(f"B5: guests graphics {graphics}; virtfleet on the official toolchain, provider host: "
          f"{'the SDK' if sdk_host else 'the project override'}, "
          f"PULUMI_PARALLEL={os.environ.get('PULUMI_PARALLEL', 'engine default')}; peer -parallelism 10", flush=True)
    held = {}
    for h in HOSTS:  # the base once per host, untimed, for both sides (B1 measures distribution)
        HostProvider().create(host_props(h))
        held[h] = BaseImageProvider().create(image_props(h)).outs
    base = os.path.basename(held[HOSTS[0]]["path"])
    row(["N", "what", "peer (s)", "virtfleet (s)", "virtfleet/peer", "floor (s)", "virtfleet/floor"])
    row(["---"] * 7)
    try:
        for n in sizes:
            peer, stack = Peer(tmp, n, base, graphics), virtfleet_stack(tmp, n, graphics, sdk_host)
            ps, vs = [], []
            for _ in range(rounds):
                ps.append(measure(peer.create, peer.plan, peer.destroy))
                vs.append(measure(stack.up, lambda s=stack: s.preview("--expect-no-changes"), stack.destroy))
            resources = 2 * n + 3 * len(HOSTS)  # virtfleet's: per host a Hypervisor, Host and BaseImage, per
            # guest a Volume and a Guest
            floor = floor_stack_of(tmp, resources, up=False, provider_host=not sdk_host)
            fs = [measure(floor.up, lambda f=floor: f.preview("--expect-no-changes"), floor.destroy)]
            for i, what in enumerate(("create", "no-op preview/plan", "destroy")):
                p = statistics.median(r[i] for r in ps)
                v = statistics.median(r[i] for r in vs)
                f = fs[0][i]
                row([str(n), what, f"{p:.1f}", f"{v:.1f}", f"{v / p:.2f}x", f"{f:.1f} ({resources} res.)",
                     f"{v / f:.2f}x"])
    finally:
        for outs in held.values():
            BaseImageProvider().delete("base", outs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
