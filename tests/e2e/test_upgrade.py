"""A stack made by an older virtfleet keeps its guests: state from when each guest's disk and domain were
children of a `virtfleet:fleet:Machine` component maps onto today's URNs (aliases), real CLI and lab."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests import lab
from tests.e2e.fleet import config, guest
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e
MACHINE = "virtfleet:fleet:Machine"


def as_before(state: dict, stack: str, project: str) -> dict:
    """The deployment as the older virtfleet left it: a Machine component per guest, parent of its Volume
    and Guest (their URNs carry the parent's type)."""
    root = f"urn:pulumi:{stack}::{project}::"
    resources = state["deployment"]["resources"]
    renamed: dict[str, str] = {}
    machines = []
    stack_urn = next(r["urn"] for r in resources if r["type"] == "pulumi:pulumi:Stack")
    for r in resources:
        kind = r["type"].rsplit(":", 1)[-1]
        if kind not in ("Guest", "Volume"):
            continue
        key = r["urn"].rsplit("::", 1)[1].removesuffix("-disk")
        machine = f"{root}{MACHINE}::{key}"
        if not any(m["urn"] == machine for m in machines):
            machines.append({"urn": machine, "custom": False, "type": MACHINE, "parent": stack_urn})
        renamed[r["urn"]] = f"{root}{MACHINE}${r['type']}::{r['urn'].rsplit('::', 1)[1]}"
        r["parent"] = machine
    text = json.dumps(resources)
    for old, new in renamed.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    resources = json.loads(text)
    first = next(i for i, r in enumerate(resources) if r["urn"] in renamed.values())
    state["deployment"]["resources"] = resources[:first] + machines + resources[first:]
    return state


def test_a_stack_with_machine_components_keeps_its_guests(tmp_path, unique) -> None:
    name = f"up{unique}"
    stack = Stack(str(tmp_path), f"e2e{unique}", config({"h1": {name: guest(name, running=False)}}))
    try:
        stack.up()
        uuid = lab.virsh("h1", "domuuid", name).strip()
        old = as_before(stack.export(), stack.name, "virtfleet")
        path = os.path.join(tmp_path, "before.json")
        with open(path, "w") as f:
            json.dump(old, f)
        stack.run("stack", "import", "--file", path)
        assert any(r["type"] == MACHINE for r in stack.export()["deployment"]["resources"])

        plan = json.loads(stack.preview("--json").stdout)
        ops = {(s["urn"].rsplit("::", 1)[0].rsplit("::", 1)[1], s["op"]) for s in plan["steps"]}
        assert {op for _, op in ops if op not in ("same", "refresh")} == {"delete"}, ops
        assert {t for t, op in ops if op == "delete"} == {MACHINE}, ops

        stack.up()
        assert lab.virsh("h1", "domuuid", name).strip() == uuid  # the same domain, never replaced
        assert not any(r["type"] == MACHINE for r in stack.export()["deployment"]["resources"])
        stack.preview("--expect-no-changes")
    finally:
        stack.destroy(check=False)
        lab.virsh("h1", "undefine", name, check=False)
        lab.virsh("h1", "vol-delete", "--pool", "guests", f"{name}.qcow2", check=False)


# the last release before the layout of providers/ into model/, xml/, local/ and hostside/
LAST_RELEASE = "801e618bbc1a114bbc920714ca0fa85c1d580009"


def test_a_stack_made_by_the_last_release_runs_on_this_code_with_no_replace(tmp_path, unique) -> None:
    """State pickles each resource's provider by module path: a stack the last release made (its code
    checked out from git) previews with no changes, updates and is destroyed by today's code."""
    old_code = tmp_path / "release"
    old_code.mkdir()
    archive = subprocess.run(["git", "-C", lab.ROOT, "archive", LAST_RELEASE], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old_code)], input=archive.stdout, check=True)
    os.symlink(os.path.join(lab.ROOT, ".venv"), old_code / ".venv")
    g, net = f"rel-{unique}", f"r-{unique}"
    third = 100 + int(unique[:2], 16) % 100
    cfg = config({"h1": {g: guest(g, interfaces=[{"type": "network", "source": net, "mac": guest(g)["mac"]}])}})
    cfg["hosts"]["h1"]["networks"] = {net: {"mode": "nat", "address": f"10.92.{third}.1/24", "dhcp": True}}
    before = Stack(str(tmp_path), f"rel{unique}", cfg, project_dir=str(old_code))
    try:
        before.up()
        uuid, booted = lab.virsh("h1", "domuuid", g).strip(), lab.uptime_of("h1", g)
        now = Stack(str(tmp_path), before.name, project_dir=lab.ROOT, init=False)
        now.preview("--expect-no-changes")
        plan = json.loads(now.preview("--json").stdout)
        assert {s["op"] for s in plan["steps"]} <= {"same", "refresh"}, plan["steps"]
        now.up()
        assert lab.virsh("h1", "domuuid", g).strip() == uuid and lab.uptime_of("h1", g) == booted
        now.destroy()
        assert lab.domain_state("h1", g) == "missing" and net not in lab.virsh("h1", "net-list", "--all", "--name")
    finally:
        before.destroy(check=False)
        lab.virsh("h1", "destroy", g, check=False)
        lab.virsh("h1", "undefine", g, check=False)
        lab.virsh("h1", "vol-delete", "--pool", "guests", f"{g}.qcow2", check=False)
        lab.virsh("h1", "net-destroy", net, check=False)
        lab.virsh("h1", "net-undefine", net, check=False)
