#!/usr/bin/env bash
# Captures what real hosts print in the cases of issue 9, in a lab guest, as
# unit-test fixtures (tests/unit/plugins/module_utils/fixtures/iscsiadm/rw_*):
# an IPv6 portal written in another spelling than the kernel prints it, LUNs
# 1, 300 and 16383 (flat space addressing), two sessions to one portal
# through two ifaces, odd node records (a host name without a dot, an
# IPv4-mapped IPv6 address), and what sysfs and udev make of them.
# Needs the VM lab up (lab.sh up tgt vm); uses the first guest and the
# targets of tests/vmlab/tgt-realworld.sh, which it brings up and down.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
out="$here/../unit/plugins/module_utils/fixtures/iscsiadm"
# shellcheck disable=SC1091
. "$lab/tgt.env"; . "$lab/vm.env"
guest=${VM_ADDRS%% *}
ssh_opts=(-i "$VM_SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no
          -o "UserKnownHostsFile=$lab/vm/known_hosts" -o LogLevel=ERROR)
eval "$("$here/tgt-realworld.sh" up)"
trap '"$here/tgt-realworld.sh" down >/dev/null' EXIT
p4=$VM_PORTAL1
# The record of rw-luns is made with the portal in upper case and with a
# zero group: the kernel then reports that spelling as persistent address.
spelt="[$(tr a-f A-F <<<"${RW_ADDR6/::/:0::}")]:3260"
ssh "${ssh_opts[@]}" "root@$guest" bash -s <<EOF
set -euo pipefail
cd /root
systemctl start iscsid multipathd
ip -6 addr show dev eth0 | grep -q 'fd00:6f76:1::11/' || ip -6 addr add fd00:6f76:1::11/64 dev eth0 nodad
for iface in ov-a ov-b; do
  iscsiadm -m iface -I \$iface -o new >/dev/null
  iscsiadm -m iface -I \$iface -o update -n iface.net_ifacename -v eth0 >/dev/null
done
iscsiadm -m iface > rw_iface_list.txt
iscsiadm -m node -o new -T $RW_IQN_LUNS -p '$spelt' >/dev/null
for iface in ov-a ov-b; do iscsiadm -m node -o new -T $RW_IQN_IFACES -p $p4,1 -I \$iface >/dev/null; done
# Odd records: a host name without a dot, an IPv4-mapped IPv6 address
# (iscsiadm cannot be given one with -p; a discovery can write one: here a
# copy of a record with its address changed), and an empty record file.
nodes=/etc/iscsi/nodes
iscsiadm -m node -o new -T $TGT_IQN_PREFIX:odd-host -p storage:3260 >/dev/null
mkdir -p "\$nodes/$TGT_IQN_PREFIX:odd-mapped" "\$nodes/$TGT_IQN_PREFIX:odd-empty/198.18.0.9,3260,1"
sed -e 's/^node.name = .*/node.name = $TGT_IQN_PREFIX:odd-mapped/' \
    -e 's/^node.conn\[0\].address = .*/node.conn[0].address = ::ffff:198.18.0.1/' \
    "\$nodes/$TGT_IQN_PREFIX:odd-host/storage,3260" > "\$nodes/$TGT_IQN_PREFIX:odd-mapped/::ffff:198.18.0.1,3260"
: > "\$nodes/$TGT_IQN_PREFIX:odd-empty/198.18.0.9,3260,1/default"
iscsiadm -m node -T $RW_IQN_LUNS -p '$spelt' --login >/dev/null
iscsiadm -m node -T $RW_IQN_IFACES -p $p4 -I ov-a --login >/dev/null
iscsiadm -m node -T $RW_IQN_IFACES -p $p4 -I ov-b --login >/dev/null
udevadm settle
iscsiadm -m node > rw_node_list.txt
iscsiadm -m node -P 1 > rw_node_tree.txt
iscsiadm -m session > rw_session_list.txt
iscsiadm -m session -P 3 > rw_session_p3.txt
{
  echo "# sysfs of each session: targetname, ifacename, persistent and current address"
  for s in /sys/class/iscsi_session/session*; do
    sid=\${s##*session}
    c=/sys/class/iscsi_connection/connection\$sid:0
    echo "session\$sid targetname=\$(cat \$s/targetname) ifacename=\$(cat \$s/ifacename)" \
      "persistent_address=\$(cat \$c/persistent_address) persistent_port=\$(cat \$c/persistent_port)" \
      "address=\$(cat \$c/address) port=\$(cat \$c/port)"
    for d in \$(realpath \$s/device)/target*/*:*:*:*; do
      disk=\$(ls \$d/block 2>/dev/null || true)
      echo "  \${d##*/} \${disk:-(no disk)} wwid=\$(cat \$d/wwid 2>/dev/null || echo -)"
    done
  done
  echo "# /dev/disk/by-path"
  for l in /dev/disk/by-path/ip-*; do echo "\${l##*/} -> \$(readlink \$l)"; done
  echo "# udev properties of the disks"
  for b in /sys/block/sd*; do
    udevadm info -q property -n \${b##*/} | grep -E '^(DEVNAME|ID_PATH|ID_SERIAL|ID_WWN|ID_WWN_WITH_EXTENSION)='
  done
} > rw_sysfs_udev.txt
for iface in ov-a ov-b; do iscsiadm -m node -T $RW_IQN_IFACES -p $p4 -I \$iface --logout >/dev/null; done
iscsiadm -m node -T $RW_IQN_LUNS -p '$spelt' --logout >/dev/null
iscsiadm -m node -o delete >/dev/null 2>&1 || true
rm -rf "\$nodes/$TGT_IQN_PREFIX:odd-empty"
for iface in ov-a ov-b; do iscsiadm -m iface -I \$iface -o delete >/dev/null; done
ip -6 addr del fd00:6f76:1::11/64 dev eth0
EOF
for f in rw_iface_list rw_node_list rw_node_tree rw_session_list rw_session_p3 rw_sysfs_udev; do
  scp -q "${ssh_opts[@]}" "root@$guest:/root/$f.txt" "$out/$f.txt"
done
echo "capture-realworld: saved rw_*.txt in $out"
