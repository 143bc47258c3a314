"""The project's dynamic-provider host (plugin/serve.py) runs the SDK's own servicer, or says it cannot."""

from __future__ import annotations

import importlib.util
import os
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
