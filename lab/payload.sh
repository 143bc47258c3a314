#!/usr/bin/env bash
# Builds the lab guest payload from Debian packages only: a 64 MiB raw disk image (FAT superfloppy with
# SYSLINUX) holding a Debian kernel and a busybox initramfs.  Booted, the guest prints
# "VIRTFLEET-PAYLOAD-UP" on its serial console and stays up; it powers off on an ACPI power-button press
# (graceful shutdown) or when "poweroff" is typed on its console (a guest stopping itself).
# Output: $OUT/payload.raw, $OUT/payload.qcow2, $OUT/vmlinuz, $OUT/initrd.img (also usable for direct
# kernel boot).  Idempotent: skips the build when $OUT/payload.raw exists.
set -euo pipefail
OUT=${OUT:-$(cd "$(dirname "$0")/.." && pwd)/.lab/payload}
[ -f "$OUT/payload.qcow2" ] && { echo "$OUT"; exit 0; }
mkdir -p "$OUT"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cd "$W"
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || { echo "payload: no linux-image package known to apt; run apt-get update" >&2; exit 1; }
apt-get download -q "$KPKG" >&2
dpkg-deb -x linux-image-*.deb k
cp k/boot/vmlinuz-* "$W/vmlinuz"
KM=$(echo k/lib/modules/*/kernel)
mkdir -p ir/{bin,sbin,proc,sys,dev,etc,lib/mod}
cp /bin/busybox ir/bin/busybox
for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
         drivers/acpi/button drivers/input/evdev; do
  if [ -f "$KM/$m.ko" ]; then cp "$KM/$m.ko" ir/lib/mod/
  elif [ -f "$KM/$m.ko.xz" ]; then xz -dc "$KM/$m.ko.xz" > "ir/lib/mod/$(basename "$m").ko"; fi
done
cat > ir/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk button evdev; do
  [ -f /lib/mod/$m.ko ] && insmod /lib/mod/$m.ko 2>/dev/null
done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done
disk=none; [ -b /dev/vda ] && disk=$(blockdev --getsize64 /dev/vda)
echo "VIRTFLEET-PAYLOAD-UP uptime=$(cut -d' ' -f1 /proc/uptime) disk_bytes=$disk"
# graceful shutdown: any event from an input device (the ACPI power button) powers off
for ev in /dev/input/event*; do
  [ -c "$ev" ] && (head -c 1 "$ev" >/dev/null && echo "VIRTFLEET-PAYLOAD-ACPI-SHUTDOWN" && sync && poweroff -f) &
done
# a guest stopping itself: "poweroff" typed on the serial console
while true; do
  if read -r line; then
    case "$line" in poweroff) echo "VIRTFLEET-PAYLOAD-SELF-POWEROFF"; sync; poweroff -f ;; esac
  else
    sleep 1
  fi
done
INIT
chmod +x ir/init
(cd ir && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$W/initrd.img"
cat > syslinux.cfg <<'CFG'
DEFAULT vf
PROMPT 0
TIMEOUT 0
LABEL vf
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 quiet panic=-1
CFG
truncate -s 64M disk.raw
mkfs.vfat -n VIRTFLEET disk.raw >/dev/null
mcopy -i disk.raw vmlinuz initrd.img syslinux.cfg ::/
syslinux --install disk.raw
cp --sparse=always disk.raw "$OUT/payload.raw"
qemu-img convert -f raw -O qcow2 disk.raw "$OUT/payload.qcow2"
cp vmlinuz initrd.img "$OUT/"
echo "$OUT"
