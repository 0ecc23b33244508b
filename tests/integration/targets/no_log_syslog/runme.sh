#!/usr/bin/env bash
# The modules' invocation log, read where a real syslog daemon (the lab's
# rsyslog on /dev/log, tests/lab/syslog.sh) wrote it, and the -vvv output of
# the same run, hold none of the lab's CHAP passwords. Before the fix the
# CHAP password inside connection_info was in the "Invoked with" line.
set -eu
config=$(find ../.. -maxdepth 1 -name integration_config.yml | head -n 1)
value() { sed -n "s/^lab_$1: '\(.*\)'$/\1/p" "$config"; }
syslog_file=$(value syslog_file)
password=$(value tgt_chap_password)
password_in=$(value tgt_mutual_password_in)
[ -n "$password" ] && [ -n "$password_in" ] || { echo "no lab CHAP secrets in $config"; exit 1; }
if [ -z "$syslog_file" ] || [ ! -f "$syslog_file" ]; then
  echo "FAIL: no lab syslog file (lab_syslog_file in $config); bring it up: tests/lab/lab.sh up syslog"
  exit 1
fi
log=$(mktemp)
db_dir=$(mktemp -d)
trap 'rm -rf "$log" "$db_dir"' EXIT
start=$(stat -c %s "$syslog_file")
ansible-playbook -vvv -i ../../inventory -e "@$config" -e "db_dir=$db_dir" play.yml "$@" >"$log" 2>&1 \
  || { cat "$log"; exit 1; }
sleep 1  # rsyslog writes asynchronously
written=$(tail -c +"$((start + 1))" "$syslog_file")
invoked=$(grep -c 'Invoked with' <<<"$written" || true)
if grep -q -F -e "$password" -e "$password_in" <<<"$written"; then
  echo "FAIL: a CHAP secret is in the syslog lines of this run"
  exit 1
fi
if grep -q -F -e "$password" -e "$password_in" "$log"; then
  echo "FAIL: a CHAP secret is in the -vvv output"
  exit 1
fi
# (Run as a plain module file, it logs under the name of its AnsibleModule's file.)
grep -q 'Invoked with volumes=.*syslog-2.*connection_info.*auth_username' <<<"$written" \
  || { echo "FAIL: volume_reservation's invocation with connection_info did not reach syslog"; echo "$written" | tail -5; exit 1; }
grep -q "iscsi_node: Invoked with .*node.session.auth.password" <<<"$written" \
  || { echo "FAIL: iscsi_node's invocation with a secret in settings did not reach syslog"; exit 1; }
grep -q 'libvirt_disk: Invoked with .*secrets=' <<<"$written" \
  || { echo "FAIL: libvirt_disk's invocation with secrets did not reach syslog"; exit 1; }
grep -q 'iscsi_node: Invoked with' <<<"$written" \
  || { echo "FAIL: iscsi_node's invocation did not reach syslog"; exit 1; }
echo "PASS: $invoked module invocations in syslog and $(wc -l <"$log") lines of -vvv output, no CHAP secret"
