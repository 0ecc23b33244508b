#!/usr/bin/env bash
# Secrets given to volume_reservation (CHAP passwords inside connection_info,
# the etcd password) must not reach the output of a -vvv --diff run, not even
# in the module invocation Ansible prints at that verbosity.
set -eu
config=$(find ../.. -maxdepth 1 -name integration_config.yml | head -n 1)
log=$(mktemp)
db_dir=$(mktemp -d)
trap 'rm -rf "$log" "$db_dir"' EXIT
secret="chap-$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 16)"
ansible-playbook -vvv --diff -i ../../inventory -e "@$config" -e "chap_secret=$secret" -e "db_dir=$db_dir" \
  play.yml "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
etcd_password=$(sed -n "s/^lab_etcd_auth_password: '\(.*\)'$/\1/p" "$config")
[ -n "$etcd_password" ] || { echo "no lab etcd password in $config (is the etcd lab up?)"; exit 1; }
if grep -q -F -e "$secret" -e "$etcd_password" "$log"; then
  echo "FAIL: a secret appears in the -vvv output"
  grep -n -F -e "$secret" -e "$etcd_password" "$log" | sed -e "s/$secret/<CHAP>/g" -e "s/$etcd_password/<ETCD>/g" | head
  exit 1
fi
grep -q 'auth_username' "$log" || { echo "FAIL: the play did not show connection_info"; cat "$log"; exit 1; }
echo "PASS: -vvv --diff output ($(wc -l <"$log") lines) holds no secret"
