"""Runs the SDK's `pulumi-language-python-exec` (the program runner), then leaves at once with its exit code.

The runner's own work ends with the program (all resource RPCs answered, output flushed); what a normal
interpreter exit adds after that (atexit handlers, gRPC teardown, joining threads, collecting every
object) took 2-5 s per run on the lab while guests booted, and the engine waits for it.  Nothing of the
program's needs it: a cluster map still being computed for a later delta is made again when needed.
The language host (scripts/langhost) starts programs through this file: `python pulumi_program_exec.py EXEC ARGS...`.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def _prewarm(argv: list[str]) -> None:
    """For `pulumi up` of a virtfleet project: open the hosts' SSH connections now, in the background,
    while the SDK and the program import and Pulumi starts the provider process, which then finds them
    (providers/remote/session.py).  Nothing on a host changes; failures are left to the provider."""
    if "--dry_run" not in argv or argv[argv.index("--dry_run") + 1:][:1] != ["false"]:
        return
    sys.path.insert(0, os.getcwd())  # the project's own packages, as the program will see them
    try:
        from components.config import host_connections
        from providers.remote import session
    except ImportError:
        return  # not a virtfleet project
    config = json.loads(os.environ.get("PULUMI_CONFIG") or "{}")
    try:
        hosts = json.loads(config.get("virtfleet:hosts") or "{}")
    except ValueError:
        return  # the program reports it
    session.set_private_key(config.get("virtfleet:sshPrivateKey"))
    session.prewarm(host_connections(hosts))


def main() -> None:
    _prewarm(sys.argv)
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
