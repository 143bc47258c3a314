"""The dynamic-provider host: the SDK's own `pulumi.dynamic` server, with more worker threads and a quick exit.

The SDK serves every dynamic resource of a stack from one process whose gRPC server has 4 worker
threads, so at most 4 create/update/delete calls run at once whatever `pulumi up --parallel` allows
(default 8).  virtfleet's calls mostly wait on hosts (a guest start, an ACPI shutdown, an upload) and its
connections are thread-safe, so this host gives the server VIRTFLEET_PROVIDER_WORKERS threads (16) and
the engine's --parallel becomes the limit.

The engine stops a plugin with SIGINT when the update is over.  With no provider call running, this host
closes its hosts' connections and leaves at once: a normal interpreter exit (gRPC teardown) took 2-3 s
on the lab while guests booted, and the engine waits for it.  With a call still running (a cancelled
update) it takes the normal path, which lets the call finish first.
Started by the plugin `pulumi-resource-pulumi-python` (scripts/langhost/handoff.go), or, for a fast
start, by the program as soon as it starts (`--zygote CLI_PID [--connect]`, scripts/provider_handoff.py):
it then connects and imports while the program runs, and takes over the plugin's process state when the
engine launches it.
"""

from __future__ import annotations

import os
import signal
import sys

if sys.argv[1:2] == ["--zygote"]:  # started early by the program: wait to be the provider (fast start)
    import provider_handoff
    provider_handoff.become_provider(int(sys.argv[2]), connect="--connect" in sys.argv[3:])

import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent import futures  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402

WORKERS = int(os.environ.get("VIRTFLEET_PROVIDER_WORKERS", "16"))
_server = grpc.server


class _CountingPool(futures.ThreadPoolExecutor):
    """The server's pool; knows how many calls are running."""

    def __init__(self) -> None:
        super().__init__(max_workers=WORKERS, thread_name_prefix="provider")
        self.running = 0
        self._guard = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        def counted() -> Any:
            with self._guard:
                self.running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._guard:
                    self.running -= 1
        return super().submit(counted)


_pool = _CountingPool()


def _server_with_more_workers(_pool_given: futures.Executor, *args: Any, **kwargs: Any) -> grpc.Server:
    return _server(_pool, *args, **kwargs)


def _on_sigint(signum: int, frame: Any) -> None:
    if _pool.running:
        signal.default_int_handler(signum, frame)  # KeyboardInterrupt: the SDK's own orderly stop
    session = sys.modules.get("providers.remote.session")
    if session is not None:
        session.close_all(exiting=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


grpc.server = _server_with_more_workers
signal.signal(signal.SIGINT, _on_sigint)
sys.path[0] = os.getcwd()  # as under `python -m pulumi.dynamic`: the program's own modules import by name
import pulumi.dynamic.__main__  # noqa: E402, F401 - serves until the engine stops it
