#!/usr/bin/env bash
# The main job on the embedded default: set everything up, then `pulumi up` the `lab` stack, which
# creates real guests on the simulated hosts.  Extra arguments go to `pulumi up`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" "${VIRTFLEET_LAB_HOSTS:-3}"
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
cd "$ROOT"
# The lab stack's public passphrase (scripts/env.sh), for this script's `--stack lab` commands only
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  export PULUMI_CONFIG_PASSPHRASE=$VIRTFLEET_LAB_PASSPHRASE
fi
pulumi stack select --create lab >/dev/null
pulumi up --yes --stack lab "$@"
pulumi stack output --stack lab guests
