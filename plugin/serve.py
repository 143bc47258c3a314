"""virtfleet's dynamic-provider host: the SDK's own provider servicer, served by more worker threads.

The SDK's host (`python -m pulumi.dynamic`) serves every dynamic resource of a run from a gRPC server with
4 worker threads, so at most 4 provider calls run at once whatever `pulumi up --parallel` allows, and
virtfleet's calls mostly wait on hosts.  This host runs the SDK's unmodified servicer code (the module
`pulumi.dynamic.__main__` without its closing `main()` call) in a server of WORKERS threads.
Pulumi.yaml `plugins:` selects it for this project only (pulumi-resource-pulumi-python beside this
file).  If the SDK's module no longer has the expected shape, it serves through the SDK's own host
unchanged and says so.

Two guards the SDK's host lacks: only the operator's own user may call it (a loopback connection's owner
is in /proc/net/tcp), and the pickled provider in each request (which the state holds) is unpickled only
as a class reference to a ResourceProvider of this project's own modules, never as code.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import importlib
import importlib.util
import io
import os
import pickle
import sys
import threading
import types
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
    needed = ("DynamicResourceProviderServicer", "provider_pb2_grpc", "_GRPC_CHANNEL_OPTIONS", "grpc", "dill")
    return namespace if all(k in namespace for k in needed) else None


class ProviderUnpickler(pickle.Unpickler):
    """Finds only ResourceProvider classes defined in the project's own modules (under `root`, outside the
    interpreter's installed packages, which a project's virtualenv puts under it too): the
    state and the requests name one by reference; anything else (a function, dill's code objects, a class
    of another package) is refused before it is imported."""

    def __init__(self, data: bytes, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.root = os.path.realpath(root)

    def _ours(self, module: str) -> bool:
        parts = module.split(".")
        if not all(p.isidentifier() for p in parts) or parts[0] == "__main__":
            return False
        loaded = sys.modules.get(parts[0])
        origin = getattr(loaded, "__file__", None) if loaded else None
        if loaded is None:
            spec = importlib.util.find_spec(parts[0])  # (a top-level find runs no module code)
            origin = spec.origin if spec is not None else None
        where = os.path.realpath(str(origin or ""))
        installed = {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        return where.startswith(self.root + os.sep) and not any(where.startswith(p) for p in installed)

    def find_class(self, module: str, name: str) -> Any:
        from pulumi.dynamic import ResourceProvider  # noqa: PLC0415 - the SDK's, loaded with the servicer
        found = getattr(importlib.import_module(module), name, None) if self._ours(module) and \
            name.isidentifier() else None
        if not (isinstance(found, type) and issubclass(found, ResourceProvider)):
            raise pickle.UnpicklingError(f"the pickled provider names {module}.{name}, which is not a dynamic "
                                         f"provider class of the project in {self.root}: refused")
        return found


def load_provider(data: bytes, root: str | None = None) -> Any:
    """A pickled provider, restricted as above: an instance of one of the project's provider classes."""
    from pulumi.dynamic import ResourceProvider  # noqa: PLC0415
    found = ProviderUnpickler(data, root or os.getcwd()).load()
    if not isinstance(found, ResourceProvider):
        raise pickle.UnpicklingError(f"the pickled provider is a {type(found).__name__}, not a provider: refused")
    return found


def peer_uid(peer: str, port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int | None:
    """The user owning the loopback connection `peer` ("ipv4:127.0.0.1:PORT") to our `port`, or None."""
    try:
        their = int(peer.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
    for table in tables:
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 7 and int(cols[1].rsplit(":", 1)[1], 16) == their \
                    and int(cols[2].rsplit(":", 1)[1], 16) == port:
                return int(cols[7])
    return None


def same_user_only(grpc: Any, port: Callable[[], int]) -> Any:
    """A server interceptor refusing every call whose connection another user owns."""

    def checked(call: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: Any) -> Any:
            uid = peer_uid(context.peer(), port())
            if uid != os.getuid():
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"virtfleet's provider host serves only uid {os.getuid()}, not {uid} "
                              f"({context.peer()})")
            return call(request, context)
        return run

    class SameUser(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
            handler = continuation(details)
            if handler is None:
                return None
            kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
            kind = next(k for k in kinds if getattr(handler, k) is not None)
            make = getattr(grpc, f"{kind}_rpc_method_handler")
            return make(checked(getattr(handler, kind)), request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

    return SameUser()


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
    bound: list[int] = []
    server = grpc.server(pool, options=sdk["_GRPC_CHANNEL_OPTIONS"],
                         interceptors=[same_user_only(grpc, lambda: bound[0])])
    sdk["dill"] = types.SimpleNamespace(loads=load_provider)  # what the servicer's get_provider calls
    sdk["provider_pb2_grpc"].add_ResourceProviderServicer_to_server(sdk["DynamicResourceProviderServicer"](), server)
    port = server.add_insecure_port(address="127.0.0.1:0")
    bound.append(port)
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
    # non-dumpable (as providers.local.childenv does for the program; this host serves other projects too): its
    # environment holds the decrypted config, which the ssh and qemu-img it starts then cannot read
    ctypes.CDLL(ctypes.util.find_library("c")).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    sdk = sdk_servicer_module()
    if sdk is None:
        print(f"virtfleet: the installed Pulumi SDK's {SDK_HOST} changed shape; serving through it unchanged "
              "(at most 4 provider calls at once, any local user may call it, and it unpickles whatever the "
              "state holds)", file=sys.stderr, flush=True)
        import pulumi.dynamic.__main__  # noqa: F401, PLC0415 - serves until the engine stops it
        return
    serve(sdk, WORKERS)


if __name__ == "__main__":
    main()
