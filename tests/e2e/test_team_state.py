"""Team state on the lab's S3-compatible object server (SeaweedFS, lab/s3.sh): two operators at once, a run
killed mid-way, two teams on the same hosts, the server restarted during a run.  Each test keeps its
state in a folder of its own in the bucket, as a team would, and ends with every guest present once."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests import lab, s3
from tests.e2e.fleet import config, guest
from tests.e2e.test_faults import cleanup, kill_tree, owned_domains
from tests.pulumi_cli import Stack, python_project

pytestmark = pytest.mark.e2e

LOCKED = "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete " \
         "the lock file with `pulumi cancel`."


def holder(pid: int) -> str:
    """How Pulumi names a lock holder: user@host (pid N)."""
    return f"created by {pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()} (pid {pid})"


def wait_for(what: str, check: Any, timeout: float = 120, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"pulumi exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout:.0f} s")


def all_owned(stack: Stack, hosts: tuple[str, ...] = ("h1", "h2")) -> list[str]:
    return sorted(n for h in hosts for n in owned_domains(h, stack.name))


def assert_converged(stack: Stack, where: dict[str, list[str]]) -> None:
    """Every guest of `where` (host -> names) on its host once, running, with one disk; nothing else of this
    stack on those hosts; a refreshing preview has nothing to do."""
    assert all_owned(stack, tuple(where)) == sorted(n for names in where.values() for n in names)
    for host, names in where.items():
        vols = lab.volumes(host)
        for n in names:
            assert lab.domain_state(host, n) == "running", f"{n} on {host}"
            assert vols.count(f"{n}.qcow2") == 1, f"{n}.qcow2 on {host}"
    assert stack.preview("--expect-no-changes").returncode == 0


class Output:
    """A background run's output, read as it comes (a pipe left unread would stall the CLI)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.lines = proc, list[str]()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 480) -> str:
        self.proc.wait(timeout)
        self._t.join(10)
        return self.text()


def test_two_operators_at_once_the_second_is_refused_naming_the_holder(tmp_path, unique) -> None:
    team = f"ops-{unique}"
    env = s3.team_env(team)
    names = [f"op{i}-{unique}" for i in range(3)]
    desc = {"h1": {names[0]: guest(names[0]), names[1]: guest(names[1])}, "h2": {names[2]: guest(names[2])}}
    a = Stack(str(tmp_path / "a"), f"ops{unique}", config(desc), env=env)
    # operator b: another desk (its own PULUMI_HOME), the team's stack file, one more guest of its own
    extra = f"opx-{unique}"
    b = Stack(str(tmp_path / "b"), a.name, env=env, init=False)
    shutil.copy(a.config_file, b.config_file)
    b.write_config(config({**desc, "h2": {**desc["h2"], extra: guest(extra)}}))
    first = a.start("up", "--yes", "--skip-preview")
    out = Output(first)
    try:
        held = wait_for("lock object in the bucket", lambda: s3.locks(a.name, team), proc=first)
        assert [h["pid"] for h in held.values()] == [first.pid]
        second = b.up(check=False)
        refused = second.stdout + second.stderr
        assert first.poll() is None, "the first run must still hold the stack when the second is refused"
        assert second.returncode != 0
        assert LOCKED in refused and holder(first.pid) in refused, refused
        assert f"/{team}/.pulumi/locks/organization/virtfleet/{a.name}/" in refused, "the lock's URL"
        print(f"second operator refused:\n{refused.strip()}")
        text = out.wait()
        assert first.returncode == 0, text[-3000:]
        assert s3.locks(a.name, team) == {}
        # the stack is exactly as the first operator described it: nothing of the refused run
        assert extra not in lab.domains("h2")
        assert_converged(a, {"h1": names[:2], "h2": names[2:]})
        # and the second operator's change, run again now the stack is free, lands on top of it
        b.up()
        assert_converged(b, {"h1": names[:2], "h2": [names[2], extra]})
    finally:
        if first.poll() is None:
            first.kill()
        cleanup(a, [("h1", names[0]), ("h1", names[1]), ("h2", names[2]), ("h2", extra)])


def test_killed_run_leaves_a_lock_that_the_documented_recovery_clears(tmp_path, unique) -> None:
    team = f"kill-{unique}"
    names = [f"sk{i}-{unique}" for i in range(3)]
    stack = Stack(str(tmp_path), f"kill{unique}", config({"h1": {names[0]: guest(names[0])},
                                                          "h2": {n: guest(n) for n in names[1:]}}),
                  env=s3.team_env(team))
    proc = stack.start("up", "--yes", "--skip-preview", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       start_new_session=True)
    try:
        wait_for("guest of the run on a host", lambda: set(names) & set(lab.domains("h1") + lab.domains("h2")),
                 timeout=90, proc=proc)
        kill_tree(proc.pid)
        proc.wait(30)
        left = s3.locks(stack.name, team)
        assert [h["pid"] for h in left.values()] == [proc.pid], left
        refused = stack.up(check=False)
        assert refused.returncode != 0 and LOCKED in refused.stdout + refused.stderr
        assert holder(proc.pid) in refused.stdout + refused.stderr
        # the README's recovery: cancel the held lock, refresh clearing pending creates, up
        cancel = stack.run("cancel", "--yes")
        assert f"The currently running update for '{stack.name}' has been canceled!" in cancel.stdout
        assert s3.locks(stack.name, team) == {}
        stack.refresh("--clear-pending-creates")
        stack.up()
        assert_converged(stack, {"h1": names[:1], "h2": names[1:]})
    finally:
        if proc.poll() is None:
            proc.kill()
        cleanup(stack, [("h1", names[0]), ("h2", names[1]), ("h2", names[2])])


def _bases(stack: Stack) -> set[str]:
    state = stack.export()["deployment"]["resources"]
    return {r["outputs"]["volumeName"] for r in state if r["type"].endswith("virtfleet:BaseImage")}


def test_two_teams_on_the_same_hosts_never_touch_each_other(tmp_path, unique) -> None:
    # an image only these two teams use, so its base volume on the hosts is theirs alone
    img = str(tmp_path / "team-image.raw")
    subprocess.run(["cp", "--sparse=always", os.path.join(os.path.dirname(lab.info()["payload"]), "payload.raw"),
                    img], check=True)
    with open(img, "ab") as f:
        f.write(unique.encode().ljust(65536, b"\0"))

    def cfg(guests: dict[str, dict[str, Any]]) -> dict[str, Any]:
        c = config(guests)
        c["images"]["payload"]["path"] = img
        return c

    mine = {"h1": [f"ta1-{unique}"], "h2": [f"ta2-{unique}"]}
    theirs = {"h1": [f"tb1-{unique}"], "h2": [f"tb2-{unique}"]}

    def desc(where: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {h: {n: guest(n, deleteDiskOnDestroy=True) for n in names} for h, names in where.items()}

    # each team its own folder of the bucket (its own state), the same hosts, the same image
    a = Stack(str(tmp_path / "a"), f"teama{unique}", cfg(desc(mine)), env=s3.team_env(f"team-a-{unique}"))
    b = Stack(str(tmp_path / "b"), f"teamb{unique}", cfg(desc(theirs)), env=s3.team_env(f"team-b-{unique}"))
    try:
        # at the same moment: both upload the one new image to both hosts; neither may remove the other's
        # upload in progress or replace the base the other published
        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(a.up), pool.submit(b.up)]:
                done.result()
        assert_converged(a, mine)
        assert_converged(b, theirs)
        (base,) = _bases(a)
        assert _bases(b) == {base}, "one content-addressed base per host for both teams"
        upload = f"vfupload-{base[len('vfbase-'):][:16]}-"
        assert not [v for h in ("h1", "h2") for v in lab.volumes(h) if v.startswith(upload)], "no upload left"
        assert all(base in lab.volumes(h) for h in ("h1", "h2"))
        assert a.run("stack", "ls").stdout.count(a.name) == 1 and b.name not in a.run("stack", "ls").stdout
        pids = {n: lab.uptime_of(h, n) for h, names in mine.items() for n in names}
        # team b asks for a guest with team a's name on h1: refused, nothing of team a touched
        clash = desc(theirs)
        clash["h1"]["dup"] = guest(mine["h1"][0], name=mine["h1"][0]) | {"mac": "52:54:00:ee:ee:02"}
        b.write_config(cfg(clash))
        res = b.up(check=False)
        assert res.returncode != 0
        # its disk is the first refused: it is team a's guest's
        assert (f"belongs to the guest(s) {mine['h1'][0]} (managed by virtfleet/{a.name}/{mine['h1'][0]})"
                in res.stdout + res.stderr), (res.stdout + res.stderr)[-2000:]
        b.write_config(cfg(desc(theirs)))
        b.destroy()
        assert all(lab.domain_state(h, n) == "missing" for h, names in theirs.items() for n in names)
        assert {n: lab.uptime_of(h, n) for h, names in mine.items() for n in names} == pids, "team a untouched"
        assert all(base in lab.volumes(h) for h in ("h1", "h2")), "team a's base stays when team b lets go"
        assert_converged(a, mine)
        a.destroy()
        assert all(base not in lab.volumes(h) for h in ("h1", "h2")), "the last team to let go removes it"
    finally:
        for s in (a, b):
            s.destroy(check=False)
        cleanup(a, [(h, n) for where in (mine, theirs) for h, names in where.items() for n in names])


def test_object_server_restarted_during_up(tmp_path, unique) -> None:
    team = f"restart-{unique}"
    names = [f"rs{i}-{unique}" for i in range(5)]
    where = {"h1": names[:1], "h2": names[1:3]}
    stack = Stack(str(tmp_path), f"restart{unique}", config({h: {n: guest(n) for n in ns} for h, ns in where.items()}),
                  env=s3.team_env(team))
    try:
        # a restart shorter than the CLI's retries of a state write: the run rides it out
        out = Output(stack.start("up", "--yes", "--skip-preview"))
        wait_for("guest of the run on a host", lambda: set(names) & set(lab.domains("h1") + lab.domains("h2")),
                 proc=out.proc)
        t0 = time.monotonic()
        assert s3.server("down").returncode == 0
        assert s3.server("up").returncode == 0
        outage = time.monotonic() - t0
        text = out.wait()
        print(f"server stopped and started again in {outage:.1f} s during the run: exit {out.proc.returncode}")
        assert out.proc.returncode == 0, f"after a {outage:.0f} s outage: {text[-3000:]}"
        assert_converged(stack, where)

        # a stop that outlasts them: a clear error naming the state object and the endpoint; the server
        # back before the CLI has given up on its last save, the run ends without leaving its lock
        where = {"h1": names[:1], "h2": names[1:3] + names[3:]}
        stack.write_config(config({h: {n: guest(n) for n in ns} for h, ns in where.items()}))
        out = Output(stack.start("up", "--yes", "--skip-preview"))
        wait_for("new guest on h2", lambda: set(names[3:]) & set(lab.domains("h2")), proc=out.proc)
        assert s3.server("down").returncode == 0
        try:
            wait_for("failed state write", lambda: "failed to save snapshot" in out.text(), timeout=300)
        finally:
            assert s3.server("up").returncode == 0
        text = out.wait()
        print("run with the server down:\n" + "".join(line for line in out.lines if "error" in line)[-3000:])
        assert out.proc.returncode != 0
        c = s3.info()
        state = f".pulumi/stacks/virtfleet/{stack.name}.json"
        assert ("failed to save snapshot: An IO error occurred while writing the new snapshot file: "
                f'blob (key "{state}")') in text, text[-3000:]
        assert (f'{c["endpoint"]}/{c["bucket"]}/{team}/{state}?x-id=PutObject": dial tcp '
                f'{c["endpoint"].removeprefix("http://")}: connect: connection refused') in text, text[-3000:]
        assert s3.locks(stack.name, team) == {}, "the run let go of its lock once the server was back"
        stack.up()  # the next up completes
        assert_converged(stack, where)
    finally:
        if s3.server("status").returncode != 0:
            s3.server("up")
        cleanup(stack, [(h, n) for h, ns in where.items() for n in ns])


REFUSED = "passphrase must be set with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables"


def test_a_team_stack_without_its_own_passphrase_is_refused_never_given_the_labs(tmp_path, unique) -> None:
    """In a shell set up by scripts/env.sh, a stack other than the lab's gets no passphrase: Pulumi refuses it
    (no terminal to ask at), whether the shell had none, the lab's public one or an empty one."""
    team, name = f"pass-{unique}", f"team{unique}"
    project = python_project(str(tmp_path / "project"), "teamsecrets", "import pulumi\npulumi.export('ok', 1)\n",
                             provider_host=False)
    cfg = os.path.join(project, f"Pulumi.{name}.yaml")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    base.update({k: v for k, v in s3.team_env(team).items() if v is not None})
    base.update({"PULUMI_HOME": str(tmp_path / "home"), "PULUMI_SKIP_UPDATE_CHECK": "true"})
    env_sh = os.path.join(lab.ROOT, "scripts", "env.sh")

    def shell(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """COMMAND in a shell that sourced scripts/env.sh, as a team member's."""
        return subprocess.run(["bash", "-c", f'. "{env_sh}" && {command}'], cwd=project, env={**base, **extra},
                              capture_output=True, text=True, timeout=120)

    lab_passphrase = shell('printf %s "$VIRTFLEET_LAB_PASSPHRASE"').stdout
    assert lab_passphrase
    shells = (("none", {}), ("the lab's, left in the shell", {"PULUMI_CONFIG_PASSPHRASE": lab_passphrase}),
              ("an empty one", {"PULUMI_CONFIG_PASSPHRASE": ""}))
    for how, extra in shells:
        res = shell(f"pulumi stack init {name} --non-interactive", **extra)
        assert res.returncode != 0 and REFUSED in res.stderr, f"{how}: {res.stdout}{res.stderr}"
        assert not os.path.exists(cfg), f"{how}: a stack file was written"
        assert s3.keys(f"{team}/.pulumi/stacks/teamsecrets/") == [], f"{how}: a stack was made in the bucket"
    # with the team's own passphrase (a file shared out of band) it works, and the lab's can't read it
    passfile = tmp_path / "team-passphrase"
    passfile.write_text(f"team-{unique}-{os.urandom(8).hex()}\n")
    passfile.chmod(0o600)
    own = {"PULUMI_CONFIG_PASSPHRASE_FILE": str(passfile)}
    assert shell(f"pulumi stack init {name} --non-interactive", **own).returncode == 0
    assert shell(f"pulumi config set --secret token s3cr3t-{unique} --stack {name}", **own).returncode == 0
    with open(cfg) as f:
        made = f.read()
    assert "encryptionsalt:" in made and "secure:" in made and f"s3cr3t-{unique}" not in made
    assert shell(f"pulumi config get token --stack {name}", **own).stdout.strip() == f"s3cr3t-{unique}"
    wrong = shell(f'PULUMI_CONFIG_PASSPHRASE="$VIRTFLEET_LAB_PASSPHRASE" pulumi config get token --stack {name}')
    assert wrong.returncode != 0 and "incorrect passphrase" in wrong.stderr, wrong.stderr
    # a team member without it can neither add a secret nor run the stack
    for how, extra in shells:
        for command in (f"pulumi config set --secret other x --stack {name} --non-interactive",
                        f"pulumi up --yes --stack {name} --non-interactive"):
            res = shell(command, **extra)
            assert res.returncode != 0 and REFUSED in res.stderr, f"{how}: {command}: {res.stdout}{res.stderr}"
    with open(cfg) as f:
        assert f.read() == made, "nothing was added to the stack file"
    up = shell(f"pulumi up --yes --stack {name} --non-interactive", **own)
    assert up.returncode == 0, up.stdout + up.stderr
    shell(f"pulumi stack rm --yes --force {name} --non-interactive", **own)
