"""Cluster maps and content digests of image files, from the standard library alone.

A cluster map is one sha256 per 64 KiB cluster of an image, after a header with the cluster and image
size.  An image's digest, its content address, is the sha256 of its cluster map.  One pass gives both;
it is split across threads over contiguous parts (hashlib releases the GIL), and holes are never read
(a cluster of zeros always hashes the same), found with SEEK_DATA/SEEK_HOLE.

This file imports nothing of virtfleet: the same source runs on a host.  `python3 -c SOURCE PATH SIZE`
checks a volume against the digest it is published under, reading only the data the host stores;
`python3 -c SOURCE receive TMP FINAL SIZE DIGEST [BASE...]` is the host's end of an upload: it reads
operations on stdin, in increasing offset order, each either zlib-compressed data or a range to copy
from one of the BASEs (raw bases already on the host), writes them into TMP, hashes them as they arrive
(`StreamMap`: no second pass over the data), and only when the digest is DIGEST makes TMP read-only
under the name FINAL.  What no operation covers stays a hole.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct
import sys
import threading
import zlib

CLUSTER = 64 << 10
DIGEST = 32
HEADER = struct.Struct(">QQ")  # cluster size, image size
READ = 4 << 20
ALIGN = 4096  # direct I/O's unit: offsets, lengths and memory on these boundaries
ZERO = hashlib.sha256(bytes(CLUSTER)).digest()


def extents(fd, size, start=0):
    """(is_data, offset, length) runs covering [start, size) of an open file (a block device is all data)."""
    pos = start
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            data = size
        if data > pos:
            yield False, pos, min(data, size) - pos
            pos = data
            continue
        try:
            hole = min(os.lseek(fd, pos, os.SEEK_HOLE), size)  # from the data itself: a hole start answers itself
        except OSError:
            hole = size
        yield True, pos, hole - pos
        pos = hole


def _map_of_holes(size):
    """The cluster map's body for an image of `size` bytes of holes: what data then overwrites."""
    n = -(-size // CLUSTER)
    out = bytearray(ZERO * n)
    if size % CLUSTER:  # the short last cluster hashes its real length
        out[(n - 1) * DIGEST:] = hashlib.sha256(bytes(size % CLUSTER)).digest()
    return out


def _hash_range(path, lo, hi, out):
    """Hash the data clusters of [lo, hi) (cluster aligned) into `out`; holes keep the zero hash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for is_data, offset, length in extents(fd, hi):
            if not is_data or offset + length <= lo:
                continue
            pos = max(lo, offset // CLUSTER * CLUSTER)  # whole clusters around the data
            end = min(hi, -(-(offset + length) // CLUSTER) * CLUSTER)
            while pos < end:
                buf = os.pread(fd, min(READ, end - pos), pos)
                if not buf:
                    break
                view = memoryview(buf)
                for j in range(0, len(buf), CLUSTER):
                    i = (pos + j) // CLUSTER
                    out[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(view[j:j + CLUSTER]).digest()
                pos += len(buf)
    finally:
        os.close(fd)


def compute(path, workers=2, size=None):
    """The cluster map of the first `size` bytes of a file (all of it by default), by `workers` threads."""
    if size is None:
        size = os.path.getsize(path)
    out = _map_of_holes(size)
    clusters = len(out) // DIGEST
    part = -(-clusters // max(1, workers)) * CLUSTER  # each worker's contiguous share, in bytes
    threads = [threading.Thread(target=_hash_range, args=(path, lo, min(size, lo + part), out))
               for lo in range(0, size, part)] if size else []
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return HEADER.pack(CLUSTER, size) + bytes(out)


def digest(cluster_map):
    """The image's content address: sha256 of its cluster map (hex)."""
    return hashlib.sha256(cluster_map).hexdigest()


class StreamMap:
    """The cluster map of an image that arrives as data runs in increasing offset order; whatever never
    arrives is a hole (zeros).  Whole clusters are hashed straight from the caller's buffer, the partly
    covered ones at the edges of runs are gathered first."""

    def __init__(self, size):
        self.size, self.pos = size, 0
        self.out = _map_of_holes(size)
        self.part_index, self.part = -1, None

    def _flush(self):
        if self.part is not None:
            i = self.part_index
            self.out[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(self.part).digest()
            self.part_index, self.part = -1, None

    def add(self, offset, data):
        """Data at `offset`: never before the end of earlier data, never past the image's end."""
        end = offset + len(data)
        if offset < self.pos or end > self.size:
            raise ValueError(f"data run [{offset}, {end}) overlaps earlier data (up to {self.pos}) "
                             f"or ends past the image (size {self.size})")
        view, pos = memoryview(data), offset
        while pos < end:
            i = pos // CLUSTER
            lo, hi = i * CLUSTER, min((i + 1) * CLUSTER, self.size)
            if i != self.part_index:
                self._flush()
                if pos == lo and hi <= end:  # a whole cluster
                    self.out[i * DIGEST:(i + 1) * DIGEST] = hashlib.sha256(view[pos - offset:hi - offset]).digest()
                    pos = hi
                    continue
                self.part_index, self.part = i, bytearray(hi - lo)
            stop = min(hi, end)
            self.part[pos - lo:stop - lo] = view[pos - offset:stop - offset]
            pos = stop
        self.pos = end

    def finish(self):
        self._flush()
        return HEADER.pack(CLUSTER, self.size) + bytes(self.out)


OP = struct.Struct(">BQQIQI")  # kind, offset, length, base index, base offset, compressed length that follows
END, DATA, COPY, STORED = 0, 1, 2, 3  # STORED: data that zlib would not shrink, sent as it is
MAX_DATA = 1 << 20  # the most bytes one DATA operation holds, before compression
PIPE_SIZE = 1 << 20  # bigger pipes: far fewer wake-ups of ssh/sshd per MiB


def grow_pipe(fd):
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # not a pipe, or a lower limit: only slower


def _read_into(stream, view):
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError(f"the upload stream ended early ({len(view) - got} bytes of a run missing)")
        got += n


def _piece(offset, length, room):
    """How much of a run at `offset` to take into an aligned buffer of `room` bytes: up to the next
    ALIGN boundary first when `offset` is off one, so that every later piece starts on one."""
    return min(length, room, ALIGN - offset % ALIGN if offset % ALIGN else room)


def _copy(src, lo, hi, put, buf):
    """put() the data runs of the open file `src` in [lo, hi), read into `buf` piece by piece."""
    for is_data, offset, length in extents(src, hi, lo):
        while is_data and length:
            n = os.preadv(src, [buf[:_piece(offset, length, len(buf))]], offset)
            if not n:
                break  # the file ends here: the rest reads as zeros
            put(offset, buf[:n])
            offset, length = offset + n, length - n


class _Writer:
    """Writes into an existing regular file: whole ALIGN blocks from page-aligned memory with O_DIRECT, the
    rest (a run's unaligned edges) through the page cache.

    Direct writes go from the receiver's one buffer to the disk and fill no page cache.  On the lab's
    hosts (virtual machines whose free memory goes back to the hypervisor) every new page-cache page
    cost a fault in the hypervisor: copying 1.2 GiB into new pages took 1.4 s of CPU, the largest
    share of an upload.  A file system that refuses O_DIRECT (at open or at the first write) gets
    everything through the page cache, as before."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY)
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise ValueError(f"{path} is not a regular file")
        self.direct = None
        flag = getattr(os, "O_DIRECT", 0)
        if flag:
            try:
                self.direct = os.open(path, os.O_WRONLY | flag)
            except OSError:
                self.direct = None

    def write(self, offset, view):
        """`view` starts on a page boundary in memory (a piece of an mmap buffer)."""
        if self.direct is not None and offset % ALIGN == 0:
            whole = len(view) - len(view) % ALIGN
            done = 0
            try:
                while done < whole:
                    n = os.pwrite(self.direct, view[done:whole], offset + done)
                    if n <= 0 or n % ALIGN:
                        done += max(n, 0)
                        break  # a short write: the rest through the page cache
                    done += n
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self.direct)
                self.direct = None  # the file system takes no direct I/O here
            view, offset = view[done:], offset + done
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def close(self):
        if self.direct is not None:
            os.close(self.direct)
        os.close(self.fd)


def _data(stream, offset, length, clen, buf):
    """A DATA operation's bytes, decompressed into `buf`: bounded, and exactly `length` of them."""
    if not 0 < length <= MAX_DATA or not 0 < clen <= 2 * MAX_DATA:
        raise ValueError(f"a data operation at {offset} of {length} bytes ({clen} compressed) is out of bounds")
    packed = bytearray(clen)
    _read_into(stream, memoryview(packed))
    dec = zlib.decompressobj()
    data = dec.decompress(packed, length)
    if len(data) != length or dec.unconsumed_tail or not dec.eof:
        raise ValueError(f"the data operation at {offset} does not hold exactly {length} bytes")
    buf[:length] = data
    return buf[:length]


def receive(tmp, final, size, want, stream, bases=()):
    """Write the operations of `stream` into the existing file `tmp` (truncated to `size`, so the rest
    reads as holes), then publish it as `final` (read-only) when its digest is `want`.  COPY operations
    read the data runs of `bases[i]` (holes stay holes), hashed the same way as the data that arrives.
    Returns the digest found; `tmp` is removed on any failure.  An exclusive flock on `tmp`, held until
    the end, tells a cleanup on the host that this upload is alive.  Another upload of the same content
    that published `final` first is kept as it is (its holders are recorded on it): `tmp` is dropped."""
    out = _Writer(tmp)  # (refuses anything but a regular file)
    fd = out.fd
    fcntl.flock(fd, fcntl.LOCK_EX)
    srcs = []
    try:
        os.ftruncate(fd, size)  # (not to 0 first: ext4 would write the file back at close, as a replacement)
        smap, head = StreamMap(size), bytearray(OP.size)
        buf, copy_buf = memoryview(mmap.mmap(-1, READ)), memoryview(mmap.mmap(-1, READ))  # page-aligned

        def put(offset, chunk):
            smap.add(offset, chunk)
            out.write(offset, chunk)

        srcs = [os.open(b, os.O_RDONLY) for b in bases]
        print("ready", flush=True)
        while True:
            _read_into(stream, memoryview(head))
            kind, offset, length, src, src_offset, clen = OP.unpack(head)
            if kind == END:
                break
            if kind == DATA:
                put(offset, _data(stream, offset, length, clen, buf))
            elif kind == STORED and 0 < length <= MAX_DATA:
                _read_into(stream, buf[:length])
                put(offset, buf[:length])
            elif kind == COPY and src < len(srcs) and length <= size:
                shift = offset - src_offset
                _copy(srcs[src], src_offset, src_offset + length, lambda o, b, d=shift: put(o + d, b), copy_buf)
            else:
                raise ValueError(f"unknown operation {kind} (base {src}) at {offset}")
        found = digest(smap.finish())
        if found != want:
            raise LookupError(found)
        os.fchmod(fd, 0o444)
    except BaseException:
        out.close()
        os.unlink(tmp)
        raise
    finally:
        for src in srcs:
            os.close(src)
    try:
        os.link(tmp, final)  # never replaces: a published base may already be held and used
    except FileExistsError:
        pass  # published meanwhile by another upload of the same digest: the same bytes
    finally:
        os.unlink(tmp)
        out.close()
    return found


def main(argv):
    """On a host: `receive TMP FINAL SIZE DIGEST [BASE...]` (exit 3: another digest, printed) or
    `PATH SIZE`: print the digest of the first SIZE bytes of PATH (exit 3 when a file's size differs)."""
    if argv[1:2] == ["receive"]:
        grow_pipe(0)
        try:
            receive(argv[2], argv[3], int(argv[4]), argv[5], sys.stdin.buffer.raw, argv[6:])
        except LookupError as exc:
            print(f"digest {exc.args[0]}")
            return 3
        except (OSError, ValueError, EOFError, zlib.error) as exc:
            print(f"receive: {exc}", file=sys.stderr)
            return 4
        return 0
    path, size = argv[1], int(argv[2])
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode) and st.st_size != size:
        print(f"size {st.st_size}")
        return 3
    print(digest(compute(path, min(4, os.cpu_count() or 1), size)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
