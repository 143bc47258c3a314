"""SSH to the hosts: ONE OpenSSH master connection per host, shared by every virtfleet process of a run.

The master (ControlMaster) carries libvirt's qemu+ssh RPC (see `session`), its upload streams and every
remote command as multiplexed sessions, so a run pays one SSH handshake per host.  (paramiko's
pure-Python transport is the slower of the two, so bulk image data rides OpenSSH; paramiko checks a
configured private key before anything connects.)

The masters live in a per-user runtime directory (0700, checked): the provider process opens them as soon
as it is configured, other processes of the run find them, and at its exit it leaves them: a master
nobody uses exits after PERSIST, and until then the next provider process (the update after `pulumi up`'s
refresh, the next command) rides on it.  A file lock makes one master per host even across processes.

Host keys are always verified: against the pinned `hostKey` when the stack gives one, otherwise against
the user's ~/.ssh/known_hosts, strictly.  An unknown or changed key is refused with the fix.  The private
key comes from the stack secret `virtfleet:sshPrivateKey` (held in memory; written 0600 into the private
runtime directory only while the master authenticates, then removed), else `sshKeyFile`, else the agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from providers.local.bounded import bounded
from providers.local.childenv import child_env
from providers.model.errors import HostError, HostKeyError
from providers.model.host import Connection
from providers.remote import hostkeys, rundir
from providers.remote.rundir import runtime_dir, sweep

_lock = threading.Lock()
CacheKey = tuple[str, int, str, str, str, str]
_host_locks: dict[tuple[str, CacheKey], threading.Lock] = {}
_masters: dict[CacheKey, str] = {}  # the control sockets of the masters this process used


@dataclass
class _Process:
    """What this process holds: the configured private key and its digest."""

    key: str = ""
    key_digest: str = ""


_this = _Process()
SSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"
MAX_ANSWER = 16 << 20  # the most a command on a host may print (stdout and stderr together)
PERSIST = "20s"  # a master with no session left (its processes exited or were killed) exits after this


def set_private_key(material: str | None) -> None:
    """Called from the providers' `configure` with the stack secret; kept in this process only."""
    _this.key = material or ""
    _this.key_digest = hashlib.sha256(material.encode()).hexdigest()[:16] if material else ""


def cache_key(c: Connection) -> CacheKey:
    """Connections are shared only when everything that authenticates them is the same, the configured
    private key included (by its digest: a master opened with one stack's key never serves another's)."""
    return (c.address, c.port, c.user, c.host_key, c.ssh_key_file, _this.key_digest)


def host_lock(c: Connection, what: str = "ssh") -> threading.Lock:
    """One lock per host and kind ("ssh": its master, "virt": its libvirt connection): a command may run
    while libvirt connects."""
    with _lock:
        return _host_locks.setdefault((what, cache_key(c)), threading.Lock())


def check_private_key() -> None:
    """A configured `virtfleet:sshPrivateKey` must be a usable key: refused with the fix before connecting."""
    if _this.key:
        hostkeys.check_private_key(_this.key)


def tag(c: Connection) -> str:
    """A short name for everything that authenticates a connection (its files in the runtime dir)."""
    return hashlib.sha256(repr(cache_key(c)).encode()).hexdigest()[:12]


def _known_hosts(c: Connection) -> list[str]:
    if not c.host_key:
        return []
    return hostkeys.options(c, os.path.join(runtime_dir(), f"known_hosts-{tag(c)}"))


def control_path(c: Connection) -> str:
    return os.path.join(runtime_dir(), f"cm-{tag(c)}")


# what a user's ~/.ssh/config may turn on that no virtfleet connection wants: forwarding the agent or X
# to the host, port forwardings, a tunnel, a local command, a remote command instead of ours
NO_EXTRAS = ("ForwardAgent=no", "ForwardX11=no", "ForwardX11Trusted=no", "ClearAllForwardings=yes", "Tunnel=no",
             "PermitLocalCommand=no", "RemoteCommand=none", "RequestTTY=no")


def ssh_options(c: Connection) -> list[str]:
    """What every ssh we run gets: strict host keys (from the pin or the known_hosts files only: no
    ssh_config command or DNS record adds trust), no prompts, nothing of ssh_config's forwardings or
    commands, our ciphers, the host's master socket."""
    return ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            *(arg for opt in NO_EXTRAS for arg in ("-o", opt)),
            "-o", "KnownHostsCommand=none", "-o", "VerifyHostKeyDNS=no", "-o", "UpdateHostKeys=no",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3", "-o", f"Ciphers={SSH_CIPHERS}",
            *_known_hosts(c), "-o", f"ControlPath={control_path(c)}"]


def _classify(c: Connection, stderr: str) -> HostError:
    text = stderr.strip()
    if "IDENTIFICATION HAS CHANGED" in text or "key for" in text and "differs" in text:
        got = next((ln for ln in text.splitlines() if "fingerprint for the" in ln or ln.startswith("SHA256:")), "")
        return HostKeyError(c.host, f"SSH to {c.address}:{c.port}",
                            f"the host key does not match the pinned/known key: refused {got.strip()[:120]}",
                            "If the host was really reinstalled, " + hostkeys.pin_fix(c))
    if "Host key verification failed" in text or "host key is known" in text:
        return HostKeyError(c.host, f"SSH to {c.address}:{c.port}", "the host key is unknown: refused",
                            hostkeys.pin_fix(c) + ", or add it to ~/.ssh/known_hosts")
    if "Permission denied" in text:
        return HostError(c.host, f"SSH to {c.user}@{c.address}:{c.port}", text.splitlines()[-1],
                         "Check the user, the key (virtfleet:sshPrivateKey or sshKeyFile) and sshd on the host")
    return HostError(c.host, f"SSH to {c.address}:{c.port}", text.splitlines()[-1] if text else "ssh failed",
                     "Check that the host is up and the address and port are right")


def _start_master(c: Connection, ctl: str) -> None:
    """Open the host's one SSH connection: authenticate, then background it with its control socket."""
    check_private_key()
    d = runtime_dir()
    key_args: list[str] = []
    secret = ""
    if _this.key:
        sweep(d, "id", 3, 1)  # key files of killed processes (`id-PID-THREAD`)
        secret = os.path.join(d, f"id-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_this.key.rstrip("\n") + "\n")
        key_args = ["-i", secret, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    elif c.ssh_key_file:
        key_args = ["-i", os.path.expanduser(c.ssh_key_file), "-o", "IdentitiesOnly=yes"]
    argv = [ssh_binary(), *ssh_options(c), *key_args, "-o", "ControlMaster=yes", "-o", f"ControlPersist={PERSIST}",
            "-N", "-f", "-p", str(c.port), "-l", c.user, "--", c.address]
    try:
        with tempfile.TemporaryFile(dir=d) as err:  # not a pipe: the backgrounded master keeps no end of it
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    timeout=40, env=ssh_env()).returncode
            except subprocess.TimeoutExpired as exc:
                raise HostError(c.host, f"SSH to {c.address}:{c.port}", "no answer within 40 s",
                                "Check that the host is up and the address and port are right") from exc
            err.seek(0)
            stderr = err.read().decode(errors="replace")
    finally:
        if secret:
            os.unlink(secret)  # the master has authenticated; the key is not needed on disk again
    if rc != 0 or not os.path.exists(ctl):
        raise _classify(c, stderr)


def ssh_env() -> dict[str, str]:
    """The environment of the ssh processes we start: ours without Pulumi's variables, which may hold the
    decrypted stack config or its passphrase (a master outlives the run by up to PERSIST), and without
    other credentials (`childenv`)."""
    return child_env(os.environ)


def ssh_binary() -> str:
    path = shutil.which("ssh")
    if path is None:
        raise HostError("-", "starting ssh", "the OpenSSH client `ssh` is not installed on this machine",
                        "Install it (Debian: apt install openssh-client), libvirt's qemu+ssh needs it too")
    return path


def alive(ctl: str) -> bool:
    """Whether a master listens on the control socket; a stale socket (its master was killed) is removed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(ctl)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(ctl)
            return False


@contextlib.contextmanager
def _across_processes(ctl: str) -> Iterator[None]:
    """Held while a master is checked and started: two processes never start two masters for one host."""
    fd = os.open(f"{ctl}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def connect(c: Connection) -> str:
    """The host's master connection (started when missing or gone); returns its control socket."""
    k = cache_key(c)
    with host_lock(c):
        ctl = control_path(c)
        if _masters.get(k) != ctl or not alive(ctl):
            with _across_processes(ctl):
                if not alive(ctl):
                    _start_master(c, ctl)
        _masters[k] = ctl
        return ctl


def forget_master(c: Connection) -> None:
    """Close the host's master now (after a failure), so the next use opens a new one."""
    with host_lock(c):
        ctl = _masters.pop(cache_key(c), None)
        if ctl and os.path.exists(ctl):
            _control(ctl, "exit")


def release_masters() -> None:
    """At the end of a process.  The masters it used are left to exit on their own once unused for PERSIST,
    so the next process reuses them: `pulumi up` refreshes in one provider process and updates in a new
    one, and a command run right after another needs no new SSH handshakes either.  Only in a private
    runtime directory, removed here, are they stopped first (each once no other session rides on it)."""
    if rundir.is_own():
        for proc in [_control_start(ctl, "stop") for ctl in _masters.values() if os.path.exists(ctl)]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        rundir.remove_own()
    _masters.clear()


def _control_start(ctl: str, command: str, *extra: str) -> subprocess.Popen[bytes]:
    """`exit`: close the master on this control socket now; `stop`: once its sessions are done; `forward`
    with `-L LOCAL:REMOTE`: a new forwarding (the host name is not used with a ControlPath)."""
    return subprocess.Popen([ssh_binary(), "-o", f"ControlPath={ctl}", "-O", command, *extra, "virtfleet-host"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ssh_env())


def forward(c: Connection, local: str, remote: str) -> bool:
    """Have the host's master forward the local unix socket `local` (in the private runtime directory) to
    the host's unix socket `remote`; False if the master refuses."""
    proc = _control_start(connect(c), "forward", "-L", f"{local}:{remote}")
    try:
        return proc.wait(timeout=10) == 0 and os.path.exists(local)
    except subprocess.TimeoutExpired:
        proc.kill()
        return False


def _control(ctl: str, command: str) -> None:
    proc = _control_start(ctl, command)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _session_argv(c: Connection, argv: list[str]) -> list[str]:
    """An ssh command line running argv (quoted word by word: no injection) as a session of the master."""
    return [ssh_binary(), *ssh_options(c), "-o", "ControlMaster=no", "-T", "-p", str(c.port), "-l", c.user, "--",
            c.address, shlex.join(argv)]


def popen(c: Connection, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a command on the host as a session of its master, with pipes to its stdin, stdout and stderr
    (the master takes the pipes over: no process of ours copies the data in between)."""
    connect(c)
    return subprocess.Popen(_session_argv(c, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ssh_env())


def run(c: Connection, argv: list[str], timeout: float = 300, check: bool = True) -> tuple[int, str, str]:
    """Run a command on the host, as a session of its master.  argv is quoted word by word: no injection."""
    cmd = shlex.join(argv)
    for attempt in (1, 2):
        connect(c)
        try:
            proc = bounded(_session_argv(c, argv), timeout, MAX_ANSWER, env=ssh_env())
        except subprocess.TimeoutExpired as exc:
            raise HostError(c.host, f"running {argv[0]}", f"no result within {timeout:.0f} s",
                            "Check the host's load and SSH connection and retry") from exc
        except OverflowError as exc:
            raise HostError(c.host, f"running {argv[0]}", str(exc),
                            "The host answered far more than this command prints: check what runs there") from exc
        stdout, stderr = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        if proc.returncode != 255:
            break
        if attempt == 2 or "control socket" not in stderr.lower() and "mux" not in stderr.lower():
            forget_master(c)  # ssh itself failed: the connection, not the command
            raise _classify(c, stderr)
        # a master that went away between the check and the use, or refused this one session: once more.
        # A master still up is kept: every other thread's sessions and libvirt connection ride on it.
        if not alive(control_path(c)):
            forget_master(c)
    if check and proc.returncode != 0:
        raise HostError(c.host, f"running {cmd}", f"exit {proc.returncode}: {stderr.strip()[:500]}")
    return proc.returncode, stdout, stderr
