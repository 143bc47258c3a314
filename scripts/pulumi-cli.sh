#!/usr/bin/env bash
# Makes the pinned Pulumi CLI usable offline: reuse a `pulumi` of the pinned version on PATH, else build
# the CLI and virtfleet's Python language host (scripts/langhost, Go) from Go modules into tools/pulumi/,
# with the SDK's program runner script.  Idempotent: a warm run only checks the version stamps (the
# language host is rebuilt alone, with the CLI's pinned go.mod/go.sum, when its source changed).
# Prints the directory to put on PATH.
set -euo pipefail
PULUMI_VERSION=${PULUMI_VERSION:-v3.274.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${PULUMI_TOOLS_DIR:-$ROOT/tools/pulumi}
STAMP=$DEST/.version
LANGHOST_SRC=$ROOT/scripts/langhost

have_pinned() {  # $1 = directory holding a pulumi binary
  [ -x "$1/pulumi" ] && [ -x "$1/pulumi-language-python" ] && [ -x "$1/pulumi-resource-pulumi-python" ] &&
    [ "$("$1/pulumi" version 2>/dev/null)" = "$PULUMI_VERSION" ]
}

langhost_stamp() { cat "$LANGHOST_SRC"/*.go | sha256sum | cut -d' ' -f1; }

build_langhost() {  # $1 = a Go module directory pinning the CLI's dependencies, $2 = output directory
  mkdir -p "$1/langhost"
  cp "$LANGHOST_SRC"/*.go "$1/langhost/"
  (cd "$1" && go build -trimpath -tags grpcnotrace -ldflags "-s -w" -o "$2/virtfleet-langhost" ./langhost) >&2
  langhost_stamp > "$2/.langhost"
}

# The language host (see scripts/langhost/main.go for why it is not the upstream one) and the
# dynamic-provider host.
install_langhost() {  # $1 = tools directory
  cat > "$1/pulumi-language-python" <<SH
#!/bin/sh
VIRTFLEET_LANGHOST_DIR="$1" VIRTFLEET_PULUMI_VERSION="${PULUMI_VERSION#v}" \\
  VIRTFLEET_PROGRAM_EXEC="$ROOT/scripts/pulumi_program_exec.py" \\
  VIRTFLEET_PROVIDER_HOST="$ROOT/scripts/pulumi_dynamic_host.py" \\
  VIRTFLEET_PYTHON="\${VIRTFLEET_PYTHON:-$ROOT/.venv/bin/python}" exec "$1/virtfleet-langhost" "\$@"
SH
  chmod 0755 "$1/pulumi-language-python"
  # the dynamic-provider plugin: hands over to the provider process the program started, else starts
  # scripts/pulumi_dynamic_host.py (the SDK's, with more than 4 worker threads); see langhost/handoff.go
  cat > "$1/pulumi-resource-pulumi-python" <<SH
#!/bin/sh
VIRTFLEET_PROVIDER_HOST="$ROOT/scripts/pulumi_dynamic_host.py" \\
  VIRTFLEET_PYTHON="\${VIRTFLEET_PYTHON:-$ROOT/.venv/bin/python}" exec "$1/virtfleet-langhost" provider "\$@"
SH
  chmod 0755 "$1/pulumi-resource-pulumi-python"
}

if onpath=$(command -v pulumi 2>/dev/null) && [ "$(dirname "$onpath")" != "$DEST" ] &&
  have_pinned "$(dirname "$onpath")"; then
  dirname "$onpath"; exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PULUMI_VERSION" ] && [ -x "$DEST/pulumi" ] && [ -f "$DEST/build/go.sum" ]; then
  if [ ! -x "$DEST/virtfleet-langhost" ] || [ "$(cat "$DEST/.langhost" 2>/dev/null)" != "$(langhost_stamp)" ]; then
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
    cp "$DEST/build/go.mod" "$DEST/build/go.sum" "$work/"
    GOFLAGS=-mod=mod CGO_ENABLED=0 build_langhost "$work" "$DEST"
  fi
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
build_langhost "$work" "$DEST.tmp"
mkdir -p "$DEST.tmp/build"
cp go.mod go.sum "$DEST.tmp/build/"   # the language host is rebuilt against exactly these

rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
install_langhost "$DEST"
echo "$PULUMI_VERSION" > "$STAMP"
echo "$DEST"
