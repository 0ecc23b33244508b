#!/usr/bin/env bash
# Lab component "etcd": real etcd servers (Debian's etcd-server) on loopback,
# the shared backend of openvolume.compute.volume_reservation.
# Usage: tests/lab/etcd.sh up|down|status
#
# Two single-member clusters, each with its own data directory and pid file:
#   plain  client 127.0.0.1:23790, peer 127.0.0.1:23800, no authentication
#   auth   client 127.0.0.1:23791, peer 127.0.0.1:23801, authentication on:
#          user ETCD_AUTH_USERNAME may read and write ETCD_AUTH_PREFIX only
#          (the root user exists because etcd needs it to enable auth).
# Passwords are generated once per lab directory and kept in
# $OV_LAB_DIR/etcd/secrets (mode 0600); they never enter the repository.
# Facts go to $OV_LAB_DIR/etcd.env: ETCD_ENDPOINT, ETCD_AUTH_ENDPOINT,
# ETCD_AUTH_USERNAME, ETCD_AUTH_PASSWORD, ETCD_AUTH_PREFIX.
set -euo pipefail

lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/etcd"
envfile="$lab/etcd.env"
plain_client=${OV_ETCD_CLIENT_PORT:-23790}
plain_peer=${OV_ETCD_PEER_PORT:-23800}
auth_client=${OV_ETCD_AUTH_CLIENT_PORT:-23791}
auth_peer=${OV_ETCD_AUTH_PEER_PORT:-23801}
auth_user=openvolume
auth_prefix=/openvolume-auth/

etcdctl() { ETCDCTL_API=3 command etcdctl --dial-timeout=2s --command-timeout=5s "$@"; }

pidfile() { echo "$state/$1/etcd.pid"; }

running() { # name
  local pf
  pf=$(pidfile "$1")
  [ -s "$pf" ] || return 1
  local pid
  pid=$(cat "$pf")
  # A recycled pid must not pass for our etcd: check the executable too.
  kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(command -v etcd)")" ]
}

healthy() { # client_port [etcdctl auth args...]
  local port=$1; shift
  etcdctl --endpoints "http://127.0.0.1:$port" "$@" endpoint health >/dev/null 2>&1
}

random_secret() {
  local s=""
  while [ ${#s} -lt 20 ]; do s+=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'); done
  printf '%s' "${s:0:20}"
}

load_secrets() {
  local f="$state/secrets"
  if [ ! -s "$f" ]; then
    (umask 077; {
      echo "root_password=$(random_secret)"
      echo "user_password=$(random_secret)"
    } > "$f")
  fi
  # shellcheck disable=SC1090
  . "$f"
}

start() { # name client_port peer_port
  local name=$1 client=$2 peer=$3
  local dir="$state/$name"
  if running "$name"; then
    return 0
  fi
  mkdir -p "$dir/data"
  chmod 700 "$dir" "$dir/data"
  # etcd reads every ETCD_* variable of its environment as a flag: start it
  # with a clean one so a sourced etcd.env cannot change its configuration.
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid etcd \
    --name "ov-lab-$name" \
    --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$client" \
    --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "ov-lab-$name=http://127.0.0.1:$peer" \
    --initial-cluster-state new \
    --initial-cluster-token "ov-lab-$name" \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! > "$(pidfile "$name")"
}

wait_healthy() { # name client_port [auth args]
  local name=$1 port=$2; shift 2
  local i
  for ((i = 0; i < 100; i++)); do
    if healthy "$port" "$@"; then
      return 0
    fi
    if ! running "$name"; then
      echo "etcd lab: etcd '$name' exited; last lines of $state/$name/etcd.log:" >&2
      tail -n 20 "$state/$name/etcd.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "etcd lab: etcd '$name' did not become healthy on 127.0.0.1:$port within 10s" >&2
  return 1
}

setup_auth() {
  local ep="http://127.0.0.1:$auth_client"
  # With auth on, listing users needs a login: a refusal means a previous
  # `up` finished this setup. (etcdctl 3.4 ignores --user while auth is off,
  # so a login that works proves nothing.)
  if ! etcdctl --endpoints "$ep" user list >/dev/null 2>&1; then
    return 0
  fi
  etcdctl --endpoints "$ep" user add "root:$root_password" >/dev/null 2>&1 || true
  etcdctl --endpoints "$ep" user grant-role root root >/dev/null
  etcdctl --endpoints "$ep" user add "$auth_user:$user_password" >/dev/null 2>&1 || true
  etcdctl --endpoints "$ep" role add openvolume >/dev/null 2>&1 || true
  etcdctl --endpoints "$ep" role grant-permission --prefix=true openvolume readwrite "$auth_prefix" >/dev/null
  etcdctl --endpoints "$ep" user grant-role "$auth_user" openvolume >/dev/null
  etcdctl --endpoints "$ep" auth enable >/dev/null
}

write_env() {
  local tmp="$envfile.tmp"
  (umask 077; {
    echo "ETCD_ENDPOINT=http://127.0.0.1:$plain_client"
    echo "ETCD_AUTH_ENDPOINT=http://127.0.0.1:$auth_client"
    echo "ETCD_AUTH_USERNAME=$auth_user"
    echo "ETCD_AUTH_PASSWORD=$user_password"
    echo "ETCD_AUTH_PREFIX=$auth_prefix"
  } > "$tmp")
  mv "$tmp" "$envfile"
}

stop() { # name
  local name=$1 pf pid i
  pf=$(pidfile "$name")
  if running "$name"; then
    pid=$(cat "$pf")
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "etcd lab: etcd '$name' (pid $pid) did not stop on SIGTERM within 10s, sending SIGKILL" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pf"
}

case "${1:-status}" in
  up)
    command -v etcd >/dev/null || { echo "etcd lab: etcd not installed (Debian package etcd-server); run make deps" >&2; exit 1; }
    command -v etcdctl >/dev/null || { echo "etcd lab: etcdctl not installed (Debian package etcd-client); run make deps" >&2; exit 1; }
    mkdir -p "$state"
    chmod 700 "$state"
    load_secrets
    start plain "$plain_client" "$plain_peer"
    start auth "$auth_client" "$auth_peer"
    wait_healthy plain "$plain_client"
    # Once auth is on, the health check needs a login.
    wait_healthy auth "$auth_client" --user "root:$root_password"
    setup_auth
    write_env
    echo "etcd lab: up (plain http://127.0.0.1:$plain_client, auth http://127.0.0.1:$auth_client)"
    ;;
  down)
    stop auth
    stop plain
    rm -f "$envfile"
    echo "etcd lab: down"
    ;;
  status)
    rc=0
    for spec in "plain:$plain_client" "auth:$auth_client"; do
      name=${spec%%:*}; port=${spec#*:}
      if running "$name"; then
        echo "etcd lab: $name up, pid $(cat "$(pidfile "$name")"), http://127.0.0.1:$port"
      else
        echo "etcd lab: $name down"
        rc=3
      fi
    done
    exit $rc
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
