"""Images made the way the NixOS article makes them: an ext4 file system built from a file tree
(`mkfs.ext4 -d`), converted with `qemu-img convert [-c] -O qcow2`, and rebuilt from a changed tree into
the same path.  Used by the image benchmark and the tests; the trees are deterministic per seed."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import zlib

from providers.local import delta

_WORDS = [f"{w}{n}" for n in range(40) for w in ("config", "lib", "share", "usr", "nix", "store", "service",
                                                  "etc", "python", "systemd", "kernel", "module", "data")]


def _text(rng: random.Random, n: int) -> bytes:
    """Text-like bytes (zlib packs them about 4x), cheap to make in bulk."""
    line = " ".join(rng.choices(_WORDS, k=4096)).encode()
    out = bytearray()
    while len(out) < n:
        start = rng.randrange(len(line) - 4096)
        out += line[start:start + rng.randrange(512, 4096)] + b"\n"
    return bytes(out[:n])


def _content(rng: random.Random, n: int) -> bytes:
    """Half machine code-like (random), half text, as an OS tree is about: compresses about 1.7x."""
    return rng.randbytes(n // 2) + _text(rng, n - n // 2)


def tree(root: str, seed: int = 1, files: int = 340, total: int = 241 << 20) -> None:
    """A file tree of `files` files, `total` bytes together, in a few directories."""
    rng = random.Random(seed)  # noqa: S311 - test content, reproducible per seed
    shutil.rmtree(root, ignore_errors=True)
    sizes = [rng.randrange(1, 100) for _ in range(files)]
    scale = total / sum(sizes)
    for i, s in enumerate(sizes):
        d = os.path.join(root, f"d{i % 17}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(_content(rng, max(1, int(s * scale))))


def change(root: str, seed: int = 2, rewrite: int = 6, add: int = 1 << 20, delete: int = 2) -> None:
    """A rebuild's new tree: `rewrite` files given new content of their size, one file of `add` bytes
    added, `delete` files removed."""
    rng = random.Random(seed)  # noqa: S311 - test content, reproducible per seed
    names = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    picked = rng.sample(names, rewrite + delete)
    for name in picked[:rewrite]:
        size = os.path.getsize(name)
        with open(name, "wb") as f:
            f.write(_content(rng, size))
    for name in picked[rewrite:]:
        os.remove(name)
    with open(os.path.join(root, "d0", f"added-{seed}"), "wb") as f:
        f.write(_content(rng, add))


def ext4(root: str, out: str, size: str = "1G", uuid: str = "") -> None:
    """`mkfs.ext4 -d ROOT` into a new raw image of `size` (a fixed file-system UUID when given)."""
    if os.path.exists(out):
        os.remove(out)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", root, *(["-U", uuid] if uuid else []), out, size], check=True,
                   capture_output=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})


def qcow2(raw: str, out: str, compressed: bool = True) -> None:
    """The article's last step: `qemu-img convert -c $diskImage -O qcow2 $out/baseline.qcow2` (written anew)."""
    tmp = f"{out}.new"
    subprocess.run(["qemu-img", "convert", *(["-c"] if compressed else []), "-O", "qcow2", raw, tmp], check=True)
    os.replace(tmp, out)


def view(path: str, out: str) -> str:
    """The raw view of an image (what the guest sees), sparse."""
    subprocess.run(["qemu-img", "convert", "-O", "raw", "-S", "4k", path, out], check=True)
    return out


def floor(new_view: str, old_view: str) -> int:
    """The new disk's 4 KiB blocks found nowhere in the old one, compressed: what a rebuild must send."""
    plan = delta.plan(delta.block_index(new_view), [delta.block_index(old_view)])
    with open(new_view, "rb") as f:
        return sum(len(zlib.compress(os.pread(f.fileno(), op.length, op.offset), 6)) for op in plan.ops
                   if op.source < 0)
