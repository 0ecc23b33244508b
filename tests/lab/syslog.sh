#!/usr/bin/env bash
# Lab component "syslog": a real syslog daemon (Debian's rsyslog) on /dev/log,
# so the tests can read what Ansible modules log about their invocations and
# prove that no secret gets there.
# Usage: tests/lab/syslog.sh up|down|status
#
# A module logs "Invoked with <its parameters>" to syslog (or to the journal
# where systemd runs); on a machine where nothing listens on /dev/log those
# lines are lost and a leak would go unseen. `up` starts rsyslogd on
# /dev/log only if nothing else provides it: every message goes to
# $OV_LAB_DIR/syslog/messages (mode 0600). If another daemon already serves
# /dev/log, it is left alone and SYSLOG_FILE stays empty (the tests then say
# they cannot read the log). `down` stops only the rsyslogd it started, by pid
# file, which removes the socket it made.
# Facts go to $OV_LAB_DIR/syslog.env: SYSLOG_FILE, SYSLOG_PROVIDER (lab or
# external).
set -euo pipefail

lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/syslog"
envfile="$lab/syslog.env"
pidfile="$state/rsyslogd.pid"
conf="$state/rsyslog.conf"
log="$state/messages"
socket=${SYSLOG_SOCKET:-/dev/log}

running() {
  [ -s "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  # A recycled pid must not pass for our rsyslogd: check the executable too.
  kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(command -v rsyslogd)")" ]
}

# Whether some process accepts datagrams on the socket (a stale socket file
# left by a dead daemon refuses them).
socket_served() {
  [ -S "$socket" ] || return 1
  python3 - "$socket" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    s.connect(sys.argv[1])
except OSError:
    sys.exit(1)
EOF
}

write_env() { # file provider
  (umask 077; printf 'SYSLOG_FILE=%s\nSYSLOG_PROVIDER=%s\n' "$1" "$2" > "$envfile")
}

up() {
  mkdir -p "$state/work"
  chmod 700 "$state"
  if running; then
    write_env "$log" lab
    echo "syslog: up, rsyslogd pid $(cat "$pidfile") on $socket, log $log"
    return 0
  fi
  rm -f "$pidfile"
  if socket_served; then
    write_env "" external
    echo "syslog: $socket is served by another daemon; left alone (its log is not read by the tests)"
    return 0
  fi
  if ! command -v rsyslogd >/dev/null 2>&1; then
    echo "syslog: rsyslogd is missing (Debian package rsyslog; tests/lab/install-deps.sh installs it)" >&2
    exit 1
  fi
  if [ -e "$socket" ]; then
    # A socket nobody serves (its daemon died): nothing provides /dev/log.
    rm -f "$socket"
  fi
  cat > "$conf" <<EOF
# Written by tests/lab/syslog.sh: /dev/log only, everything to one file.
global(workDirectory="$state/work")
module(load="imuxsock" SysSock.Name="$socket" SysSock.Unlink="on")
*.* action(type="omfile" file="$log" fileCreateMode="0600")
EOF
  touch "$log"
  chmod 600 "$log"
  rsyslogd -f "$conf" -i "$pidfile"
  for _ in $(seq 50); do running && [ -S "$socket" ] && break; sleep 0.1; done
  if ! running || ! [ -S "$socket" ]; then
    echo "syslog: rsyslogd did not start (config $conf)" >&2
    exit 1
  fi
  logger -t openvolume-lab "syslog: lab rsyslogd started"
  write_env "$log" lab
  echo "syslog: rsyslogd started, pid $(cat "$pidfile"), on $socket, log $log"
}

down() {
  if running; then
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "syslog: rsyslogd (pid $pid) did not exit, sending SIGKILL" >&2
      kill -KILL "$pid"
      rm -f "$socket"
    fi
    echo "syslog: down (rsyslogd pid $pid stopped; log kept in $log)"
  else
    echo "syslog: down"
  fi
  rm -f "$pidfile" "$envfile"
}

status() {
  if running; then
    echo "syslog: up, rsyslogd pid $(cat "$pidfile") on $socket, $(wc -l < "$log") lines in $log"
  elif socket_served; then
    echo "syslog: $socket served by another daemon"
  else
    echo "syslog: down"
    return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
