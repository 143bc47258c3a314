#!/usr/bin/env bash
# Installs and starts everything virtfleet needs on this machine (root): Debian packages, the repo
# venv, the pinned Pulumi CLI, the guest payload and the lab hosts.  Idempotent; prints each step's time.
# usage: scripts/setup.sh [LAB_HOSTS=3]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-3}
t0=$(date +%s%N)
step() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '[setup %4d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"; }
APT_PACKAGES="libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86 qemu-utils
  openssh-server openssh-client iproute2 busybox-static libxml2-utils syslinux syslinux-common mtools
  dosfstools lvm2 mmdebstrap extlinux fdisk dnsmasq-base iptables ovmf swtpm swtpm-tools"

step "apt packages"
missing=$(for p in $APT_PACKAGES; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
else
  apt-get update -qq >/dev/null 2>&1 || true   # the payload build asks apt for the kernel package
fi

step "python venv (requirements.txt)"
stamp="$ROOT/.venv/.requirements.sha256"
want=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$ROOT/.venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
  echo "$want" > "$stamp"
fi

step "pulumi CLI"
"$ROOT/scripts/pulumi-cli.sh" >/dev/null

step "guest payload"
"$ROOT/lab/payload.sh" >/dev/null

step "cloud guest image"
"$ROOT/lab/cloudimage.sh" >/dev/null

step "lab hosts ($N)"
PYTHON="$ROOT/.venv/bin/python" "$ROOT/lab/lab.sh" up "$N"
"$ROOT/.venv/bin/python" "$ROOT/lab/write_stack.py" >/dev/null

step "lab S3 server for team state (lab/s3.sh)"
"$ROOT/lab/s3.sh" up
step "done"
