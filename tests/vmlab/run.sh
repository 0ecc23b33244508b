#!/usr/bin/env bash
# The compute-host VM lab tests (make test-vm): builds or reuses the cached
# guest image, brings up the lab's tgtd and the guests, runs every
# tests/vmlab/playbooks/*.yml in order against the guests, brings the guests
# down again and prints the times. Fails when qemu-system-x86_64, root or
# /dev/net/tun is missing, unless OV_ALLOW_SKIP=vm asks to skip.
# Env: VMLAB_KEEP=1 leaves the guests up; VMLAB_PLAYBOOKS="10_smoke.yml ..."
# runs only those; VMLAB_HOSTS=vm1 runs the guest plays on those guests only.
# Then the molecule scenario compute_vms (the roles in host mode) on the same
# guests; VMLAB_MOLECULE=0 leaves it out.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export OV_LAB_DIR=${OV_LAB_DIR:-/var/tmp/openvolume-lab}
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }

# Without these the kernel path is not tested at all: that is a failure,
# unless skipping it is asked for explicitly (OV_ALLOW_SKIP=vm).
cannot() {
  case ",${OV_ALLOW_SKIP:-}," in
    *,vm,*|*,all,*) echo "test-vm: SKIP (OV_ALLOW_SKIP=${OV_ALLOW_SKIP}): $*"; exit 0 ;;
  esac
  echo "test-vm: FAILED: $* (set OV_ALLOW_SKIP=vm to skip the VM tier on purpose)" >&2
  exit 1
}
command -v qemu-system-x86_64 >/dev/null 2>&1 \
  || cannot "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)"
qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg \
  || cannot "qemu-system-x86_64 cannot run here or has no TCG accelerator"
[ "$(id -u)" -eq 0 ] || cannot "needs root (debootstrap, bridge and tap devices)"
[ -e /dev/net/tun ] || cannot "no /dev/net/tun, the guests cannot have a network"
export ANSIBLE_COLLECTIONS_PATH=${ANSIBLE_COLLECTIONS_PATH:-$repo/build/collections}
if [ ! -e "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/openvolume/compute" ]; then
  echo "test-vm: the collection is not at $ANSIBLE_COLLECTIONS_PATH (run 'make collection')" >&2
  exit 1
fi
# The guests' python, not the controller's venv python.
unset ANSIBLE_PYTHON_INTERPRETER
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ANSIBLE_SHOW_TASK_PATH_ON_FAILURE=1

echo "test-vm: guest image"
t=$(date +%s)
"$here/build-image.sh" >/dev/null
echo "test-vm: image ready in $(($(date +%s) - t)) s"

cleanup() {
  local rc=$?
  if [ "${VMLAB_KEEP:-0}" = 1 ]; then
    echo "test-vm: VMLAB_KEEP=1, guests left running (tests/lab/lab.sh down vm)"
  else
    "$repo/tests/lab/lab.sh" down vm || true
  fi
  echo "test-vm: total $(elapsed) s"
  exit $rc
}
trap cleanup EXIT

"$repo/tests/lab/lab.sh" up tgt
t=$(date +%s)
"$repo/tests/lab/lab.sh" up vm
echo "test-vm: guests up in $(($(date +%s) - t)) s"
inventory="$OV_LAB_DIR/vm/inventory.ini"

for play in "$here"/playbooks/*.yml; do
  name=$(basename "$play")
  if [ -n "${VMLAB_PLAYBOOKS:-}" ] && ! [[ " $VMLAB_PLAYBOOKS " == *" $name "* ]]; then
    continue
  fi
  echo "test-vm: === $name"
  t=$(date +%s)
  ansible-playbook -i "$inventory" -i "$here/inventory" ${VMLAB_HOSTS:+-e "vmlab_hosts=$VMLAB_HOSTS"} "$play"
  echo "test-vm: $name passed in $(($(date +%s) - t)) s"
done
echo "test-vm: all playbooks passed"

if [ "${VMLAB_MOLECULE:-1}" = 0 ]; then
  echo "test-vm: SKIP molecule scenario compute_vms (VMLAB_MOLECULE=0)"
elif [ -n "${VMLAB_HOSTS:-}" ]; then
  echo "test-vm: SKIP molecule scenario compute_vms: it needs both guests (VMLAB_HOSTS=$VMLAB_HOSTS)"
else
  echo "test-vm: === molecule scenario compute_vms"
  t=$(date +%s)
  (cd "$repo" && molecule test -s compute_vms)
  echo "test-vm: molecule compute_vms passed in $(($(date +%s) - t)) s"
fi
