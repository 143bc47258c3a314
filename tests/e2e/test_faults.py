"""Faults on the lab: each ends converged, with nothing lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e


def owned_domains(host: str, stack: str) -> list[str]:
    """Domains on a host whose virtfleet owner metadata names this stack (read with virsh)."""
    out = []
    for name in lab.domains(host):
        xml = lab.virsh(host, "dumpxml", name, check=False)
        if f"<virtfleet:stack>{stack}</virtfleet:stack>" in xml:
            out.append(name)
    return out


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(root: int) -> None:
    """SIGKILL a process and all its descendants at once (plugins run in process groups of their own, so the
    tree is walked): the CLI, its language host, the program and the provider die mid-run together."""
    for pid in [root, *descendants(root)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cleanup(stack: Stack, pairs: list[tuple[str, str]]) -> None:
    stack.destroy(check=False)
    for host, name in pairs:
        lab.virsh(host, "destroy", name, check=False)
        lab.virsh(host, "undefine", name, check=False)
        lab.virsh(host, "vol-delete", "--pool", "guests", f"{name}.qcow2", check=False)


def test_one_host_down_during_up(tmp_path, unique) -> None:
    a, b = f"hd1-{unique}", f"hd3-{unique}"
    stack = Stack(str(tmp_path), f"down{unique}", config({"h1": {a: guest(a)}, "h3": {b: guest(b)}}))
    subprocess.run(["bash", lab.LAB_SH, "stop-host", "3"], check=True, capture_output=True)
    try:
        res = stack.up(check=False)
        text = res.stdout + res.stderr
        assert res.returncode != 0
        assert "host h3" in text and "10.200.0.13" in text, text[-1500:]
        assert lab.domain_state("h1", a) == "running", "the reachable host's changes must be applied"
    finally:
        subprocess.run(["bash", lab.LAB_SH, "start-host", "3"], check=True, capture_output=True)
    try:
        stack.up()
        assert lab.domain_state("h3", b) == "running" and lab.domain_state("h1", a) == "running"
        assert stack.preview("--expect-no-changes").returncode == 0
    finally:
        cleanup(stack, [("h1", a), ("h3", b)])


def test_libvirtd_restarted_in_the_middle_of_a_run(tmp_path, unique) -> None:
    names = [f"lr{i}-{unique}" for i in range(4)]
    stack = Stack(str(tmp_path), f"lvr{unique}", config({"h1": {n: guest(n) for n in names}}))
    proc = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack.name,
                             "--config-file", stack.config_file], cwd=lab.ROOT, env=stack.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n in lab.domains("h1") for n in names):
            time.sleep(0.1)
        subprocess.run(["bash", lab.LAB_SH, "restart-libvirtd", "1"], check=True, capture_output=True)
        proc.communicate(timeout=300)
        stack.up()  # whatever the first run managed, the next converges
        assert sorted(owned_domains("h1", stack.name)) == sorted(names)
        assert all(lab.domain_state("h1", n) == "running" for n in names)
        assert stack.preview("--expect-no-changes").returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(stack, [("h1", n) for n in names])


# the README's step for a file backend whose CLI was killed while writing the state's metadata file
README_ATTRS_FIX = """find "${PULUMI_BACKEND_URL#file://}/.pulumi/stacks" -name '*.attrs' -size 0 -delete"""


@pytest.mark.parametrize("skip_checkpoints", [False, True], ids=["checkpoints", "PULUMI_SKIP_CHECKPOINTS"])
def test_sigkill_mid_run_then_documented_recovery(tmp_path, unique, skip_checkpoints) -> None:
    """With PULUMI_SKIP_CHECKPOINTS (README "Large fleets") the killed run leaves no state of what it made: the
    next up takes back its own guests and disks (owner metadata, expected backing file), never a second copy."""
    names = [f"kill{i}-{unique}" for i in range(3)]
    stack = Stack(str(tmp_path), f"kill{unique}", config({"h1": {names[0]: guest(names[0])},
                                                          "h2": {n: guest(n) for n in names[1:]}}),
                  env={"PULUMI_SKIP_CHECKPOINTS": "true" if skip_checkpoints else None})
    proc = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack.name,
                             "--config-file", stack.config_file], cwd=lab.ROOT, env=stack.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (set(names) & set(lab.domains("h1") + lab.domains("h2"))):
            time.sleep(0.05)
        kill_tree(proc.pid)
        proc.wait(30)
        if skip_checkpoints:  # nothing of the killed run in the state: the up below must find its own leftovers
            kept = stack.export().get("deployment", {}).get("resources") or []
            assert not [r for r in kept if r["type"].endswith(("virtfleet:Guest", "virtfleet:Volume"))]
        # the README's recovery: cancel a held lock if any, refresh clearing pending creates, up
        stack.run("cancel", "--yes", check=False)
        with open(os.path.join(lab.ROOT, "README.md")) as f:
            assert README_ATTRS_FIX in f.read()
        subprocess.run(["bash", "-c", README_ATTRS_FIX], env=stack.env, check=True)  # (a kill mid-write, rare)
        stack.refresh("--clear-pending-creates", check=False)
        stack.up()
        assert sorted(owned_domains("h1", stack.name) + owned_domains("h2", stack.name)) == sorted(names)
        for host, n in [("h1", names[0]), ("h2", names[1]), ("h2", names[2])]:
            assert lab.domain_state(host, n) == "running"
            assert lab.volumes(host).count(f"{n}.qcow2") == 1
        assert stack.preview("--expect-no-changes").returncode == 0
    finally:
        cleanup(stack, [("h1", names[0]), ("h2", names[1]), ("h2", names[2])])


def test_guest_removed_outside_is_recreated_on_its_kept_disk(tmp_path, unique) -> None:
    g = f"out-{unique}"
    stack = Stack(str(tmp_path), f"out{unique}", config({"h1": {g: guest(g)}}))
    try:
        stack.up()
        inode = lab.in_host("h1", "stat", "-c", "%i", f"/var/lib/virtfleet/guests/{g}.qcow2").stdout
        uuid = lab.virsh("h1", "domuuid", g).strip()
        lab.virsh("h1", "destroy", g)
        lab.virsh("h1", "undefine", g)
        ref = stack.refresh()
        assert "deleted" in ref.stdout or "- " in ref.stdout, ref.stdout
        stack.up()
        assert lab.domain_state("h1", g) == "running"
        assert lab.in_host("h1", "stat", "-c", "%i", f"/var/lib/virtfleet/guests/{g}.qcow2").stdout == inode
        assert lab.virsh("h1", "domuuid", g).strip() != "" and uuid
    finally:
        cleanup(stack, [("h1", g)])
