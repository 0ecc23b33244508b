#!/usr/bin/env bash
# Lab component "libvirt": a real libvirtd with the QEMU driver, started by
# hand (systemd is not PID 1 on the lab machines).
# Usage: tests/lab/libvirt.sh up|down|status
#
# What a host without libvirt-daemon-system lacks, and this script provides:
#   - the libvirt-qemu user and group: libvirtd refuses to start the QEMU
#     driver without them ("Failed to parse group 'libvirt-qemu'");
#   - /var/log/libvirt and /var/lib/libvirt/qemu;
#   - virtlogd, which QEMU's console and logs go through.
# Domains on these machines are <domain type='qemu'> (TCG; /dev/kvm does not
# boot a normal guest here), with <acpi/> (PCI hot-plug on i440fx needs it),
# started paused: live attach and detach work on a paused domain.
# tests/lab/domain.sh makes such throwaway domains.
set -euo pipefail

lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/libvirt"
envfile="$lab/libvirt.env"
uri=qemu:///system

virsh() { command virsh -q -c "$uri" "$@"; }

alive() { # pidfile executable
  [ -s "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  # A recycled pid must not pass for ours: compare the executable too.
  kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$2" ]
}

running() {
  alive "$state/libvirtd.pid" /usr/sbin/libvirtd && virsh version >/dev/null 2>&1
}

ensure_user() {
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent group kvm >/dev/null || groupadd --system kvm
  if ! id libvirt-qemu >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
      --gid libvirt-qemu --groups kvm libvirt-qemu
  fi
}

up() {
  mkdir -p "$state" /var/log/libvirt /var/lib/libvirt/qemu
  ensure_user
  if ! alive "$state/virtlogd.pid" /usr/sbin/virtlogd; then
    rm -f "$state/virtlogd.pid"
    virtlogd --daemon --pid-file "$state/virtlogd.pid"
  fi
  if ! running; then
    if alive "$state/libvirtd.pid" /usr/sbin/libvirtd; then
      echo "libvirt: libvirtd (pid $(cat "$state/libvirtd.pid")) is not answering" >&2
      exit 1
    fi
    rm -f "$state/libvirtd.pid"
    libvirtd --daemon --pid-file "$state/libvirtd.pid"
    for _ in $(seq 100); do running && break; sleep 0.1; done
    running || { echo "libvirt: libvirtd did not answer on $uri within 10 s" >&2; exit 1; }
    echo "libvirt: libvirtd started, pid $(cat "$state/libvirtd.pid"), $(virsh version | sed -n 's/^Running hypervisor: //p')"
  fi
  (umask 077; printf 'LIBVIRT_URI=%s\n' "$uri" > "$envfile")
  echo "libvirt: up ($uri)"
}

stop() { # pidfile executable name
  alive "$1" "$2" || { rm -f "$1"; return 0; }
  local pid
  pid=$(cat "$1")
  kill -TERM "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "libvirt: $3 (pid $pid) did not exit, sending SIGKILL" >&2
    kill -KILL "$pid"
  fi
  rm -f "$1"
  echo "libvirt: $3 pid $pid stopped"
}

down() {
  if running; then
    # The lab's own domains go with it; anything else on this libvirtd is
    # left alone (libvirtd keeps persistent domains across restarts).
    local dom
    for dom in $(virsh list --all --name | grep '^ovt-' || true); do
      virsh destroy "$dom" >/dev/null 2>&1 || true
      virsh undefine "$dom" >/dev/null 2>&1 || true
    done
  fi
  stop "$state/libvirtd.pid" /usr/sbin/libvirtd libvirtd
  stop "$state/virtlogd.pid" /usr/sbin/virtlogd virtlogd
  rm -f "$envfile"
  echo "libvirt: down"
}

status() {
  if running; then
    echo "libvirt: up, libvirtd pid $(cat "$state/libvirtd.pid"), $(virsh list --all --name | grep -c . || true) domains"
  else
    echo "libvirt: down"
    return 3
  fi
}

case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
