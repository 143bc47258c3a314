#!/usr/bin/env bash
# Builds the peer that B5 measures virtfleet against: OpenTofu and terraform-provider-libvirt 0.8.3, from
# Go modules, into tools/peer/ (the recipe of ../shared/PEERS.md).  Idempotent; prints the directory.
set -euo pipefail
TOFU_VERSION=${TOFU_VERSION:-v1.10.6}
TPL_VERSION=${TPL_VERSION:-v0.8.3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/tools/peer
want="$TOFU_VERSION $TPL_VERSION"
# the provider runs xsltproc for a domain's `xml { xslt }` (B5 strips its default display with it)
command -v xsltproc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xsltproc >&2
if [ "$(cat "$DEST/.version" 2>/dev/null)" = "$want" ] && [ -x "$DEST/tofu" ] &&
  [ -x "$DEST/plugins/terraform-provider-libvirt" ]; then
  echo "$DEST"; exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST/plugins" "$work/tofu" "$work/tpl"
export GOFLAGS=-mod=mod
[ -x "$DEST/tofu" ] || (cd "$work/tofu"
 printf 'module virtfleet.local/tofubuild\n\ngo 1.24\n\nreplace github.com/hashicorp/hcl/v2 v2.20.1 => github.com/opentofu/hcl/v2 v2.20.2-0.20250121132637-504036cd70e7\n' > go.mod
 printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/opentofu/opentofu/cmd/tofu"\n' > tools.go
 go get "github.com/opentofu/opentofu@$TOFU_VERSION" >&2
 go mod tidy >&2 || true
 CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DEST/tofu" github.com/opentofu/opentofu/cmd/tofu >&2)
# the provider builds as its own main module, with its own pinned go.mod/go.sum
src=$(cd "$work" && go mod download -json "github.com/dmacvicar/terraform-provider-libvirt@$TPL_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$src/." "$work/tpl/"; chmod -R u+w "$work/tpl"
(cd "$work/tpl" && CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o "$DEST/plugins/terraform-provider-libvirt" . >&2)
echo "$want" > "$DEST/.version"
echo "$DEST"
