"""The host's records of who needs what (`holders`, run there): base holders and disk owners."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from providers.hostside import holders
from providers.model.host import Connection
from providers.remote import session, transfer

_SOURCE = Path(holders.__file__).read_text()
_RUN = r"""
py=$1 src=$2; shift 2
command -v "$py" >/dev/null 2>&1 || { echo untracked; exit 0; }
exec "$py" -c "$src" "$@"
"""
MAX_ANSWER = 64 << 10  # the script prints a few short lines; a longer answer is not this script's


def _host(c: Connection, *args: str) -> list[str]:
    _, out, _ = session.run(c, ["sh", "-c", _RUN, "sh", transfer.HOST_PYTHON, _SOURCE, *args])
    return out[:MAX_ANSWER].strip().splitlines() or ["untracked"]


@dataclass(frozen=True)
class Answer:
    """The host's answer about a base: `state` is held, missing, removed, "kept held" (by `detail` other
    holders), "kept used" (the backing file of `detail`), "kept pinned" or untracked (no python3 on the
    host, or no user extended attributes there: nothing is tracked)."""

    state: str
    detail: str = ""


def act(c: Connection, op: str, base: str, holder: str = "") -> Answer:
    """`op` (hold, release, collect) on the host's base file `base`."""
    if base.startswith("/dev/"):
        return Answer("untracked")  # an LV: no extended attributes
    line = _host(c, op, base, holder)[0]
    for kept in ("kept held", "kept used"):
        if line.startswith(kept + " "):
            return Answer(kept, line[len(kept) + 1:])
    return Answer(line)


@dataclass(frozen=True)
class DiskRecord:
    """What the host knows of a disk: whether owners are recorded there at all, who it was made for (None:
    no record), and the files beside it that name it as their backing file."""

    tracked: bool
    owner: str | None
    backs: tuple[str, ...] = ()


def disk_record(c: Connection, path: str) -> DiskRecord:
    if path.startswith("/dev/"):
        return DiskRecord(False, None)
    lines = _host(c, "owner", path)
    owner = lines[0][len("owner "):] if lines[0].startswith("owner ") else None
    backs = tuple(line[len("backs "):] for line in lines[1:] if line.startswith("backs "))
    return DiskRecord(lines[0] not in ("untracked", "missing"), owner, backs)


def claim_disk(c: Connection, path: str, owner: str) -> str | None:
    """Record `owner` as the disk's; returns another owner already recorded there (left as it is), else None."""
    if path.startswith("/dev/"):
        return None
    answer = _host(c, "claim", path, owner)[0]
    return answer[len("owner "):] if answer.startswith("owner ") else None


NETWORK_RECORDS = "/var/lib/virtfleet/networks"  # one record file per network that stacks hold


def hold_network(c: Connection, name: str, holder: str, fresh: bool) -> str:
    """Hold network `name` for `holder`; `fresh`: this resource just defined it (else it was found there,
    and a network found without a record is pinned: never removed by virtfleet).  held or untracked."""
    return _host(c, "enlist", f"{NETWORK_RECORDS}/{name}", holder, "fresh" if fresh else "found")[0]


def release_network(c: Connection, name: str, holder: str) -> str:
    """Let go of network `name`: removed (no holder left: the caller may remove the network), "kept held N",
    "kept pinned", missing or untracked (no record: the caller's own rule)."""
    return _host(c, "release", f"{NETWORK_RECORDS}/{name}", holder)[0]
