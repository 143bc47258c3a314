"""The program runner's two changes to the SDK (scripts/sdk_patches.py): debug messages not sent unless
asked for (then from a thread, in order), and resource stack traces cut to the program's frames."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pytest

from tests import lab

pytestmark = pytest.mark.unit


def _patches() -> Any:
    return lab.script_module("sdk_patches")


class _Engine:
    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []

    def Log(self, req: Any) -> None:  # noqa: N802 - the gRPC stub's name
        self.got.append((req.message, threading.get_ident()))


@pytest.mark.parametrize("wanted", [False, True])
def test_debug_messages_are_sent_only_when_asked_for_and_then_off_the_event_loop(monkeypatch, wanted) -> None:
    from pulumi import log
    monkeypatch.setattr(log, "debug", log.debug)  # restored afterwards
    engine = _Engine()
    monkeypatch.setattr(log, "get_engine", lambda: engine)
    flush = _patches().debug_messages(wanted)
    for i in range(50):
        log.debug(f"m{i}")
    flush()
    assert [m for m, _ in engine.got] == ([f"m{i}" for i in range(50)] if wanted else [])
    assert all(t != threading.get_ident() for _, t in engine.got), "sent from the caller's thread"


class _Base:  # stands for the SDK's Resource, Custom/ComponentResource and the resource's own class
    def __init__(self) -> None:
        from pulumi.runtime import resource
        self.trace = resource._get_stack_trace()


class _Mid(_Base):
    def __init__(self) -> None:
        super().__init__()


class _Concrete(_Mid):
    def __init__(self) -> None:
        super().__init__()


class _Mine(_Concrete):
    def __init__(self) -> None:
        super().__init__()  # the trace's first frame


def _make() -> _Mine:
    return _Mine()


def test_stack_traces_keep_the_programs_frames_only(monkeypatch) -> None:
    from pulumi.runtime import resource
    monkeypatch.setattr(resource, "_get_stack_trace", resource._get_stack_trace)
    monkeypatch.chdir(lab.ROOT)
    sdk_patches = _patches()
    full = _make().trace
    sdk_patches.lean_stack_traces()
    lean = _make().trace
    here = f"file://{os.path.realpath(__file__)}"
    assert [f.pc.uri for f in lean.frames] == [here] * 3  # _Mine.__init__, _make, this test; not pytest's
    assert [f.pc.line for f in lean.frames[:2]] == [f.pc.line for f in full.frames[:2]]  # the same two calls
    assert len(full.frames) > 10  # the SDK's own: pytest's and pluggy's frames too


def test_program_frames_stop_at_the_first_frame_outside_the_project() -> None:
    sdk_patches = _patches()
    frames = sdk_patches.program_frames(sys._getframe(), "/nonexistent-root")
    assert frames == []


def test_the_loops_executor_shuts_down_without_waiting_for_its_threads(monkeypatch) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(asyncio.BaseEventLoop, "set_default_executor", asyncio.BaseEventLoop.set_default_executor)
    _patches().quick_loop_executor_shutdown()
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(executor)
    release = threading.Event()
    busy = executor.submit(release.wait, 30)
    try:
        executor.shutdown(wait=True)  # as the SDK's runner calls it: returns with the thread still busy
        assert not busy.done()
        with pytest.raises(RuntimeError):
            executor.submit(print)  # shut down all the same
    finally:
        release.set()
        busy.result(timeout=10)
        loop.close()
    other = ThreadPoolExecutor(max_workers=1)  # not the loop's: untouched
    late = other.submit(lambda: release.wait(0.2) and "done")
    other.shutdown(wait=True)
    assert late.done()
