"""Run the real `pulumi` CLI on a file backend of the test's own (or a backend the test names), with no
network."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import yaml

from tests.lab import ROOT

# Pulumi.yaml's entry that runs a project's dynamic resources on virtfleet's provider host (plugin/)
PROVIDER_HOST_PLUGINS = f"plugins:\n  providers:\n    - name: pulumi-python\n      path: {ROOT}/plugin\n"


def python_project(project: str, name: str, program: str, provider_host: bool, refresh: bool = False,
                   modules: dict[str, str] | None = None) -> str:
    """A Python project on the repo's venv: its program and `modules` (name: source); `provider_host`:
    with virtfleet's provider host; `refresh`: previews and updates refresh first, as virtfleet's
    Pulumi.yaml has it."""
    os.makedirs(project, exist_ok=True)
    with open(os.path.join(project, "Pulumi.yaml"), "w") as f:
        f.write(f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT}/.venv\n"
                + (PROVIDER_HOST_PLUGINS if provider_host else "")
                + ("options:\n  refresh: always\n" if refresh else ""))
    for module, source in {"__main__": program, **(modules or {})}.items():
        with open(os.path.join(project, f"{module}.py"), "w") as f:
            f.write(source)
    return project


def sdk_host_project(tmp: str) -> str:
    """The virtfleet project as it runs without its Pulumi.yaml `plugins:` override, i.e. on the SDK's own
    dynamic-provider host: the same program and modules (linked), a Pulumi.yaml without that entry."""
    project = os.path.join(tmp, "sdk-host-project")
    os.makedirs(project, exist_ok=True)
    for name in ("__main__.py", "providers", "components", "stacks", ".venv"):
        if not os.path.lexists(os.path.join(project, name)):
            os.symlink(os.path.join(ROOT, name), os.path.join(project, name))
    with open(os.path.join(ROOT, "Pulumi.yaml")) as f:
        doc = yaml.safe_load(f)
    assert doc.pop("plugins", None) is not None, "Pulumi.yaml has no plugins: override any more"
    with open(os.path.join(project, "Pulumi.yaml"), "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return project


class Stack:
    """A stack of the virtfleet project (or of `project_dir`) with its own backend and config file."""

    def __init__(self, tmp: str, name: str, config: dict[str, Any] | None = None, project_dir: str = ROOT,
                 env: dict[str, str | None] | None = None, init: bool = True) -> None:
        """`env` is laid over the defaults (PULUMI_BACKEND_URL: a file backend of the test's own); a value
        None removes the variable.  `init=False`: a stack someone else made (another operator's desk)."""
        self.tmp, self.name, self.project_dir = tmp, name, project_dir
        os.makedirs(os.path.join(tmp, "backend"), exist_ok=True)
        self.config_file = os.path.join(tmp, f"Pulumi.{name}.yaml")
        merged = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp}/backend", "PULUMI_CONFIG_PASSPHRASE": "test",
                  "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                  "PULUMI_HOME": os.path.join(tmp, "home"), **(env or {})}
        self.env = {k: v for k, v in merged.items() if v is not None}
        if "PULUMI_CONFIG_PASSPHRASE" in self.env:
            self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        if init:
            self.run("stack", "init", name, check=False)
            self._adopt_salt()
        if config is not None:
            self.write_config(config)

    def _adopt_salt(self) -> None:
        """`stack init` has no --config-file: it writes the new stack's passphrase salt into the project's
        own Pulumi.NAME.yaml.  Move it into this stack's config file, as a user's stack file has it, so
        the first `up` neither makes a second salt (one more key derivation, ~0.2 s of CPU) nor leaves
        a file behind in the project."""
        for stray in (os.path.join(self.project_dir, "stacks", f"Pulumi.{self.name}.yaml"),
                      os.path.join(self.project_dir, f"Pulumi.{self.name}.yaml")):
            if not os.path.exists(stray):
                continue
            with open(stray) as f:
                made = yaml.safe_load(f) or {}
            if set(made) - {"encryptionsalt"}:
                return  # a stack file someone wrote: not init's, leave it
            doc = self._config_doc()
            if "encryptionsalt" in made and "encryptionsalt" not in doc:
                doc["encryptionsalt"] = made["encryptionsalt"]
                with open(self.config_file, "w") as f:
                    yaml.safe_dump(doc, f, sort_keys=False)
            os.remove(stray)
            return

    def _config_doc(self) -> dict[str, Any]:
        """The stack's config file as a document ({} before it exists)."""
        if not os.path.exists(self.config_file):
            return {}
        with open(self.config_file) as f:
            return yaml.safe_load(f) or {}

    def write_config(self, config: dict[str, Any]) -> None:
        doc = self._config_doc()
        keep = {k: v for k, v in (doc.get("config") or {}).items() if not k.startswith("virtfleet:") or
                isinstance(v, dict) and "secure" in v}
        doc["config"] = {**keep, **{f"virtfleet:{k}": v for k, v in config.items()}}
        with open(self.config_file, "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)

    def argv(self, *args: str) -> list[str]:
        """The command line of `pulumi ARGS` on this stack and its config file."""
        argv = ["pulumi", *args, "--stack", self.name, "--non-interactive"]
        if args[0] in ("up", "preview", "refresh", "destroy", "config", "stack") and args[:2] != ("stack", "init"):
            argv += ["--config-file", self.config_file] if args[0] in ("up", "preview", "refresh", "destroy",
                                                                       "config") else []
        if args[:2] == ("stack", "init"):
            argv = ["pulumi", "stack", "init", self.name, "--non-interactive"]
        return argv

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """`pulumi ARGS` in the background (stdout and stderr together, as text, unless `popen` says)."""
        opts: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, **popen}
        return subprocess.Popen(self.argv(*args), cwd=self.project_dir, env=self.env, text=True, **opts)

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), cwd=self.project_dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", *extra, check=check)

    def preview(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("preview", *extra, check=check)

    def refresh(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("refresh", "--yes", *extra, check=check)

    def destroy(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("destroy", "--yes", "--skip-preview", check=check)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.run("stack", "output", "--json", "--show-secrets").stdout or "{}")

    def export(self) -> dict[str, Any]:
        return json.loads(self.run("stack", "export", "--show-secrets").stdout)
