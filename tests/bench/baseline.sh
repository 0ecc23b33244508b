#!/usr/bin/env bash
# The baseline of the attach benchmark: what a hand-written script does for
# the same 20 volumes on 5 domains, with virsh and sqlite3 and no checks
# beyond exit codes: a secret and a network disk per volume, a row per
# attachment; then the reverse.
# Usage: baseline.sh attach|detach VARS_JSON DB
set -euo pipefail
verb=$1 vars=$2 db=$3
source "${OV_LAB_DIR:-/var/tmp/openvolume-lab}/tgt.env"
if [ -s "${OV_LAB_DIR:-/var/tmp/openvolume-lab}/ceph.env" ]; then
  source "${OV_LAB_DIR:-/var/tmp/openvolume-lab}/ceph.env"
fi
sqlite3 "$db" "CREATE TABLE IF NOT EXISTS att (volume TEXT PRIMARY KEY, instance TEXT, status TEXT)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# volume, domain and the disk's target (sda, sdb, ... per domain)
python3 -c '
import json, sys
seen = {}
for a in json.load(open(sys.argv[1]))["openvolume_attachments"]:
    n = seen[a["instance"]] = seen.get(a["instance"], -1) + 1
    print(a["volume"], a["instance"], "sd" + "abcdefghijklmnopqrstuvwxyz"[n])
' "$vars" |
while read -r vol dom dev; do
  usage="openvolume/$vol"
  if [ "$verb" = attach ]; then
    sqlite3 "$db" "INSERT OR REPLACE INTO att VALUES ('$vol', '$dom', 'attaching')"
    case "$vol" in
      rbd-*)  # Ceph RBD: a ceph secret with the cephx key, QEMU's librbd
        cat > "$tmp/s.xml" <<XML
<secret ephemeral='no' private='no'><usage type='ceph'><name>$usage</name></usage></secret>
XML
        uuid=$(virsh secret-define "$tmp/s.xml" | awk '/created/ {print $2}')
        printf %s "$CEPH_CLIENT_KEY" > "$tmp/value"
        virsh -q secret-set-value "$uuid" --file "$tmp/value" >/dev/null
        cat > "$tmp/d.xml" <<XML
<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source protocol='rbd' name='$CEPH_POOL/$vol'><host name='$CEPH_MON_ADDR'/>
<auth username='$CEPH_CLIENT'><secret type='ceph' usage='$usage'/></auth></source>
<target bus='scsi' dev='$dev'/>
<serial>$vol</serial></disk>
XML
        ;;
      *)  # iSCSI in qemu mode: a CHAP secret, QEMU's libiscsi
        cat > "$tmp/s.xml" <<XML
<secret ephemeral='no' private='no'><usage type='iscsi'><target>$usage</target></usage></secret>
XML
        uuid=$(virsh secret-define "$tmp/s.xml" | awk '/created/ {print $2}')
        printf %s "$TGT_CHAP_PASSWORD" > "$tmp/value"
        virsh -q secret-set-value "$uuid" --file "$tmp/value" --plain >/dev/null
        cat > "$tmp/d.xml" <<XML
<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source protocol='iscsi' name='$TGT_IQN_PREFIX:$vol/1'><host name='127.0.0.1' port='3260'/>
<auth username='$TGT_CHAP_USER'><secret type='iscsi' usage='$usage'/></auth></source>
<target bus='scsi' dev='$dev'/>
<serial>$vol</serial></disk>
XML
        ;;
    esac
    virsh -q attach-device "$dom" "$tmp/d.xml" --live --config >/dev/null
    sqlite3 "$db" "UPDATE att SET status='in-use' WHERE volume='$vol'"
  else
    sqlite3 "$db" "UPDATE att SET status='detaching' WHERE volume='$vol'"
    virsh -q detach-disk "$dom" "$dev" --live --config >/dev/null
    virsh -q secret-undefine "$(virsh -q secret-list | awk -v u="$usage" '$3 == u {print $1}')" >/dev/null
    sqlite3 "$db" "DELETE FROM att WHERE volume='$vol'"
  fi
done
