"""Run the real `pulumi` CLI on a file backend of the test's own, with no network."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import yaml

from tests.lab import ROOT


class Stack:
    """A stack of the virtfleet project (or of `project_dir`) with its own backend and config file."""

    def __init__(self, tmp: str, name: str, config: dict[str, Any] | None = None, project_dir: str = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.tmp, self.name, self.project_dir = tmp, name, project_dir
        os.makedirs(os.path.join(tmp, "backend"), exist_ok=True)
        self.config_file = os.path.join(tmp, f"Pulumi.{name}.yaml")
        self.env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp}/backend", "PULUMI_CONFIG_PASSPHRASE": "test",
                    "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                    "PULUMI_HOME": os.path.join(tmp, "home"), **(env or {})}
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
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

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = ["pulumi", *args, "--stack", self.name, "--non-interactive"]
        if args[0] in ("up", "preview", "refresh", "destroy", "config", "stack") and args[:2] != ("stack", "init"):
            argv += ["--config-file", self.config_file] if args[0] in ("up", "preview", "refresh", "destroy",
                                                                       "config") else []
        if args[:2] == ("stack", "init"):
            argv = ["pulumi", "stack", "init", self.name, "--non-interactive"]
        proc = subprocess.run(argv, cwd=self.project_dir, env=self.env, capture_output=True, text=True,
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
