"""A local child process whose output and run time are bounded: what runs `ssh` for a command on a host,
so that a broken or hostile host can neither fill our memory nor hold the run."""

from __future__ import annotations

import os
import selectors
import subprocess
import time

DEFAULT_LIMIT = 16 << 20  # bytes of stdout and stderr together


def bounded(argv: list[str], timeout: float, limit: int | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv, its output kept up to `limit` bytes and its run up to `timeout` seconds: past either it
    is killed (OverflowError, subprocess.TimeoutExpired), so a broken or hostile host can neither fill
    our memory nor hold the run."""
    limit = DEFAULT_LIMIT if limit is None else limit
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    assert proc.stdout is not None and proc.stderr is not None
    got: dict[int, bytearray] = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            for fd in got:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout)
                for key, _ in sel.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fd)
                    got[key.fd] += chunk
                if sum(map(len, got.values())) > limit:
                    raise OverflowError(f"printed more than {limit >> 20} MiB")
        code = proc.wait(max(0.0, deadline - time.monotonic()))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    out, err = got.values()
    return subprocess.CompletedProcess(argv, code, bytes(out), bytes(err))
