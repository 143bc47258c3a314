"""Runs the SDK's `pulumi-language-python-exec` (the program runner), then leaves at once with its exit code.

The runner's own work ends with the program (all resource RPCs answered, output flushed); what a normal
interpreter exit adds after that (atexit handlers, gRPC teardown, joining threads, collecting every
object) took 2-5 s per run on the lab while guests booted, and the engine waits for it.  Nothing of the
program's needs it: a cluster map still being computed for a later delta is made again when needed.
The language host (scripts/langhost) starts programs through this file: `python pulumi_program_exec.py EXEC ARGS...`.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
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
