"""B1-B3: image distribution to 3 lab hosts, virtfleet (`pulumi up`) vs the article's way, side by side.

B1  first distribution of a 1 GiB image (sparse ~40 % data, and dense) to 3 hosts:
    virtfleet = `pulumi up` of a new stack with one guest per host (connect, hash, parallel sparse
    upload hashed by the host as it arrives, publish, overlay disk, guest defined) vs the article = scp the image to
    each host in turn, then a full `qemu-img convert` per guest.  Both end with every guest's disk ready
    and no guest booted (the article's way boots none); starting the 3 guests is then timed on its own
    row.  Wall time ratio and bytes on the wire per host, counted on the lab's links (tx bytes of each
    host's veth in the root namespace).
B2  `pulumi up` again with the image unchanged: image bytes sent (and all bytes on the links).
B3  the image rebuilt with ~2 % of its clusters changed, plus one new guest per host: bytes sent per
    host vs the image size; the new guests' disks are backed by the new base, the old guests' by the old.

usage: bench/distribution.py [--size-mib 1024] [--kinds sparse,dense] [--repeat 3]
       (needs the lab up with 3 hosts: scripts/setup.sh 3).  B1 runs --repeat rounds of the three ways,
       alternating, because the article's way (3 GiB written through the page cache to the disk) varies
       by 2x from run to run on these machines; each round's ratio is printed, and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from providers.trace import trace  # noqa: E402
from tests import lab  # noqa: E402
from tests.e2e.fleet import config, guest  # noqa: E402
from tests.pulumi_cli import Stack  # noqa: E402

HOSTS = ("h1", "h2", "h3")
CEILING_MIB_S = 500  # LAB.md: the transfer ceiling of these machines is about 450-550 MiB/s


def link_tx() -> dict[str, int]:
    out = {}
    for h in HOSTS:
        with open(f"/sys/class/net/vfh{h[1:]}/statistics/tx_bytes") as f:
            out[h] = int(f.read())
    return out


def delta_mib(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {h: (after[h] - before[h]) / 2**20 for h in HOSTS}


def make_image(path: str, size: int, data_fraction: float) -> int:
    """A raw image with random 1 MiB chunks (2 of every 5 for 40 %), the rest holes.  Returns data bytes."""
    written = 0
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(size >> 20):
            if data_fraction >= 1 or i % 5 < round(data_fraction * 5):
                f.seek(i << 20)
                f.write(os.urandom(1 << 20))
                written += 1 << 20
    return written


def article(image: str, tag: str) -> tuple[float, dict[str, float]]:
    """scp to each host in turn, then a full qemu-img convert per guest (one guest per host)."""
    info = lab.info()
    before, t0 = link_tx(), time.monotonic()
    for h in HOSTS:
        addr = info["hosts"][h]["address"]
        lab.in_host(h, "mkdir", "-p", "/var/lib/virtfleet/article")
        subprocess.run(["scp", "-q", "-o", f"UserKnownHostsFile={info['knownHosts']}", "-o", "BatchMode=yes",
                        "-i", info["sshKeyFile"], image, f"root@{addr}:/var/lib/virtfleet/article/{tag}.img"],
                       check=True)
        subprocess.run(["ssh", "-o", f"UserKnownHostsFile={info['knownHosts']}", "-o", "BatchMode=yes",
                        "-i", info["sshKeyFile"], f"root@{addr}", "qemu-img", "convert", "-O", "qcow2",
                        f"/var/lib/virtfleet/article/{tag}.img", f"/var/lib/virtfleet/article/{tag}-guest.qcow2"],
                       check=True)
    wall = time.monotonic() - t0
    wire = delta_mib(before, link_tx())
    for h in HOSTS:
        lab.in_host(h, "rm", "-rf", "/var/lib/virtfleet/article", check=False)
    return wall, wire


def floor(image: str, tag: str) -> float:
    """The issue's floor: connections already open, then per host in parallel a bare sparse virStream
    upload into a new volume plus one overlay on it.  No hashing, no verification, no Pulumi."""
    from providers import xmlgen
    from providers.remote import session, storage, transfer
    from providers.spec import Connection
    from tests.lab import connection_props

    conns = {h: Connection.from_props(connection_props(h)) for h in HOSTS}
    pools = {h: storage.pool(c, "guests") for h, c in conns.items()}  # connected, not timed
    size = os.path.getsize(image)

    def one(h: str) -> None:
        vol = storage.create(pools[h], xmlgen.volume(f"{tag}-floor.raw", size, "raw"))
        transfer.upload(session.virt(conns[h]), vol, image)
        storage.create(pools[h], xmlgen.volume(f"{tag}-floor-ov.qcow2", 1 << 30, "qcow2", vol.path(), "raw"))

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(one, HOSTS))
    wall = time.monotonic() - t0
    for h in HOSTS:
        for v in (f"{tag}-floor-ov.qcow2", f"{tag}-floor.raw"):
            storage.delete(pools[h], v)
    return wall


def b1_config(image: str, guests_per_host: dict[str, list[str]], running: bool) -> dict:
    cfg = config({h: {g: guest(g, running=running) for g in gs} for h, gs in guests_per_host.items()})
    cfg["images"]["payload"]["path"] = image
    return cfg


def row(label: str, value: str) -> None:
    print(f"| {label:<62} | {value:<44} |", flush=True)


def _runs(values: list[float], unit: str = "s") -> str:
    """'4.1 / 3.9 / 4.0 s, median 4.0 s' (one value: just it)."""
    if len(values) == 1:
        return f"{values[0]:6.1f} {unit}"
    return f"{' / '.join(f'{v:.1f}' for v in values)} {unit}, median {statistics.median(values):.1f} {unit}"


def _clean(stack: Stack) -> None:
    stack.destroy()
    for h in HOSTS:
        for v in lab.volumes(h):
            if v.startswith(("b1", "b3")) or v.startswith("vfbase-") and v.endswith(".raw"):
                lab.virsh(h, "vol-delete", "--pool", "guests", v, check=False)


def _b1_once(kind: str, image: str, tmp: str, rep: int) -> tuple[float, float, float, float, float, Stack, dict]:
    """One side-by-side round: the article's way, the floor, virtfleet (a new stack and new hosts' bases).
    Returns (article s, article MiB/host, floor s, virtfleet s, virtfleet MiB/host, stack, guests)."""
    lab.quiesce()  # before each timed phase: earlier writes on disk, no SSH master open
    a_wall, a_wire = article(image, kind)
    lab.quiesce()
    f_wall = floor(image, f"b1{kind[0]}{os.getpid()}r{rep}")
    lab.quiesce()
    tag = f"{kind}{os.getpid()}r{rep}"
    guests = {h: [f"b1{kind[0]}{os.getpid()}r{rep}-{h}"] for h in HOSTS}
    stack = Stack(f"{tmp}/{tag}", f"bench{tag}", b1_config(image, guests, running=False))
    before, t0 = link_tx(), time.monotonic()
    trace(f"B1 {kind} up begin")
    stack.up()
    trace(f"B1 {kind} up end")
    v_wall = time.monotonic() - t0
    v_wire = delta_mib(before, link_tx())
    return a_wall, max(a_wire.values()), f_wall, v_wall, max(v_wire.values()), stack, guests


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--kinds", default="sparse,dense", help="which B1 images: sparse,dense")
    ap.add_argument("--repeat", type=int, default=3, help="B1 rounds per image (article, floor, virtfleet "
                    "alternate; the ratios are per round and their median)")
    args = ap.parse_args()
    size = args.size_mib << 20
    tmp = tempfile.mkdtemp(prefix="virtfleet-bench-", dir=os.path.join(lab.ROOT, ".state"))
    env_cache = {"VIRTFLEET_DIGEST_CACHE": f"{tmp}/digests.json", "VIRTFLEET_CLUSTER_CACHE": f"{tmp}/clusters"}
    os.environ.update(env_cache)
    print(f"| {'measure (3 lab hosts, one run)':<62} | {'result':<44} |\n|{'-' * 64}|{'-' * 46}|")
    for kind, fraction in (("sparse", 0.4), ("dense", 1.0)):
        if kind not in args.kinds.split(","):
            continue
        image = f"{tmp}/{kind}.raw"
        data = make_image(image, size, fraction)
        rounds = []
        for rep in range(args.repeat):
            if rounds:
                _clean(rounds[-1][5])
            rounds.append(_b1_once(kind, image, tmp, rep))
        a_walls, a_wires, f_walls, v_walls, v_wires = ([r[i] for r in rounds] for i in range(5))
        stack, guests = rounds[-1][5], rounds[-1][6]
        ratios = [v / a for v, a in zip(v_walls, a_walls, strict=True)]
        stack.write_config(b1_config(image, guests, running=True))
        t0 = time.monotonic()
        stack.up()
        start_wall = time.monotonic() - t0
        n = f"{len(rounds)} rounds" if len(rounds) > 1 else "1 round"
        row(f"B1 {kind} {size >> 20} MiB ({data >> 20} MiB data), {n}: article's way",
            f"{_runs(a_walls)}; {max(a_wires):.0f} MiB/host on the wire")
        row(f"B1 {kind}: virtfleet `pulumi up` (upload, verify, 3 disks + guests)",
            f"{_runs(v_walls)}; {max(v_wires):.0f} MiB/host on the wire")
        row(f"B1 {kind}: time ratio virtfleet/article, per round",
            f"{' / '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}x")
        row(f"B1 {kind}: floor: bare parallel sparse upload + overlay, open connections",
            f"{_runs(f_walls)} = {statistics.median(f / a for f, a in zip(f_walls, a_walls, strict=True)):.2f}x "
            "of the article")
        row(f"B1 {kind}: bytes/host vs image data", f"{max(v_wires) / (data / 2**20):.2f}x of the data")
        best = min(v_walls)
        row(f"B1 {kind}: throughput (data x 3 hosts / wall) vs ~{CEILING_MIB_S} MiB/s ceiling",
            f"{3 * data / 2**20 / statistics.median(v_walls):6.0f} MiB/s = "
            f"{3 * data / 2**20 / statistics.median(v_walls) / CEILING_MIB_S:.2f} of it (best round "
            f"{3 * data / 2**20 / best / CEILING_MIB_S:.2f})")
        row(f"B1 {kind}: then `pulumi up` starting the 3 guests (running: true)", f"{start_wall:6.1f} s")
        if kind == "sparse":
            lab.quiesce()
            before = link_tx()
            t0 = time.monotonic()
            out = stack.up().stdout
            b2 = delta_mib(before, link_tx())
            acted = [ln for ln in out.splitlines() if "BaseImage" in ln and ("created" in ln or "replaced" in ln)]
            row("B2 `pulumi up`, image unchanged: BaseImage operations run", f"{len(acted)} (0 image bytes sent)")
            row("B2 all bytes on the links per host (SSH + libvirt RPC)",
                f"{max(b2.values()) * 1024:.0f} KiB, {time.monotonic() - t0:.1f} s")
            _b3(stack, image, size, tmp, guests)
        _clean(stack)
        os.remove(image)
    return 0


def _base_outputs(stack: Stack) -> list[dict]:
    state = stack.export()
    return [r["outputs"] for r in state["deployment"]["resources"] if r["type"].endswith("virtfleet:BaseImage")]


def _b3(stack: Stack, image: str, size: int, tmp: str, guests: dict[str, list[str]]) -> None:
    old_digests = {o["digest"] for o in _base_outputs(stack)}
    rebuilt = f"{tmp}/rebuilt.raw"
    subprocess.run(["cp", "--sparse=always", image, rebuilt], check=True)
    clusters = size // (64 << 10)
    with open(rebuilt, "r+b") as f:
        for i in range(0, clusters, 50):  # 2 % of the clusters, scattered
            f.seek(i * (64 << 10) + 4096)
            f.write(os.urandom(4096))
    more = {h: gs + [f"b3{os.getpid()}-{h}"] for h, gs in guests.items()}
    cfg = config({h: {g: guest(g) for g in gs} for h, gs in more.items()})
    cfg["images"]["payload"]["path"] = rebuilt
    stack.write_config(cfg)
    lab.quiesce()
    before, t0 = link_tx(), time.monotonic()
    stack.up()
    wall = time.monotonic() - t0
    wire = delta_mib(before, link_tx())
    sent = [o["bytesSent"] for o in _base_outputs(stack)]
    row("B3 rebuilt image (2 % clusters changed) + 1 new guest/host", f"{wall:6.1f} s")
    row("B3 image bytes sent per host vs image size", f"{max(sent) / 2**20:.1f} MiB = {max(sent) / size:.1%}")
    row("B3 all bytes on the links per host", f"{max(wire.values()):.1f} MiB = {max(wire.values()) * 2**20 / size:.1%}")
    new_digest = _base_outputs(stack)[0]["digest"]
    ok_new = all(new_digest in lab.virsh(h, "vol-dumpxml", "--pool", "guests", f"b3{os.getpid()}-{h}.qcow2")
                 for h in HOSTS)
    ok_old = all(any(d in lab.virsh(h, "vol-dumpxml", "--pool", "guests", f"{gs[0]}.qcow2") for d in old_digests)
                 for h, gs in guests.items())
    running = all(lab.domain_state(h, f"b3{os.getpid()}-{h}") == "running" for h in HOSTS)
    row("B3 new guests on the new base / old guests keep the old base", f"{ok_new} / {ok_old} (running: {running})")
    os.remove(rebuilt)


if __name__ == "__main__":
    sys.exit(main())
