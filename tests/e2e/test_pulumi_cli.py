"""The pinned Pulumi CLI works offline: version, and a Python dynamic resource up + destroy."""

from __future__ import annotations

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


def test_up_and_destroy_of_a_dynamic_resource(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: dyn\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT}/.venv\n")
    (project / "__main__.py").write_text(PROGRAM)
    target = tmp_path / "made-by-pulumi.txt"
    stack = Stack(str(tmp_path), "dev", project_dir=str(project),
                  env={"no_proxy": "*", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    stack.run("config", "set", "dyn:path", str(target))
    out = stack.up()
    assert "1 created" in out.stdout or "+ 2 created" in out.stdout, out.stdout
    assert target.read_text() == "hello from a dynamic resource"
    assert stack.outputs()["path"] == str(target)
    stack.destroy()
    assert not target.exists()
