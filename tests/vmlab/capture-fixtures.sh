#!/usr/bin/env bash
# Captures real iscsiadm output in a lab guest for the parsers' unit tests
# (tests/unit/plugins/module_utils/fixtures/iscsiadm/): discovery.txt,
# session_p3.txt and session_list.txt, with two sessions at the first portal
# (plain: LUN 1 and 2, chap: LUN 1). Needs the VM lab up (lab.sh up tgt vm);
# uses the last guest. The CHAP secret goes to the guest's node record only
# and is checked not to be in what is saved.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
out="$here/../unit/plugins/module_utils/fixtures/iscsiadm"
# shellcheck disable=SC1091
. "$lab/tgt.env"; . "$lab/vm.env"
guest=${VM_ADDRS##* }
p=$VM_PORTAL1 q=$TGT_IQN_PREFIX
ssh_opts=(-i "$VM_SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no
          -o "UserKnownHostsFile=$lab/vm/known_hosts" -o LogLevel=ERROR)
ssh "${ssh_opts[@]}" "root@$guest" "set -e
  systemctl start iscsid
  iscsiadm -m discovery -t st -p $p > /root/discovery.txt
  iscsiadm -m node -T $q:chap -p $p -o update -n node.session.auth.authmethod -v CHAP
  iscsiadm -m node -T $q:chap -p $p -o update -n node.session.auth.username -v $TGT_CHAP_USER
  iscsiadm -m node -T $q:chap -p $p -o update -n node.session.auth.password -v $TGT_CHAP_PASSWORD
  iscsiadm -m node -T $q:plain -p $p --login >/dev/null
  iscsiadm -m node -T $q:chap -p $p --login >/dev/null
  udevadm settle
  iscsiadm -m session -P 3 > /root/session_p3.txt
  iscsiadm -m session > /root/session_list.txt
  iscsiadm -m node -T $q:plain -p $p --logout >/dev/null
  iscsiadm -m node -T $q:chap -p $p --logout >/dev/null
  iscsiadm -m node -o delete"
for f in discovery session_p3 session_list; do
  scp -q "${ssh_opts[@]}" "root@$guest:/root/$f.txt" "$out/$f.txt"
done
if grep -qF "$TGT_CHAP_PASSWORD" "$out"/discovery.txt "$out"/session_p3.txt "$out"/session_list.txt; then
  echo "capture-fixtures: a CHAP secret is in the captured output; not keeping it" >&2
  git -C "$here" checkout -- "$out"
  exit 1
fi
echo "capture-fixtures: saved discovery.txt session_p3.txt session_list.txt in $out"
