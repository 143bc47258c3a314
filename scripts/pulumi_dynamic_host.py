"""The dynamic-provider host: the SDK's own `pulumi.dynamic` server, with more worker threads.

The SDK serves every dynamic resource of a stack from one process whose gRPC server has 4 worker
threads, so at most 4 create/update/delete calls run at once whatever `pulumi up --parallel` allows
(default 8).  virtfleet's calls mostly wait on hosts (a guest start, an ACPI shutdown, an upload) and its
connections are thread-safe, so this host gives the server VIRTFLEET_PROVIDER_WORKERS threads (16) and
the engine's --parallel becomes the limit.  Installed by scripts/pulumi-cli.sh as
pulumi-resource-pulumi-python next to the CLI.
"""

from __future__ import annotations

import os
import sys
from concurrent import futures
from typing import Any

import grpc

WORKERS = int(os.environ.get("VIRTFLEET_PROVIDER_WORKERS", "16"))
_server = grpc.server


def _server_with_more_workers(_pool: futures.Executor, *args: Any, **kwargs: Any) -> grpc.Server:
    return _server(futures.ThreadPoolExecutor(max_workers=WORKERS), *args, **kwargs)


grpc.server = _server_with_more_workers
sys.path[0] = os.getcwd()  # as under `python -m pulumi.dynamic`: the program's own modules import by name
import pulumi.dynamic.__main__  # noqa: E402, F401 - serves until the engine stops it
