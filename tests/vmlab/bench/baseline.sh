#!/usr/bin/env bash
# The baseline of the VM-tier benchmark (tests/vmlab/bench/host_bench.py),
# run inside one compute-host guest: what a hand-written script does for the
# same volumes in host mode with multipath, with iscsiadm, virsh, multipath
# and sqlite3 and no checks beyond exit codes and the waits it cannot do
# without.
#   attach: a row per attachment; node records with CHAP and a login at both
#           portals for every volume; then per volume the wait for its
#           multipath map, a block disk hot-plugged live and persistent, and
#           the row marked in-use.
#   detach: the reverse: the disk (virsh waits for QEMU's DEVICE_DELETED),
#           the map flushed, the SCSI disks deleted, logout, records deleted,
#           the row deleted.
# Usage: baseline.sh attach|detach
# Settings come from bench.env beside this file (mode 0600, written by
# setup.yml from the running lab's tgt.env, removed again by it): the CHAP
# user and password, the IQN prefix, the two portals, the domains and the
# number of volumes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$here/bench.env"
verb=${1:?usage: baseline.sh attach|detach}
db=$here/script.db
portals=("$BENCH_PORTAL1" "$BENCH_PORTAL2")
read -r -a domains <<<"$BENCH_DOMAINS"
letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
wait_timeout=60

sqlite3 "$db" "CREATE TABLE IF NOT EXISTS att (volume TEXT PRIMARY KEY, instance TEXT, status TEXT, device TEXT)"

# volume, domain and the disk's target (sda, sdb, ... per domain), round robin.
plan() {
  local i n=${#domains[@]}
  for i in $(seq 0 $((BENCH_VOLUMES - 1))); do
    echo "$(printf 'vol-%02d' $((i + 1))) ${domains[$((i % n))]} sd${letters[$((i / n))]}"
  done
}

wait_path() { # path: a udev link, polled every 0.1 s
  local _
  for _ in $(seq $((wait_timeout * 10))); do
    [ -e "$1" ] && return 0
    sleep 0.1
  done
  echo "baseline: $1 did not appear within ${wait_timeout}s" >&2
  return 1
}

attach() {
  local vol dom dev iqn p wwid map
  # Every login first: the kernel and udev set up the earlier volumes while
  # the later ones log in.
  while read -r vol dom dev; do
    sqlite3 "$db" "INSERT INTO att VALUES ('$vol', '$dom', 'attaching', NULL)"
    iqn=$BENCH_IQN_PREFIX:$vol
    for p in "${portals[@]}"; do
      iscsiadm -m node -T "$iqn" -p "$p" -o new >/dev/null
      iscsiadm -m node -T "$iqn" -p "$p" -o update -n node.session.auth.authmethod -v CHAP
      iscsiadm -m node -T "$iqn" -p "$p" -o update -n node.session.auth.username -v "$BENCH_CHAP_USER"
      # The plain way: the password with -v, on iscsiadm's command line
      # (in the guest's process list while it runs), on every run. iscsiadm
      # takes it no other way; iscsi_node sets it only when it differs.
      # Acceptable in this baseline; nothing here prints it.
      iscsiadm -m node -T "$iqn" -p "$p" -o update -n node.session.auth.password -v "$BENCH_CHAP_PASSWORD"
      iscsiadm -m node -T "$iqn" -p "$p" --login >/dev/null
      iscsiadm -m node -T "$iqn" -p "$p" -o update -n node.startup -v automatic
    done
  done < <(plan)
  while read -r vol dom dev; do
    iqn=$BENCH_IQN_PREFIX:$vol
    wait_path "/dev/disk/by-path/ip-$BENCH_PORTAL1-iscsi-$iqn-lun-1"
    wwid=$(/lib/udev/scsi_id -g -u -d "/dev/disk/by-path/ip-$BENCH_PORTAL1-iscsi-$iqn-lun-1")
    map=/dev/disk/by-id/dm-uuid-mpath-$wwid
    wait_path "$map"
    cat > "$here/disk.xml" <<XML
<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>
<source dev='$map'/><target bus='scsi' dev='$dev'/><serial>$vol</serial></disk>
XML
    virsh -q attach-device "$dom" "$here/disk.xml" --live --config >/dev/null
    sqlite3 "$db" "UPDATE att SET status='in-use', device='$map' WHERE volume='$vol'"
  done < <(plan)
}

detach() {
  local vol dom dev iqn p map name sd
  while read -r vol dom dev; do
    iqn=$BENCH_IQN_PREFIX:$vol
    map=$(sqlite3 "$db" "SELECT device FROM att WHERE volume='$vol'")
    sqlite3 "$db" "UPDATE att SET status='detaching' WHERE volume='$vol'"
    virsh -q detach-disk "$dom" "$dev" --live --config >/dev/null
    name=$(basename "$(readlink -f "$map")")
    multipath -f "$(cat "/sys/block/$name/dm/name")"
    for p in "${portals[@]}"; do
      sd=$(basename "$(readlink -f "/dev/disk/by-path/ip-$p-iscsi-$iqn-lun-1")")
      echo 1 > "/sys/block/$sd/device/delete"
      iscsiadm -m node -T "$iqn" -p "$p" --logout >/dev/null
      iscsiadm -m node -T "$iqn" -p "$p" -o delete
    done
    sqlite3 "$db" "DELETE FROM att WHERE volume='$vol'"
  done < <(plan)
}

case "$verb" in
  attach) attach ;;
  detach) detach ;;
  *) echo "usage: $0 attach|detach" >&2; exit 2 ;;
esac
