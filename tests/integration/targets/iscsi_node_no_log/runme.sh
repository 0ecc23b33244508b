#!/usr/bin/env bash
# CHAP secrets must not reach the output of a -vvv run, not even in the
# module invocation Ansible prints at that verbosity.
set -eu
config=$(find ../.. -maxdepth 1 -name integration_config.yml | head -n 1)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ansible-playbook -vvv -i ../../inventory -e "@$config" play.yml "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
password=$(sed -n "s/^lab_tgt_chap_password: '\(.*\)'$/\1/p" "$config")
password_in=$(sed -n "s/^lab_tgt_mutual_password_in: '\(.*\)'$/\1/p" "$config")
[ -n "$password" ] && [ -n "$password_in" ] || { echo "no lab CHAP secrets in $config"; exit 1; }
if grep -q -F -e "$password" -e "$password_in" "$log"; then
  echo "FAIL: a CHAP secret appears in the -vvv output"
  exit 1
fi
grep -q 'node.session.auth.password' "$log" || { echo "FAIL: the play did not run iscsi_node"; cat "$log"; exit 1; }
echo "PASS: -vvv output ($(wc -l <"$log") lines) holds no CHAP secret"
