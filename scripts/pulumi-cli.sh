#!/usr/bin/env bash
# Makes the pinned Pulumi CLI usable offline: reuse a `pulumi` of the pinned version on PATH, else build
# the CLI, the Python language host and its two helper scripts from Go modules into tools/pulumi/.
# Idempotent: a warm run only checks the version stamp.  Prints the directory to put on PATH.
set -euo pipefail
PULUMI_VERSION=${PULUMI_VERSION:-v3.274.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${PULUMI_TOOLS_DIR:-$ROOT/tools/pulumi}
STAMP=$DEST/.version

have_pinned() {  # $1 = directory holding a pulumi binary
  [ -x "$1/pulumi" ] && [ -x "$1/pulumi-language-python" ] && [ -x "$1/pulumi-resource-pulumi-python" ] &&
    [ "$("$1/pulumi" version 2>/dev/null)" = "$PULUMI_VERSION" ]
}

# The language host (see scripts/pulumi_langhost.py for why it is not the upstream Go binary) and the
# dynamic-provider host.
install_langhost() {  # $1 = tools directory
  cat > "$1/pulumi-language-python" <<SH
#!/bin/sh
VIRTFLEET_LANGHOST_DIR="$1" VIRTFLEET_PULUMI_VERSION="${PULUMI_VERSION#v}" \\
  exec "\${VIRTFLEET_PYTHON:-$ROOT/.venv/bin/python}" "$ROOT/scripts/pulumi_langhost.py" "\$@"
SH
  chmod 0755 "$1/pulumi-language-python"
  # the dynamic-provider host: the SDK's, with more than 4 worker threads (scripts/pulumi_dynamic_host.py)
  cat > "$1/pulumi-resource-pulumi-python" <<SH
#!/bin/sh
exec "\${VIRTFLEET_PYTHON:-$ROOT/.venv/bin/python}" -u "$ROOT/scripts/pulumi_dynamic_host.py" "\$@"
SH
  chmod 0755 "$1/pulumi-resource-pulumi-python"
}

if onpath=$(command -v pulumi 2>/dev/null) && [ "$(dirname "$onpath")" != "$DEST" ] &&
  have_pinned "$(dirname "$onpath")"; then
  dirname "$onpath"; exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PULUMI_VERSION" ] && [ -x "$DEST/pulumi" ]; then
  install_langhost "$DEST"
  echo "$DEST"; exit 0
fi

command -v go >/dev/null || { echo "pulumi-cli: Go toolchain not found; install Go >= 1.24" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
cd "$work"
cat > go.mod <<GOMOD
module virtfleet.local/pulumibuild

go 1.24

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
GOMOD
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
GO
go get "github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION" "github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION" >&2
go mod tidy >&2 || true
mkdir -p "$DEST.tmp"
ld="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
go build -trimpath -tags osusergo,grpcnotrace -ldflags "$ld" -o "$DEST.tmp/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
sdkdir=$(go list -m -f '{{.Dir}}' "github.com/pulumi/pulumi/sdk/v3")
install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$DEST.tmp/"

rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
install_langhost "$DEST"
echo "$PULUMI_VERSION" > "$STAMP"
echo "$DEST"
