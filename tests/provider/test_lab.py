"""The lab itself: real libvirt hosts over real SSH with pinned host keys, isolated from each other."""

from __future__ import annotations

import os
import pwd
import subprocess
import urllib.parse

import libvirt
import pytest

from providers.model.errors import HostKeyError
from providers.model.guest import GuestSpec
from providers.model.host import Connection
from providers.model.owner import Owner
from providers.remote import session
from providers.xml import domain as domain_xml
from tests import lab

pytestmark = pytest.mark.provider


def conn_of(lab_host: str, **changes: str) -> Connection:
    return Connection.from_props({**lab.connection_props(lab_host), **changes})


def test_qemu_ssh_to_every_host_with_host_key_checking(lab_info) -> None:
    for host in lab_info["hosts"]:
        c = conn_of(host)
        uri = session.libvirt_uri(c)
        assert "no_verify" not in uri
        wrapper = open(dict(p.split("=", 1) for p in uri.split("?", 1)[1].split("&"))["command"].replace("%2F", "/"))
        assert "StrictHostKeyChecking=yes" in wrapper.read()
        conn = session.virt(c)
        assert conn.getHostname() == host
        # libvirt rides on the host's master through a forwarded socket in the private runtime directory
        socket = urllib.parse.parse_qs(conn.getURI().split("?", 1)[1])["socket"][0]
        assert conn.getURI().startswith("qemu+unix:///system?") and os.path.dirname(socket) == session.runtime_dir()
        assert os.stat(session.runtime_dir()).st_mode & 0o077 == 0


def test_libvirt_falls_back_to_qemu_ssh_when_the_forwarded_socket_does_not_answer(monkeypatch) -> None:
    c = conn_of("h2", host="h2-fallback")
    session.forget(c)
    before = set(os.listdir(session.runtime_dir()))
    monkeypatch.setattr(session, "REMOTE_SOCKET", "/nonexistent/libvirt-sock")
    try:
        conn = session.virt(c)
        assert conn.getURI().startswith("qemu+ssh://") and conn.getHostname() == "h2"
        left = {f for f in set(os.listdir(session.runtime_dir())) - before if f.startswith("libvirt-")}
        assert not left, "the refused forward's socket is removed"
    finally:
        session.forget(c)


def test_forwarded_sockets_nothing_uses_are_swept() -> None:
    d = session.runtime_dir()
    dead = os.path.join(d, f"libvirt-{'0' * 12}-{2**22 + 7}-0")  # no process has this pid
    stray = os.path.join(d, f"libvirt-{'0' * 12}-{os.getpid()}-999999")  # ours, held by no connection
    for path in (dead, stray):
        open(path, "w").close()
    c = conn_of("h1", host="h1-sweep")
    session.forget(c)
    session.virt(c)
    assert not os.path.exists(dead) and not os.path.exists(stray)
    assert all(os.path.exists(p) for p in session._sockets.values())


def test_plain_libvirt_with_the_lab_known_hosts(lab_info) -> None:
    h = lab_info["hosts"]["h1"]
    wrapper = os.path.join(lab.LAB_DIR, "ssh-pinned")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec ssh -o UserKnownHostsFile={lab_info['knownHosts']} -o StrictHostKeyChecking=yes "
                f"-o BatchMode=yes \"$@\"\n")
    os.chmod(wrapper, 0o700)
    conn = libvirt.open(f"qemu+ssh://root@{h['address']}/system?keyfile={lab_info['sshKeyFile']}&command={wrapper}")
    try:
        assert conn.getHostname() == "h1"
    finally:
        conn.close()


def test_wrong_pinned_key_is_refused_with_the_fix(lab_info) -> None:
    other = lab_info["hosts"]["h2"]["hostKey"]
    c = conn_of("h1", hostKey=other, host="h1-wrongpin")
    with pytest.raises(HostKeyError) as err:
        session.virt(c)
    msg = str(err.value)
    assert "host h1-wrongpin" in msg and "does not match" in msg and "ssh-keyscan" in msg and "hostKey" in msg


def test_unpinned_unknown_key_is_refused(lab_info, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.ssh/known_hosts
    c = conn_of("h1", hostKey="", host="h1-unpinned")
    with pytest.raises(HostKeyError) as err:
        session.connect(c)
    assert "unknown: refused" in str(err.value) and "virtfleet:hosts.h1-unpinned.hostKey" in str(err.value)
    # libvirt's own ssh path is strict too: the wrapper refuses instead of trusting on first use
    session.forget(c)
    proc = subprocess.run([session._ssh_wrapper(c), "-i", lab_info["sshKeyFile"], f"root@{c.address}", "true"],
                          capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode != 0 and "Host key verification failed" in proc.stderr
    assert not (tmp_path / ".ssh" / "known_hosts").exists() or not (tmp_path / ".ssh" / "known_hosts").read_text()


def _payload_domain(name: str, disk: str) -> str:
    spec = GuestSpec(conn=conn_of("h1"), name=name, owner=Owner("virtfleet", "test", name), memory=128 << 20,
                     vcpus=1, virt_type="qemu", disk_path=disk, disk_format="qcow2", graphics="none")
    return domain_xml.domain(spec)


def test_domain_on_h1_is_invisible_on_h2(unique, sweep) -> None:
    name = f"iso-{unique}"
    sweep.append(("h1", name))
    c1 = session.virt(conn_of("h1"))
    dom = c1.defineXML(_payload_domain(name, "/var/lib/virtfleet/none.qcow2"))
    try:
        assert name in lab.domains("h1")
        assert name not in lab.domains("h2")
        with pytest.raises(libvirt.libvirtError):
            session.virt(conn_of("h2")).lookupByName(name)
    finally:
        dom.undefine()


def test_payload_boots_under_tcg_and_prints_its_marker_over_ssh(lab_info, unique, sweep) -> None:
    c = conn_of("h1")
    conn = session.virt(c)
    name = f"boot-{unique}"
    sweep.append(("h1", name))
    subprocess.run(["bash", lab.LAB_SH, "exec", "1", "mkdir", "-p", "/var/lib/virtfleet/test"], check=True)
    vol_path = f"/var/lib/virtfleet/test/{name}.qcow2"
    # copy the payload to the host over SSH (independent of virtfleet's upload path)
    subprocess.run(["scp", "-q", "-o", f"UserKnownHostsFile={lab_info['knownHosts']}", "-o", "BatchMode=yes",
                    "-i", lab_info["sshKeyFile"], lab_info["payload"], f"root@{c.address}:{vol_path}"], check=True)
    dom = conn.defineXML(_payload_domain(name, vol_path))
    try:
        assert "type='qemu'" in dom.XMLDesc(0) or 'type="qemu"' in dom.XMLDesc(0)
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        found, buf = lab.read_console("h1", dom.UUIDString(), ["VIRTFLEET-PAYLOAD-UP"], timeout=120)
        assert "VIRTFLEET-PAYLOAD-UP" in found, buf[-2000:].decode(errors="replace")
        assert dom.isActive(), "the payload must stay up after its marker"
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        lab.in_host("h1", "rm", "-f", vol_path, check=False)


def test_a_lab_host_stops_without_leftovers() -> None:
    subprocess.run(["bash", lab.LAB_SH, "start-host", "4"], check=True, capture_output=True)
    try:
        assert "h4" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.virsh("h4", "version").strip()
    finally:
        subprocess.run(["bash", lab.LAB_SH, "stop-host", "4"], check=True, capture_output=True)
    assert "h4" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert subprocess.run(["ip", "link", "show", "vfh4"], capture_output=True).returncode != 0
    procs = subprocess.run(["pgrep", "-f", ".lab/hosts/h4/"], capture_output=True, text=True).stdout
    assert procs.strip() == ""


def test_an_ssh_config_known_hosts_command_adds_no_trust(lab_info, tmp_path) -> None:
    """A KnownHostsCommand in the user's ssh_config that vouches for the host does not make an unknown
    (unpinned, not in known_hosts) host trusted: only the pin or the known_hosts files count.  (ssh reads
    the config of the user's passwd home, not $HOME: it is put there for the test and restored.)"""
    h = lab_info["hosts"]["h1"]
    vouch = tmp_path / "vouch"
    vouch.write_text(f"#!/bin/sh\necho '{h['address']} {h['hostKey']}'\n")
    vouch.chmod(0o755)
    config = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "config")
    os.makedirs(os.path.dirname(config), mode=0o700, exist_ok=True)
    saved = open(config).read() if os.path.exists(config) else None
    try:
        with open(config, "w") as f:
            f.write(f"Host {h['address']}\n  KnownHostsCommand {vouch}\n  VerifyHostKeyDNS yes\n"
                    + (saved or ""))
        c = conn_of("h1", hostKey="", host="h1-vouched")
        with pytest.raises(HostKeyError) as err:
            session.connect(c)
        assert "unknown: refused" in str(err.value)
    finally:
        if saved is None:
            os.unlink(config)
        else:
            with open(config, "w") as f:
                f.write(saved)
