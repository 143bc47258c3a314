"""Moving image bytes into volumes on a host, and checking them there before they are published.

`receive`: an upload plan (`delta.plan`: the image's blocks that no base on the host has, compressed,
and where to copy the others from) goes down one SSH session of the host's master to `clustermap`'s own
source under the host's python3, which writes the image into the volume's file and hashes it as it
arrives, then publishes the file only when its digest is the one it is named by: one pass, one
command, no second read of the data.  `upload`: libvirt's sparse stream (for LVs and hosts without
python3), checked afterwards by `uploads.verify_and_publish`; without python3 a rebuild's changed clusters go by
`upload_ranges` into a clone of the previous base, checked afterwards the same way.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import libvirt

from providers.hostside import clustermap
from providers.hostside.clustermap import COPY, DATA, END, OP, STORED, extents, grow_pipe
from providers.local import delta
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
CLUSTERMAP_SOURCE = Path(clustermap.__file__).read_text()
HOST_PYTHON = "python3"  # the host's interpreter for `clustermap` (absent or < 3.7: the fallbacks are used)


class _Meter:
    """Counts the bytes sent and calls progress(done, total) about once a second, and at the end."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress, self.last = total, 0, progress, time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        if self.progress and time.monotonic() - self.last > 1.0:
            self.last = time.monotonic()
            self.progress(self.done, self.total)

    def finish(self) -> int:
        if self.progress:
            self.progress(self.done, self.total)
        return self.done


@contextmanager
def _upload_stream(conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int,
                   flags: int) -> Iterator[libvirt.virStream]:
    """A stream uploading into vol[offset:offset+length]: finished on success, aborted on any error."""
    stream = conn.newStream(0)
    try:
        vol.upload(stream, offset, length, flags)
        yield stream
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise


CHUNK = 256 << 10  # one libvirt stream message (VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX)


def _send(stream: libvirt.virStream, fd: int, offset: int, length: int, done: Callable[[int], None]) -> None:
    os.lseek(fd, offset, os.SEEK_SET)
    remaining = length
    while remaining:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            raise OSError(f"the image ended {remaining} bytes early (changed while uploading?)")
        while chunk:
            n = stream.send(chunk)  # type: ignore[arg-type]
            chunk = chunk[n:]
            remaining -= n
            done(n)


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
           progress: Progress | None = None, sparse: bool = True) -> int:
    """Upload a local file into a volume with libvirt's stream.  Returns the bytes sent.

    sparse=True: holes never cross the wire (the target must read holes as zeros: a file volume).
    sparse=False: every byte is sent, zeros included (block devices such as LVs keep old data).
    progress(bytes sent, bytes to send) is called about once a second.
    """
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = list(extents(fd, size)) if sparse else [(True, 0, size)]
        meter = _Meter(sum(n for is_data, _, n in runs if is_data), progress)
        flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
        with _upload_stream(conn, vol, 0, size, flags) as stream:
            for is_data, offset, length in runs:  # holes as hole messages: never read, never sent
                if is_data:
                    _send(stream, fd, offset, length, meter.add)
                else:
                    stream.sendHole(length, 0)
    finally:
        os.close(fd)
    return meter.finish()


def upload_ranges(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: str,
                  ranges: list[tuple[int, int]]) -> int:
    """Write only the given (offset, length) ranges of a local file into a volume.  Returns bytes sent."""
    meter = _Meter(sum(n for _, n in ranges), None)
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in ranges:
            with _upload_stream(conn, vol, offset, length, 0) as stream:
                _send(stream, fd, offset, length, meter.add)
    finally:
        os.close(fd)
    return meter.finish()


_RECEIVE = r"""
py=$1 src=$2; shift 2
"$py" -S -c 'import sys; sys.exit(sys.version_info < (3, 7))' 2>/dev/null || exit 5
exec "$py" -c "$src" receive "$@"
"""
LEVELS = (6, 3, 1)  # zlib's default (as `qemu-img convert -c` uses it) first; faster ones when it holds the links up
PACE = 8  # pieces sent between two choices of the level
AHEAD = 8  # data operations compressed ahead of the one being sent


class _Packed:
    """zlib-compressed pieces of local files, made once for every host that needs them (hosts upload in
    parallel and at about the same pace), by two threads ahead of the senders; the newest few kept."""

    def __init__(self, keep: int = 64) -> None:
        self.keep, self.lock = keep, threading.Lock()
        self.made: OrderedDict[tuple[str, int, int], Future[bytes]] = OrderedDict()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtfleet-zlib")
        self.step = self.sent = self.waited = 0  # LEVELS[step] packs the next pieces

    def pace(self, waited: bool) -> None:
        """A sender needed a piece and `waited` for it or not: when compressing is what the links wait
        for, take a faster level; when no sender waits, go back to a smaller one."""
        with self.lock:
            self.sent, self.waited = self.sent + 1, self.waited + waited
            if self.sent >= PACE:
                if 2 * self.waited > self.sent:
                    self.step = min(self.step + 1, len(LEVELS) - 1)
                elif not self.waited:
                    self.step = max(self.step - 1, 0)
                self.sent = self.waited = 0

    def get(self, fd: int, key: tuple[str, int, int]) -> Future[bytes]:
        with self.lock:
            made = self.made.get(key)
            if made is None:
                made = self.made[key] = self.pool.submit(self._pack, os.dup(fd), key[1], key[2], LEVELS[self.step])
                while len(self.made) > self.keep:
                    self.made.popitem(last=False)
            else:
                self.made.move_to_end(key)
            return made

    @staticmethod
    def _pack(fd: int, offset: int, length: int, level: int) -> bytes:
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise OSError(f"the image ended {length - len(data)} bytes early (changed while uploading?)")
        packed = zlib.compress(data, level)
        return packed if len(packed) < len(data) else data  # (as it is when zlib cannot shrink it)


_packed = _Packed()


def _send_plan(out: int, path: str, plan: delta.Plan, progress: Progress | None) -> int:
    """Write the plan's operations to the pipe `out`: DATA with the local file's bytes compressed, COPY
    naming a base on the host; then the end.  Returns the bytes written (what goes on the wire)."""
    fd = os.open(path, os.O_RDONLY)
    key = f"{os.path.abspath(path)}:{os.fstat(fd).st_mtime_ns}"
    data = [op for op in plan.ops if op.source < 0]
    meter = _Meter(plan.literal, progress)
    wire = 0
    try:
        ahead = iter(data)
        for op in list(data[:AHEAD]):
            _packed.get(fd, (key, op.offset, op.length))
            next(ahead)
        for op in plan.ops:
            if op.source >= 0:
                head = OP.pack(COPY, op.offset, op.length, op.source, op.source_offset, 0)
                os.write(out, head)
                wire += len(head)
                continue
            nxt = next(ahead, None)
            if nxt is not None:
                _packed.get(fd, (key, nxt.offset, nxt.length))
            made = _packed.get(fd, (key, op.offset, op.length))
            _packed.pace(not made.done())
            packed = made.result()
            kind = DATA if len(packed) < op.length else STORED
            view = memoryview(OP.pack(kind, op.offset, op.length, 0, 0, len(packed)) + packed)
            while view:
                view = view[os.write(out, view):]
            wire += OP.size + len(packed)
            meter.add(op.length)
        os.write(out, OP.pack(END, 0, 0, 0, 0, 0))
    finally:
        os.close(fd)
    meter.finish()
    return wire + OP.size


def full_plan(path: str, size: int) -> delta.Plan:
    """Every data run of the file, sent (holes never read, never sent)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        ops = [delta.Op(pos, min(clustermap.MAX_DATA, offset + n - pos))
               for is_data, offset, n in extents(fd, size) if is_data
               for pos in range(offset, offset + n, clustermap.MAX_DATA)]
    finally:
        os.close(fd)
    return delta.Plan(tuple(ops), (), sum(op.length for op in ops), 0)


def receive(c: Connection, path: str, tmp: str, final: str, want: str, progress: Progress | None = None,
            plan: delta.Plan | None = None, bases: tuple[str, ...] = ()) -> int | None:
    """Make the local raw image `path` in the host's existing file `tmp`, by `plan` (default: all of it
    sent) copying from the host's `bases`; the host publishes it as `final` once its digest is `want`.
    Returns the bytes sent, or None (nothing done) when the host has no python3 >= 3.7.  A digest
    mismatch or a broken stream raises HostError, and `tmp` is gone."""
    size = os.path.getsize(path)
    plan = plan or full_plan(path, size)
    proc = session.popen(c, ["sh", "-c", _RECEIVE, "sh", HOST_PYTHON, CLUSTERMAP_SOURCE, tmp, final, str(size),
                             want, *bases])
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sent: int | None = None
    try:
        if proc.stdout.readline(64) == b"ready\n":  # (bounded: the host may send anything)
            grow_pipe(proc.stdin.fileno())
            try:
                sent = _send_plan(proc.stdin.fileno(), path, plan, progress)
            except BrokenPipeError:
                pass  # the host stopped reading: its exit status and message say why
            proc.stdin.close()
        out = proc.stdout.read(1 << 16).decode(errors="replace")  # a few lines; more is not the receiver's
        err = proc.stderr.read(1 << 16).decode(errors="replace")
        rc = proc.wait(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc == 5 and sent is None:
        return None
    if rc == 3:
        raise HostError(c.host, f"verifying the upload {os.path.basename(tmp)}",
                        f"{out.strip()} on the host, expected digest {want[:16]} (size {size})",
                        "The upload was discarded; run `pulumi up` again")
    if rc != 0 or sent is None:
        raise HostError(c.host, f"uploading into {tmp}", f"exit {rc}: {err.strip()[-300:] or 'the stream broke'}",
                        "Nothing was published; run `pulumi up` again")
    return sent
