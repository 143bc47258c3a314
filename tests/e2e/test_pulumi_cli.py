"""The pinned Pulumi CLI works offline: version, and a Python dynamic resource up + destroy."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.lab import ROOT
from tests.pulumi_cli import Stack

pytestmark = pytest.mark.e2e


def pinned_version() -> str:
    with open(os.path.join(ROOT, "scripts", "pulumi-cli.sh")) as f:
        for line in f:
            if line.startswith("PULUMI_VERSION="):
                return line.split(":-", 1)[1].split("}", 1)[0]
    raise AssertionError("no PULUMI_VERSION pin in scripts/pulumi-cli.sh")


def test_pulumi_version_is_the_pin() -> None:
    out = subprocess.run(["pulumi", "version"], capture_output=True, text=True, check=True).stdout.strip()
    assert out == pinned_version() == "v3.274.1"


PROGRAM = '''
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

class Provider(ResourceProvider):
    def create(self, props):
        with open(props["path"], "w") as f:
            f.write(props["text"])
        return CreateResult("file-1", props)

    def delete(self, _id, props):
        import os
        os.remove(props["path"])

class File(Resource):
    def __init__(self, name, path, text):
        super().__init__(Provider(), name, {"path": path, "text": text})

f = File("f", pulumi.Config().require("path"), "hello from a dynamic resource")
pulumi.export("path", f.path)
'''


def project_with(tmp_path, name: str, program: str) -> str:
    """A one-file Python project on the repo's venv."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT}/.venv\n")
    (project / "__main__.py").write_text(program)
    return str(project)


def test_up_and_destroy_of_a_dynamic_resource(tmp_path) -> None:
    project = project_with(tmp_path, "dyn", PROGRAM)
    target = tmp_path / "made-by-pulumi.txt"
    stack = Stack(str(tmp_path), "dev", project_dir=project,
                  env={"no_proxy": "*", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    stack.run("config", "set", "dyn:path", str(target))
    out = stack.up()
    assert "1 created" in out.stdout or "+ 2 created" in out.stdout, out.stdout
    assert target.read_text() == "hello from a dynamic resource"
    assert stack.outputs()["path"] == str(target)
    stack.destroy()
    assert not target.exists()


CONCURRENT = '''
import os, time
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

class Provider(ResourceProvider):
    def create(self, props):
        log = props["log"]
        with open(log, "a") as f:
            f.write(f"+ {props['i']}\\n")
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until every create has started; fail if they never do
            with open(log) as f:
                if sum(1 for line in f if line.startswith("+")) >= props["n"]:
                    return CreateResult(f"r{props['i']}", props)
            time.sleep(0.05)
        raise RuntimeError("not all creates ran at once")

class R(Resource):
    def __init__(self, i, n, log):
        super().__init__(Provider(), f"r{i}", {"i": i, "n": n, "log": log})

n = int(pulumi.Config().require("n"))
for i in range(n):
    R(i, n, pulumi.Config().require("log"))
'''


def test_dynamic_provider_host_serves_more_than_four_calls_at_once(tmp_path) -> None:
    """The SDK's dynamic-provider server has 4 threads; ours (scripts/pulumi_dynamic_host.py) has 16.

    Each create waits until all 8 have started and fails otherwise: with 4 threads they never could.
    """
    project = project_with(tmp_path, "conc", CONCURRENT)
    log = tmp_path / "starts.log"
    stack = Stack(str(tmp_path), "dev", project_dir=project)
    stack.run("config", "set", "n", "8")
    stack.run("config", "set", "log", str(log))
    out = stack.up("--parallel", "8", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert log.read_text().count("+") == 8


def test_the_provider_stops_on_the_engines_signal_after_every_run(tmp_path, unique, sweep) -> None:
    """The engine stops the provider with SIGINT at the end of a run and kills it 5 s later.  virtfleet's
    provider must stop on the signal: close its hosts' connections (traced as 'session close end') and
    exit, in every run.  It once missed the signal in about half of all runs (which thread Linux picked
    for it), so the run took 5 s more and its connections were cut."""
    from tests.e2e.fleet import config, guest
    name = f"stop-{unique}"
    sweep.append(("h1", name))
    trace = tmp_path / "trace"
    one = guest(name, shutdownTimeout=1, deleteDiskOnDestroy=True)
    stack = Stack(str(tmp_path), f"stop{unique}", config({"h1": {name: one}}), env={"VIRTFLEET_TRACE": str(trace)})
    try:
        for run in range(6):  # a create, then no-op runs while the guest boots (busy cores: how it was seen)
            trace.unlink(missing_ok=True)
            stack.up()
            lines = trace.read_text().splitlines()
            assert any(ln.endswith("session close end") for ln in lines), (run, lines[-5:])
    finally:
        stack.destroy()


MARKED = '''
import json, os, sys
import pulumi
import pulumi.dynamic
config = pulumi.Config()
with open(config.require("log"), "a") as f:
    parent = open(f"/proc/{os.getppid()}/comm").read().strip()  # the language host, unless forked
    f.write(json.dumps({"forked": parent != "virtfleet-langh", "dryRun": pulumi.runtime.is_dry_run(),
                        "cwd": os.getcwd()}) + "\\n")
print("the program says hello")
if config.get_bool("fail"):
    sys.exit(3)

class Nothing(pulumi.dynamic.ResourceProvider):
    def create(self, props):
        return pulumi.dynamic.CreateResult("n", props)

class N(pulumi.dynamic.Resource):
    def __init__(self, name):
        super().__init__(Nothing(), name, {"v": 1})

N("n")  # the engine then launches the provider
pulumi.export("answer", 42)
'''


def test_the_program_runs_in_a_fork_of_the_waiting_provider_process(tmp_path) -> None:
    """The language host starts the provider process early; it has the SDK imported, and the host's Run
    has it fork the program (scripts/provider_handoff.py).  In an `up` with a preview the waiting process
    becomes the preview's provider and leaves a copy of itself waiting, which forks the update's program.
    Output, exit codes and stack outputs come through as from a program in its own interpreter."""
    project = project_with(tmp_path, "marked", MARKED)
    log = tmp_path / "runs.jsonl"
    stack = Stack(str(tmp_path), "dev", project_dir=project)
    stack.run("config", "set", "log", str(log))

    def runs() -> list[tuple[bool, bool]]:
        seen = [json.loads(line) for line in log.read_text().splitlines()]
        log.unlink()
        assert {r["cwd"] for r in seen} == {project}
        return [(r["forked"], r["dryRun"]) for r in seen]

    out = stack.up()
    assert "the program says hello" in out.stdout and stack.outputs() == {"answer": 42}
    assert runs() == [(True, False)]
    stack.run("up", "--yes")  # a preview, then the update
    assert runs() == [(True, True), (True, False)]
    stack.run("config", "set", "fail", "true")
    for argv, expected in ((("preview",), [(True, True)]), (("up", "--yes"), [(True, True)])):
        failed = stack.run(*argv, check=False)
        assert failed.returncode != 0 and "exit code: 3" in failed.stdout + failed.stderr, failed.stdout
        assert runs() == expected


def test_a_program_in_another_directory_than_the_project_runs_in_its_own_interpreter(tmp_path) -> None:
    """The waiting process imported the project's modules from the project's root: a program elsewhere
    (Pulumi.yaml `main:`) is not forked from it, so it imports its own."""
    project = project_with(tmp_path, "elsewhere", "")
    with open(os.path.join(project, "Pulumi.yaml"), "a") as f:
        f.write("main: app/\n")
    os.mkdir(os.path.join(project, "app"))
    with open(os.path.join(project, "app", "__main__.py"), "w") as f:
        f.write(MARKED)
    log = tmp_path / "runs.jsonl"
    stack = Stack(str(tmp_path), "dev", project_dir=project)
    stack.run("config", "set", "log", str(log))
    stack.up()
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["forked"], r["dryRun"]) for r in seen] == [(False, False)]
    assert stack.outputs() == {"answer": 42}
