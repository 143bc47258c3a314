"""Network: a libvirt network on one host (NAT, routed or open with DHCP, or an existing host bridge).

create: define, start and autostart it; a network of that name that is already there is used only when
its definition is the same, otherwise refused.  read: gone, stopped, or changed outside (drift).
update: a DHCP range changes live; a change whose declared class is "restart" (mode, bridge, address,
DHCP on/off) is applied only while no running guest is plugged into it, else refused naming the guests.
delete: stacks that use one network hold it on the host (`holders`), so only the last one removes it, and
only a network virtfleet defined; it is refused while any guest defined on the host, running or not, uses it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from providers.base import BaseProvider, inputs_of, say
from providers.model import changes
from providers.model.errors import UnsafeChangeError
from providers.model.network import NetworkSpec
from providers.remote import bases, networks, session

MANAGED = ("mode", "bridge", "address", "dhcp")  # the fields read back from the network's definition


def _wanted(spec: NetworkSpec) -> dict[str, Any]:
    return {k: spec.to_props()[k] for k in MANAGED}


def _outs(spec: NetworkSpec, props: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    drift = {k: seen[k] for k in MANAGED if seen[k] != _wanted(spec)[k]}
    return {**inputs_of(props), "active": seen["active"], "drift": drift or None}


def _refuse_while_plugged_in(spec: NetworkSpec, net: Any, why: str) -> None:
    """A restart disconnects the running guests plugged in: refused while there are any."""
    attached = networks.users(net)
    if attached:
        raise UnsafeChangeError(
            f"host {spec.conn.host}: changing network {spec.name!r} ({why}) needs it restarted, which would "
            f"disconnect the running guests {', '.join(attached)}: nothing changed. Stop them first "
            "(`running: false`), apply the change, then start them again")


def _refuse_while_used(spec: NetworkSpec) -> None:
    """A network is removed only when no guest defined on the host, running or not, uses it."""
    attached = networks.guests(session.virt(spec.conn), spec.name)
    if attached:
        running = [n for n, up in attached if up]
        stopped = [n for n, up in attached if not up]
        who = " and ".join(([f"the running guests {', '.join(running)}"] if running else [])
                           + ([f"the stopped guests {', '.join(stopped)}"] if stopped else []))
        raise UnsafeChangeError(
            f"host {spec.conn.host}: network {spec.name!r} is still used by {who}: not removed. Move them to "
            "another network or remove them, then run `pulumi up` again")


class NetworkProvider(BaseProvider):
    spec_type = NetworkSpec
    table = changes.NETWORK_TABLE

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = NetworkSpec.from_props(props)
        net = networks.lookup(session.virt(spec.conn), spec.name)
        created = net is None
        if net is None:
            net = networks.define_new(spec)
        else:
            seen = networks.observe(net)
            differs = {k: seen[k] for k in MANAGED if seen[k] != _wanted(spec)[k]}
            if differs:
                raise UnsafeChangeError(
                    f"host {spec.conn.host}: a network named {spec.name!r} already exists with another "
                    f"definition ({', '.join(f'{k} {v!r}' for k, v in differs.items())}): not taken over, nothing "
                    "changed. Give this network another name, or make its settings match that one's")
            say(f"{spec.conn.host}: using the existing network {spec.name}, defined as this stack wants it")
            networks.start(spec, net)
        holder = secrets.token_hex(8)
        held = bases.hold_network(spec.conn, spec.name, holder, created) == "held"
        outs = {**_outs(spec, props, networks.observe(net)), "created": created, "holder": holder if held else ""}
        return CreateResult(f"{spec.conn.host}/{spec.name}", outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = NetworkSpec.from_props(props)
        net = networks.lookup(session.virt(spec.conn), spec.name)
        if net is None:
            return ReadResult(None, {})
        return ReadResult(id_, _outs(spec, props, networks.observe(net)))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(id_, olds, news)
        if olds.get("drift") or olds.get("active") is False:  # changed or stopped outside: converge again
            result.changes = True
        return result

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = NetworkSpec.from_props(news)
        net = networks.lookup(session.virt(spec.conn), spec.name)
        keep: dict[str, Any] = {k: olds[k] for k in ("created", "holder") if k in olds}
        if net is None:  # removed outside since the last refresh
            return UpdateResult({**_outs(spec, news, networks.observe(networks.define_new(spec))), **keep})
        seen = networks.observe(net)
        wanted = _wanted(spec)
        # what the declarations call "restart" (the preview's restartOnUpdate), against the live definition
        differ = [k for k in MANAGED if seen[k] != wanted[k]]
        restart = [k for k in differ if NetworkProvider.table.kind(k, seen[k], wanted[k]) == "restart"]
        if restart:
            _refuse_while_plugged_in(spec, net, "its " + ", ".join(restart))
            net = networks.redefine(spec, net)
            say(f"{spec.conn.host}: restarted network {spec.name} to apply its new {', '.join(restart)}")
        else:
            if "dhcp" in differ:  # a new range ("inplace"): set live, guests stay connected
                networks.set_dhcp_range(net, seen["dhcp"], wanted["dhcp"])
            networks.start(spec, net)
        return UpdateResult({**_outs(spec, news, networks.observe(net)), **keep})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = NetworkSpec.from_props(props)
        holder = str(props.get("holder") or "")
        answer = bases.release_network(spec.conn, spec.name, holder) if holder else "untracked"
        if answer.startswith("kept held"):
            say(f"{spec.conn.host}: kept network {spec.name}: {answer.split()[-1]} other stack(s) still use it")
            return
        if answer == "kept pinned" or answer != "removed" and props.get("created") is False:
            say(f"{spec.conn.host}: kept network {spec.name}: it was on the host before virtfleet used it")
            return
        net = networks.lookup(session.virt(spec.conn), spec.name)
        if net is not None:
            _refuse_while_used(spec)
            networks.remove(net)
            say(f"{spec.conn.host}: removed network {spec.name}")


class Network(Resource, module="virtfleet", name="Network"):
    active: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(NetworkProvider(), name, {**props, "active": None, "drift": None, "created": None,
                                                  "holder": None}, opts)
