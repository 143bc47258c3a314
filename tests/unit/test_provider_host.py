"""The project's dynamic-provider host (plugin/serve.py) runs the SDK's own servicer, or says it cannot."""

from __future__ import annotations

import base64
import importlib.util
import os
import pickle
import subprocess
import sys
import types

import pytest

from tests.lab import ROOT

pytestmark = pytest.mark.unit


def _serve() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("virtfleet_serve", os.path.join(ROOT, "plugin", "serve.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sdk_servicer_is_loaded_without_starting_the_sdk_server() -> None:
    serve = _serve()
    sdk = serve.sdk_servicer_module()
    assert sdk is not None, "the installed SDK's pulumi.dynamic.__main__ changed shape"
    from pulumi.runtime.proto import ResourceProviderServicer
    assert issubclass(sdk["DynamicResourceProviderServicer"], ResourceProviderServicer)
    assert sdk["PROVIDER_KEY"] == "__provider" and callable(sdk["get_provider"])


def test_a_changed_sdk_module_is_refused(monkeypatch) -> None:
    """A module whose last statement is not `main()` is not run at all (the host then falls back)."""
    serve = _serve()

    class Loader:
        @staticmethod
        def get_source(_name: str) -> str:
            return "raise SystemExit('must not run')\ndef main():\n    pass\nmain()\nprint('changed')\n"

    monkeypatch.setattr(serve.importlib.util, "find_spec",
                        lambda _name: types.SimpleNamespace(loader=Loader(), origin="/sdk/__main__.py"))
    assert serve.sdk_servicer_module() is None


def test_the_pool_counts_running_calls() -> None:
    serve = _serve()
    pool = serve._CountingPool(4)
    seen = []
    pool.submit(lambda: seen.append(pool.running)).result()
    assert seen == [1] and pool.running == 0
    pool.shutdown()


CLIENT = r'''
import base64, os, pickle, sys
import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

port, marker = sys.argv[1], sys.argv[2]

class Crafted:  # what an attacker puts in a request, or in the state's `__provider`
    def __reduce__(self):
        return (os.system, (f"id > {marker}",))

props = struct_pb2.Struct()
props.update({"__provider": base64.b64encode(pickle.dumps(Crafted())).decode()})
stub = provider_pb2_grpc.ResourceProviderStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
urn = "urn:pulumi:dev::p::pulumi-python:dynamic:Resource::x"
for name, call in (("info", lambda: stub.GetPluginInfo(empty_pb2.Empty())),
                   ("create", lambda: stub.Create(provider_pb2.CreateRequest(urn=urn, properties=props)))):
    try:
        call()
        print(name, "OK")
    except grpc.RpcError as exc:
        print(name, exc.code().name, " ".join(exc.details().split())[-300:])
'''


@pytest.fixture
def provider_host():
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "plugin", "serve.py")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def _call(port: int, marker, *as_user: str) -> dict[str, str]:
    out = subprocess.run([*as_user, sys.executable, "-c", CLIENT, str(port), str(marker)], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines()}


def test_another_local_user_is_refused_before_anything_runs(provider_host, tmp_path) -> None:
    marker = tmp_path / "ran"
    said = _call(provider_host, marker, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert said["info"].startswith("PERMISSION_DENIED") and said["create"].startswith("PERMISSION_DENIED"), said
    assert "serves only uid 0, not 65534" in said["create"]
    assert not marker.exists()


def test_the_operator_is_served_but_a_crafted_provider_never_runs(provider_host, tmp_path) -> None:
    marker = tmp_path / "ran"
    said = _call(provider_host, marker)
    assert said["info"] == "OK"
    assert said["create"].startswith("UNKNOWN") and "names posix.system, which is not a dynamic provider" \
        in said["create"], said
    assert not marker.exists()


def test_only_the_projects_provider_classes_unpickle_by_reference() -> None:
    import dill
    from pulumi.dynamic import ResourceProvider
    from pulumi.dynamic.dynamic import serialize_provider

    from providers.guest import GuestProvider
    serve = _serve()
    assert type(serve.load_provider(base64.b64decode(serialize_provider(GuestProvider())), ROOT)) is GuestProvider

    class Inline(ResourceProvider):  # defined in a program's __main__: dill pickles it whole, as code
        pass

    for refused in (dill.dumps(Inline(), recurse=True), pickle.dumps(ResourceProvider()),
                    pickle.dumps(GuestProvider), pickle.dumps({"a": 1})):
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            serve.load_provider(refused, ROOT)
