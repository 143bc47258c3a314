"""An image's life through the real CLI: upload with progress in `pulumi up`'s output, a rebuild that
sends only its changed clusters, and no base left behind once its last holder and disk are gone."""

from __future__ import annotations

import os
import re

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e


def _image(path: str) -> None:
    """128 MiB with 16 MiB of data (1 MiB every 8 MiB)."""
    with open(path, "wb") as f:
        f.truncate(128 << 20)
        for i in range(16):
            f.seek(i << 23)
            f.write(os.urandom(1 << 20))


def _bases(stack: Stack) -> list[str]:
    state = stack.export()["deployment"]["resources"]
    return [r["outputs"]["volumeName"] for r in state if r["type"].endswith("virtfleet:BaseImage")]


def test_upload_progress_rebuild_and_no_orphaned_base(tmp_path, unique) -> None:
    img = str(tmp_path / "img.raw")
    _image(img)
    old, new = f"old-{unique}", f"new-{unique}"

    def cfg(guests: dict) -> dict:
        c = config({"h3": guests})
        c["images"]["payload"]["path"] = img
        return c

    stack = Stack(str(tmp_path / "s"), f"img{unique}",
                  cfg({old: guest(old, running=False, deleteDiskOnDestroy=True)}))
    try:
        out = stack.up().stdout
        assert re.search(r"h3: uploading payload 100% of 16 MiB \(\d+ MiB/s\)", out), out
        (first,) = _bases(stack)
        with open(img, "r+b") as f:  # rebuilt: one of its 16 data MiB changed
            f.seek(1 << 23)
            f.write(os.urandom(1 << 20))
        stack.write_config(cfg({old: guest(old, running=False, deleteDiskOnDestroy=True),
                                new: guest(new, running=False, deleteDiskOnDestroy=True)}))
        out = stack.up().stdout
        assert "delta over" in out, out
        (second,) = _bases(stack)
        assert second != first and {first, second} <= set(lab.volumes("h3")), "the old base backs the old disk"
        stack.write_config(cfg({new: guest(new, running=False, deleteDiskOnDestroy=True)}))
        stack.up()
        assert first not in lab.volumes("h3"), "its last disk went: the old base goes with it"
        assert second in lab.volumes("h3")
        stack.destroy()
        assert second not in lab.volumes("h3"), "destroy leaves no base behind"
    finally:
        stack.destroy(check=False)
        for n in (old, new):
            lab.virsh("h3", "undefine", n, check=False)
            lab.virsh("h3", "vol-delete", "--pool", "guests", f"{n}.qcow2", check=False)
