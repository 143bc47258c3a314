"""Who still needs a base volume on a host, so that the last one to let go removes it.

A base (`vfbase-DIGEST.raw`, content-addressed) may be wanted by several BaseImage resources (one per
stack that deploys the image to the host) and backs the disks made from it.  Each BaseImage holds the
base under a holder id of its own, listed in an extended attribute of the base's file
(`user.virtfleet.holders`; its presence says the base's holders are known).  All changes happen on the
host under an exclusive lock on the base's file, so the base is removed exactly once: when it is
tracked, no holder is left, and no qcow2 file beside it names it as its backing file.  Whichever comes
last removes it: the BaseImage's delete (`release`) or the delete of its last disk (`collect`).  When
the list is full (about 200 holders on ext4), the base is pinned instead: never removed automatically.

This file imports nothing of virtfleet: it runs on the host as `python3 -c SOURCE OP BASE [HOLDER]`.
It prints one line: `held`, `missing`, `removed`, `kept held N`, `kept used NAME`, `kept pinned`, or
`untracked` (a base from before holders were kept, or a file system without user extended attributes:
the caller falls back to its own rule).
"""

import errno
import fcntl
import os
import struct
import sys

HOLDERS = "user.virtfleet.holders"  # the holder ids, one per line; present = the base is tracked
PINNED = "user.virtfleet.pinned"  # set when the list is full: never removed automatically
QCOW2_MAGIC = b"QFI\xfb"
HEADER = struct.Struct(">4sIQI")  # magic, version, backing file offset, backing file name length


def backing_of(path):
    """The backing file a qcow2 file names (as written in it), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                return None
            magic, _version, offset, length = HEADER.unpack(head)
            if magic != QCOW2_MAGIC or not offset or not 0 < length <= 4096:
                return None
            f.seek(offset)
            return os.fsdecode(f.read(length))
    except OSError:
        return None


def users(base):
    """Names of the files beside `base` whose backing file is `base`."""
    where = os.path.dirname(base)
    found = []
    for entry in os.scandir(where):
        if entry.path == base or not entry.is_file(follow_symlinks=False):
            continue
        backing = backing_of(entry.path)
        if backing and os.path.normpath(os.path.join(where, backing)) == base:
            found.append(entry.name)
    return sorted(found)


def _get(fd, name):
    try:
        return os.getxattr(fd, name)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def _holders(fd):
    raw = _get(fd, HOLDERS)
    return None if raw is None else [h for h in raw.decode().split("\n") if h]


def _set_holders(fd, ids):
    os.setxattr(fd, HOLDERS, "\n".join(ids).encode())


def act(op, base, holder=""):
    """hold: add `holder` (the base becomes tracked).  release: remove `holder`, then collect.
    collect: remove the base when it is tracked, held by no one and used by no file beside it."""
    base = os.path.normpath(base)
    try:
        fd = os.open(base, os.O_RDONLY)
    except FileNotFoundError:
        return "missing"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            return "missing"  # removed by the one that held the lock before us
        ids = _holders(fd)
        if op == "hold":
            if holder not in (ids or []):
                try:
                    _set_holders(fd, (ids or []) + [holder])
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.E2BIG, errno.ERANGE):
                        raise
                    os.setxattr(fd, PINNED, b"")  # no room for one more: keep it for good instead
            return "held"
        if ids is None:
            return "untracked"
        if op == "release" and holder in ids:
            ids.remove(holder)
            _set_holders(fd, ids)
        if _get(fd, PINNED) is not None:
            return "kept pinned"
        if ids:
            return f"kept held {len(ids)}"
        using = users(base)
        if using:
            return f"kept used {using[0]}"
        os.unlink(base)
        return "removed"
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return "untracked"
        raise
    finally:
        os.close(fd)


def main(argv):
    if len(argv) < 3 or argv[1] not in ("hold", "release", "collect") or argv[1] == "hold" and len(argv) < 4:
        print("usage: hold|release|collect BASE [HOLDER]", file=sys.stderr)
        return 2
    print(act(argv[1], argv[2], argv[3] if len(argv) > 3 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
