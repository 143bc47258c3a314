"""B1-B3: an article-style image deployed to 3 lab hosts and rebuilt, virtfleet (`pulumi up`) vs the
article's way (scp of the file to each host, in parallel, + `qemu-img convert` there), side by side.

The image is made as the NixOS article makes it (`bench/images.py`): ext4 from a file tree
(`mkfs.ext4 -d`, 1 GiB disk, 241 MiB in 340 files), `qemu-img convert -c -O qcow2` (and without -c),
then rebuilt from a changed tree (6 files rewritten, 2 removed, 1 MiB added) into the same path.  Each
link is shaped with `tc tbf` on the root side of each host's veth (100 Mbit/s, 1 Gbit/s) or left as is.
Bytes into each host are the link's counters (everything: SSH, libvirt calls, the guest's create).
The floor of a rebuild is the new disk's 4 KiB blocks found nowhere in the old one, zlib-compressed;
Pulumi's floor is a `pulumi up` of the same stack that changes nothing.

usage: bench/rebuild.py [--links 100mbit,1gbit,none] [--total-mib 241]   (the lab up with 3 hosts)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import images  # noqa: E402
from providers.hostside import clustermap
from providers.local import delta
from tests import lab  # noqa: E402
from tests.e2e.fleet import config, guest, mac_for  # noqa: E402
from tests.pulumi_cli import Stack  # noqa: E402

HOSTS = ("h1", "h2", "h3")
MIB = 1 << 20


def into() -> dict[str, int]:
    out = {}
    for h in HOSTS:
        with open(f"/sys/class/net/vf{h}/statistics/tx_bytes") as f:
            out[h] = int(f.read())
    return out


def most(before: dict[str, int]) -> int:
    now = into()
    return max(now[h] - before[h] for h in HOSTS)


def shape(rate: str) -> None:
    for h in HOSTS:
        subprocess.run(["tc", "qdisc", "del", "dev", f"vf{h}", "root"], capture_output=True)
        if rate != "none":
            burst = "1mb" if rate.endswith("gbit") else "64kb"
            subprocess.run(["tc", "qdisc", "add", "dev", f"vf{h}", "root", "tbf", "rate", rate, "burst", burst,
                            "latency", "100ms"], check=True)


def article(image: str) -> tuple[float, int]:
    """scp to the 3 hosts in parallel, then `qemu-img convert` of it into a guest disk on each."""
    info = lab.info()
    ssh = ["-o", f"UserKnownHostsFile={info['knownHosts']}", "-o", "BatchMode=yes", "-i", info["sshKeyFile"]]
    for h in HOSTS:
        lab.in_host(h, "mkdir", "-p", "/var/lib/virtfleet/article")

    def one(h: str) -> None:
        addr = info["hosts"][h]["address"]
        subprocess.run(["scp", "-q", *ssh, image, f"root@{addr}:/var/lib/virtfleet/article/baseline.qcow2"], check=True)
        subprocess.run(["ssh", *ssh, f"root@{addr}", "qemu-img", "convert", "-O", "qcow2",
                        "/var/lib/virtfleet/article/baseline.qcow2", "/var/lib/virtfleet/article/guest.qcow2"],
                       check=True)

    before, t0 = into(), time.monotonic()
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        list(pool.map(one, HOSTS))
    wall, wire = time.monotonic() - t0, most(before)
    for h in HOSTS:
        lab.in_host(h, "rm", "-rf", "/var/lib/virtfleet/article", check=False)
    return wall, wire


def row(label: str, value: str) -> None:
    print(f"| {label:<58} | {value:<58} |", flush=True)


def stack_for(tmp: str, tag: str, image: str, keys: list[str]) -> tuple[Stack, dict]:
    def cfg(ks: list[str]) -> dict:
        c = config({h: {f"{k}-{h}": guest(f"{k}-{h}", running=False, deleteDiskOnDestroy=True,
                                          mac=mac_for(f"{tag}{k}-{h}")) for k in ks} for h in HOSTS})
        c["images"]["payload"]["path"] = image
        return c
    return Stack(f"{tmp}/{tag}", f"bench{tag}", cfg(keys)), {"cfg": cfg}


def hashing(tmp: str) -> None:
    """The local hashing rate of a new image (digest + block index, both threads) and its peak memory."""
    tree, raw = f"{tmp}/htree", f"{tmp}/h.raw"
    images.tree(tree, seed=11, files=200, total=1024 * MIB)
    images.ext4(tree, raw, "4G")
    t0 = time.monotonic()
    cmap = delta.compute(raw)
    clustermap.digest(cmap)
    idx = delta.block_index(raw)
    wall = time.monotonic() - t0
    data = len(idx) // delta.ENTRY.size * delta.BLOCK
    row("local hashing of a new image (4 GiB disk, 1 GiB of data)",
        f"{wall:.2f} s: {data / MIB / wall:.0f} MiB/s of data, {4096 / wall:.0f} MiB/s of disk")
    row("  peak memory of this process (bench, hashing included)",
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    os.remove(raw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="100mbit,1gbit,none")
    ap.add_argument("--total-mib", type=int, default=241)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="virtfleet-bench-", dir=os.path.join(lab.ROOT, ".state"))
    os.environ.update({"VIRTFLEET_DIGEST_CACHE": f"{tmp}/cache/digests.json",
                       "VIRTFLEET_CLUSTER_CACHE": f"{tmp}/cache/clusters"})
    print(f"| {'measure (3 lab hosts at once, one run)':<58} | {'result':<58} |\n|{'-' * 60}|{'-' * 60}|")
    hashing(tmp)
    for link in args.links.split(","):
        shape(link)
        try:
            for compressed in (True, False):
                one_round(tmp, link, compressed, args.total_mib)
        finally:
            shape("none")
    return 0


def one_round(tmp: str, link: str, compressed: bool, total_mib: int) -> None:
    kind = "qcow2 -c" if compressed else "qcow2"
    tag = f"{link[:4]}{'c' if compressed else 'u'}{os.getpid()}"
    tree, raw, image = f"{tmp}/tree-{tag}", f"{tmp}/disk-{tag}.raw", f"{tmp}/baseline-{tag}.qcow2"
    images.tree(tree, seed=1, total=total_mib * MIB)
    images.ext4(tree, raw, "1G", uuid="0b7c5a29-58a4-4f4a-9a4e-3f1c0f1e0001")
    images.qcow2(raw, image, compressed)
    size = os.path.getsize(image)
    at = f"[{link}, {kind} {size / MIB:.0f} MiB]"
    a_wall, a_wire = article(image)
    stack, s = stack_for(tmp, tag, image, ["a"])
    before, t0 = into(), time.monotonic()
    stack.up()
    v_wall, v_wire = time.monotonic() - t0, most(before)
    row(f"B1 first deployment {at}", f"article {a_wall:.1f} s, virtfleet {v_wall:.1f} s = {v_wall / a_wall:.2f}x")
    row("  bytes into each host (most of the 3)",
        f"article {a_wire / MIB:.1f} MiB, virtfleet {v_wire / MIB:.1f} MiB = {v_wire / size:.2f}x of the file")
    old_view = images.view(image, f"{tmp}/old-{tag}.view")

    # B2: unchanged content in a new file: the same disk converted again (the other encoding), and as raw
    images.qcow2(raw, image, not compressed)
    before, t0 = into(), time.monotonic()
    stack.up()
    row(f"B2 same disk re-encoded into the same path {at}",
        f"{most(before) / 1024:.0f} KiB into each host, {time.monotonic() - t0:.1f} s (no image bytes)")
    before, t0 = into(), time.monotonic()
    stack.up()
    pulumi_floor = time.monotonic() - t0
    row("  Pulumi's floor: the same `pulumi up` with nothing to do", f"{pulumi_floor:.1f} s, "
        f"{most(before) / 1024:.0f} KiB into each host")
    images.qcow2(raw, image, compressed)

    # B3: rebuilt from a changed tree into the same path, one more guest per host on it
    images.change(tree, seed=2)
    images.ext4(tree, raw, "1G", uuid="0b7c5a29-58a4-4f4a-9a4e-3f1c0f1e0001")
    images.qcow2(raw, image, compressed)
    new_view = images.view(image, f"{tmp}/new-{tag}.view")
    want = images.floor(new_view, old_view)
    a_wall, a_wire = article(image)
    stack.write_config(s["cfg"](["a", "b"]))
    before, t0 = into(), time.monotonic()
    stack.up()
    v_wall, v_wire = time.monotonic() - t0, most(before)
    row(f"B3 rebuild + 1 new guest per host {at}",
        f"article {a_wall:.1f} s, virtfleet {v_wall:.1f} s = {v_wall / a_wall:.2f}x "
        f"(Pulumi's floor alone {pulumi_floor / a_wall:.2f}x)")
    row("  bytes into each host vs the floor (4 KiB blocks not there, zlib)",
        f"virtfleet {v_wire / MIB:.2f} MiB, floor {want / MIB:.2f} MiB = {v_wire / want:.2f}x; "
        f"article {a_wire / MIB:.0f} MiB")

    # B3b: the same tree made again by mkfs with a new file-system UUID: only the blocks that changed
    images.ext4(tree, raw, "1G")
    images.qcow2(raw, image, compressed)
    uuid_floor = images.floor(images.view(image, f"{tmp}/uuid-{tag}.view"), new_view)
    before, t0 = into(), time.monotonic()
    stack.up()
    row(f"B3 same tree, new file-system UUID {at}",
        f"{most(before) / MIB:.2f} MiB into each host, floor {uuid_floor / MIB:.2f} MiB, "
        f"{time.monotonic() - t0:.1f} s")
    stack.destroy()
    for f in (raw, image, old_view, new_view, f"{tmp}/uuid-{tag}.view"):
        os.remove(f)


if __name__ == "__main__":
    sys.exit(main())
