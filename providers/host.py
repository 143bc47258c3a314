"""Host: a libvirt host reached over SSH, with its storage pool.

create/update: verify SSH (pinned key) and libvirtd, record versions and KVM usability, check hostNic
BEFORE touching anything, then make the pool exist, built, active and autostarted.
delete: the pool and everything in it are kept (they hold guests' disks).
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from providers.base import BaseProvider, inputs_of
from providers.model import changes
from providers.model.host import HostSpec
from providers.remote import hostfacts, storage


def _converge(spec: HostSpec) -> dict[str, Any]:
    facts = hostfacts.facts(spec.conn, spec.host_nic)  # a missing hostNic stops here, nothing touched
    pool = storage.ensure_pool(spec.conn, spec.pool)
    if spec.virt_type == "kvm" and not facts["kvmUsable"]:
        facts["warning"] = "virtType kvm but KVM is not usable on this host: set virtType: qemu"
    return {**facts, "poolCreated": pool["created"], "poolActive": True, "uri": spec.conn.uri}


class HostProvider(BaseProvider):
    spec_type = HostSpec
    table = changes.HOST_TABLE

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = HostSpec.from_props(props)
        outs = {**inputs_of(props), **_converge(spec)}
        return CreateResult(f"{spec.conn.host}@{spec.conn.address}:{spec.conn.port}", outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = HostSpec.from_props(props)
        facts = hostfacts.facts(spec.conn)  # unreachable host: raises, never "gone"
        active = storage.pool_active(spec.conn, spec.pool.name)
        return ReadResult(id_, {**inputs_of(props), **facts, "poolActive": active})

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]):  # type: ignore[override]
        result = super().diff(id_, olds, news)
        if olds.get("poolActive") is False:  # pool removed or stopped outside: converge again
            result.changes = True
        return result

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = HostSpec.from_props(news)
        return UpdateResult({**inputs_of(news), **_converge(spec)})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None  # the pool holds guests' disks: kept on purpose


class Host(Resource, module="virtfleet", name="Host"):
    uri: pulumi.Output[str]
    libvirtVersion: pulumi.Output[str]
    qemuVersion: pulumi.Output[str]
    kvmUsable: pulumi.Output[bool]
    hostname: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(HostProvider(), name,
                         {**props, "uri": None, "libvirtVersion": None, "qemuVersion": None,
                          "kvmUsable": None, "hostname": None}, opts)
