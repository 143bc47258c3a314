#!/usr/bin/env bash
# Makes Pulumi's official toolchain usable offline: a `pulumi` of the pinned version on PATH that has
# its Python language host, exec script and dynamic-provider host beside it is used as is; else the CLI
# is built from Go modules and the language host from Pulumi's unmodified source (../shared/upstream),
# with the SDK's own scripts copied next to them, into tools/pulumi/.  Prints the directory for PATH.
set -euo pipefail
PULUMI_VERSION=${PULUMI_VERSION:-v3.274.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${PULUMI_TOOLS_DIR:-$ROOT/tools/pulumi}
UPSTREAM=${PULUMI_LANGHOST_SRC:-$ROOT/../shared/upstream/pulumi-language-python}
TOOLS="pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python"

have_pinned() {  # $1 = a directory holding the four official programs
  for t in $TOOLS; do [ -x "$1/$t" ] || return 1; done
  [ "$("$1/pulumi" version 2>/dev/null)" = "$PULUMI_VERSION" ]
}

if onpath=$(command -v pulumi 2>/dev/null) && have_pinned "$(dirname "$onpath")"; then
  dirname "$onpath"; exit 0
fi
if [ "$(cat "$DEST/.version" 2>/dev/null)" = "$PULUMI_VERSION" ] && have_pinned "$DEST"; then
  echo "$DEST"; exit 0
fi

command -v go >/dev/null || { echo "pulumi-cli: Go toolchain not found; install Go >= 1.24" >&2; exit 1; }
[ -x "$UPSTREAM/build.sh" ] || { echo "pulumi-cli: no language host source at $UPSTREAM (set PULUMI_LANGHOST_SRC)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work" "$DEST.tmp"' EXIT
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
rm -rf "$DEST.tmp"; mkdir -p "$DEST.tmp"
ld="-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
go build -trimpath -tags osusergo,grpcnotrace -ldflags "$ld" -o "$DEST.tmp/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
"$UPSTREAM/build.sh" "$work" "$DEST.tmp/pulumi-language-python" >&2
sdkdir=$(go list -m -f '{{.Dir}}' "github.com/pulumi/pulumi/sdk/v3")
install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$sdkdir/python/dist/pulumi-resource-pulumi-python" "$DEST.tmp/"
echo "$PULUMI_VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
echo "$DEST"
