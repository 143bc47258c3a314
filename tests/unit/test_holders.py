"""Holding bases (`holders`), run as a host runs it: the bare source under an isolated interpreter, on
real files with real qcow2 overlays made by qemu-img."""

from __future__ import annotations

import subprocess
import sys

import pytest

from providers.hostside import holders
from providers.remote import bases

pytestmark = pytest.mark.unit


def _host(*args: str) -> str:
    ran = subprocess.run([sys.executable, "-I", "-c", bases._SOURCE, *args], capture_output=True, text=True,
                         check=True)
    return ran.stdout.strip()


def _overlay(path, backing: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, str(path), "1M"],
                   check=True, capture_output=True)


def test_the_last_of_holders_and_disks_removes_the_base_whichever_goes_last(tmp_path) -> None:
    base = tmp_path / "vfbase-abc.raw"
    base.write_bytes(b"\0" * 65536)
    assert _host("hold", str(base), "stackA") == "held"
    assert _host("hold", str(base), "stackB") == "held"
    _overlay(tmp_path / "disk1.qcow2", base.name)  # a relative backing name, as libvirt may write it
    _overlay(tmp_path / "disk2.qcow2", str(base))  # an absolute one
    assert _host("release", str(base), "stackA") == "kept held 1"
    assert _host("release", str(base), "stackA") == "kept held 1", "releasing twice changes nothing"
    assert _host("release", str(base), "stackB") == "kept used disk1.qcow2"
    (tmp_path / "disk1.qcow2").unlink()
    assert _host("collect", str(base)) == "kept used disk2.qcow2"
    (tmp_path / "disk2.qcow2").unlink()
    assert _host("collect", str(base)) == "removed" and not base.exists()
    assert _host("collect", str(base)) == "missing" and _host("hold", str(base), "x") == "missing"


def test_a_held_base_survives_its_last_disk(tmp_path) -> None:
    base = tmp_path / "vfbase-abc.raw"
    base.write_bytes(b"")
    _host("hold", str(base), "stackA")
    _overlay(tmp_path / "disk.qcow2", str(base))
    (tmp_path / "disk.qcow2").unlink()
    assert _host("collect", str(base)) == "kept held 1" and base.exists()
    assert _host("release", str(base), "stackA") == "removed" and not base.exists()


def test_a_base_nobody_ever_held_is_never_removed_here(tmp_path) -> None:
    """From before holders were kept: the caller decides by its own rule."""
    base = tmp_path / "vfbase-old.raw"
    base.write_bytes(b"")
    assert _host("collect", str(base)) == "untracked"
    assert _host("release", str(base), "") == "untracked" and base.exists()


def test_only_qcow2_files_naming_the_base_count_as_users(tmp_path) -> None:
    base = tmp_path / "vfbase-abc.raw"
    base.write_bytes(b"")
    (tmp_path / "notes.txt").write_text("vfbase-abc.raw")
    (tmp_path / "vfbase-other.raw").write_bytes(b"")
    _overlay(tmp_path / "other.qcow2", str(tmp_path / "vfbase-other.raw"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "plain.qcow2"), "1M"], check=True)
    assert holders.users(str(base)) == []
    _overlay(tmp_path / "mine.qcow2", str(base))
    assert holders.users(str(base)) == ["mine.qcow2"]


def test_usage_errors_are_refused(tmp_path) -> None:
    ran = subprocess.run([sys.executable, "-I", "-c", bases._SOURCE, "hold", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert ran.returncode == 2 and "usage" in ran.stderr


def test_a_full_holder_list_pins_the_base_for_good(tmp_path) -> None:
    """ext4 keeps about 4 KiB of attributes per file: past that the base is never removed automatically
    (a holder that could not be recorded must not lose its base)."""
    base = tmp_path / "vfbase-abc.raw"
    base.write_bytes(b"")
    ids = [f"{i:016x}" for i in range(400)]
    for i in ids:
        assert holders.act("hold", str(base), i) == "held"
    for i in ids:
        holders.act("release", str(base), i)
    assert holders.act("collect", str(base)) == "kept pinned" and base.exists()


def test_a_disk_names_the_resource_it_was_made_for_and_no_other_can_claim_it(tmp_path) -> None:
    base, disk = tmp_path / "vfbase-abc.raw", tmp_path / "web.qcow2"
    base.write_bytes(b"")
    _overlay(disk, str(base))
    assert _host("owner", str(disk)) == "none"
    assert _host("claim", str(disk), "p/teama/web") == "claimed"
    assert _host("claim", str(disk), "p/teama/web") == "claimed", "claiming again is the same"
    assert _host("claim", str(disk), "p/teamb/web") == "owner p/teama/web", "another resource is refused"
    assert _host("owner", str(disk)) == "owner p/teama/web"
    _overlay(tmp_path / "snap.qcow2", str(disk))  # an external snapshot on top of it
    assert _host("owner", str(disk)).splitlines() == ["owner p/teama/web", "backs snap.qcow2"]
    assert _host("owner", str(tmp_path / "gone.qcow2")) == "missing"


def test_a_network_record_is_removed_by_its_last_holder_and_a_found_one_is_pinned(tmp_path) -> None:
    made, found = tmp_path / "records" / "made", tmp_path / "records" / "found"
    assert _host("enlist", str(made), "a", "fresh") == "held" and _host("enlist", str(made), "b", "found") == "held"
    assert _host("release", str(made), "a") == "kept held 1"
    assert _host("release", str(made), "b") == "removed" and not made.exists()
    assert _host("enlist", str(found), "a", "found") == "held"  # there before any record: not virtfleet's
    assert _host("release", str(found), "a") == "kept pinned"
