"""A minimal Pulumi Python language host (the `pulumi-language-python` plugin).

The upstream host is a Go module without release tags, and the Go module proxy here refuses both its
version list and commit queries (403 "This module version is not available"), so it cannot be built
offline.  This host speaks the same LanguageRuntime gRPC protocol using the stubs shipped inside the
`pulumi` Python SDK and runs programs through the SDK's own `pulumi-language-python-exec` script, which
`scripts/pulumi-cli.sh` installs next to it.  It supports what virtfleet needs: run a program from a
virtualenv (Pulumi.yaml `runtime.options.virtualenv`), pass config and secret keys, and report no
plugins to acquire (dynamic providers ship with the SDK).

Protocol contract: started as `pulumi-language-python [flags] ENGINE_ADDRESS`, it prints the port it
listens on as the first line of stdout and serves until the engine kills it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
EXEC_SCRIPT = "pulumi-language-python-exec"
PROGRAM_EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pulumi_program_exec.py")
USER_ACTIONABLE_EXIT = 32  # the exec script's "message already shown" exit code


def _virtualenv_python(info: Any) -> str:
    """The interpreter of the program's virtualenv option, else the host's own interpreter."""
    venv = ""
    if info is not None and info.HasField("options"):
        venv = str(dict(info.options).get("virtualenv", "") or "")
    if not venv:
        return sys.executable
    if not os.path.isabs(venv):
        venv = os.path.join(info.root_directory or os.getcwd(), venv)
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise FileNotFoundError(
            f"Pulumi.yaml runtime option virtualenv={venv!r} has no bin/python; create it with "
            f"`python3 -m venv {venv}` and install requirements.txt into it")
    return py


class LanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(self, engine: str, exec_dir: str) -> None:
        self.engine = engine
        self.exec_dir = exec_dir

    def Handshake(self, request, context):  # noqa: N802 (gRPC method names)
        self.engine = request.engine_address or self.engine
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):  # noqa: N802
        return plugin_pb2.PluginInfo(version=os.environ.get("VIRTFLEET_PULUMI_VERSION", "3.0.0"))

    def GetRequiredPlugins(self, request, context):  # noqa: N802
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request, context):  # noqa: N802
        return language_pb2.GetRequiredPackagesResponse()

    def GetProgramDependencies(self, request, context):  # noqa: N802
        return language_pb2.GetProgramDependenciesResponse()

    def InstallDependencies(self, request, context):  # noqa: N802
        return iter(())

    def About(self, request, context):  # noqa: N802
        return language_pb2.AboutResponse(executable=sys.executable, version=sys.version.split()[0])

    def Run(self, request, context):  # noqa: N802
        try:
            python = _virtualenv_python(request.info if request.HasField("info") else None)
        except FileNotFoundError as exc:
            return language_pb2.RunResponse(error=str(exc))
        program = request.program or "."
        if request.HasField("info") and request.info.entry_point:
            program = os.path.join(request.info.program_directory, request.info.entry_point)
        args = [python, "-u", PROGRAM_EXEC, os.path.join(self.exec_dir, EXEC_SCRIPT),
                "--monitor", request.monitor_address, "--engine", self.engine,
                "--project", request.project, "--stack", request.stack,
                "--parallel", str(request.parallel), "--dry_run", "true" if request.dryRun else "false",
                "--pwd", request.pwd]
        if request.organization:
            args += ["--organization", request.organization]
        if request.HasField("info") and request.info.root_directory:
            args += ["--root_directory", request.info.root_directory]
        args += [program, *request.args]
        env = dict(os.environ)
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        code = subprocess.run(args, env=env, cwd=request.pwd or None, check=False).returncode
        if code == 0:
            return language_pb2.RunResponse()
        if code == USER_ACTIONABLE_EXIT:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {code}")

    def Cancel(self, request, context):  # noqa: N802
        return empty_pb2.Empty()


def main(argv: list[str]) -> int:
    addresses = [a for a in argv if not a.startswith("-") and ":" in a]
    engine = addresses[-1] if addresses else ""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 400 << 20)])
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(
        LanguageHost(engine, os.environ.get("VIRTFLEET_LANGHOST_DIR", HERE)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # The engine ends a language host with SIGINT/SIGTERM: stop quietly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: os._exit(0))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
