#!/usr/bin/env bash
# The attach and detach roles on the lab (qemu mode), with fault injection:
# each step made to fail in turn must leave no disk, no libvirt secret and the
# reservation as it was. Runs against inventories/lab with its own SQLite file.
set -eu
config=$(find ../.. -maxdepth 1 -name integration_config.yml | head -n 1)
repo=$(sed -n "s/^lab_repo: '\(.*\)'$/\1/p" "$config")
export OV_ROLES_DB
OV_ROLES_DB=$(mktemp -d)/reservations.db
trap 'for d in ovt-r-1 ovt-r-2; do "$repo/tests/lab/domain.sh" remove $d; done; rm -rf "$(dirname "$OV_ROLES_DB")"' EXIT
"$repo/tests/lab/domain.sh" create ovt-r-1
"$repo/tests/lab/domain.sh" create ovt-r-2
reservation="{\"openvolume_reservation\": {\"backend\": \"sqlite\", \"sqlite_path\": \"$OV_ROLES_DB\"}}"
# Check mode through the user's playbook, one volume from the command line.
ansible-playbook -i "$repo/inventories/lab/hosts.yml" "$repo/playbooks/attach.yml" --check --diff \
  -e volume=vol-04 -e instance=ovt-r-1 -e "$reservation" --limit lab-compute-1 "$@"
ansible-playbook -i "$repo/inventories/lab/hosts.yml" -i inventory.yml -e "@$config" test.yml "$@"
