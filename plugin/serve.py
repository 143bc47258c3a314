"""virtfleet's dynamic-provider host: the SDK's own provider servicer, served by more worker threads.

The SDK's host (`python -m pulumi.dynamic`) serves every dynamic resource of a run from a gRPC server with
4 worker threads, so at most 4 provider calls run at once whatever `pulumi up --parallel` allows, and
virtfleet's calls mostly wait on hosts.  This host runs the SDK's unmodified servicer code (the module
`pulumi.dynamic.__main__` without its closing `main()` call) in a server of WORKERS threads.
Pulumi.yaml `plugins:` selects it for this project only (pulumi-resource-pulumi-python beside this
file).  If the SDK's module no longer has the expected shape, it serves through the SDK's own host
unchanged and says so.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

WORKERS = int(os.environ.get("VIRTFLEET_PROVIDER_WORKERS", "64"))
SDK_HOST = "pulumi.dynamic.__main__"


def _is_main_call(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "main")


def sdk_servicer_module() -> dict[str, Any] | None:
    """The SDK host module's namespace, run without its final `main()`; None if its shape changed."""
    spec = importlib.util.find_spec(SDK_HOST)
    if spec is None or spec.loader is None or spec.origin is None:
        return None
    tree = ast.parse(spec.loader.get_source(SDK_HOST) or "", spec.origin)  # type: ignore[attr-defined]
    if not tree.body or not _is_main_call(tree.body[-1]):
        return None
    tree.body.pop()
    namespace: dict[str, Any] = {"__name__": SDK_HOST, "__file__": spec.origin}
    exec(compile(tree, spec.origin, "exec"), namespace)  # noqa: S102 - the SDK's own installed source
    needed = ("DynamicResourceProviderServicer", "provider_pb2_grpc", "_GRPC_CHANNEL_OPTIONS", "grpc")
    return namespace if all(k in namespace for k in needed) else None


class _CountingPool(futures.ThreadPoolExecutor):
    """The server's worker pool; knows how many provider calls are running."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="provider")
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


def _exit_now() -> None:
    """The engine's stop with no call running: close the hosts' connections and leave at once (the
    interpreter's own teardown of gRPC and libvirt took seconds on a busy machine, and the engine waits)."""
    session = sys.modules.get("providers.remote.session")
    if session is not None:
        session.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def serve(sdk: dict[str, Any], workers: int) -> None:
    """As the SDK's main(), with `workers` threads: print the port, serve until interrupted."""
    grpc = sdk["grpc"]
    pool = _CountingPool(workers)
    server = grpc.server(pool, options=sdk["_GRPC_CHANNEL_OPTIONS"])
    sdk["provider_pb2_grpc"].add_ResourceProviderServicer_to_server(sdk["DynamicResourceProviderServicer"](), server)
    port = server.add_insecure_port(address="127.0.0.1:0")
    server.start()
    sys.stdout.buffer.write(f"{port}\n".encode())
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:  # the engine's stop signal
        server.stop(0)
        if not pool.running:
            _exit_now()


def main() -> None:
    sys.path[0] = os.getcwd()  # as under `python -m pulumi.dynamic`: the project's modules import by name
    sdk = sdk_servicer_module()
    if sdk is None:
        print(f"virtfleet: the installed Pulumi SDK's {SDK_HOST} changed shape; serving through it unchanged "
              "(at most 4 provider calls at once)", file=sys.stderr, flush=True)
        import pulumi.dynamic.__main__  # noqa: F401, PLC0415 - serves until the engine stops it
        return
    serve(sdk, WORKERS)


if __name__ == "__main__":
    main()
