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
import subprocess
import sys


def _start_provider(argv: list[str]) -> None:
    """Have the dynamic-provider process ready (scripts/provider_handoff.py): it imports (and for
    `pulumi up` opens the hosts' connections) while the program runs, waits for the engine's launch of
    the provider plugin and becomes that provider.  The language host usually started it already: it is
    then asked to connect; else it is started here.  Keyed by the CLI's pid, the program's grandparent
    (the CLI starts the language host, which starts this)."""
    host = os.environ.get("VIRTFLEET_PROVIDER_HOST")
    if not host:
        return
    # beside this file; the process that waits for the plugin
    from provider_handoff import ask, is_update, parent_of, update_config
    try:
        cli = parent_of(os.getppid())
    except (OSError, ValueError, IndexError):
        return
    if ask(cli, {"connect": update_config(argv, os.environ)}):
        return
    subprocess.Popen([sys.executable, "-u", host, "--zygote", str(cli), *(["--connect"] if is_update(argv) else [])],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def _prehash() -> None:
    """Start hashing the stack's images (those without a build command) now, in the background, while
    the SDK and the program import: the program's own request for a digest then finds it under way
    (providers/localimage.py)."""
    sys.path.insert(0, os.getcwd())
    try:
        from providers import localimage
    except ImportError:
        return  # not a virtfleet project
    finally:
        sys.path.pop(0)
    try:
        images = json.loads(json.loads(os.environ.get("PULUMI_CONFIG") or "{}").get("virtfleet:images") or "{}")
    except ValueError:
        return  # the program reports it
    for conf in images.values() if isinstance(images, dict) else ():
        if isinstance(conf, dict) and isinstance(conf.get("path"), str) and not conf.get("build"):
            try:
                localimage.digest_of(os.path.join(".", os.path.expanduser(conf["path"])))
            except OSError:
                pass  # the program reports a missing file with its config key


def run(argv: list[str], forked: bool = False) -> int:
    """Run the program (argv: this file, the SDK's exec script, its arguments); returns its exit code.
    `forked`: this process is a fork of the waiting provider process (scripts/provider_handoff.py), which
    opens the hosts' connections itself."""
    if not forked:
        _start_provider(argv)
    _prehash()
    from sdk_patches import debug_messages, lean_stack_traces, quick_loop_executor_shutdown  # beside this file
    flush = debug_messages(bool(os.environ.get("VIRTFLEET_SDK_DEBUG")))
    lean_stack_traces()
    quick_loop_executor_shutdown()
    script = argv[1]
    sys.argv = argv[1:]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    flush()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    os._exit(run(sys.argv))


if __name__ == "__main__":
    main()
