#!/usr/bin/env bash
# Runs the ansible-test integration targets against the local lab.
# Usage: tests/integration/run.sh COLLECTION_COPY [target ...]
# The lab's facts ($OV_LAB_DIR/<component>.env, KEY=value) become variables
# lab_<key> in integration_config.yml, which ansible-test hands every target.
set -euo pipefail
copy=$1; shift
lab=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
config="$copy/tests/integration/integration_config.yml"
{
  echo "---"
  echo "lab_dir: '$lab'"
  echo "lab_repo: '$copy'"
  for env in "$lab"/*.env; do
    [ -e "$env" ] || continue
    while IFS='=' read -r key value; do
      [ -n "$key" ] || continue
      case "$key" in \#*) continue ;; esac
      printf "lab_%s: '%s'\n" "${key,,}" "$value"
    done < "$env"
  done
} > "$config"
cd "$copy"
# --local: the lab is this machine; the modules run with the venv's python
# (it has libvirt-python, lxml and etcd3gw).
exec ansible-test integration --local --python 3.11 --allow-destructive --allow-root "$@"
