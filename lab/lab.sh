#!/usr/bin/env bash
# The virtfleet lab: N simulated hypervisor hosts on this machine (root only).
# Each host = its own network + mount + UTS namespace with a private /run, /etc/libvirt, /var/lib/libvirt,
# /var/cache/libvirt, /var/log/libvirt, /var/lib/virtfleet and its own virtlogd, libvirtd and sshd.
#   root ns: bridge vfbr0 10.200.0.1/24      host hN: eth0 10.200.0.(10+N)/24, sshd on :22
# Writes $LAB/lab.json (addresses, client key, pinned host keys) for the `lab` stack and the tests.
# usage: lab.sh up [N=2] | down | status | restart-libvirtd N | stop-host N | start-host N
set -euo pipefail
# the daemons started here must not inherit the caller's open files: a flock(1) on the lab's lock would
# otherwise stay held for as long as the hosts run
for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-"; fi; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${VIRTFLEET_LAB_DIR:-$ROOT/.lab}
BASE=$LAB/hosts
KEY=$LAB/client_key
BR=vfbr0
MAX=16

ip_of() { echo "10.200.0.$((10 + $1))"; }
log() { echo "[lab] $*" >&2; }

common_up() {
  mkdir -p "$BASE" /run/sshd /var/lib/virtfleet
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY" -C virtfleet-lab-client
  cp "$KEY.pub" "$BASE/authorized_keys"
  if ! ip link show "$BR" >/dev/null 2>&1; then
    ip link add "$BR" type bridge
    ip addr add 10.200.0.1/24 dev "$BR"
    ip link set "$BR" up
  fi
  touch "$LAB/known_hosts"
}

write_configs() {  # $1 = host number
  local n=$1 d=$BASE/h$1 ip; ip=$(ip_of "$1")
  mkdir -p "$d"/{lib,etc,cache,log,vf,root}
  # root's home as on a fresh hypervisor (Debian's default dotfiles), not this machine's: an SSH
  # session's shell sources ~/.bashrc, and a developer's (pyenv init here) costs every session ~0.1 s
  cp /usr/share/base-files/dot.bashrc "$d/root/.bashrc"; cp /usr/share/base-files/dot.profile "$d/root/.profile"
  cat > "$d/etc/qemu.conf" <<'EOF'
user = "+0"
group = "+0"
cgroup_controllers = [ ]
EOF
  echo 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"' > "$d/etc/libvirtd.conf"
  # every thread of a guest's QEMU, and its autogroup, at GUEST_NICE once it started (threads it makes
  # later inherit it)
  mkdir -p "$d/etc/hooks"
  cat > "$d/etc/hooks/qemu" <<EOF
#!/bin/sh
cat >/dev/null
[ "\$2" = started ] || exit 0
pid=\$(cat "/run/libvirt/qemu/\$1.pid" 2>/dev/null) || exit 0
for t in /proc/\$pid/task/*; do renice -n $GUEST_NICE -p "\${t##*/}" >/dev/null 2>&1; done
# libvirt starts each QEMU in a session of its own, and with autogroup scheduling every session is a
# group that the kernel shares the CPUs between as equals, whatever its threads' nice: the group's own
# nice is what ranks it against the client side.
echo $GUEST_NICE > /proc/\$pid/autogroup 2>/dev/null
exit 0
EOF
  chmod 0755 "$d/etc/hooks/qemu"
  : > "$d/etc/virtlogd.conf"
  [ -d "$BASE/capcache" ] && cp -a "$BASE/capcache/." "$d/cache/" || true
  [ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" -C "h$n"
  cat > "$d/sshd_config" <<EOF
ListenAddress $ip
Port 22
HostKey $d/host_key
PidFile $d/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $BASE/authorized_keys
StrictModes no
UsePAM no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  sed -i "/^$ip /d" "$LAB/known_hosts"
  echo "$ip $(cut -d' ' -f1,2 "$d/host_key.pub")" >> "$LAB/known_hosts"
}

# A real fleet's guests run on other machines than the one running `pulumi up`; here they share its 2
# cores.  Every QEMU runs at the lowest priority (a libvirt hook renices its threads once it started), so
# booting TCG guests do not starve the client side (pulumi, tofu, virsh, ssh) of every benchmark and test
# alike: at nice 19 thirty booting guests weigh less than one client thread (at nice 10 they weighed
# three times more).  libvirtd itself keeps normal priority, as on a real host.
GUEST_NICE=19

start_daemons() {  # $1 = host number: daemons inside the host's namespaces
  local n=$1 h=h$1 d=$BASE/h$1
  nsenter --net="/run/netns/$h" unshare -m -u --propagation private bash -ec "
    mount -t tmpfs -o mode=755 vf-run /run
    mkdir -p /run/sshd /run/libvirt /run/lock
    mount --bind $d/lib   /var/lib/libvirt
    mount --bind $d/etc   /etc/libvirt
    mount --bind $d/cache /var/cache/libvirt
    mount --bind $d/log   /var/log/libvirt
    mount --bind $d/vf    /var/lib/virtfleet
    mount --bind $d/root  /root
    printf '127.0.0.1 localhost\\n127.0.1.1 $h\\n' > $d/hosts
    mount --bind $d/hosts /etc/hosts
    hostname $h
    virtlogd -d -p $d/virtlogd.pid
    libvirtd -d -p $d/libvirtd.pid
    /usr/sbin/sshd -f $d/sshd_config
  "
  wait_libvirtd "$n"
}

in_host() {  # $1 = host number, rest = command, run in the host's namespaces
  local n=$1; shift
  nsenter -t "$(cat "$BASE/h$n/libvirtd.pid")" -m -n -u "$@"
}

wait_libvirtd() {
  local n=$1 d=$BASE/h$1 p
  for _ in $(seq 300); do
    p=$(cat "$d/libvirtd.pid" 2>/dev/null) && [ -n "$p" ] &&
      nsenter -t "$p" -m -n -u virsh -q -c qemu:///system version >/dev/null 2>&1 && {
        [ -d "$BASE/capcache" ] || cp -a "$d/cache" "$BASE/capcache"
        return 0; }
    sleep 0.1
  done
  log "h$n: libvirtd did not come up, see $d/log/libvirtd.log"; return 1
}

host_alive() {  # our own libvirtd of host $1 answers
  local p; p=$(cat "$BASE/h$1/libvirtd.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    nsenter -t "$p" -m -n -u virsh -q -c qemu:///system version >/dev/null 2>&1
}

host_up() {
  local n=$1 h=h$1 ip; ip=$(ip_of "$1")
  if ip netns list | grep -qw "$h"; then
    if host_alive "$n"; then log "$h already up"; return 0; fi
    log "$h: stale namespace (not this lab's, or its daemons died): recreating"
    host_down "$n"
  fi
  write_configs "$n"
  ip netns add "$h"
  ip link add "vfh$n" type veth peer name eth0 netns "$h"
  ip link set "vfh$n" master "$BR" up
  ip -n "$h" addr add "$ip/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" link set lo up
  start_daemons "$n"
  log "$h up: ssh root@$ip"
}

kill_netns_procs() {  # $1 = netns name: end every process inside it, guests included
  local pids
  for sig in TERM KILL; do
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    [ -z "$pids" ] && return 0
    kill -s "$sig" $pids 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(ip netns pids "$1" 2>/dev/null)" ] && return 0; sleep 0.1; done
  done
}

host_down() {
  local n=$1 h=h$1 d=$BASE/h$1
  kill_netns_procs "$h"
  rm -f "$d"/{sshd,libvirtd,virtlogd}.pid
  ip netns del "$h" 2>/dev/null || true
  ip link del "vfh$n" 2>/dev/null || true
}

write_json() {
  "${PYTHON:-python3}" - "$LAB" "$KEY" "$BASE" <<'PY'
import json, os, subprocess, sys
lab, key, base = sys.argv[1:4]
hosts = {}
for name in sorted(os.listdir(base)):
    d = os.path.join(base, name)
    if not (name.startswith("h") and name[1:].isdigit() and os.path.exists(os.path.join(d, "host_key.pub"))):
        continue
    up = subprocess.run(["ip", "netns", "pids", name], capture_output=True).returncode == 0 and \
        os.path.exists(f"/run/netns/{name}")
    if not up:
        continue
    n = int(name[1:])
    hosts[name] = {"address": f"10.200.0.{10 + n}", "port": 22, "user": "root",
                   "hostKey": " ".join(open(os.path.join(d, "host_key.pub")).read().split()[:2]),
                   "hostNic": "eth0", "virtType": "qemu", "sshKeyFile": key}
json.dump({"hosts": hosts, "sshKeyFile": key, "knownHosts": os.path.join(lab, "known_hosts"),
           "payload": os.path.join(lab, "payload", "payload.qcow2")}, open(os.path.join(lab, "lab.json"), "w"), indent=2)
PY
}

cmd=${1:-}; shift || true
case "$cmd" in
  up)
    N=${1:-2}
    [[ "$N" =~ ^[1-9][0-9]*$ ]] && (( N <= MAX )) || { echo "lab: N must be 1..$MAX, got '$N'" >&2; exit 2; }
    common_up
    for n in $(seq 1 "$N"); do host_up "$n"; done
    write_json ;;
  down)
    for d in "$BASE"/h*; do [ -d "$d" ] && host_down "${d##*/h}"; done
    for n in $(seq 1 $MAX); do host_down "$n" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    write_json 2>/dev/null || true ;;
  stop-host) host_down "$1"; write_json ;;
  start-host) common_up; host_up "$1"; write_json ;;
  restart-libvirtd)
    d=$BASE/h$1; p=$(cat "$d/libvirtd.pid")
    in_host "$1" sh -c "kill $p; while kill -0 $p 2>/dev/null; do sleep 0.1; done; libvirtd -d -p $d/libvirtd.pid"
    wait_libvirtd "$1" ;;
  exec) n=$1; shift; in_host "$n" "$@" ;;
  status) ip netns list | grep -E '^h[0-9]' || echo "no lab hosts up" ;;
  *) echo "usage: $0 up [N] | down | status | stop-host N | start-host N | restart-libvirtd N | exec N CMD..." >&2; exit 2 ;;
esac
