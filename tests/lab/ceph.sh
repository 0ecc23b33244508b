#!/usr/bin/env bash
# Lab component "ceph": a real single-node Ceph (Debian's ceph-mon and
# ceph-osd, 16.2) on loopback, for RBD volumes that QEMU opens itself
# through librbd (FLOW.md step 10, seed 001).
# Usage: tests/lab/ceph.sh up|down|status
#
#   mon.a   127.0.0.1, messenger v2 on CEPH_MON_PORT_V2 (3300) and v1 on
#           CEPH_MON_PORT_V1 (6789), as a real monitor listens
#   osd.0   BlueStore on a sparse file ($OV_LAB_DIR/ceph/osd.block, 4 GiB
#           apparent, a few tens of MB used) instead of a block device, as
#           Ceph's own development clusters (vstart.sh) run it; small caches
#   no mgr  pools, keys and RBD I/O need only the monitor and the OSD; a
#           manager would add a few hundred MB for statistics (ceph -s shows
#           "0 pools" and no usage without it; ceph osd pool ls is the truth)
# cephx is on everywhere. Pool CEPH_POOL ("volumes", size 1, 8 PGs,
# application rbd) holds the volumes; client.openvolume may use that pool
# only (mon 'profile rbd', osd 'profile rbd pool=volumes'), as the key of a
# compute host would.
#
# State in $OV_LAB_DIR/ceph: ceph.conf, the keyrings (mode 0600, made once
# per lab directory, never in the repository), the daemons' data, pid files
# and logs. Facts (with the client's key, like the CHAP passwords in
# tgt.env) go to $OV_LAB_DIR/ceph.env, mode 0600. `down` stops the daemons
# by the pids in their pid files and keeps the data: the next `up` is a warm
# start of the same cluster.
set -euo pipefail

# Ceph's tools set O_NONBLOCK on the descriptors they write to. The flag
# belongs to the open file, which is shared with whoever gave this script its
# output (make, a CI log, a terminal): an ansible-playbook run next on the
# same output refuses to start ("Ansible requires blocking IO"). So this
# script runs with pipes of its own, copied on by cat.
if [ -z "${OV_CEPH_OWN_PIPES:-}" ]; then
  export OV_CEPH_OWN_PIPES=1
  "$0" "$@" </dev/null 2> >(cat >&2) | cat
  exit "${PIPESTATUS[0]}"
fi

lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/ceph"
envfile="$lab/ceph.env"
conf="$state/ceph.conf"
admin_keyring="$state/client.admin.keyring"
addr=127.0.0.1
port_v2=${CEPH_MON_PORT_V2:-3300}
port_v1=${CEPH_MON_PORT_V1:-6789}
pool=${CEPH_POOL:-volumes}
images=${CEPH_IMAGES:-6}
client=openvolume
client_keyring="$state/client.$client.keyring"
daemons=("mon.a:/usr/bin/ceph-mon" "osd.0:/usr/bin/ceph-osd")

# The admin's view of the cluster (its keyring is named in ceph.conf). The
# timeouts make a dead monitor or OSD an answer instead of a hang.
ceph() { command ceph -c "$conf" --connect-timeout 5 "$@"; }
rbd() { timeout 30 rbd -c "$conf" "$@"; }

pidfile() { echo "$state/run/$1.pid"; }

alive() { # daemon executable
  local pf pid
  pf=$(pidfile "$1")
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf")
  # A recycled pid must not pass for our daemon: compare the executable too.
  kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$2" ]
}

write_conf() { # fsid
  cat > "$conf.tmp" <<EOF
# Written by tests/lab/ceph.sh: the lab's single-node Ceph on loopback.
[global]
fsid = $1
mon host = [v2:$addr:$port_v2,v1:$addr:$port_v1]
public addr = $addr
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
# One OSD: pools of size 1, placement over OSDs rather than hosts, no
# autoscaler (that is a mgr module).
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# No mgr in this lab on purpose (see tests/lab/ceph.sh).
mon mgr mkfs grace = 31536000
# The lab shares its disk with the rest of the machine: warn only when full.
mon data avail warn = 2
mon data avail crit = 1
# One monitor: no reason to batch map updates for a second (the default),
# which made every pool and key command of the bootstrap wait.
paxos propose interval = 0.05
run dir = $state/run
[mon]
mon data = $state/mon
log file = $state/log/\$name.log
admin socket = $state/run/\$name.asok
[osd]
osd data = $state/osd
keyring = $state/osd/keyring
log file = $state/log/\$name.log
admin socket = $state/run/\$name.asok
osd objectstore = bluestore
bluestore block path = $state/osd.block
bluestore block create = true
bluestore block size = 4294967296
# Small, fixed caches instead of the 4 GiB memory target.
bluestore cache autotune = false
bluestore cache size = 67108864
bluestore rocksdb options = compression=kNoCompression,max_write_buffer_number=2,min_write_buffer_number_to_merge=1,recycle_log_file_num=2,write_buffer_size=16777216,writable_file_max_buffer_size=0,compaction_readahead_size=2097152,max_background_compactions=1,max_total_wal_size=67108864
osd memory target = 536870912
# Two cores: few threads.
osd op num shards = 1
osd op num threads per shard = 2
[client]
log file = /dev/null
admin socket =
[client.admin]
keyring = $admin_keyring
EOF
  mv "$conf.tmp" "$conf"
}

bootstrap_mon() {
  local fsid tmp="$state/bootstrap"
  # A new cluster: whatever an earlier, unfinished bootstrap left goes.
  rm -rf "$state/mon" "$state/osd" "$state/osd.block" "$state/osd.uuid" "$tmp" "$client_keyring"
  mkdir -p "$tmp"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"
  # The monitor's mkfs imports every key of this keyring (mon. and
  # client.admin) into its auth database.
  (umask 077
   ceph-authtool --create-keyring "$tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
   ceph-authtool --create-keyring "$admin_keyring" --gen-key -n client.admin \
     --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
   ceph-authtool "$tmp/mon.keyring" --import-keyring "$admin_keyring" >/dev/null)
  monmaptool --create --fsid "$fsid" --addv a "[v2:$addr:$port_v2,v1:$addr:$port_v1]" "$tmp/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$tmp/monmap" --keyring "$tmp/mon.keyring" \
    >>"$state/log/mon.a.out" 2>&1 || true
  # ceph-mon --mkfs can log an error and still exit 0: the store tells.
  if [ ! -d "$state/mon/store.db" ]; then
    echo "ceph lab: ceph-mon --mkfs did not create $state/mon/store.db; last lines of $state/log/mon.a.out:" >&2
    tail -n 5 "$state/log/mon.a.out" >&2
    exit 1
  fi
  rm -rf "$tmp"
  touch "$state/mon/.lab-done"
}

bootstrap_osd() {
  local uuid
  rm -rf "$state/osd" "$state/osd.block"
  mkdir -p "$state/osd"
  # One OSD uuid per cluster, kept: "ceph osd new" with the same uuid and id
  # changes nothing, so a bootstrap cut short can simply run again.
  [ -s "$state/osd.uuid" ] || cat /proc/sys/kernel/random/uuid > "$state/osd.uuid"
  uuid=$(cat "$state/osd.uuid")
  ceph osd new "$uuid" 0 >/dev/null
  (umask 077
   ceph auth get-or-create osd.0 mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
     > "$state/osd/keyring")
  if ! ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >>"$state/log/osd.0.out" 2>&1; then
    echo "ceph lab: ceph-osd --mkfs failed; last lines of $state/log/osd.0.out:" >&2
    tail -n 5 "$state/log/osd.0.out" >&2
    exit 1
  fi
  touch "$state/osd/.lab-done"
}

start_daemon() { # daemon executable args...
  local name=$1 exe=$2; shift 2
  alive "$name" "$exe" && return 0
  rm -f "$(pidfile "$name")"
  # -f: the daemon stays in the foreground of this background job, so $! is
  # its pid (setsid execs it: no fork in between).
  setsid "$exe" -c "$conf" -f "$@" </dev/null >>"$state/log/$name.out" 2>&1 &
  echo $! > "$(pidfile "$name")"
  echo "ceph lab: $name started, pid $!"
}

wait_for() { # daemon executable what seconds command...
  local daemon=$1 exe=$2 what=$3 secs=$4 deadline=$((SECONDS + $4)); shift 4
  until "$@" >/dev/null 2>&1; do
    if ! alive "$daemon" "$exe"; then
      echo "ceph lab: $daemon exited; last lines of $state/log/$daemon.log:" >&2
      tail -n 20 "$state/log/$daemon.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "ceph lab: $what: not within ${secs}s; see $state/log/$daemon.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

osd_up() { ceph osd dump | grep -q '^osd\.0 up '; }

ensure_pool() {
  if ! ceph osd pool ls | grep -qx "$pool"; then
    # Size 1 comes from "osd pool default size"; "rbd pool init" tags the
    # pool for rbd and waits for its placement groups.
    ceph osd pool create "$pool" 8 8 replicated >/dev/null 2>&1
    rbd pool init "$pool"
  fi
}

ensure_client() {
  # Made once per cluster (a new cluster removes the old keyring).
  [ -s "$client_keyring" ] && return 0
  # get-or-create returns the existing key, or fails if the caps differ.
  (umask 077
   ceph auth get-or-create "client.$client" mon 'profile rbd' osd "profile rbd pool=$pool" \
     > "$client_keyring.tmp")
  mv "$client_keyring.tmp" "$client_keyring"
}

# The RBD volumes of the lab's catalogue (inventories/lab): rbd-01 ..
# rbd-NN, 64 MiB each. rbd-03 is multiattach, so it is made without the
# exclusive-lock feature (and the object-map and fast-diff that need it);
# the others keep Ceph's default features, as Cinder makes them.
ensure_images() {
  local have n name
  have=$(rbd ls "$pool")
  for n in $(seq 1 "$images"); do
    name=$(printf 'rbd-%02d' "$n")
    grep -qx "$name" <<<"$have" && continue
    if [ "$name" = rbd-03 ]; then
      rbd create "$pool/$name" --size 64M --image-feature layering
    else
      rbd create "$pool/$name" --size 64M
    fi
  done
}

write_env() {
  local key
  key=$(sed -n 's/^[[:space:]]*key = //p' "$client_keyring")
  (umask 077; cat > "$envfile.tmp" <<EOF
CEPH_CONF=$conf
CEPH_MON_ADDR=$addr
CEPH_MON_PORT_V2=$port_v2
CEPH_MON_PORT_V1=$port_v1
CEPH_MON_HOST=[v2:$addr:$port_v2,v1:$addr:$port_v1]
CEPH_POOL=$pool
CEPH_IMAGES=$images
CEPH_CLIENT=$client
CEPH_CLIENT_KEYRING=$client_keyring
CEPH_CLIENT_KEY=$key
CEPH_ADMIN_KEYRING=$admin_keyring
EOF
  )
  mv "$envfile.tmp" "$envfile"
}

up() {
  local missing=() bin
  for bin in ceph-mon ceph-osd ceph rbd ceph-authtool monmaptool; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ceph lab: ${missing[*]} not installed (Debian packages ceph-mon, ceph-osd, ceph-common); run make deps" >&2
    exit 1
  fi
  mkdir -p "$state/run" "$state/log"
  chmod 700 "$state"
  # A cluster whose first start was cut short is made again from scratch.
  [ -e "$state/mon/.lab-done" ] || bootstrap_mon
  start_daemon mon.a /usr/bin/ceph-mon -i a
  wait_for mon.a /usr/bin/ceph-mon "the monitor answering on $addr:$port_v2" 30 ceph mon stat
  [ -e "$state/osd/.lab-done" ] || bootstrap_osd
  start_daemon osd.0 /usr/bin/ceph-osd -i 0
  wait_for osd.0 /usr/bin/ceph-osd "osd.0 up" 60 osd_up
  ensure_pool
  ensure_client
  # The pool answers (its placement groups are active) before we say "up".
  wait_for osd.0 /usr/bin/ceph-osd "pool $pool answering" 30 rbd ls "$pool"
  ensure_images
  write_env
  echo "ceph lab: up (mon $addr:$port_v2 and :$port_v1, pool $pool, client.$client)"
}

stop_daemon() { # daemon executable
  local pf pid
  pf=$(pidfile "$1")
  if alive "$1" "$2"; then
    pid=$(cat "$pf")
    kill -TERM "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "ceph lab: $1 (pid $pid) did not exit within 30s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "ceph lab: $1 pid $pid stopped"
  fi
  rm -f "$pf"
}

down() {
  local i
  # The OSD first: it tells the monitor it is going.
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
    stop_daemon "${daemons[i]%%:*}" "${daemons[i]#*:}"
  done
  rm -f "$envfile"
  echo "ceph lab: down (data kept in $state)"
}

status() {
  local rc=0 d
  for d in "${daemons[@]}"; do
    if alive "${d%%:*}" "${d#*:}"; then
      echo "ceph lab: ${d%%:*} up, pid $(cat "$(pidfile "${d%%:*}")")"
    else
      echo "ceph lab: ${d%%:*} down"
      rc=3
    fi
  done
  if alive mon.a /usr/bin/ceph-mon; then
    echo "ceph lab: ceph health: $(ceph health 2>&1 || true); pools: $(ceph osd pool ls 2>/dev/null | xargs)"
  fi
  return $rc
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
