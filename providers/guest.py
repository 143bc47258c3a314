"""Guest: a libvirt domain generated from a GuestSpec.

create: transactional (a start failure undefines what was defined); a name already used on the host
by anything else is refused, never taken over, unless the guest has `adopt: true` and the domain has no
other virtfleet owner (`takeover`: merged into its live definition, UUID and devices kept); a domain left
by an interrupted run of this same resource (same owner metadata) is reclaimed.
read: the live domain: running or not, autostart, and whether its definition drifted (only managed
fields are compared, so what libvirt adds never counts); devices added outside virtfleet are listed
(`unmanaged`, and a line in the preview), never counted as drift.  Gone only for a real "no such domain".
update: redefine with the same UUID, from the live definition with only the managed parts replaced
(devices and settings added outside survive, `merge_xml.merge`); restart (graceful shutdown, then start)
only for restart-class changes of a running guest; start/stop for `running`, and resume for a paused
guest (`running` is false while paused).  Starts go through `remote.starts`: guests starting together
on one machine run together.
delete: graceful shutdown, wait, destroy, undefine (NVRAM, managed save, snapshot metadata), then the
cloud-init seed volume.

Seeds: a guest with `cloudInit` gets a NoCloud seed ISO in its pool, named by its content, attached as a
read-only CD-ROM.  New content is a new volume (a running guest's seed is never rewritten): uploaded
before the redefinition, the old one removed once the guest no longer uses it.
Addresses: every create, update and read reports each interface's addresses (`remote.addresses`);
create and update wait up to `waitForAddress` seconds for them, and say what they waited for on giving up.
"""

from __future__ import annotations

from typing import Any

import libvirt
import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, Resource, UpdateResult

from providers.base import BaseProvider, has_unknowns, inputs_of, nested, say
from providers.local import cloudinit
from providers.model import addresses, changes, takeover
from providers.model.errors import HostError, UnsafeChangeError
from providers.model.guest import GuestSpec
from providers.remote import addresses as remote_addresses
from providers.remote import domains, session, starts, storage
from providers.xml import domain as domain_xml
from providers.xml import merge as merge_xml

# what the program reads of a guest, grouped under `status`; what only the provider reads, and the secret
# user-data (a nested value would lose its secrecy in the outputs), kept beside the nested inputs
# (`base.nested`)
OUTPUT_KEYS = frozenset(("uuid", "state", "consoleCommand", "uri", "addresses", "address", "unmanaged"))
TOP_KEYS = frozenset(("xmlDrift", "restartOnUpdate", "definedDevices", "cloudInit"))


def _macs(*interfaces: Any) -> set[str]:
    """The MACs of the interfaces virtfleet manages (from specs' interfaces or props' lists)."""
    out = set()
    for ifaces in interfaces:
        for i in ifaces or ():
            out.add(str(i.mac if hasattr(i, "mac") else i.get("mac", "")).lower())
    return out


def _managed(xml: str, macs: set[str]) -> dict[str, Any]:
    seen = merge_xml.observe_managed(xml, macs)
    seen.pop("uuid", None)
    return seen


def _ifaces(spec: GuestSpec) -> list[dict[str, Any]]:
    return [i.to_props() for i in spec.interfaces]


def _outs(spec: GuestSpec, props: dict[str, Any], dom: libvirt.virDomain,
          found: list[dict[str, Any]] | None = None, defined: list[str] | None = None) -> dict[str, Any]:
    """Outputs from the live domain.  `defined`: the ids of the devices of a definition just made (else
    the ones recorded then; state from before they were recorded takes the live ones)."""
    if found is None:
        found = remote_addresses.observe(dom, _ifaces(spec), spec.agent, spec.conn)
    live_xml = domains.inactive_xml(dom)
    uuid = dom.UUIDString()
    macs = _macs(spec.interfaces)
    drift = _managed(live_xml, macs) != _managed(domain_xml.domain(spec, uuid), macs)
    if defined is None:
        defined = props.get("definedDevices") or merge_xml.device_ids(live_xml)
    extra = merge_xml.unmanaged_devices(live_xml, defined, macs)
    c = spec.conn
    state = domains.state(dom)  # a paused guest is not running: `running: true` resumes it
    return {**inputs_of(props), "uuid": uuid, "state": state, "running": domains.is_active(dom) and state != "paused",
            "autostart": domains.autostart(dom), "xmlDrift": drift, "uri": c.uri,
            "consoleCommand": f"virsh -c {c.uri} console {spec.name}",
            "addresses": found, "address": addresses.first(found), "definedDevices": defined,
            "unmanaged": sorted(extra.values())}


def _defined(dom: libvirt.virDomain, carried: dict[str, str] | None = None) -> list[str]:
    """The ids of the devices of the definition just made, less the ones added outside that it carried."""
    return merge_xml.device_ids(domains.inactive_xml(dom), tuple(carried or ()))


def _wait_for_address(spec: GuestSpec, dom: libvirt.virDomain) -> tuple[list[dict[str, Any]] | None,
                                                                       libvirt.virDomain]:
    """(addresses after a bounded wait (waitForAddress), or None for no wait: read them once; the domain on
    the connection in use after the wait)."""
    if not spec.wait_for_address or not spec.running:
        return None, dom
    found, gave_up, dom = remote_addresses.wait(dom, _ifaces(spec), spec.agent, spec.wait_for_address, spec.conn)
    if gave_up:
        say(f"{spec.conn.host}: gave up after waitForAddress {spec.wait_for_address} s on {spec.name}'s "
            f"addresses: {gave_up}. The guest is kept; `pulumi refresh` reads its addresses later")
    return found, dom


def _put_seed(spec: GuestSpec) -> None:
    if spec.seed:
        storage.put_bytes(spec.conn, storage.pool(spec.conn, spec.seed.pool), spec.seed.volume,
                          cloudinit.iso(spec.seed.seed))


def _drop_seed(spec: GuestSpec, seed: Any) -> None:
    """Remove a seed volume (from a guest's `seed` props) that the guest no longer uses."""
    if not isinstance(seed, dict) or not seed.get("volume") or (spec.seed and spec.seed.volume == seed["volume"]):
        return
    p = storage.lookup_pool(session.virt(spec.conn), str(seed.get("pool")))
    if p is not None and storage.delete(p, str(seed["volume"])):
        say(f"{spec.conn.host}: removed {spec.name}'s old cloud-init seed {seed['volume']}")


def _apply_power(spec: GuestSpec, dom: libvirt.virDomain, restart: bool) -> None:
    if domains.autostart(dom) != spec.autostart:
        domains.set_autostart(dom, spec.autostart)
    active = domains.is_active(dom)
    if active and spec.running and restart:
        how = domains.stop(dom, spec.shutdown_timeout, spec.agent)
        say(f"{spec.conn.host}: restarted {spec.name} ({how} shutdown) to apply the change")
        starts.start(spec.conn, dom)
    elif spec.running and not active:
        starts.start(spec.conn, dom)
    elif spec.running and domains.state(dom) == "paused":
        domains.resume(dom)  # paused by hand, or left paused by a run that stopped before its guests were released
        say(f"{spec.conn.host}: resumed {spec.name}, which was paused")
    elif not spec.running and active:
        domains.stop(dom, spec.shutdown_timeout, spec.agent)


def _define_new(conn: libvirt.virConnect, spec: GuestSpec, uuid: str = "") -> libvirt.virDomain:
    """Seed, define and bring to the wanted power state; on any failure what was made is removed."""
    _put_seed(spec)
    try:
        dom = domains.define(conn, domain_xml.domain(spec, uuid))
    except BaseException:
        _drop_seed(spec.replace(seed=None), spec.seed and spec.seed.to_props())
        raise
    try:
        _apply_power(spec, dom, restart=False)
    except Exception as exc:
        try:
            domains.remove(dom, 0)
            _drop_seed(spec.replace(seed=None), spec.seed and spec.seed.to_props())
        finally:
            if not isinstance(exc, libvirt.libvirtError):
                raise exc  # already explains itself (an unreachable host): raised after the clean-up
            raise HostError(spec.conn.host, f"starting guest {spec.name!r}", str(exc),
                            "The new definition was removed again; fix the cause and run `pulumi up`") from exc
    return dom


_said: set[str] = set()


def _say_once(line: str) -> None:
    """Say a takeover's summary once per provider process: `pulumi up` checks the guest, then creates it."""
    if line not in _said:
        _said.add(line)
        say(line)


def _take_over(conn: libvirt.virConnect, spec: GuestSpec, props: dict[str, Any], dom: libvirt.virDomain,
               live_xml: str) -> CreateResult:
    """`adopt: true`: redefine a domain made outside virtfleet with its UUID, virtfleet's parts merged into its
    live definition, owner metadata written; power as an update would.  Refused with nothing changed when
    `takeover.refusal` says so; a failure after the redefinition puts the old definition back."""
    why = takeover.refusal(spec.conn.host, spec.name, spec.owner, spec.disk_path, live_xml)
    if why:
        raise UnsafeChangeError(why)
    t = takeover.plan(live_xml, spec)
    active = domains.is_active(dom)
    _say_once(takeover.summary(spec.conn.host, spec, t, active, domains.autostart(dom)))
    _put_seed(spec)
    try:
        dom = domains.define(conn, t.xml)
    except libvirt.libvirtError as exc:
        _drop_seed(spec.replace(seed=None), spec.seed and spec.seed.to_props())
        raise HostError(spec.conn.host, f"taking over guest {spec.name!r}", str(exc),
                        "Nothing changed; fix what libvirt names in the domain (`virsh edit`) and run `pulumi up`") \
            from exc
    try:
        _apply_power(spec, dom, restart=active and bool(t.restart))
    except Exception:
        domains.define(conn, live_xml)  # as it was before, without virtfleet's owner metadata
        say(f"{spec.conn.host}: {spec.name}'s previous definition was put back")
        raise
    found, dom = _wait_for_address(spec, dom)
    return CreateResult(dom.UUIDString(), _outs(spec, props, dom, found, _defined(dom, t.kept)))


def _preview_takeover(spec: GuestSpec) -> str:
    """At preview (check of a new guest with `adopt: true`): say what taking over its domain changes, or
    that there is none to take over.  Returns why it would be refused ('' if it would not)."""
    dom = domains.by_name(session.virt(spec.conn), spec.name)
    if dom is None:
        say(f"{spec.conn.host}: {spec.name} has adopt: true but no domain of that name exists: it will be created")
        return ""
    live_xml = domains.inactive_xml(dom)
    if domain_xml.observe_domain(live_xml)["owner"] == spec.owner.__dict__:
        return ""  # its own, left by an interrupted run: create takes it back as it always does
    why = takeover.refusal(spec.conn.host, spec.name, spec.owner, spec.disk_path, live_xml)
    if not why:
        t = takeover.plan(live_xml, spec)
        _say_once(takeover.summary(spec.conn.host, spec, t, domains.is_active(dom), domains.autostart(dom)))
    return why


class GuestProvider(BaseProvider):
    spec_type = GuestSpec
    table = changes.GUEST_TABLE
    top = TOP_KEYS
    status_keys = OUTPUT_KEYS

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        result = super().check(olds, news)
        if not result.failures:
            # a new guest taking over a domain: what changes is shown now (the only host access of check)
            if not olds and news.get("adopt") and not has_unknowns(news) and (spec := GuestSpec.from_props(news)).adopt:
                why = _preview_takeover(spec)
                if why:
                    result.failures.append(CheckFailure("adopt", why))
        return result

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = GuestSpec.from_props(props)
        conn = session.virt(spec.conn)
        existing = domains.by_name(conn, spec.name)
        if existing is None:
            found, dom = _wait_for_address(spec, _define_new(conn, spec))
            return CreateResult(dom.UUIDString(), _outs(spec, props, dom, found, _defined(dom)))
        live_xml = domains.inactive_xml(existing)
        owner = domain_xml.observe_domain(live_xml)["owner"]
        if owner != spec.owner.__dict__:
            if spec.adopt:
                return _take_over(conn, spec, props, existing, live_xml)
            who = f"{owner['project']}/{owner['stack']}/{owner['resource']}" if owner else \
                "something outside virtfleet"
            raise UnsafeChangeError(
                f"host {spec.conn.host}: a guest named {spec.name!r} already exists, managed by {who}: "
                "not taken over, nothing changed. Pick another name for this guest, or remove the other one"
                + ("" if owner else ", or set `adopt: true` on this guest to take it over (README: \"Taking "
                   "over a guest made by hand\")"))
        say(f"{spec.conn.host}: reclaiming {spec.name} left by an interrupted run of this stack")
        _put_seed(spec)
        dom = domains.define(conn, domain_xml.domain(spec, existing.UUIDString()))
        _apply_power(spec, dom, restart=False)
        found, dom = _wait_for_address(spec, dom)
        return CreateResult(dom.UUIDString(), _outs(spec, props, dom, found, _defined(dom)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = GuestSpec.from_props(props)
        dom = domains.by_uuid(session.virt(spec.conn), id_)
        if dom is None:
            return ReadResult(None, {})
        outs = _outs(spec, props, dom)
        if outs["unmanaged"]:
            say(f"{spec.conn.host}: {spec.name} has devices or settings virtfleet does not manage, kept at every "
                f"update: {'; '.join(outs['unmanaged'])}")
        return ReadResult(id_, outs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = GuestSpec.from_props(news)
        conn = session.virt(spec.conn)
        dom = domains.by_uuid(conn, id_)
        if dom is None:  # removed outside since the last refresh: define it again with its UUID
            dom = _define_new(conn, spec, id_)
            _drop_seed(spec, olds.get("seed"))
            found, dom = _wait_for_address(spec, dom)
            return UpdateResult(_outs(spec, news, dom, found, _defined(dom)))
        p = changes.plan(changes.GUEST_TABLE, olds, news)
        _put_seed(spec)
        live_xml = domains.inactive_xml(dom)
        macs = _macs(spec.interfaces, olds.get("interfaces"))
        defined = olds.get("definedDevices") or merge_xml.device_ids(live_xml)
        carried = merge_xml.unmanaged_devices(live_xml, defined, macs)
        dom = domains.define(conn, merge_xml.merge(live_xml, domain_xml.domain(spec, id_), macs))
        _apply_power(spec, dom, restart=changes.guest_needs_restart(p, domains.is_active(dom)))
        _drop_seed(spec, olds.get("seed"))  # after the restart: the old seed is no longer open
        found, dom = _wait_for_address(spec, dom) if p.restart or "running" in p.changed else (None, dom)
        return UpdateResult(_outs(spec, news, dom, found, _defined(dom, carried)))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = GuestSpec.from_props(props)
        dom = domains.by_uuid(session.virt(spec.conn), id_)
        if dom is not None:
            how = domains.remove(dom, spec.shutdown_timeout, spec.agent)
            say(f"{spec.conn.host}: removed {spec.name} ({how} shutdown)")
        _drop_seed(spec.replace(seed=None), props.get("seed"))


class Guest(Resource, module="virtfleet", name="Guest"):
    status: pulumi.Output[dict]  # OUTPUT_KEYS: uuid, state, uri, consoleCommand, addresses, address, unmanaged

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(GuestProvider(), name, {**nested(props, TOP_KEYS), "status": None}, opts)
