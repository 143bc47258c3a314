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
# on this machine; virtfleet's operations wait on the hosts (the provider serves 16 calls at once, and
# each host's libvirt 5 per connection), so 16 it is unless you say otherwise (`pulumi up -p N` too).
export PULUMI_PARALLEL=${PULUMI_PARALLEL:-16}
mkdir -p "$VIRTFLEET_ROOT/.state"
