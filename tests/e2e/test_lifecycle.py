"""The whole pulumi lifecycle on the lab with the real CLI: up, change, remove, drift, move, stacks, destroy.

Every claim is checked on the hosts with virsh, not with Pulumi's word.
"""

from __future__ import annotations

import re
import time

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.lab import ROOT
from tests.pulumi_cli import Stack, sdk_host_project

pytestmark = pytest.mark.e2e
TIMES: dict[str, float] = {}


def timed(label: str, fn, *args, **kwargs):
    t0 = time.monotonic()
    out = fn(*args, **kwargs)
    TIMES[label] = time.monotonic() - t0
    print(f"[e2e time] {label}: {TIMES[label]:.1f}s")
    return out


def wait_state(host: str, name: str, want: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.domain_state(host, name) == want:
            break
        time.sleep(0.3)
    return lab.domain_state(host, name)


GRPC_LOG = re.compile(r"^\s*[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.M)  # glog/absl line format


def quiet(out: str) -> str:
    """Pulumi's output without any gRPC or library log lines (e.g. fork_posix.cc's fork warnings)."""
    assert "fork_posix" not in out and not GRPC_LOG.search(out), out
    return out


@pytest.fixture(params=["project-host", "sdk-host"])
def fleet(request, tmp_path, unique):
    """Three guests on two hosts; run with the project's provider host (Pulumi.yaml `plugins:`) and
    with the SDK's own (the project without that entry): both must behave the same."""
    names = {k: f"{k}-{unique}" for k in ("a", "b", "c")}
    cfg = {"h1": {names["a"]: guest(names["a"]), names["b"]: guest(names["b"])},
           "h2": {names["c"]: guest(names["c"], deleteDiskOnDestroy=True)}}
    project = sdk_host_project(str(tmp_path)) if request.param == "sdk-host" else ROOT
    stack = Stack(str(tmp_path), f"e2e{unique}", config(cfg), project_dir=project)
    yield stack, names, cfg
    stack.destroy(check=False)
    for host, n in (("h1", names["a"]), ("h1", names["b"]), ("h2", names["c"]), ("h2", names["a"])):
        lab.virsh(host, "destroy", n, check=False)
        lab.virsh(host, "undefine", n, check=False)
        lab.virsh(host, "vol-delete", "--pool", "guests", f"{n}.qcow2", check=False)


def test_lifecycle(fleet) -> None:
    stack, n, cfg = fleet
    a, b, c = n["a"], n["b"], n["c"]

    # 1. up from empty: all guests running on their hosts; then nothing left to change
    quiet(timed("1 up from empty (3 guests, 2 hosts)", stack.up).stdout)
    assert [lab.domain_state("h1", a), lab.domain_state("h1", b), lab.domain_state("h2", c)] == ["running"] * 3
    out = stack.outputs()["guests"]
    assert out[a]["host"] == "h1" and out[a]["state"] == "running" and out[a]["mac"] == cfg["h1"][a]["mac"]
    assert out[a]["uuid"] == lab.virsh("h1", "domuuid", a).strip()
    assert out[a]["console"].endswith(f"console {a}") and out[a]["uri"].startswith("qemu+ssh://root@10.200.0.11")
    quiet(timed("1 preview --expect-no-changes", stack.preview, "--expect-no-changes").stdout)

    # 2. memory of one guest: only it is updated (same UUID, restarted); the others are untouched
    uuid_a = out[a]["uuid"]
    pids = {g: lab.uptime_of(h, g) for h, g in (("h1", a), ("h1", b), ("h2", c))}
    cfg["h1"][a]["memory"] = "192MiB"
    stack.write_config(config(cfg))
    pv = stack.preview("--diff")
    assert "restartOnUpdate" in pv.stdout and "memory" in pv.stdout
    up = timed("2 memory change of one guest", stack.up)
    assert "1 updated" in up.stdout, up.stdout
    assert lab.virsh("h1", "domuuid", a).strip() == uuid_a
    assert "196608" in lab.virsh("h1", "dumpxml", a)
    assert lab.uptime_of("h1", a) != pids[a]
    assert lab.uptime_of("h1", b) == pids[b] and lab.uptime_of("h2", c) == pids[c]

    # 4. drift, seen by a plain preview (Pulumi.yaml refresh: always) and undone by a plain up: a guest
    # stopped with virsh destroy, one paused, one powering itself off
    lab.virsh("h1", "destroy", a)
    pv = quiet(timed("4 plain preview after virsh destroy", stack.preview, "--diff").stdout)
    assert a in pv and "running" in pv and "1 to update" in pv, pv
    timed("4 plain up restarts it", stack.up)
    assert wait_state("h1", a, "running") == "running"
    lab.virsh("h1", "suspend", b)
    pv = stack.preview("--diff").stdout
    assert b in pv and "1 to update" in pv, pv
    before = lab.uptime_of("h1", b)
    stack.up()
    assert lab.domain_state("h1", b) == "running" and lab.uptime_of("h1", b) == before, "resumed, not restarted"
    time.sleep(6)  # let the payload finish booting
    found, _ = lab.read_console("h1", lab.virsh("h1", "domuuid", b).strip(), ["VIRTFLEET-PAYLOAD-SELF-POWEROFF"],
                                timeout=30, send=b"\npoweroff\n")
    assert found, "the guest did not power itself off"
    assert wait_state("h1", b, "shut off") == "shut off"
    stack.up()
    assert wait_state("h1", b, "running") == "running"
    assert stack.preview("--expect-no-changes").returncode == 0

    # 3. remove a guest: domain gone, disk kept; with deleteDiskOnDestroy the disk goes too
    del cfg["h1"][b]
    del cfg["h2"][c]
    stack.write_config(config(cfg))
    rm = timed("3 remove two guests", stack.up)
    quiet(rm.stdout)
    assert lab.domain_state("h1", b) == "missing" and lab.domain_state("h2", c) == "missing"
    assert f"{b}.qcow2" in lab.volumes("h1"), "a removed guest's disk must be kept by default"
    assert f"{c}.qcow2" not in lab.volumes("h2"), "deleteDiskOnDestroy: true removes the disk"
    assert f"kept disk {b}.qcow2" in rm.stdout

    # 5. move a guest to another host: replaced, old one removed first, and the preview says so
    cfg["h2"] = {a: cfg["h1"].pop(a)}
    stack.write_config(config(cfg))
    pv = stack.preview()
    assert "replace" in pv.stdout and "delete-replaced" in pv.stdout or "+-" in pv.stdout, pv.stdout
    timed("5 move a guest h1 -> h2", stack.up)
    assert lab.domain_state("h1", a) == "missing" and wait_state("h2", a, "running") == "running"

    # 7. destroy: hosts as they were, apart from the kept disks, which are listed
    d = timed("7 destroy", stack.destroy)
    assert lab.domain_state("h2", a) == "missing"
    assert "kept disk" in d.stdout


def test_two_stacks_share_hosts_without_touching_each_other(tmp_path, unique) -> None:
    mine, theirs = f"s1-{unique}", f"s2-{unique}"
    one = Stack(str(tmp_path / "one"), f"one{unique}", config({"h1": {mine: guest(mine)}}))
    two = Stack(str(tmp_path / "two"), f"two{unique}", config({"h1": {theirs: guest(theirs)}}))
    try:
        one.up()
        two.up()
        assert lab.domain_state("h1", mine) == lab.domain_state("h1", theirs) == "running"
        pid = lab.uptime_of("h1", mine)
        shared = [v for v in lab.volumes("h1") if v.startswith("vfbase-")]  # both stacks hold the one base
        # stack two asks for a guest with stack one's name: a clear error, not a takeover (its disk is the
        # first to be refused: it is stack one's guest's)
        clash = guest(mine, name=mine) | {"mac": "52:54:00:ee:ee:01"}
        two.write_config(config({"h1": {theirs: guest(theirs), "dup": clash}}))
        res = timed("6 name clash with another stack", two.up, check=False)
        assert res.returncode != 0
        expected = f"belongs to the guest(s) {mine} (managed by virtfleet/one{unique}/{mine})"
        assert expected in res.stdout + res.stderr
        assert lab.uptime_of("h1", mine) == pid
        two.write_config(config({"h1": {theirs: guest(theirs)}}))
        two.destroy()
        assert lab.domain_state("h1", theirs) == "missing" and lab.uptime_of("h1", mine) == pid
        assert set(shared) <= set(lab.volumes("h1")), "stack one's base stays when stack two lets go of it"
        assert one.preview("--expect-no-changes").returncode == 0
    finally:
        for s in (one, two):
            s.destroy(check=False)
        for n in (mine, theirs):
            lab.virsh("h1", "destroy", n, check=False)
            lab.virsh("h1", "undefine", n, check=False)
            lab.virsh("h1", "vol-delete", "--pool", "guests", f"{n}.qcow2", check=False)
