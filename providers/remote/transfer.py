"""Moving image bytes into volumes on a host, and checking them there before they are published.

Two ways for a full upload.  `receive`: the data runs of the image (holes never read, never sent) go
down one SSH session of the host's master to `clustermap`'s own source under the host's python3, which
writes them into the volume's file and hashes them as they arrive, then publishes the file only when
its digest is the one it is named by: one pass, one command, no second read of the data.  `upload`:
libvirt's sparse stream (for LVs and hosts without python3), checked afterwards by `verify_and_publish`.
Deltas: `receive` with the previous base on the host, which fills in everything but the changed ranges
in the same pass; without python3 there, `upload_ranges` writes them into a clone of the previous base,
checked afterwards the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt

from .. import clustermap
from ..clustermap import FRAME, extents, grow_pipe
from ..errors import HostError
from ..spec import Connection
from . import session

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


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


_VERIFY_AND_PUBLISH = r"""
algo=$1 want=$2 size=$3 src=$4 dst=$5 prog=$7 py=$8
# held while it is checked, so that another run's cleanup sees this upload alive (remove_dead_uploads): a
# lock on a file; an LV open (lvremove refuses an open LV)
if [ -f "$src" ] && exec 9<"$src"; then flock 9 2>/dev/null || :; elif [ -b "$src" ]; then exec 9<"$src"; fi
if [ "$algo" = digest ]; then
  command -v "$py" >/dev/null 2>&1 || exit 5
  got=$("$py" -c "$prog" "$src" "$size") || { [ $? = 3 ] && { echo "$got"; exit 3; }; exit 5; }
else
  if [ "$algo" = crc ]; then h=cksum
  elif command -v openssl >/dev/null 2>&1; then h="openssl dgst -sha256 -r"
  else h=sha256sum; fi
  if [ -f "$src" ]; then
    have=$(stat -c %s -- "$src") || exit 4
    [ "$have" = "$size" ] || { echo "size $have"; exit 3; }
    got=$($h < "$src") || exit 4
  else
    got=$(head -c "$size" -- "$src" | $h) || exit 4
  fi
  got=${got%% *}
fi
[ "$got" = "$want" ] || { echo "$algo $got"; exit 3; }
# never replaces a base another upload of the same digest published meanwhile (it may be held and used)
if [ -f "$src" ]; then
  chmod 0444 -- "$src" && { ln -T -- "$src" "$dst" 2>/dev/null || [ -e "$dst" ]; } && rm -f -- "$src"
elif [ -e "$dst" ]; then exec 9<&-; lvremove -f "$src" >/dev/null
else lvrename "$6" "${src##*/}" "${dst##*/}" && exec 9<&- && lvchange --permission r "$dst"; fi
"""
_CLUSTERMAP_SOURCE = Path(clustermap.__file__).read_text()
HOST_PYTHON = "python3"  # the host's interpreter for `clustermap` (absent or < 3.7: the fallbacks are used)


def verify_and_publish(c: Connection, src: str, dst: str, size: int, algo: str, want: str) -> bool:
    """On the host, in one command: check the first `size` bytes of `src` (a file or an LV) against
    `want`, then make it read-only and give it its published name `dst`.  A mismatch raises HostError.

    algo "digest": the content digest, computed on the host by `clustermap`'s own source under the
    host's python3, reading only the data the host stores; False (nothing changed) when the host has no
    usable python3, so the caller can fall back to "crc": POSIX cksum of every byte (CRC-32), or
    "sha256": openssl or sha256sum.
    """
    vg = os.path.basename(os.path.dirname(src)) if src.startswith("/dev/") else ""
    rc, out, err = session.run(c, ["sh", "-c", _VERIFY_AND_PUBLISH, "sh", algo, want, str(size), src, dst, vg,
                                   _CLUSTERMAP_SOURCE if algo == "digest" else "", HOST_PYTHON], timeout=1800,
                                  check=False)
    if rc == 5:
        return False
    if rc == 3:
        raise HostError(c.host, f"verifying the upload {os.path.basename(src)}",
                        f"{out.strip()} on the host, expected {algo} {want[:16]} (size {size})",
                        "The upload was discarded; run `pulumi up` again")
    if rc != 0:
        raise HostError(c.host, f"publishing {os.path.basename(dst)}", f"exit {rc}: {err.strip()[:300]}")
    return True


_RECEIVE = r"""
py=$6
"$py" -S -c 'import sys; sys.exit(sys.version_info < (3, 7))' 2>/dev/null || exit 5
exec "$py" -c "$1" receive "$2" "$3" "$4" "$5" "$7"
"""
SEND = 4 << 20


def _send_runs(out: int, path: str, size: int, progress: Progress | None,
               ranges: list[tuple[int, int]] | None = None) -> int:
    """Write the file's data runs (or the given (offset, length) ranges, in order) as frames (offset,
    length, bytes) to the pipe `out`; then the end frame."""
    fd = os.open(path, os.O_RDONLY)
    try:
        runs = ranges if ranges is not None else [(offset, n) for is_data, offset, n in extents(fd, size) if is_data]
        meter = _Meter(sum(n for _, n in runs), progress)
        for offset, n in runs:
            os.write(out, FRAME.pack(offset, n))
            end = offset + n
            while offset < end:
                k = os.sendfile(out, fd, offset, min(SEND, end - offset))  # file pages straight into the pipe
                if not k:
                    raise OSError(f"the image ended {end - offset} bytes early (changed while uploading?)")
                offset += k
                meter.add(k)
        os.write(out, FRAME.pack(0, 0))
    finally:
        os.close(fd)
    return meter.finish()


def receive(c: Connection, path: str, tmp: str, final: str, want: str, progress: Progress | None = None,
            delta: tuple[str, list[tuple[int, int]]] | None = None) -> int | None:
    """Send the local file `path` into the host's existing file `tmp`; the host publishes it as `final`
    once its digest is `want`.  delta=(base on the host, ranges): only those ranges are sent, the rest
    comes from the base.  Returns the bytes sent, or None (nothing done) when the host has no python3
    >= 3.7.  A digest mismatch or a broken stream raises HostError, and `tmp` is gone."""
    size = os.path.getsize(path)
    base, ranges = delta if delta is not None else ("", None)
    proc = session.popen(c, ["sh", "-c", _RECEIVE, "sh", _CLUSTERMAP_SOURCE, tmp, final, str(size), want,
                             HOST_PYTHON, base])
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sent: int | None = None
    try:
        if proc.stdout.readline() == b"ready\n":
            grow_pipe(proc.stdin.fileno())
            try:
                sent = _send_runs(proc.stdin.fileno(), path, size, progress, ranges)
            except BrokenPipeError:
                pass  # the host stopped reading: its exit status and message say why
            proc.stdin.close()
        out, err = proc.stdout.read().decode(errors="replace"), proc.stderr.read().decode(errors="replace")
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


UPLOAD_GRACE = 120  # seconds: a younger temporary upload may not have its receiver's lock yet
_REMOVE_DEAD = r"""
grace=$1; shift; now=$(date +%s)
for f in "$@"; do
  if [ -b "$f" ]; then
    [ $((now - $(stat -L -c %Z -- "$f" 2>/dev/null || echo "$now"))) -ge "$grace" ] || continue
    lvremove -q -f -- "$f" >/dev/null 2>&1 && echo "$f"
    continue
  fi
  [ -f "$f" ] && command -v flock >/dev/null 2>&1 || continue
  [ $((now - $(stat -c %Y -- "$f" 2>/dev/null || echo "$now"))) -ge "$grace" ] || continue
  flock -n "$f" rm -f -- "$f" && echo "$f"
done
exit 0
"""


def remove_dead_uploads(c: Connection, paths: list[str]) -> list[str]:
    """Remove the temporary uploads among `paths` that no upload is writing any more, older than
    UPLOAD_GRACE seconds (by the host's clock): a file not locked by its receiver or check on the host
    (`clustermap.receive`, `verify_and_publish`; a host without flock(1) keeps them all), an LV that no
    process has open (libvirt's upload stream and the check hold it open; `lvremove` refuses an open LV).
    Returns the removed paths."""
    if not paths:
        return []
    _, out, _ = session.run(c, ["sh", "-c", _REMOVE_DEAD, "sh", str(UPLOAD_GRACE), *paths])
    return out.split()
