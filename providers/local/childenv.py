"""The environment of the processes virtfleet starts (image builds, ssh): ours without credentials.

A Pulumi program and its provider run with the decrypted stack config (PULUMI_CONFIG), the stack's
passphrase and the backend's token in their environment, often beside cloud credentials.  A build
command or an ssh master (which outlives the run) needs none of them, and cannot read them from ours
(`private_process`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable, Mapping

PR_SET_DUMPABLE = 4


def private_process() -> bool:
    """Make this process non-dumpable: another process of the same (non-root) user, such as a build we
    start, can then neither read its /proc/PID/environ and memory nor attach a debugger.  Root still can.
    Returns whether the kernel agreed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False

# whole families: Pulumi's own (PULUMI_CONFIG, PULUMI_CONFIG_PASSPHRASE(_FILE), PULUMI_ACCESS_TOKEN, ...)
# and the cloud SDKs' credentials
DENY_PREFIXES = ("PULUMI_", "AWS_", "AZURE_", "ARM_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "ALIBABA_CLOUD_",
                 "DIGITALOCEAN_", "SCW_", "VAULT_", "TF_VAR_")
# single names that hold a credential without a telling suffix
DENY = frozenset({"GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN", "HCLOUD_TOKEN", "NPM_TOKEN", "SSHPASS",
                  "KUBECONFIG", "DOCKER_AUTH_CONFIG", "OS_PASSWORD", "OS_TOKEN"})
# anything named like a secret
DENY_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_PASSPHRASE", "_PASSPHRASE_FILE", "_SECRET_KEY",
                 "_ACCESS_KEY", "_ACCESS_KEY_ID", "_API_KEY", "_PRIVATE_KEY", "_CREDENTIALS")
# always kept, whatever the rules above say: what builds and ssh need to work at all
KEEP = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TZ", "TMPDIR", "SSH_AUTH_SOCK"})
KEEP_PREFIXES = ("NIX_", "LC_", "XDG_", "VIRTFLEET_")
# never passed, even when a build names them (`buildEnv`): the decrypted stack config, its passphrase, the
# backend's token
NEVER_PREFIXES = ("PULUMI_",)


def denied(name: str) -> bool:
    """Whether a variable of this name is kept from the processes we start."""
    upper = name.upper()
    if upper in KEEP or upper.startswith(KEEP_PREFIXES):
        return False
    return upper in DENY or upper.startswith(DENY_PREFIXES) or upper.endswith(DENY_SUFFIXES)


def passable(name: str) -> bool:
    """Whether a build may be given this variable by name (`buildEnv`)."""
    return not name.upper().startswith(NEVER_PREFIXES)


def child_env(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """`environ` without the variables that may hold credentials (see `denied`), except the ones named in
    `allow` (an image build's `buildEnv`) that are `passable`."""
    named = {a for a in allow if passable(a)}
    return {k: v for k, v in environ.items() if k in named or not denied(k)}
