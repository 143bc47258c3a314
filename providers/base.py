"""What the five dynamic providers share: configure, check via the spec, diff via the change table."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, ClassVar

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from providers.local.trace import trace, traced
from providers.model import changes
from providers.model.errors import ConfigError
from providers.model.host import host_connections
from providers.remote import session

PROVIDER_KEY = "__provider"
SPEC_KEY = "spec"
STATUS_KEY = "status"
GROUPS = (SPEC_KEY, STATUS_KEY)
RESTART_KEY = "restartOnUpdate"


def inputs_of(props: dict[str, Any]) -> dict[str, Any]:
    """Props without the engine's pickled provider."""
    return {k: v for k, v in props.items() if k != PROVIDER_KEY}


def flat(props: dict[str, Any]) -> dict[str, Any]:
    """The provider's view of a resource's properties: the ones grouped under `spec` and `status` (see
    `nested`) merged with the top-level ones.  State written before the grouping is flat already."""
    groups = [g for g in GROUPS if isinstance(props.get(g), dict)]
    if not groups:
        return props
    out = {k: v for k, v in props.items() if k not in groups}
    for g in groups:
        out.update(props[g])
    return out


def nested(props: dict[str, Any], top: frozenset[str], status: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The properties as the program registers them and the state keeps them: `top` keys (and the pickled
    provider) at the top level, the `status` keys (outputs the program reads) under `status`, all others
    under `spec`.  The SDK makes an Output for each top-level key of a resource and waits on all pending
    ones at every step, so a few keys instead of thirty per resource is what keeps a large stack's program
    from growing quadratically."""
    out = {k: v for k, v in props.items() if k in top or k == PROVIDER_KEY}
    seen = {k: v for k, v in props.items() if k in status}
    if seen:
        out[STATUS_KEY] = seen
    out[SPEC_KEY] = {k: v for k, v in props.items() if k not in top and k not in status and k != PROVIDER_KEY}
    return out


def _layered(name: str, fn: Any, top: frozenset[str], status: frozenset[str]) -> Any:
    """`fn` (a provider method written against flat properties) taking and returning nested ones."""
    def replaced(keys: list[str] | None) -> list[str] | None:
        return None if keys is None else sorted({k if k in top else SPEC_KEY for k in keys})

    def outs(r: Any) -> Any:
        if getattr(r, "outs", None):
            r.outs = nested(r.outs, top, status)
        return r

    def call(self: Any, *args: Any) -> Any:
        args = tuple(flat(a) if isinstance(a, dict) else a for a in args)
        r = fn(self, *args)
        if isinstance(r, CheckResult):
            return CheckResult(nested(r.inputs, top, status), r.failures)
        if isinstance(r, DiffResult):
            return DiffResult(r.changes, replaced(r.replaces), replaced(r.stables), r.delete_before_replace)
        if isinstance(r, (CreateResult, ReadResult, UpdateResult)):
            return outs(r)
        return r
    call.__name__ = call.__qualname__ = name
    call.__doc__ = fn.__doc__
    call.layered = True  # type: ignore[attr-defined]
    return call


def has_unknowns(value: Any) -> bool:
    """True when a value (or anything inside it) is not known until another resource is created."""
    if isinstance(value, dict):
        return any(has_unknowns(x) for x in value.values())
    if isinstance(value, list):
        return any(has_unknowns(x) for x in value)
    return isinstance(value, Unknown) or value == UNKNOWN


def say(message: str) -> None:
    """A line for the operator; the engine shows the provider's stderr in verbose logs."""
    print(f"virtfleet: {message}", file=sys.stderr, flush=True)
    trace(message)


class BaseProvider(ResourceProvider):
    """Subclasses set `spec_type` (with `from_props`, raising ConfigError) and `table` (the change table).

    Instances hold no state: connections live in `remote.session`'s per-process cache.
    """

    spec_type: ClassVar[Any]
    table: ClassVar[changes.Table]
    # the pickled provider (a class reference, no secrets) stays plain in the state: the SDK's default makes it
    # a secret in every resource's inputs and outputs, several times its size and a cipher call per write
    serialize_as_secret_always = False
    # Properties kept at the top level when the others are nested under `spec` (`nested`); None: all flat.
    top: ClassVar[frozenset[str] | None] = None
    # Outputs the program reads, grouped under `status` (`nested`).
    status_keys: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if os.environ.get("VIRTFLEET_TRACE"):  # every provider call, timed, in the trace file
            for name in ("check", "diff", "create", "read", "update", "delete"):
                if name in cls.__dict__:
                    setattr(cls, name, traced(name, cls.__dict__[name]))
        if cls.top is not None:  # the methods above (traced too) see flat properties, the engine nested ones
            for name in ("check", "diff", "create", "read", "update", "delete"):
                if not getattr(getattr(cls, name), "layered", False):
                    setattr(cls, name, _layered(name, getattr(cls, name), cls.top, cls.status_keys))

    def configure(self, req: ConfigureRequest) -> None:
        """The stack config arrives here before the first call: keep the key, open the hosts' connections."""
        session.set_private_key(req.config.get("virtfleet:sshPrivateKey"))
        hosts = req.config.get("virtfleet:hosts")
        if isinstance(hosts, str):
            with contextlib.suppress(ValueError):
                hosts = json.loads(hosts)
        session.warm(host_connections(hosts))

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if has_unknowns(news):  # preview with values other resources will produce: checked again at create
            return CheckResult(news, [])
        try:
            type(self).spec_type.from_props(news)
        except ConfigError as exc:
            return CheckResult(news, [CheckFailure(exc.key, str(exc))])
        # what restarts (a guest, a network) is shown by the preview when it applies; otherwise absent, as at
        # create: a no-op run's checked inputs then equal the stored ones and the engine skips rewriting the state
        restart = changes.plan(type(self).table, olds, news).restart if olds else []
        return CheckResult({**news, RESTART_KEY: ", ".join(restart)} if restart else news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        p = changes.plan(type(self).table, olds, news)
        return DiffResult(changes=p.has_changes, replaces=p.replaces, delete_before_replace=True)
