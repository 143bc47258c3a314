"""Guest and Volume properties nested under `spec` (and a guest's outputs under `status`) in the program and the
state, flat in the provider's methods;
state written before the nesting still reads, diffs and deletes."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, UpdateResult

from providers.base import BaseProvider, flat, nested
from providers.guest import OUTPUT_KEYS, TOP_KEYS, GuestProvider
from providers.model.changes import VOLUME_TABLE
from providers.model.storage import VolumeSpec
from providers.volume import TOP_KEYS as VOLUME_TOP
from providers.volume import VolumeProvider

from .test_diff import OLD

pytestmark = pytest.mark.unit

TOP = frozenset(("path",))


class Recorder(BaseProvider):
    """Records what its methods are given; answers with what a provider written for flat properties would."""

    spec_type = VolumeSpec
    table = VOLUME_TABLE
    top = TOP
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        self.seen.append(("check", (olds, news)))
        return CheckResult({**news, "path": "/checked"}, [])

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        self.seen.append(("diff", (id_, olds, news)))
        return DiffResult(changes=True, replaces=["name", "pool", "path"], delete_before_replace=True)

    def create(self, props: dict[str, Any]) -> CreateResult:
        self.seen.append(("create", (props,)))
        return CreateResult("id", {**props, "path": "/p"})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.seen.append(("read", (id_, props)))
        return ReadResult(id_, {**props, "path": "/p"}) if props.get("name") != "gone" else ReadResult(None, {})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self.seen.append(("update", (id_, olds, news)))
        return UpdateResult({**news, "path": "/p"})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self.seen.append(("delete", (id_, props)))


FLAT = {"__provider": "pickled", "name": "d", "pool": "p", "capacity": 1, "path": None}
NESTED = {"__provider": "pickled", "path": None, "spec": {"name": "d", "pool": "p", "capacity": 1}}


def test_nested_and_flat_are_inverse() -> None:
    assert nested(FLAT, TOP) == NESTED
    assert flat(NESTED) == FLAT
    assert flat(FLAT) is FLAT  # state from before the nesting: as it is


@pytest.mark.parametrize("given", [NESTED, FLAT], ids=["nested", "flat state from before"])
def test_methods_see_flat_and_answer_nested(given: dict[str, Any]) -> None:
    p, Recorder.seen = Recorder(), []
    assert p.check(given, given).inputs == {**NESTED, "path": "/checked"}
    d = p.diff("id", given, given)
    assert d.replaces == ["path", "spec"] and d.changes is True and d.delete_before_replace is True
    assert p.create(given).outs == {**NESTED, "path": "/p"}
    assert p.read("id", given).outs == {**NESTED, "path": "/p"}
    assert p.update("id", given, given).outs == {**NESTED, "path": "/p"}
    p.delete("id", given)
    for name, args in Recorder.seen:
        assert all(a == FLAT for a in args if isinstance(a, dict)), name
    gone = {**given, "spec": {**given["spec"], "name": "gone"}} if "spec" in given else {**given, "name": "gone"}
    assert p.read("id", gone).outs == {}  # not found: nothing to nest


def test_status_keys_are_grouped_and_flattened() -> None:
    outs = {**FLAT, "uuid": "u", "state": "running"}
    shape = nested(outs, TOP, frozenset(("uuid", "state", "address")))
    assert shape == {**NESTED, "status": {"uuid": "u", "state": "running"}}
    assert flat(shape) == outs
    assert "status" not in nested(FLAT, TOP, frozenset(("uuid",)))  # nothing to group: no empty `status`


def test_a_subclass_is_not_nested_twice() -> None:
    class Again(Recorder):
        pass

    assert Again().create(NESTED).outs == {**NESTED, "path": "/p"}


def test_guest_program_keys() -> None:
    """The program registers one `spec` and one `status`; the user-data stays a top-level (secret) input."""
    props = {**OLD, "cloudInit": {"userData": "secret"}}
    shape = nested(props, TOP_KEYS, OUTPUT_KEYS)
    assert set(shape) - {"spec", "__provider"} == {"status", "cloudInit"} and "cloudInit" not in shape["spec"]
    assert set(shape["status"]) == {"uuid", "state"} and {"memory", "connection", "name"} <= set(shape["spec"])
    assert not OUTPUT_KEYS & TOP_KEYS


INPUTS = {k: v for k, v in OLD.items() if k not in OUTPUT_KEYS}  # what the program registers, flat


@pytest.mark.parametrize("olds", [OLD, {**nested(OLD, TOP_KEYS | OUTPUT_KEYS)}, nested(OLD, TOP_KEYS, OUTPUT_KEYS)],
                         ids=["flat", "outputs at the top level", "outputs under status"])
def test_guest_diff_earlier_layouts_against_nested_inputs(olds: dict[str, Any]) -> None:
    """Today's nested inputs against a guest's outputs in each layout state was written in: no change; a real
    change is still classed by the table, and a replacement names `spec`."""
    gp = GuestProvider()
    assert not gp.diff("u", olds, nested(INPUTS, TOP_KEYS)).changes
    d = gp.diff("u", olds, nested({**INPUTS, "memory": 2 << 30}, TOP_KEYS))
    assert d.changes and not d.replaces
    assert gp.diff("u", olds, nested({**INPUTS, "name": "g2"}, TOP_KEYS)).replaces == ["spec"]


def test_volume_check_refuses_shrink_through_the_nesting() -> None:
    vp = VolumeProvider()
    props = {"connection": {"address": "10.0.0.1", "host": "h1", "port": 22}, "pool": "p", "name": "d.qcow2",
             "capacity": 2 << 30, "mode": "overlay", "baseVolume": "b", "baseFormat": "qcow2", "deleteOnDestroy": False,
             "__provider": "x"}
    smaller = nested({**props, "capacity": 1 << 30}, VOLUME_TOP)
    failures = vp.check(nested(props, VOLUME_TOP), smaller).failures
    assert [f.property for f in failures] == ["capacity"] and "shrink" in failures[0].reason
