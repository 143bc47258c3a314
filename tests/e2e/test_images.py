"""An image's life through the real CLI, made as the NixOS article makes it: an ext4 file system from a
file tree, `qemu-img convert -c -O qcow2`, rebuilt from a changed tree into the same path.  The bytes
into each host are read from the lab's link counters; new guests get the new base, old ones keep theirs,
and no base is left once its last holder and disk are gone."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from bench import images
from tests import lab
from tests.e2e.fleet import config, guest, mac_for
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e
HOSTS = ("h2", "h3")
POOL = "/var/lib/virtfleet/guests"


def _into(host: str) -> int:
    """Bytes the lab's link has carried into `host` so far (the root side of its veth sends them)."""
    with open(f"/sys/class/net/vf{host}/statistics/tx_bytes") as f:
        return int(f.read())


def _backing(host: str, disk: str) -> str:
    return lab.virsh(host, "vol-dumpxml", "--pool", "guests", disk).split("<backingStore>")[1] \
        .split("<path>")[1].split("</path>")[0]


def _sha256(host: str, path: str) -> str:
    return lab.in_host(host, "sha256sum", path).stdout.split()[0]


def test_a_rebuilt_compressed_image_sends_only_what_changed_in_the_disk(tmp_path, unique) -> None:
    tree, raw, img = str(tmp_path / "tree"), str(tmp_path / "disk.raw"), str(tmp_path / "baseline.qcow2")
    images.tree(tree, seed=7, files=120, total=40 << 20)
    images.ext4(tree, raw, "1G")
    images.qcow2(raw, img)
    old, new = f"old-{unique}", f"new-{unique}"

    def cfg(guests: dict) -> dict:
        c = config({h: {f"{k}-{h}": {**g, "mac": mac_for(f"{k}-{h}")} for k, g in guests.items()} for h in HOSTS})
        c["images"]["payload"]["path"] = img
        return c

    both = {old: guest(old, running=False, deleteDiskOnDestroy=True)}
    stack = Stack(str(tmp_path / "s"), f"img{unique}", cfg(both))
    others = {v for h in HOSTS for v in lab.volumes(h)}  # other tests' bases
    try:
        before = {h: _into(h) for h in HOSTS}
        out = stack.up().stdout
        first = {h: _into(h) - before[h] for h in HOSTS}
        assert re.search(r"h2: uploading payload 100% of \d+ MiB", out), out
        size = os.path.getsize(img)
        for h in HOSTS:  # the disk's data, compressed, is no more than the article's compressed file
            assert first[h] <= 1.02 * size + (1 << 20), (h, first[h], size)
        old_view = images.view(img, str(tmp_path / "old.view"))

        images.change(tree, seed=8)  # 6 files rewritten, 2 removed, 1 MiB added; rebuilt into the same path
        images.ext4(tree, raw, "1G")
        images.qcow2(raw, img)
        floor = images.floor(images.view(img, str(tmp_path / "new.view")), old_view)
        stack.write_config(cfg({**both, new: guest(new, running=False, deleteDiskOnDestroy=True)}))
        before = {h: _into(h) for h in HOSTS}
        out = stack.up().stdout
        again = {h: _into(h) - before[h] for h in HOSTS}
        assert re.search(r"h3: payload uploaded in [\d.]+s, [\d.]+ MiB sent for \d+ MiB \(\d+ %\): [\d.]+ MiB of "
                         r"the disk not on the host, compressed; [\d.]+ MiB copied there from 1 base", out), out
        for h in HOSTS:  # all of it: the upload, SSH's framing, libvirt's calls, the new guest's create
            assert again[h] <= 1.2 * floor + (512 << 10), (h, again[h], floor)
            assert again[h] < size / 5, (h, again[h], size)
        print(f"[e2e bytes] first {first}, rebuild {again}, floor {floor}, file {size}")
        old_base, new_base = _backing("h2", f"{old}-h2.qcow2"), _backing("h2", f"{new}-h2.qcow2")
        assert old_base != new_base, "the old guest keeps its base, the new one gets the new base"
        with open(str(tmp_path / "new.view"), "rb") as f:
            assert _sha256("h2", new_base) == hashlib.sha256(f.read()).hexdigest(), "the new base is the new disk"

        # the same disk converted again without -c, into the same path: nothing to send
        images.qcow2(raw, img, compressed=False)
        before = {h: _into(h) for h in HOSTS}
        stack.up()
        assert all(_into(h) - before[h] < (256 << 10) for h in HOSTS), "a re-encoded file sent image bytes"

        stack.write_config(cfg({new: guest(new, running=False, deleteDiskOnDestroy=True)}))
        stack.up()
        assert os.path.basename(old_base) not in lab.volumes("h2"), "its last disk went: the old base goes too"
        stack.destroy()
        assert not [v for h in HOSTS for v in lab.volumes(h) if v.startswith("vfbase-") and v not in others], \
            "destroy leaves no base"
    finally:
        stack.destroy(check=False)
        for h in HOSTS:
            for n in (old, new):
                lab.virsh(h, "undefine", f"{n}-{h}", check=False)
                lab.virsh(h, "vol-delete", "--pool", "guests", f"{n}-{h}.qcow2", check=False)
