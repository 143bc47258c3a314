"""Host provider against the lab: every method, pool creation, hostNic check before anything changes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from pulumi.dynamic import Config, ConfigureRequest

from providers.host import HostProvider
from providers.model.errors import HostError
from providers.model.host import Connection
from providers.remote import session
from tests import lab
from tests.provider.fixtures import host_props
from tests.provider.test_storage import _master_of

pytestmark = pytest.mark.provider


def test_create_read_diff_update_delete(unique) -> None:
    pool = {"name": f"p{unique}", "type": "dir", "path": f"/var/lib/virtfleet/p{unique}", "vg": ""}
    props = host_props("h2", pool=pool)
    hp = HostProvider()
    assert not hp.check({}, props).failures
    created = hp.create(props)
    try:
        outs = created.outs
        assert outs["libvirtVersion"] == "9.0.0" and outs["qemuVersion"].startswith("7.2")
        assert outs["kvmUsable"] is False  # this machine's /dev/kvm cannot run guests; we say so honestly
        assert outs["poolCreated"] is True and outs["hostname"] == "h2"
        assert f"p{unique}" in lab.virsh("h2", "pool-list", "--autostart", "--name")
        read = hp.read(created.id, outs)
        assert read.id == created.id and read.outs["poolActive"] is True
        assert not hp.diff(created.id, read.outs, props).changes
        # someone stops the pool outside: read notices, diff wants an update, update converges
        lab.virsh("h2", "pool-destroy", f"p{unique}")
        read = hp.read(created.id, outs)
        assert read.outs["poolActive"] is False and hp.diff(created.id, read.outs, props).changes
        updated = hp.update(created.id, read.outs, props)
        assert updated.outs["poolActive"] is True and updated.outs["poolCreated"] is False
        hp.delete(created.id, outs)  # the pool holds disks: kept
        assert f"p{unique}" in lab.virsh("h2", "pool-list", "--all", "--name")
    finally:
        lab.virsh("h2", "pool-destroy", f"p{unique}", check=False)
        lab.virsh("h2", "pool-undefine", f"p{unique}", check=False)


def test_missing_host_nic_is_a_clear_error_and_nothing_is_created(unique) -> None:
    pool = {"name": f"n{unique}", "type": "dir", "path": f"/var/lib/virtfleet/n{unique}", "vg": ""}
    with pytest.raises(HostError) as err:
        HostProvider().create(host_props("h1", hostNic="enp30s0", pool=pool))
    msg = str(err.value)
    assert "host h1" in msg and "no interface 'enp30s0'" in msg and "eth0" in msg and "hostNic" in msg
    assert f"n{unique}" not in lab.virsh("h1", "pool-list", "--all", "--name")


def test_check_rejects_bad_props() -> None:
    bad = host_props("h1", pool={"name": "guests", "type": "dir", "path": "relative/path"})
    failures = HostProvider().check({}, bad).failures
    assert failures and failures[0].property == "pool.path" and "absolute" in failures[0].reason


def test_logical_pool_on_a_volume_group(unique) -> None:
    """The article's LVM `guests` pool: a VG on a loop-backed PV inside lab host h3."""
    vg = f"vg{unique}"
    img = f"/var/lib/virtfleet/{vg}.img"
    setup = lab.in_host("h3", "sh", "-c", f"truncate -s 256M {img} && L=$(losetup -f --show {img}) && "
                        f"pvcreate -q $L && vgcreate -q {vg} $L && echo $L")
    loop = setup.stdout.strip().splitlines()[-1]
    pool = {"name": vg, "type": "logical", "vg": vg, "path": f"/dev/{vg}"}
    hp = HostProvider()
    try:
        created = hp.create(host_props("h3", pool=pool))
        assert created.outs["poolCreated"] is True
        assert vg in lab.virsh("h3", "pool-list", "--name")
        assert "logical" in lab.virsh("h3", "pool-dumpxml", vg)
        missing = {"name": "nosuchvg", "type": "logical", "vg": "nosuchvg", "path": "/dev/nosuchvg"}
        with pytest.raises(HostError, match="volume group 'nosuchvg' not found"):
            hp.create(host_props("h3", pool=missing))
    finally:
        lab.virsh("h3", "pool-destroy", vg, check=False)
        lab.virsh("h3", "pool-undefine", vg, check=False)
        lab.in_host("h3", "sh", "-c", f"vgremove -q -f {vg}; pvremove -q {loop}; losetup -d {loop}; rm -f {img}",
                    check=False)


def test_a_cached_connection_whose_ssh_master_died_is_replaced() -> None:
    """The SSH master under a cached libvirt connection is killed between two calls: the next call
    opens a new master and connection instead of failing on the dead one."""
    hp, props = HostProvider(), host_props("h3")
    created = hp.create(props)
    c = Connection.from_props(props["connection"])
    victims = _master_of(c)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}/cmdline") and
                                              open(f"/proc/{pid}/cmdline", "rb").read() for pid in victims):
        time.sleep(0.02)  # gone (a zombie's cmdline is empty)
    read = hp.read(created.id, created.outs)
    assert read.id == created.id and read.outs["hostname"] == "h3"
    assert len(_master_of(c)) == 1


def test_configure_opens_every_hosts_connection_in_the_background() -> None:
    """The engine configures the provider with the stack config before its first call: the hosts'
    connections open then, off the calls' path (a host listed twice, or not valid, is skipped)."""
    hosts = {f"{h}-warm": {k: p[k] for k in ("address", "user", "hostKey", "sshKeyFile")}
             for h, p in ((h, lab.connection_props(h)) for h in ("h1", "h2"))}
    hosts["bad"] = {"user": "root"}  # no address: left for the program's parse to report
    conns = [Connection.from_host_config(h, v, f"hosts.{h}") for h, v in hosts.items() if h != "bad"]
    for c in conns:
        session.forget(c)
    t0 = time.monotonic()
    HostProvider().configure(ConfigureRequest(Config({"virtfleet:hosts": json.dumps(hosts)}, "virtfleet")))
    assert time.monotonic() - t0 < 0.5, "configure must not wait for the hosts"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(session.cache_key(c) in session._virt for c in conns):
        time.sleep(0.05)
    assert all(session.virt(c).getHostname() == c.host.removesuffix("-warm") for c in conns)
