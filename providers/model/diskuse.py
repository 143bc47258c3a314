"""Whether a disk already on a host may be reused, grown or deleted by a Volume resource.  Pure.

A disk is someone else's while a domain other than the Volume's own guest has it (running or not), while
a file beside it names it as its backing file, or when the host records another Volume resource as its
owner (`holders`).  A disk not recorded as this resource's own is reused only when no one else has it,
and is then never grown or deleted, unless its guest takes it over explicitly with `adopt: true`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def label(owner: Any) -> str:
    """`project/stack/resource` of an owner (an `Owner` or its dict), as the host's record holds it."""
    get = owner.get if isinstance(owner, dict) else lambda k: getattr(owner, k)
    return f"{get('project')}/{get('stack')}/{get('resource')}"


def others(users: Iterable[tuple[str, dict[str, str] | None]], ours: str, takeover: str = "") -> list[str]:
    """The domains among `users` (name, owner metadata) other than the Volume's own guest, described.
    `takeover`: the domain a guest with `adopt: true` takes over (defined outside virtfleet, so unmarked)."""
    found = []
    for name, owner in users:
        if owner is not None and label(owner) == ours or owner is None and takeover and name == takeover:
            continue
        found.append(f"{name} (managed by {label(owner)})" if owner else f"{name} (defined outside virtfleet)")
    return found


def reuse_refusal(host: str, disk: str, ours: str, users: list[str], backs: Iterable[str],
                  recorded: str | None) -> str:
    """Why an existing disk cannot be reused by the Volume of `ours`, or ''.  `users`: from `others`."""
    if users:
        return (f"host {host}: disk {disk!r} already exists and belongs to the guest(s) {', '.join(users)}: not "
                "reused, nothing changed (a disk is never shared by two guests). Give this guest another name "
                "(its key, or `name:`), or remove that guest and its disk first")
    backs = sorted(backs)
    if backs:
        return (f"host {host}: disk {disk!r} already exists and is the backing file of {', '.join(backs)}: not "
                "reused, nothing changed. Give this guest another name, or remove those files first")
    if recorded is not None and recorded != ours:
        return (f"host {host}: disk {disk!r} already exists, kept for {recorded} (another stack's or guest's "
                "disk): not reused, nothing changed. Give this guest another name, or have that stack put its "
                "guest back or remove the disk (`deleteDiskOnDestroy: true`, then destroy)")
    return ""


def grow_refusal(host: str, disk: str, users: list[str], owned: bool) -> str:
    """Why the disk may not be grown by this Volume, or ''."""
    if users:
        return (f"host {host}: disk {disk!r} is used by the guest(s) {', '.join(users)}: not grown, nothing "
                "changed. Give this guest another name")
    if not owned:
        return (f"host {host}: disk {disk!r} was not made by virtfleet for this guest (no owner record on the "
                "host), so it is never grown: nothing changed. Set diskSize to its size, or take it over with "
                "`adopt: true` on the guest if it is yours")
    return ""


def owned(props: dict[str, Any]) -> bool:
    """Whether a Volume's disk is its own (made or taken over by it), from its state; state written before
    `owned` was recorded: a disk it did not find already there, or one it took over with `adopt`."""
    if "owned" in props:
        return bool(props["owned"])
    return not reused(props) or bool(props.get("adopt"))


def reused(props: dict[str, Any]) -> bool:
    """Whether a Volume found its disk already there (`reused`; `adopted` in state written before)."""
    return bool(props.get("reused", props.get("adopted", False)))
