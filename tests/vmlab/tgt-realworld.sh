#!/usr/bin/env bash
# The target side of tests/vmlab/playbooks/45_iscsi_real_world.yml and of
# tests/vmlab/capture-realworld.sh, on the lab's tgtd (it must be up, with
# the VM lab's bridge).
# Usage: tests/vmlab/tgt-realworld.sh up|down [luns|swap|ifaces ...] | swap
#
#   up    an IPv6 address of the lab's own ULA range on the bridge (RW_ADDR6,
#         added with nodad so it is usable at once), a tgtd portal on it, and
#         targets with tids 301-303 (tids 300-399 belong to these tests):
#           301 IQN_PREFIX:rw-luns    LUN 1, 300 and 16383 (flat space addressing
#                                     above 255; tgtd addresses no LUN beyond 16383)
#           302 IQN_PREFIX:rw-swap    LUN 1 = volume A (scsi_id 5eed000a)
#           303 IQN_PREFIX:rw-ifaces  LUN 1, for two sessions through two ifaces
#         no authentication, 16 MB sparse LUN files under $OV_LAB_DIR/tgt/rw.
#   swap  LUN 1 of rw-swap becomes volume B (another file, scsi_id 5eed000b):
#         what a back end that reuses a LUN number for another volume does.
#   down  removes all of it again (targets with their sessions, the portal,
#         the address, the LUN files). Idempotent.
# Prints the facts as KEY=value lines (RW_ADDR6, RW_PORTAL6, RW_IQN_*).
set -euo pipefail
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
# shellcheck disable=SC1091
. "$lab/tgt.env"
bridge=${VM_BRIDGE:-ovbr0}
addr6=${RW_ADDR6:-fd00:6f76:1::1}
portal6="[$addr6]:3260"
dir="$lab/tgt/rw"
prefix=$TGT_IQN_PREFIX

tgtadm() { command tgtadm -C "${TGT_CONTROL_PORT:-0}" --lld iscsi "$@"; }
target_exists() { local out; out=$(tgtadm --op show --mode target); grep -q "^Target $1: " <<<"$out"; }
portal_exists() { local out; out=$(tgtadm --op show --mode portal); grep -qF "Portal: $portal6," <<<"$out"; }

new_lun() { # tid lun file scsi_id
  [ -e "$3" ] || truncate -s 16M "$3"
  tgtadm --op new --mode logicalunit --tid "$1" --lun "$2" -b "$3"
  tgtadm --op update --mode logicalunit --tid "$1" --lun "$2" --params "scsi_id=$4,scsi_sn=$4"
}

new_target() { # tid name
  tgtadm --op new --mode target --tid "$1" -T "$prefix:$2"
  tgtadm --op bind --mode target --tid "$1" -I ALL
}

facts() {
  echo "RW_ADDR6=$addr6"
  echo "RW_PORTAL6=$portal6"
  echo "RW_IQN_LUNS=$prefix:rw-luns"
  echo "RW_IQN_SWAP=$prefix:rw-swap"
  echo "RW_IQN_IFACES=$prefix:rw-ifaces"
}

# Parts: luns (the IPv6 address and portal, target 301), swap (302),
# ifaces (303); each up and down on its own, so two guests can run their
# parts of the playbook at once.
up_part() {
  case "$1" in
    luns)
      grep -q "inet6 $addr6/" <<<"$(ip -6 addr show dev "$bridge")" || ip -6 addr add "$addr6/64" dev "$bridge" nodad
      portal_exists || tgtadm --op new --mode portal --param "portal=$portal6"
      if ! target_exists 301; then
        new_target 301 rw-luns
        new_lun 301 1 "$dir/luns-1.img" c0de0001
        new_lun 301 300 "$dir/luns-300.img" c0de012c
        new_lun 301 16383 "$dir/luns-16383.img" c0de3fff
      fi ;;
    swap)
      if ! target_exists 302; then
        new_target 302 rw-swap
        new_lun 302 1 "$dir/swap-a.img" 5eed000a
      fi ;;
    ifaces)
      if ! target_exists 303; then
        new_target 303 rw-ifaces
        new_lun 303 1 "$dir/ifaces-1.img" 1face001
      fi ;;
    *) echo "tgt-realworld: no part '$1' (luns, swap, ifaces)" >&2; exit 2 ;;
  esac
}

down_part() {
  local tid
  case "$1" in luns) tid=301 ;; swap) tid=302 ;; ifaces) tid=303 ;; *) exit 2 ;; esac
  if target_exists "$tid"; then
    tgtadm --op delete --mode target --tid "$tid" --force
  fi
  rm -f "$dir/$1"-*.img
  if [ "$1" = luns ]; then
    if portal_exists; then
      tgtadm --op delete --mode portal --param "portal=$portal6"
    fi
    if grep -q "inet6 $addr6/" <<<"$(ip -6 addr show dev "$bridge" 2>/dev/null)"; then
      ip -6 addr del "$addr6/64" dev "$bridge"
    fi
  fi
}

swap() {
  # The sessions stay logged in and see another volume behind LUN 1 from
  # now on (tgtd refuses to delete a LUN only while commands are in flight).
  tgtadm --op delete --mode logicalunit --tid 302 --lun 1
  new_lun 302 1 "$dir/swap-b.img" 5eed000b
  facts
}

verb=${1:-}
shift || true
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(luns swap ifaces)
case "$verb" in
  up) mkdir -p "$dir"; for p in "${parts[@]}"; do up_part "$p"; done; facts ;;
  swap) swap ;;
  down) for p in "${parts[@]}"; do down_part "$p"; done
        rmdir "$dir" 2>/dev/null || true
        echo "tgt-realworld: down (${parts[*]})" ;;
  *) echo "usage: $0 up|down [luns|swap|ifaces ...] | swap" >&2; exit 2 ;;
esac
