"""A temporary upload on a host: checked there and published under its content's name, or removed once
no run is writing it any more.  Both are one shell command on the host, holding or testing the lock
that `clustermap.receive` holds while it writes."""

from __future__ import annotations

import os

from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session, transfer

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


def verify_and_publish(c: Connection, src: str, dst: str, size: int, algo: str, want: str) -> bool:
    """On the host, in one command: check the first `size` bytes of `src` (a file or an LV) against
    `want`, then make it read-only and give it its published name `dst`.  A mismatch raises HostError.

    algo "digest": the content digest, computed on the host by `clustermap`'s own source under the
    host's python3, reading only the data the host stores; False (nothing changed) when the host has no
    usable python3, so the caller can fall back to "crc": POSIX cksum of every byte (CRC-32), or
    "sha256": openssl or sha256sum.
    """
    vg = os.path.basename(os.path.dirname(src)) if src.startswith("/dev/") else ""
    prog = transfer.CLUSTERMAP_SOURCE if algo == "digest" else ""
    rc, out, err = session.run(c, ["sh", "-c", _VERIFY_AND_PUBLISH, "sh", algo, want, str(size), src, dst, vg, prog,
                                   transfer.HOST_PYTHON], timeout=1800, check=False)
    if rc == 5:
        return False
    if rc == 3:
        raise HostError(c.host, f"verifying the upload {os.path.basename(src)}",
                        f"{out.strip()} on the host, expected {algo} {want[:16]} (size {size})",
                        "The upload was discarded; run `pulumi up` again")
    if rc != 0:
        raise HostError(c.host, f"publishing {os.path.basename(dst)}", f"exit {rc}: {err.strip()[:300]}")
    return True


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
