"""The pinned Pulumi CLI works offline: version, and a Python dynamic resource up + destroy."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.lab import ROOT
from tests.pulumi_cli import Stack, python_project

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


def project_with(tmp_path, name: str, program: str, provider_host: bool = False,
                 modules: dict[str, str] | None = None) -> str:
    return python_project(str(tmp_path / "project"), name, program, provider_host, modules=modules)


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


CONCURRENT_MODULE = '''
import time
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

class Provider(ResourceProvider):
    def create(self, props):
        log = props["log"]
        with open(log, "a") as f:
            f.write(f"+ {props['i']}\\n")
        try:
            deadline = time.time() + props["wait"]
            while time.time() < deadline:  # wait until every create has started; fail if they never do
                with open(log) as f:
                    if sum(1 for line in f if line.startswith("+")) >= props["n"]:
                        return CreateResult(f"r{props['i']}", props)
                time.sleep(0.05)
            raise RuntimeError("not all creates ran at once")
        finally:
            with open(log, "a") as f:
                f.write(f"- {props['i']}\\n")

class R(Resource):
    def __init__(self, i, n, log, wait):
        super().__init__(Provider(), f"r{i}", {"i": i, "n": n, "log": log, "wait": wait})

'''
# the provider in a module of the project, as virtfleet's: the project's provider host unpickles only those
CONCURRENT = '''
import pulumi
from conc import R

n = int(pulumi.Config().require("n"))
for i in range(n):
    R(i, n, pulumi.Config().require("log"), float(pulumi.Config().require("wait")))
'''


def _concurrent_up(tmp_path, provider_host: bool, wait: float) -> subprocess.CompletedProcess[str]:
    project = project_with(tmp_path, "conc", CONCURRENT, provider_host, {"conc": CONCURRENT_MODULE})
    stack = Stack(str(tmp_path), "dev", project_dir=project)
    stack.run("config", "set", "n", "8")
    stack.run("config", "set", "log", str(tmp_path / "starts.log"))
    stack.run("config", "set", "wait", str(wait))
    return stack.up("--parallel", "8", check=False)


def _most_at_once(log) -> int:
    """The most creates that were running at the same time, from their start (+) and end (-) lines."""
    running = most = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("+") else -1
        most = max(most, running)
    return most


def test_the_project_provider_host_serves_more_than_four_calls_at_once(tmp_path) -> None:
    """The SDK's dynamic-provider server has 4 threads; virtfleet's Pulumi.yaml override (plugin/) serves
    the SDK's servicer with 64.  Each create waits until all 8 have started and fails otherwise: with 4
    threads they never could, so an SDK upgrade that brings the limit back fails here."""
    out = _concurrent_up(tmp_path, provider_host=True, wait=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert _most_at_once(tmp_path / "starts.log") == 8
    assert "changed shape" not in out.stdout + out.stderr


def test_the_project_provider_host_runs_no_provider_pickled_as_code(tmp_path) -> None:
    """A provider defined in the program itself travels as pickled code: the project's host refuses it,
    saying why, and nothing of it runs (the SDK's own host would run it)."""
    project = project_with(tmp_path, "inline", PROGRAM, provider_host=True)
    target = tmp_path / "made-by-pulumi.txt"
    stack = Stack(str(tmp_path), "dev", project_dir=project)
    stack.run("config", "set", "inline:path", str(target))
    out = stack.up(check=False)
    assert out.returncode != 0 and "not a dynamic provider class of the project" in out.stdout + out.stderr
    assert not target.exists()


def test_the_sdk_provider_host_alone_serves_four_calls_at_once(tmp_path) -> None:
    """Without the override: the SDK's own host, whose limit of 4 the override exists for (if this starts
    failing, a new SDK lifted it and the override can go)."""
    out = _concurrent_up(tmp_path, provider_host=False, wait=3)
    assert out.returncode != 0 and "not all creates ran at once" in out.stdout + out.stderr
    assert _most_at_once(tmp_path / "starts.log") == 4


def test_the_provider_stops_on_the_engines_signal_after_every_run(tmp_path, unique, sweep) -> None:
    """The engine stops the provider with SIGINT at the end of a run and kills it 5 s later.  virtfleet's
    provider must stop on the signal: close its hosts' connections (traced as 'session close end') and
    exit, in every run."""
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

