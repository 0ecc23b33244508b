#!/usr/bin/env bash
# Lab component "vm": compute-host guests (Debian 12 under qemu TCG) that reach
# the lab's tgtd over a bridge of their own, managed by Ansible over ssh.
# Usage: tests/lab/vm.sh up|down|status
#        tests/lab/vm.sh portal2 cut|restore   (the multipath test's path failure)
#
# Network (never leaves this machine): bridge $VM_BRIDGE (ovbr0) with
# 198.18.0.1/24 and 198.18.0.2/24 (benchmark range, only on this bridge),
# one tap per guest; guest n is 198.18.0.(10+n). tgtd gets a portal on each
# bridge address, so SendTargets answers with portals the guests can reach,
# and the target sees the same address the initiator uses. Cutting portal 2
# removes 198.18.0.2 from the bridge: packets to it are then dropped, the
# session through it times out while the one through 198.18.0.1 carries on.
#
# Needs the tgt component up (tests/lab/lab.sh up tgt) and the guest image
# (tests/vmlab/build-image.sh, run from here if missing). Guests boot from
# qcow2 overlays over the cached base image; a guest that is not running is
# started from a fresh overlay. Env: VM_COUNT (2), VM_MEMORY (512 MB).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
state="$lab/vm"
envfile="$lab/vm.env"
count=${VM_COUNT:-2}
memory=${VM_MEMORY:-768}
bridge=${VM_BRIDGE:-ovbr0}
net=198.18.0
addr1=$net.1
addr2=$net.2
prefix=24
boot_timeout=${VM_BOOT_TIMEOUT:-240}

vm_name() { echo "vm$1"; }
vm_addr() { echo "$net.$((10 + $1))"; }
vm_tap() { echo "ovtap$1"; }
vm_mac() { printf '52:54:00:18:00:%02x' "$((10 + $1))"; }

tgtadm() {
  # shellcheck disable=SC1091
  local port; port=$(. "$lab/tgt.env" && echo "${TGT_CONTROL_PORT:-0}")
  command tgtadm -C "$port" --lld iscsi "$@"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

ssh_args() {
  echo "-i $image/id_ed25519 -o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=no" \
       "-o UserKnownHostsFile=$state/known_hosts -o LogLevel=ERROR"
}

net_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    touch "$state/bridge.created"
  fi
  # Capture first, then grep: under pipefail `ip ... | grep -q` fails when
  # grep exits early and ip dies of SIGPIPE.
  local addrs
  addrs=$(ip addr show dev "$bridge")
  grep -q "inet $addr1/" <<<"$addrs" || ip addr add "$addr1/$prefix" dev "$bridge"
  grep -q "inet $addr2/" <<<"$addrs" || ip addr add "$addr2/$prefix" dev "$bridge"
  ip link set "$bridge" up
  local p
  for p in "$addr1:3260" "$addr2:3260"; do
    tgtadm --op show --mode portal | grep -q "^Portal: $p," \
      || tgtadm --op new --mode portal --param "portal=$p"
  done
}

net_down() {
  local p i
  if [ -s "$lab/tgt.env" ]; then
    for p in "$addr1:3260" "$addr2:3260"; do
      if tgtadm --op show --mode portal 2>/dev/null | grep -q "^Portal: $p,"; then
        tgtadm --op delete --mode portal --param "portal=$p" || true
      fi
    done
  fi
  for i in $(seq 1 "$count"); do
    if [ -e "$state/$(vm_tap "$i").created" ]; then
      ip link del "$(vm_tap "$i")" 2>/dev/null || true
      rm -f "$state/$(vm_tap "$i").created"
    fi
  done
  if [ -e "$state/bridge.created" ]; then
    ip link del "$bridge" 2>/dev/null || true
    rm -f "$state/bridge.created"
  fi
}

start_vm() { # n
  local n=$1 name tap addr pidfile
  name=$(vm_name "$n"); tap=$(vm_tap "$n"); addr=$(vm_addr "$n"); pidfile="$state/$name.pid"
  if pid_alive "$pidfile"; then
    return 0
  fi
  rm -f "$pidfile"
  if ! ip link show "$tap" >/dev/null 2>&1; then
    ip tuntap add dev "$tap" mode tap
    touch "$state/$tap.created"
  fi
  ip link set "$tap" master "$bridge" up
  rm -f "$state/$name.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$image/base.img" "$state/$name.qcow2"
  : > "$state/$name.console.log"
  # -display none + serial to a file: what -nographic does, but daemonized.
  qemu-system-x86_64 -accel tcg -M pc -nodefaults -no-user-config -smp 1 -m "$memory" \
    -name "$name" -display none -monitor none -serial "file:$state/$name.console.log" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 ip=$addr::$addr1:255.255.255.0:$name:eth0:off systemd.hostname=$name quiet" \
    -drive "file=$state/$name.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=$(vm_mac "$n")" \
    -device virtio-rng-pci \
    -daemonize -pidfile "$pidfile"
  date +%s.%N > "$state/$name.started"
  echo "vm: $name started (pid $(cat "$pidfile"), $addr, console $state/$name.console.log)"
}

wait_ssh() { # n
  local n=$1 name addr t0 deadline
  name=$(vm_name "$n"); addr=$(vm_addr "$n")
  t0=$(cat "$state/$name.started" 2>/dev/null || date +%s.%N)
  deadline=$(( $(date +%s) + boot_timeout ))
  # shellcheck disable=SC2046
  until ssh $(ssh_args) "root@$addr" true 2>/dev/null; do
    if ! pid_alive "$state/$name.pid"; then
      echo "vm: $name (qemu) exited during boot; console:" >&2
      tail -n 20 "$state/$name.console.log" >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "vm: $name not reachable by ssh at $addr within ${boot_timeout}s; console:" >&2
      tail -n 20 "$state/$name.console.log" >&2
      return 1
    fi
    sleep 1
  done
  if [ -e "$state/$name.started" ]; then
    echo "vm: $name ssh ready at $addr, boot (launch to ssh) $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') s"
    rm -f "$state/$name.started"
  fi
}

write_facts() {
  local names="" addrs="" i
  for i in $(seq 1 "$count"); do names+="$(vm_name "$i") "; addrs+="$(vm_addr "$i") "; done
  cat > "$envfile" <<EOF
VM_COUNT=$count
VM_NAMES="${names% }"
VM_ADDRS="${addrs% }"
VM_BRIDGE=$bridge
VM_HOST_ADDR=$addr1
VM_PORTAL1=$addr1:3260
VM_PORTAL2=$addr2:3260
VM_SSH_KEY=$image/id_ed25519
VM_IMAGE_DIR=$image
VM_INVENTORY=$state/inventory.ini
EOF
  {
    echo "[compute]"
    for i in $(seq 1 "$count"); do echo "$(vm_name "$i") ansible_host=$(vm_addr "$i")"; done
    echo
    echo "[compute:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$image/id_ed25519"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_pipelining=true"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=$state/known_hosts -o ConnectTimeout=10'"
    echo "ovlab_portal1=$addr1:3260"
    echo "ovlab_portal2=$addr2:3260"
    echo "ovlab_tgt_env=$lab/tgt.env"
    echo "ovlab_vm_sh=$repo/tests/lab/vm.sh"
  } > "$state/inventory.ini"
}

up() {
  if [ ! -s "$lab/tgt.env" ]; then
    echo "vm: the tgt component is not up (tests/lab/lab.sh up tgt first)" >&2
    exit 1
  fi
  mkdir -p "$state"
  image=$("$repo/tests/vmlab/build-image.sh")
  net_up
  local i
  for i in $(seq 1 "$count"); do start_vm "$i"; done
  for i in $(seq 1 "$count"); do wait_ssh "$i"; done
  write_facts
  echo "vm: up ($count guests on $bridge, portals $addr1:3260 $addr2:3260, inventory $state/inventory.ini)"
}

down() {
  local i pidfile pid name
  for i in $(seq 1 "$count"); do
    name=$(vm_name "$i"); pidfile="$state/$name.pid"
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "vm: $name stopped (pid $pid)"
    fi
    rm -f "$pidfile" "$state/$name.qcow2" "$state/$name.started"
  done
  [ -d "$state" ] && net_down
  rm -f "$envfile" "$state/inventory.ini" "$state/known_hosts"
  echo "vm: down"
}

status() {
  local i up=0
  for i in $(seq 1 "$count"); do
    pid_alive "$state/$(vm_name "$i").pid" && up=$((up + 1))
  done
  if [ "$up" -gt 0 ]; then
    echo "vm: up, $up of $count guests running"
  else
    echo "vm: down"
    return 3
  fi
}

portal2() {
  case "${1:-}" in
    cut) ip addr del "$addr2/$prefix" dev "$bridge" 2>/dev/null || true
         echo "vm: portal $addr2:3260 cut (address removed from $bridge)" ;;
    restore) grep -q "inet $addr2/" <<<"$(ip addr show dev "$bridge")" || ip addr add "$addr2/$prefix" dev "$bridge"
             echo "vm: portal $addr2:3260 restored" ;;
    *) echo "usage: $0 portal2 cut|restore" >&2; exit 2 ;;
  esac
}

image=$("$repo/tests/vmlab/build-image.sh" --path)
case "${1:-status}" in
  up) up ;;
  down) down ;;
  status) status ;;
  portal2) portal2 "${2:-}" ;;
  *) echo "usage: $0 up|down|status|portal2 cut|restore" >&2; exit 2 ;;
esac
