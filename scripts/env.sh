# Sourced by the scripts: the pinned Pulumi CLI on PATH and offline Pulumi settings.
VIRTFLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$VIRTFLEET_ROOT/tools/pulumi:$VIRTFLEET_ROOT/.venv/bin:$PATH"
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$VIRTFLEET_ROOT/.state}
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_PYTHON_CMD="$VIRTFLEET_ROOT/.venv/bin/python"
# No passphrase is exported here.  The lab stack's is public: scripts/up.sh gives it to its own `--stack lab`
# commands only (by hand: PULUMI_CONFIG_PASSPHRASE=$VIRTFLEET_LAB_PASSPHRASE pulumi preview --stack lab).
# Any other stack needs its own PULUMI_CONFIG_PASSPHRASE(_FILE): without one Pulumi refuses a
# non-interactive run ("passphrase must be set with ...") and asks for one at a terminal.
VIRTFLEET_LAB_PASSPHRASE=virtfleet-lab
# The lab's passphrase left in this shell (an older env.sh exported it), or an empty one (Pulumi takes ""
# as a passphrase), would encrypt a new stack with a public value: drop it.
if [ "${PULUMI_CONFIG_PASSPHRASE-unset}" = "$VIRTFLEET_LAB_PASSPHRASE" ] || [ "${PULUMI_CONFIG_PASSPHRASE-unset}" = "" ]; then
  unset PULUMI_CONFIG_PASSPHRASE
  echo "env.sh: PULUMI_CONFIG_PASSPHRASE unset (it was the lab's public one, or empty); set your stack's own" >&2
fi
# How many resource operations the engine runs at once.  Its default, 4 per local core, suits work done
# on this machine; virtfleet's operations wait on the hosts (a guest's start, a shutdown), and the engine
# takes no new step while all of them are busy, so 32 it is unless you say otherwise (`pulumi up -p N`).
export PULUMI_PARALLEL=${PULUMI_PARALLEL:-32}
mkdir -p "$VIRTFLEET_ROOT/.state"
