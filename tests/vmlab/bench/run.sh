#!/usr/bin/env bash
# make bench-vm: the host-mode benchmark in the compute-host VM tier
# (tests/vmlab/bench/host_bench.py). Not a test and not part of make test.
# Uses the guests when they are up (VMLAB_KEEP=1 of tests/vmlab/run.sh, or
# tests/lab/lab.sh up tgt vm) and leaves them so; otherwise builds or reuses
# the guest image, brings up the lab's tgtd and the guests, and takes the
# guests down again afterwards unless VMLAB_KEEP=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
export OV_LAB_DIR=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
python=${PYTHON:-$repo/.venv/bin/python}

command -v qemu-system-x86_64 >/dev/null 2>&1 \
  || { echo "bench-vm: qemu-system-x86_64 is not installed (Debian package qemu-system-x86)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-vm: needs root (debootstrap, bridge and tap devices)" >&2; exit 1; }
[ -e /dev/net/tun ] || { echo "bench-vm: no /dev/net/tun, the guests cannot have a network" >&2; exit 1; }

booted=0
cleanup() {
  local rc=$?
  if [ "$booted" = 1 ]; then
    if [ "${VMLAB_KEEP:-0}" = 1 ]; then
      echo "bench-vm: VMLAB_KEEP=1, guests left running (tests/lab/lab.sh down vm)"
    else
      "$repo/tests/lab/lab.sh" down vm || true
    fi
  fi
  exit $rc
}
trap cleanup EXIT

"$repo/tests/lab/lab.sh" up tgt
if "$repo/tests/lab/lab.sh" status vm >/dev/null 2>&1 && [ -s "$OV_LAB_DIR/vm/inventory.ini" ]; then
  echo "bench-vm: using the guests that are up"
else
  "$here/../build-image.sh" >/dev/null
  booted=1
  "$repo/tests/lab/lab.sh" up vm
fi
"$python" "$here/host_bench.py"
