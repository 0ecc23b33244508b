#!/usr/bin/env bash
# The local lab: real tgtd, libvirtd + QEMU, etcd and Ceph on loopback, and a
# syslog daemon on /dev/log where the machine has none.
# Usage: tests/lab/lab.sh up|down|status [component ...]
# Each component is tests/lab/<name>.sh with the same three verbs; every one
# is idempotent, keeps its state under $OV_LAB_DIR/<name>/, tracks its
# processes by pid file and stops them by pid only. A component that is up
# writes its facts as KEY=value lines to $OV_LAB_DIR/<name>.env.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export OV_LAB_DIR=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
verb=${1:-status}
shift || true
components=("$@")
if [ ${#components[@]} -eq 0 ]; then
  components=(syslog tgt libvirt etcd ceph)
fi
case "$verb" in
  up|status) order=("${components[@]}") ;;
  down) order=(); for ((i=${#components[@]}-1; i>=0; i--)); do order+=("${components[i]}"); done ;;
  *) echo "usage: $0 up|down|status [component ...]" >&2; exit 2 ;;
esac
mkdir -p "$OV_LAB_DIR"
rc=0
for c in "${order[@]}"; do
  script="$here/$c.sh"
  if [ ! -x "$script" ]; then
    echo "lab: component '$c' has no script yet ($script), skipped"
    continue
  fi
  "$script" "$verb" || rc=$?
done
exit $rc
