# Sourced by the scripts: the pinned Pulumi CLI on PATH and offline Pulumi settings.
VIRTFLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$VIRTFLEET_ROOT/tools/pulumi:$VIRTFLEET_ROOT/.venv/bin:$PATH"
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$VIRTFLEET_ROOT/.state}
export PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_PYTHON_CMD="$VIRTFLEET_ROOT/.venv/bin/python"
# The lab stack's passphrase; real stacks set their own PULUMI_CONFIG_PASSPHRASE(_FILE).
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  export PULUMI_CONFIG_PASSPHRASE=virtfleet-lab
fi
# How many resource operations the engine runs at once.  Its default, 4 per local core, suits work done
# on this machine; virtfleet's operations wait on the hosts (a guest's start, a shutdown), and the engine
# takes no new step while all of them are busy, so 32 it is unless you say otherwise (`pulumi up -p N`).
export PULUMI_PARALLEL=${PULUMI_PARALLEL:-32}
mkdir -p "$VIRTFLEET_ROOT/.state"
