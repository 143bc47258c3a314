"""Three costs of the Pulumi Python SDK on the program's critical path, removed by the program runner
(scripts/pulumi_program_exec.py) before the program runs.  All keep what a user sees.

Debug messages.  The SDK sends five debug messages per resource ("registering resource", "prepared",
"successful"...) to the engine, each as a blocking call on the program's event loop, which does nothing
else meanwhile: 208 calls kept it blocked for 0.4 s of a 10-guest `pulumi up` (the engine, busy with the
update, answers each in ~2 ms).  The engine shows them only with `--debug` (or logs them with `-v`), so
they are not sent unless the CLI was asked for that (VIRTFLEET_SDK_DEBUG, set by the language host); then
a thread sends them, in order, and the program waits for it before it exits.

Stack traces.  The SDK records with every resource the Python stack it was created from, every frame of
it: the program's few, then the runner's, runpy's, the SDK's and asyncio's.  Those made 57 KiB of a
145 KiB 10-guest state file, which the engine writes again at every step's start and end (its snapshot
saves were 40 % of its CPU time, and a step waits for its save).  The trace kept is the program's part
(the frames up to the first one outside the project, or in the virtualenv), read from the frames
without the source lines the SDK's `traceback.extract_stack()` reads for nothing.

The end.  The SDK's runner (pulumi-language-python-exec) gives the event loop a thread pool of 4 threads
per `--parallel` (64 here; each resource's registration holds one while the engine works on it) and,
once every resource is done, shuts it down waiting for each thread to exit: 0.02-0.12 s after the last
guest's start on a busy machine, before the engine may finish.  Nothing runs on them by then, and the
process leaves right after (os._exit): the wait is left out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Callable
from queue import SimpleQueue
from types import FrameType
from typing import Any


def debug_messages(wanted: bool) -> Callable[[], None]:
    """Drop the SDK's debug messages, or with `wanted` send them from a thread; returns the function to
    call before the program exits (it waits for that thread)."""
    try:
        from pulumi import log
        from pulumi.runtime.proto import engine_pb2
    except ImportError:
        return lambda: None
    blocking = log.debug
    queue: SimpleQueue[tuple[Any, Any] | None] = SimpleQueue()

    def send() -> None:
        while (item := queue.get()) is not None:
            with contextlib.suppress(Exception):  # the engine gone: nothing left to tell it
                item[0].Log(item[1])

    def debug(msg: str, resource: Any = None, stream_id: int | None = None, ephemeral: bool | None = None) -> None:
        if not wanted:
            return
        engine = log.get_engine()
        if resource is not None or engine is None:
            blocking(msg, resource, stream_id, ephemeral)
            return
        queue.put((engine, engine_pb2.LogRequest(severity=engine_pb2.DEBUG, message=msg, urn="",
                                                 streamId=stream_id or 0, ephemeral=ephemeral)))

    log.debug = debug
    if not wanted:
        return lambda: None
    sender = threading.Thread(target=send, name="virtfleet-debug-log", daemon=True)
    sender.start()

    def flush() -> None:
        queue.put(None)
        sender.join(timeout=10)
    return flush


def program_frames(frame: FrameType | None, root: str) -> list[traceback.FrameSummary]:
    """From the frame that called the third `__init__` (Resource, Custom/ComponentResource, the resource's
    own class: the SDK's rule) outwards, the frames in files under `root` but not under `sys.prefix`,
    up to the first that is not (or is not a file)."""
    inits = 0
    while frame is not None and inits < 3:
        if frame.f_code.co_name == "__init__":
            inits += 1
        frame = frame.f_back
    root = os.path.join(os.path.realpath(root), "")
    venv = os.path.join(os.path.realpath(sys.prefix), "")
    kept = []
    while frame is not None:
        name = frame.f_code.co_filename  # "<frozen runpy>", "<string>": not a file
        path = os.path.realpath(name)
        if not os.path.isabs(name) or not path.startswith(root) or path.startswith(venv):
            break
        kept.append(traceback.FrameSummary(path, frame.f_lineno, frame.f_code.co_name, lookup_line=False))
        frame = frame.f_back
    return kept


def lean_stack_traces() -> None:
    """The SDK's resource stack traces, only the program's frames (see the module's docstring)."""
    try:
        from pulumi.runtime import resource, settings
        from pulumi.runtime.proto import source_pb2
    except ImportError:
        return
    if not hasattr(resource, "_get_stack_trace") or not hasattr(resource, "_get_source_position_for_frame"):
        return  # another SDK version: left as it is

    def stack_trace() -> Any:
        root = settings.get_root_directory()
        if not isinstance(root, str) or not os.path.isdir(root):  # not configured (a test)
            root = os.getcwd()
        frames = program_frames(sys._getframe(1), root)
        return source_pb2.StackTrace(frames=[source_pb2.StackFrame(pc=resource._get_source_position_for_frame(f))
                                             for f in frames])
    resource._get_stack_trace = stack_trace


def quick_loop_executor_shutdown() -> None:
    """The event loop's default executor, once the runner sets one, shuts down without waiting for its
    idle threads (see the module's docstring)."""
    import asyncio
    import concurrent.futures
    setter = asyncio.BaseEventLoop.set_default_executor

    def set_default_executor(loop: asyncio.BaseEventLoop, executor: Any) -> None:
        if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            shutdown = executor.shutdown

            def without_waiting(wait: bool = True, *, cancel_futures: bool = False) -> None:
                shutdown(wait=False, cancel_futures=cancel_futures)
            executor.shutdown = without_waiting  # type: ignore[method-assign]
        setter(loop, executor)
    asyncio.BaseEventLoop.set_default_executor = set_default_executor  # type: ignore[method-assign]
