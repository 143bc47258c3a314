#!/usr/bin/env bash
# The tests: set everything up (lab included), then pytest over all tiers (unit, provider, e2e).
# pytest's "no tests collected" (exit 5) is a failure here.  Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" "${VIRTFLEET_LAB_HOSTS:-3}"
# shellcheck source=scripts/env.sh
. "$ROOT/scripts/env.sh"
cd "$ROOT"
echo "test.sh: ruff + mypy"
"$ROOT/.venv/bin/ruff" check --quiet .
"$ROOT/.venv/bin/mypy" --no-error-summary providers components plugin/serve.py __main__.py
set +e
"$ROOT/.venv/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "test.sh: pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
