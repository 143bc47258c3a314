"""Records on a host of who needs what: the holders of a base volume, so that the last one to let go
removes it, and the owner of a guest's disk, so that no other resource grows or deletes it.

A base (`vfbase-DIGEST.raw`, content-addressed) may be wanted by several BaseImage resources (one per
stack that deploys the image to the host) and backs the disks made from it.  Each BaseImage holds the
base under a holder id of its own, listed in an extended attribute of the base's file
(`user.virtfleet.holders`; its presence says the base's holders are known).  All changes happen on the
host under an exclusive lock on the base's file, so the base is removed exactly once: when it is
tracked, no holder is left, and no qcow2 file beside it names it as its backing file.  Whichever comes
last removes it: the BaseImage's delete (`release`) or the delete of its last disk (`collect`).  When
the list is full (about 200 holders on ext4), the base is pinned instead: never removed automatically.

A guest's disk made (or taken over) by virtfleet names its Volume resource (`project/stack/resource`)
in `user.virtfleet.owner`: a kept disk carries it after its guest is gone, so a later Volume reuses,
grows or deletes it only if it is the same resource.

A network shared by stacks is held the same way, through a record file of its own (`enlist` creates
it; a network found already there when the record is made is pinned: virtfleet never removes it).

This file imports nothing of virtfleet: it runs on the host as `python3 -c SOURCE OP PATH [ARG]`.
For bases it prints one line: `held`, `missing`, `removed`, `kept held N`, `kept used NAME`, `kept
pinned`, or `untracked` (a base from before holders were kept, or a file system without user extended
attributes: the caller falls back to its own rule).  For disks, `owner` prints `owner WHO` or `none`,
then `backs NAME` for a file beside it that names it as its backing file; `claim DISK WHO` prints
`claimed` or `owner OTHER` (claimed by another resource: left as it is); either may print `missing` or
`untracked`.
"""

import errno
import fcntl
import os
import struct
import sys

HOLDERS = "user.virtfleet.holders"  # the holder ids, one per line; present = the base is tracked
PINNED = "user.virtfleet.pinned"  # set when the list is full: never removed automatically
OWNER = "user.virtfleet.owner"  # the Volume resource a disk was made for: project/stack/resource
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


def enlist(path, holder, fresh):
    """Hold a record file, making it first; a record made for something found already there is pinned."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _holders(fd) is None and fresh != "fresh":
            os.setxattr(fd, PINNED, b"")
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return "untracked"
        raise
    finally:
        os.close(fd)
    return act("hold", path, holder)


def disk(op, path, who=""):
    """owner: who a disk was made for, and the files it backs.  claim: record `who` unless another is."""
    path = os.path.normpath(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return ["missing"]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = _get(fd, OWNER)
        seen = raw.decode(errors="replace") if raw is not None else None
        if op == "claim":
            if seen is not None and seen != who:
                return [f"owner {seen}"]
            os.setxattr(fd, OWNER, who.encode())
            return ["claimed"]
        return [f"owner {seen}" if seen is not None else "none"] + [f"backs {n}" for n in users(path)[:8]]
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ["untracked"]
        raise
    finally:
        os.close(fd)


def main(argv):
    op = argv[1] if len(argv) > 2 else ""
    if op in ("owner", "claim") and (op == "owner" or len(argv) > 3):
        print("\n".join(disk(op, argv[2], argv[3] if len(argv) > 3 else "")))
        return 0
    if op == "enlist" and len(argv) > 4:
        print(enlist(os.path.normpath(argv[2]), argv[3], argv[4]))
        return 0
    if op not in ("hold", "release", "collect") or op == "hold" and len(argv) < 4:
        print("usage: hold|release|collect BASE [HOLDER] | enlist RECORD HOLDER fresh|found | owner DISK | "
              "claim DISK WHO", file=sys.stderr)
        return 2
    print(act(op, argv[2], argv[3] if len(argv) > 3 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
