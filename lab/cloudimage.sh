#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) cloud guest image from Debian packages only (mmdebstrap, minbase):
# linux-image-cloud-amd64, systemd + systemd-networkd/resolved, cloud-init (NoCloud seed or nothing),
# qemu-guest-agent, openssh-server and growpart.  One MBR partition (ext4, root by UUID) booted by
# EXTLINUX, so it boots with SeaBIOS (machine 'pc', TCG); the kernel logs to ttyS0.
# First boot: cloud-init reads a NoCloud seed (an ISO 9660 CD-ROM labelled "cidata" with user-data,
# meta-data and optionally network-config; IDE, not SATA: the cloud kernel has no AHCI driver), brings up
# DHCP on the first NIC unless network-config says otherwise, sets the hostname, makes the SSH host keys
# and installs the authorized keys for root (login by key only; no passwords, no default user).
# No machine-id, host key or apt list is baked in; timers a short-lived guest never needs are masked.
# Output: $OUT/debian12.qcow2 (compressed qcow2, 2 GiB virtual; the root fs grows with the disk at
# first boot) and $OUT/debian12.packages.
# UEFI variant: $OUT/debian12-uefi.qcow2, made from debian12.qcow2 without a second bootstrap: GPT, a
# 32 MiB EFI system partition with Debian's signed shim and GRUB as the removable-media loader
# (\EFI\BOOT\BOOTX64.EFI), then the same root file system (same UUID).  The kernel is Debian's signed
# one, so the image also boots with Secure Boot on and Microsoft's keys enrolled.  UEFI only (no BIOS
# boot); the cloud kernel has no AHCI driver, so on machine q35 the seed must be on virtio-scsi.
# Idempotent: skips each image that exists.
# usage: lab/cloudimage.sh    (root; env OUT, DISK_MIB=2048, MIRROR, SECURITY_MIRROR)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/.lab/cloud}
[ -f "$OUT/debian12.qcow2" ] && [ -f "$OUT/debian12-uefi.qcow2" ] && { echo "$OUT"; exit 0; }
# every mount of the build (mmdebstrap's /proc, /sys, /dev in the chroot; the loop mount for EXTLINUX)
# lives in a mount namespace of its own: none outlives the build, however it ends
if [ -z "${VF_CLOUDIMAGE_NS:-}" ]; then
  VF_CLOUDIMAGE_NS=1 OUT=$OUT exec unshare -m --propagation private "$BASH" "$ROOT/lab/cloudimage.sh" "$@"
fi
DISK_MIB=${DISK_MIB:-2048}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
log() { echo "[cloudimage] $*" >&2; }

need=""
for c in mmdebstrap:mmdebstrap extlinux:extlinux sfdisk:fdisk mkfs.ext4:e2fsprogs qemu-img:qemu-utils \
         mkfs.vfat:dosfstools mcopy:mtools; do
  command -v "${c%%:*}" >/dev/null || need="$need ${c#*:}"
done
# shellcheck disable=SC2086
[ -z "$need" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2
MBR=/usr/lib/EXTLINUX/mbr.bin

mkdir -p "$OUT"
W=$(mktemp -d)
cleanup() {
  findmnt -rn -o TARGET | awk -v w="$W/" 'index($0, w) == 1' | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$W" "$OUT/.debian12.qcow2.tmp" "$OUT/.debian12-uefi.qcow2.tmp"
}
trap cleanup EXIT
R=$W/root

build_uefi() {  # debian12-uefi.qcow2 from debian12.qcow2: GPT + ESP (shim, GRUB) + the same root fs
  local raw=$W/uefi-base.raw disk=$W/uefi.raw esp=$W/esp.img uuid root_mib esp_mib=32
  log "UEFI variant (GPT, ${esp_mib} MiB ESP with signed shim + GRUB, root fs of debian12.qcow2)"
  qemu-img convert -f qcow2 -O raw "$OUT/debian12.qcow2" "$raw"
  # the root fs is the image's one partition, at 1 MiB (see the BIOS layout below)
  uuid=$(blkid -p -o value -s UUID -O 1048576 "$raw")
  root_mib=$(( $(stat -c %s "$raw") / 1048576 - 1 ))
  (cd "$W" && apt-get download -q -o APT::Sandbox::User=root shim-signed grub-efi-amd64-signed >&2)
  mkdir -p "$W/efi"
  for deb in "$W"/shim-signed_*.deb "$W"/grub-efi-amd64-signed_*.deb; do dpkg-deb -x "$deb" "$W/efi"; done
  # the signed GRUB reads $prefix/grub.cfg with prefix /EFI/debian on the device it was loaded from
  cat > "$W/grub.cfg" <<EOF
set default=0
set timeout=0
search --no-floppy --fs-uuid --set=root $uuid
menuentry debian {
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}
EOF
  truncate -s "${esp_mib}M" "$esp"
  mkfs.vfat -n ESP "$esp" >/dev/null
  mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
  # shim loads grubx64.efi from its own directory (no fbx64.efi: no boot entry is written)
  mcopy -i "$esp" "$W/efi/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$esp" "$W/efi/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
  mcopy -i "$esp" "$W/grub.cfg" ::/EFI/debian/grub.cfg
  truncate -s "$(( 1 + esp_mib + root_mib + 1 ))M" "$disk"
  printf 'label: gpt\nstart=2048, size=%dM, type=uefi, name=ESP\nsize=%dM, type=linux, name=root\n' \
    "$esp_mib" "$root_mib" | sfdisk -q "$disk"
  dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$raw" of="$disk" bs=1M skip=1 seek=$(( 1 + esp_mib )) count="$root_mib" conv=notrunc,sparse status=none
  rm -f "$raw"
  qemu-img convert -c -f raw -O qcow2 "$disk" "$OUT/.debian12-uefi.qcow2.tmp"
  mv "$OUT/.debian12-uefi.qcow2.tmp" "$OUT/debian12-uefi.qcow2"
}
if [ -f "$OUT/debian12.qcow2" ]; then build_uefi; echo "$OUT"; exit 0; fi

PACKAGES="linux-image-cloud-amd64 initramfs-tools zstd systemd-sysv udev kmod iproute2 netbase
  systemd-resolved cloud-init cloud-guest-utils qemu-guest-agent openssh-server"
log "mmdebstrap bookworm (minbase + $(echo $PACKAGES))"
# shellcheck disable=SC2016
mmdebstrap --mode=root --variant=minbase --format=directory --include="$(echo $PACKAGES | tr ' ' ,)" \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" &&
    echo RESUME=none > "$1/etc/initramfs-tools/conf.d/resume" &&
    printf "MODULES=most\nCOMPRESS=zstd\n" > "$1/etc/initramfs-tools/conf.d/virtfleet.conf"' \
  bookworm "$R" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY_MIRROR bookworm-security main" >&2

log "configuring"
UUID=$(cat /proc/sys/kernel/random/uuid)
echo localhost > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
echo "UUID=$UUID / ext4 errors=remount-ro 0 1" > "$R/etc/fstab"
echo LANG=C.UTF-8 > "$R/etc/default/locale"   # cloud-init's locale module has nothing to generate

mkdir -p "$R/boot/extlinux"
cat > "$R/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8
EOF

cat > "$R/etc/cloud/cloud.cfg.d/90_virtfleet.cfg" <<'EOF'
# virtfleet guest image: a NoCloud seed (CD-ROM labelled cidata) or nothing; no probing of cloud
# metadata services (each costs seconds under TCG).  Keep the list on one line (ds-identify reads it).
datasource_list: [ NoCloud, None ]
# root logs in with the keys from user-data (ssh_authorized_keys); no default user.  Passwords are off
# in sshd_config.d (setting ssh_pwauth here would make cloud-init restart sshd on the first boot)
disable_root: false
users: []
manage_etc_hosts: true
# an RSA-3072 (and DSA) host key costs ~5 s of a TCG guest's first boot; user-data may ask for them
ssh_genkeytypes: [ ed25519, ecdsa ]
# the stock lists without the modules that cannot apply here (snap, byobu, grub, Ubuntu, PowerVM, ...)
cloud_config_modules: [ keyboard, locale, set-passwords, apt-pipelining, apt-configure, ntp, timezone,
  disable-ec2-metadata, runcmd ]
cloud_final_modules: [ package-update-upgrade-install, write-files-deferred, puppet, chef, mcollective,
  salt-minion, scripts-vendor, scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user,
  ssh-authkey-fingerprints, keys-to-console, install-hotplug, phone-home, final-message,
  power-state-change ]
system_info:
  network:
    renderers: [ networkd ]
    activators: [ networkd ]
# the network config is rendered from the seed at every boot, not only for a new instance-id (with the
# drop-in below, which removes the last boot's files: a new seed must not leave stale .network files)
updates:
  network:
    when: [ boot-new-instance, boot ]
EOF
# cloud-init's networkd renderer writes 10-cloud-init-<ifname>.network and never removes one: after a
# re-seed that renames the NIC (set-name) the old file, matching the NIC by MAC and altname, would win
mkdir -p "$R/etc/systemd/system/cloud-init-local.service.d"
cat > "$R/etc/systemd/system/cloud-init-local.service.d/fresh-network.conf" <<'EOF'
[Service]
ExecStartPre=/bin/sh -c 'rm -f /etc/systemd/network/10-cloud-init-*.network'
EOF
cat > "$R/etc/ssh/sshd_config.d/90-virtfleet.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF
rm -f "$R"/etc/ssh/ssh_host_*   # cloud-init makes them at first boot (and for each new instance-id)

# the agent needs neither the network nor cloud-init: it answers as soon as the root fs is writable
mkdir -p "$R/etc/systemd/system/qemu-guest-agent.service.d"
cat > "$R/etc/systemd/system/qemu-guest-agent.service.d/early.conf" <<'EOF'
[Unit]
DefaultDependencies=no
After=systemd-remount-fs.service systemd-tmpfiles-setup.service
Conflicts=shutdown.target
Before=shutdown.target
EOF
# wait for one link, not all of them, and not 2 minutes when none comes up
mkdir -p "$R/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$R/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
EOF
chroot "$R" systemctl -q enable systemd-networkd.service systemd-resolved.service
chroot "$R" systemctl -q mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"

# nothing specific to this build or host left behind
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/var/lib/systemd/random-seed" "$R/var/lib/systemd/credential.secret"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
  "$R"/var/cache/debconf/*-old "$R"/var/lib/dpkg/*-old "$R"/tmp/* "$R"/var/tmp/* "$R"/var/lib/cloud/*
find "$R/var/log" -type f -delete
chroot "$R" dpkg-query -W > "$W/packages"

log "disk image (${DISK_MIB} MiB, ext4 root UUID=$UUID)"
truncate -s "${DISK_MIB}M" "$W/disk.raw"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$W/disk.raw"
dd if="$MBR" of="$W/disk.raw" bs=440 count=1 conv=notrunc status=none
mkfs.ext4 -q -F -L rootfs -U "$UUID" -E offset=1048576 -d "$R" "$W/disk.raw" "$((DISK_MIB - 1))M"
mkdir "$W/mnt"
mount -o loop,offset=1048576 "$W/disk.raw" "$W/mnt"
extlinux --install "$W/mnt/boot/extlinux" >&2
umount "$W/mnt"
qemu-img convert -c -f raw -O qcow2 "$W/disk.raw" "$OUT/.debian12.qcow2.tmp"
cp "$W/packages" "$OUT/debian12.packages"
mv "$OUT/.debian12.qcow2.tmp" "$OUT/debian12.qcow2"
build_uefi
echo "$OUT"
