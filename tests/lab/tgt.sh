#!/usr/bin/env bash
# Lab component "tgt": a real user-space iSCSI target (tgtd) on loopback.
# Usage: tests/lab/tgt.sh up|down|status
#
# Targets (tid 1-99 belong to this script; tests that need their own use
# 100-299 and remove them again):
#   tid 1  IQN_PREFIX:plain    LUN 1 and 2, no authentication
#   tid 2  IQN_PREFIX:chap     LUN 1, one-way CHAP (TGT_CHAP_USER)
#   tid 3  IQN_PREFIX:mutual   LUN 1, mutual CHAP (TGT_CHAP_USER + TGT_MUTUAL_USER_IN)
#   tid 10+n  IQN_PREFIX:vol-NN  LUN 1, one-way CHAP, TGT_VOLUMES of them,
#             the volume catalogue of the demo, molecule and the benchmark
# Portals: TGT_PORTAL (127.0.0.1:3260) and TGT_PORTAL2 (127.0.0.1:3261) for
# multipath. LUNs are sparse files under $OV_LAB_DIR/tgt/luns.
# CHAP passwords are generated once per lab directory and kept in
# $OV_LAB_DIR/tgt/secrets (mode 0600); they never enter the repository.
set -euo pipefail

lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/tgt"
envfile="$lab/tgt.env"
pidfile="$state/tgtd.pid"
control_port=${TGT_CONTROL_PORT:-0}
portal=${TGT_PORTAL:-127.0.0.1:3260}
portal2=${TGT_PORTAL2:-127.0.0.1:3261}
volumes=${TGT_VOLUMES:-20}
lun_size=${TGT_LUN_SIZE:-64M}
iqn_prefix=iqn.2026-11.org.openvolume.lab

tgtadm() { command tgtadm -C "$control_port" --lld iscsi "$@"; }

running() {
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null \
    && tgtadm --op show --mode sys >/dev/null 2>&1
}

random_secret() {
  # 16 characters: within the 12-16 that every CHAP implementation accepts.
  local s=""
  while [ ${#s} -lt 16 ]; do s+=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'); done
  printf '%s' "${s:0:16}"
}

load_secrets() {
  local f="$state/secrets"
  if [ ! -s "$f" ]; then
    (umask 077; {
      echo "chap_user=ovlab-initiator"
      echo "chap_password=$(random_secret)"
      echo "mutual_user_in=ovlab-target"
      echo "mutual_password_in=$(random_secret)"
    } > "$f")
  fi
  # shellcheck disable=SC1090
  . "$f"
}

# Capture first, then grep: under pipefail, `tgtadm ... | grep -q` fails when
# grep exits early and tgtadm dies of SIGPIPE on a long listing.
target_exists() { local out; out=$(tgtadm --op show --mode target); grep -q "^Target $1: " <<<"$out"; }

ensure_target() { # tid name auth(none|chap|mutual) luns...
  local tid=$1 name=$2 auth=$3; shift 3
  if ! target_exists "$tid"; then
    tgtadm --op new --mode target --tid "$tid" -T "$iqn_prefix:$name"
    tgtadm --op bind --mode target --tid "$tid" -I ALL
    case "$auth" in
      chap) tgtadm --op bind --mode account --tid "$tid" --user "$chap_user" ;;
      mutual)
        tgtadm --op bind --mode account --tid "$tid" --user "$chap_user"
        tgtadm --op bind --mode account --tid "$tid" --user "$mutual_user_in" --outgoing ;;
    esac
    # tgtd keeps targets in memory only: a target that exists was made by
    # this function with all its LUNs.
    local lun file
    for lun in "$@"; do
      file="$state/luns/t$tid-lun$lun.img"
      [ -e "$file" ] || truncate -s "$lun_size" "$file"
      tgtadm --op new --mode logicalunit --tid "$tid" --lun "$lun" -b "$file"
    done
  fi
}

ensure_account() { # user password
  local out
  out=$(tgtadm --op show --mode account)
  grep -qx "    $1" <<<"$out" || tgtadm --op new --mode account --user "$1" --password "$2"
}

up() {
  mkdir -p "$state/luns"
  load_secrets
  if ! running; then
    rm -f "$pidfile"
    # tgtd daemonizes itself; -p records the daemon's pid.
    tgtd -C "$control_port" --iscsi "portal=$portal" -p "$pidfile"
    for _ in $(seq 50); do running && break; sleep 0.1; done
    running || { echo "tgt: tgtd did not start (control port $control_port)" >&2; exit 1; }
    echo "tgt: tgtd started, pid $(cat "$pidfile"), portal $portal"
  fi
  local portals
  portals=$(tgtadm --op show --mode portal)
  grep -q "^Portal: $portal2," <<<"$portals" || tgtadm --op new --mode portal --param "portal=$portal2"
  ensure_account "$chap_user" "$chap_password"
  ensure_account "$mutual_user_in" "$mutual_password_in"
  ensure_target 1 plain none 1 2
  ensure_target 2 chap chap 1
  ensure_target 3 mutual mutual 1
  local n
  for n in $(seq 1 "$volumes"); do
    ensure_target $((10 + n)) "$(printf 'vol-%02d' "$n")" chap 1
  done
  (umask 077; cat > "$envfile" <<EOF
TGT_CONTROL_PORT=$control_port
TGT_PORTAL=$portal
TGT_PORTAL2=$portal2
TGT_IQN_PREFIX=$iqn_prefix
TGT_IQN_PLAIN=$iqn_prefix:plain
TGT_IQN_CHAP=$iqn_prefix:chap
TGT_IQN_MUTUAL=$iqn_prefix:mutual
TGT_VOLUMES=$volumes
TGT_CHAP_USER=$chap_user
TGT_CHAP_PASSWORD=$chap_password
TGT_MUTUAL_USER_IN=$mutual_user_in
TGT_MUTUAL_PASSWORD_IN=$mutual_password_in
EOF
  )
  echo "tgt: up ($(tgtadm --op show --mode target | grep -c '^Target ') targets, portals $portal $portal2)"
}

down() {
  if ! running; then
    rm -f "$pidfile" "$envfile"
    echo "tgt: down"
    return 0
  fi
  local pid tid
  pid=$(cat "$pidfile")
  # tgtd ignores SIGTERM while it has targets: delete them (with their
  # sessions), then ask the daemon itself to exit.
  for tid in $(tgtadm --op show --mode target | sed -n 's/^Target \([0-9]*\): .*/\1/p'); do
    tgtadm --op delete --mode target --tid "$tid" --force
  done
  tgtadm --op delete --mode system || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "tgt: tgtd (pid $pid) did not exit, sending SIGKILL" >&2
    kill -KILL "$pid"
  fi
  rm -f "$pidfile" "$envfile"
  echo "tgt: down (tgtd pid $pid stopped; LUN files kept in $state/luns)"
}

status() {
  if running; then
    echo "tgt: up, pid $(cat "$pidfile"), $(tgtadm --op show --mode target | grep -c '^Target ') targets," \
      "$(tgtadm --op show --mode target | grep -c 'Initiator: ') sessions"
  else
    echo "tgt: down"
    return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
