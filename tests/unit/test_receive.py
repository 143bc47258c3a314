"""The host's end of a full upload (`clustermap.receive`), run as a host runs it: the bare source under
an isolated interpreter, fed by the sender's own operations (`transfer._send_plan`)."""

from __future__ import annotations

import fcntl
import itertools
import mmap
import os
import stat
import subprocess
import sys
import threading
import zlib

import pytest

from providers.hostside import clustermap
from providers.hostside.clustermap import CLUSTER, COPY, DATA, END, OP, STORED, StreamMap
from providers.local import delta
from providers.remote import transfer
from tests.unit.files import write_sparse

pytestmark = pytest.mark.unit


def _odd_image(path) -> int:
    """Data starting and ending inside clusters, a run across a cluster edge, a short last cluster."""
    size = (5 << 20) + 4097
    write_sparse(path, size, {5: os.urandom(70000), (2 << 20) - 3: b"\1" * 9, (3 << 20) + 4096: os.urandom(CLUSTER * 3),
                        size - 10: b"end of it!"})
    return size


@pytest.mark.parametrize("pieces", [[4096], [5000], [CLUSTER], [3 * CLUSTER + 17], [1 << 30],
                                    [1, 4095, 70001, 17, 2 * CLUSTER]])
def test_streamed_map_is_the_files_map_however_the_runs_are_cut(tmp_path, pieces: list[int]) -> None:
    img = tmp_path / "img"
    size = _odd_image(img)
    smap = StreamMap(size)
    cut = itertools.cycle(pieces)
    with open(img, "rb") as f:
        fd = f.fileno()
        for is_data, offset, length in clustermap.extents(fd, size):
            while is_data and length:
                n = min(next(cut), length)
                smap.add(offset, os.pread(fd, n, offset))
                offset, length = offset + n, length - n
    assert smap.finish() == clustermap.compute(str(img))


def test_streamed_map_refuses_runs_that_go_back_or_past_the_end() -> None:
    smap = StreamMap(1 << 20)
    smap.add(4096, b"x" * 100)
    with pytest.raises(ValueError, match="overlaps"):
        smap.add(4100, b"y")
    with pytest.raises(ValueError, match="past the image"):
        smap.add((1 << 20) - 1, b"zz")


def _host(args: list[str], feed) -> tuple[subprocess.CompletedProcess[bytes], int | None]:
    """Run the host side; `feed(pipe_fd)` writes its stdin after "ready".  Returns (process, fed result)."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", transfer.CLUSTERMAP_SOURCE, "receive", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    fed = None
    first = proc.stdout.readline()
    if first == b"ready\n":
        try:
            fed = feed(proc.stdin.fileno())
        except BrokenPipeError:
            pass
    proc.stdin.close()
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err), fed


def test_received_image_is_published_read_only_with_its_exact_bytes(tmp_path) -> None:
    img, tmp, final = tmp_path / "img", tmp_path / "vfupload-x", tmp_path / "vfbase-x.raw"
    size = _odd_image(img)
    tmp.write_bytes(b"")  # libvirt creates the volume's file; the host side only fills it
    want, plan = clustermap.digest(clustermap.compute(str(img))), transfer.full_plan(str(img), size)
    ran, sent = _host([str(tmp), str(final), str(size), want], lambda fd: transfer._send_plan(fd, str(img), plan, None))
    assert ran.returncode == 0, ran.stderr
    assert not tmp.exists() and final.read_bytes() == img.read_bytes()
    assert stat.S_IMODE(final.stat().st_mode) == 0o444
    data = sum(n for is_data, _, n in clustermap.extents(os.open(img, os.O_RDONLY), size) if is_data)
    assert plan.literal == data < size and sent < data, "only the data runs cross, compressed, never the holes"
    assert final.stat().st_blocks * 512 < size, "the holes stay holes on the host"


def test_data_zlib_cannot_shrink_travels_as_it_is(tmp_path) -> None:
    img, tmp, final = tmp_path / "img", tmp_path / "vfupload-x", tmp_path / "vfbase-x.raw"
    size = 3 << 20
    write_sparse(img, size, {0: os.urandom(size)})  # (an encrypted or already compressed disk)
    tmp.write_bytes(b"")
    want, plan = clustermap.digest(clustermap.compute(str(img))), transfer.full_plan(str(img), size)
    ran, sent = _host([str(tmp), str(final), str(size), want], lambda fd: transfer._send_plan(fd, str(img), plan, None))
    assert ran.returncode == 0, ran.stderr
    assert final.read_bytes() == img.read_bytes()
    assert sent == size + (len(plan.ops) + 1) * OP.size, "no zlib growth: only the operations' heads on top"


def test_a_wrong_digest_is_refused_and_nothing_stays(tmp_path) -> None:
    img, tmp, final = tmp_path / "img", tmp_path / "vfupload-x", tmp_path / "vfbase-x.raw"
    size = _odd_image(img)
    tmp.write_bytes(b"")
    real = clustermap.digest(clustermap.compute(str(img)))
    ran, _ = _host([str(tmp), str(final), str(size), "f" * 64],
                   lambda fd: transfer._send_plan(fd, str(img), transfer.full_plan(str(img), size), None))
    assert (ran.returncode, ran.stdout.decode().split()) == (3, ["ready", "digest", real])
    assert not tmp.exists() and not final.exists()


def test_a_stream_cut_short_or_out_of_order_is_refused_and_nothing_stays(tmp_path) -> None:
    tmp, final = tmp_path / "vfupload-x", tmp_path / "vfbase-x.raw"
    def data(offset: int, raw: bytes) -> bytes:
        packed = zlib.compress(raw)
        return OP.pack(DATA, offset, len(raw), 0, 0, len(packed)) + packed

    end = OP.pack(END, 0, 0, 0, 0, 0)
    for frames in (OP.pack(DATA, 0, 1 << 20, 0, 0, 5000) + b"x" * 1000,  # the sender died in a run
                   data(CLUSTER, b"a" * 10) + data(0, b"b" * 10) + end,  # out of order
                   data(2 << 20, b"c" * 10) + end,  # past the end
                   OP.pack(DATA, 0, 10, 0, 0, 3) + b"abc" + end,  # not zlib
                   data(0, b"d" * 10)[:OP.size - 4] + (5).to_bytes(4, "big") + zlib.compress(b"d" * 10) + end,
                   OP.pack(DATA, 0, 8 << 20, 0, 0, 10) + b"e" * 10 + end,  # more than one operation holds
                   OP.pack(STORED, 0, 8 << 20, 0, 0, 8 << 20) + b"f" * 10 + end,  # more than one operation holds
                   OP.pack(STORED, 0, 100, 0, 0, 100) + b"g" * 10,  # the sender died in a stored run
                   OP.pack(COPY, 0, 4096, 0, 0, 0) + end):  # a copy from a base it was not given
        tmp.write_bytes(b"")
        ran, _ = _host([str(tmp), str(final), str(1 << 20), "0" * 64], lambda fd, data=frames: os.write(fd, data))
        assert ran.returncode == 4 and b"receive:" in ran.stderr, ran
        assert not tmp.exists() and not final.exists()


def test_only_an_existing_regular_file_is_filled(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opener = threading.Thread(target=lambda: open(fifo, "rb").close(), daemon=True)  # so the open returns
    opener.start()
    ran, _ = _host([str(fifo), str(tmp_path / "out"), "4096", "0" * 64], lambda fd: None)
    assert ran.returncode == 4 and b"not a regular file" in ran.stderr
    ran, _ = _host([str(tmp_path / "missing"), str(tmp_path / "out"), "4096", "0" * 64], lambda fd: None)
    assert ran.returncode == 4 and not (tmp_path / "out").exists()


def _rebuilt(tmp_path) -> tuple[str, str, int, delta.Plan]:
    """An image and its rebuild: one run changed, data turned to zeros, data added in a hole, and data
    moved to another offset (as a file system moves a file); the plan that makes it from the old one."""
    old, new = tmp_path / "old", tmp_path / "new"
    size = _odd_image(old)
    subprocess.run(["cp", "--sparse=always", str(old), str(new)], check=True)
    moved = open(old, "rb").read()[(3 << 20) + 4096:(3 << 20) + 4096 + CLUSTER * 3]
    with open(new, "r+b") as f:
        for offset, data in ((5 + 100, b"changed"), ((2 << 20) - 3, bytes(9)), (4 << 20, b"new data"),
                             ((1 << 20) + 8192, moved)):
            f.seek(offset)
            f.write(data)
    plan = delta.plan(delta.block_index(str(new)), [delta.block_index(str(old))])
    assert plan.literal <= 4 * 4096 and plan.copied >= len(moved), plan  # the moved data is found, not sent
    return str(old), str(new), size, plan


def test_a_rebuild_sends_only_blocks_no_base_has_and_copies_the_rest_from_the_base(tmp_path) -> None:
    old, new, size, plan = _rebuilt(tmp_path)
    tmp, final = tmp_path / "vfupload-x", tmp_path / "vfbase-new.raw"
    tmp.write_bytes(b"")
    want = clustermap.digest(clustermap.compute(new))
    ran, sent = _host([str(tmp), str(final), str(size), want, old],
                      lambda fd: transfer._send_plan(fd, new, plan, None))
    assert ran.returncode == 0, ran.stderr
    assert final.read_bytes() == open(new, "rb").read() and sent < plan.literal + 4096
    assert final.stat().st_blocks * 512 < size, "the base's holes stay holes"


def test_a_copy_from_a_damaged_base_is_refused(tmp_path) -> None:
    """The base's bytes are part of what the host hashes: a base that changed on the host is caught."""
    old, new, size, plan = _rebuilt(tmp_path)
    with open(old, "r+b") as f:  # inside the moved data, which is copied from there
        f.seek((3 << 20) + 4096 + 10)
        f.write(b"E")
    tmp, final = tmp_path / "vfupload-x", tmp_path / "vfbase-new.raw"
    tmp.write_bytes(b"")
    want = clustermap.digest(clustermap.compute(new))
    ran, _ = _host([str(tmp), str(final), str(size), want, old],
                   lambda fd: transfer._send_plan(fd, new, plan, None))
    assert ran.returncode == 3 and not tmp.exists() and not final.exists()


def _pieces(size: int) -> list[tuple[int, bytes]]:
    """Aligned and unaligned pieces, as the receiver gets them: an unaligned run's head up to the next
    4 KiB edge, then aligned pieces, the last one short."""
    out = []
    for offset, length in ((3, 5000), (3 << 20, (1 << 20) + 100), (size - 4096, 4096)):
        pos = offset
        while length:
            n = clustermap._piece(pos, length, 1 << 20)
            out.append((pos, os.urandom(n)))
            pos, length = pos + n, length - n
    return out


def _write_all(path, size: int, pieces: list[tuple[int, bytes]]) -> clustermap._Writer:
    with open(path, "wb") as f:
        f.truncate(size)
    w = clustermap._Writer(str(path))
    buf = memoryview(mmap.mmap(-1, 1 << 20))
    for offset, data in pieces:
        buf[:len(data)] = data
        w.write(offset, buf[:len(data)])
    return w


def _expected(size: int, pieces: list[tuple[int, bytes]]) -> bytes:
    want = bytearray(size)
    for offset, data in pieces:
        want[offset:offset + len(data)] = data
    return bytes(want)


def test_the_writer_puts_aligned_blocks_direct_and_the_edges_through_the_cache(tmp_path) -> None:
    size = 8 << 20
    pieces = _pieces(size)
    assert all(o % 4096 == 0 for o, _ in pieces[1:3]), "after an unaligned head, pieces start on an edge"
    w = _write_all(tmp_path / "f", size, pieces)
    assert w.direct is not None, "this file system takes O_DIRECT: the aligned blocks went that way"
    w.close()
    assert (tmp_path / "f").read_bytes() == _expected(size, pieces)


def test_a_file_system_without_direct_io_gets_everything_through_the_cache(tmp_path, monkeypatch) -> None:
    size, real = 8 << 20, os.pwrite
    refused = []

    def pwrite(fd: int, data, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(22, "Invalid argument")  # EINVAL: what such a file system answers
        return real(fd, data, offset)

    monkeypatch.setattr(clustermap.os, "pwrite", pwrite)
    pieces = _pieces(size)
    w = _write_all(tmp_path / "f", size, pieces)
    assert len(refused) == 1 and w.direct is None, "refused once, then never tried again"
    w.close()
    monkeypatch.setattr(clustermap.os, "pwrite", real)
    assert (tmp_path / "f").read_bytes() == _expected(size, pieces)


def test_compression_gets_faster_while_senders_wait_for_it_and_smaller_when_none_do() -> None:
    packed = transfer._Packed()
    levels = []
    for waited in [True] * 16 + [False] * 8 + [True, False] * 4 + [False] * 8:
        packed.pace(waited)
        levels.append(transfer.LEVELS[packed.step])
    assert levels[7] == 3 and levels[15] == 1, "waiting senders: a faster level every few pieces"
    assert levels[23] == 3 and levels[31] == 3 and levels[39] == 6, "none waiting: back to the smallest output"
    packed.pool.shutdown()
