#!/usr/bin/env bash
# What `make demo` runs once the lab is up: the main job on the embedded
# defaults (SQLite reservations, the local lab). Attaches three iSCSI volumes
# and one Ceph RBD volume to two demo domains, grows the RBD volume while in
# use, shows the volume states and the domains' disks, compares the store
# with the host, detaches, and removes the demo domains again (rbd-01 keeps
# the size it grew to, and a later demo finds it so).
set -euo pipefail
cd "$(dirname "$0")/.."
inv=inventories/lab/hosts.yml
start=$(date +%s)
step() { printf '\n=== %s\n' "$*"; }
cleanup() { tests/lab/domain.sh remove ovt-demo-1; tests/lab/domain.sh remove ovt-demo-2; }
trap cleanup EXIT

step "Two demo domains (QEMU/TCG, paused, no OS)"
tests/lab/domain.sh create ovt-demo-1
tests/lab/domain.sh create ovt-demo-2

step "Attach iSCSI vol-01, vol-02 to ovt-demo-1, iSCSI vol-03 and Ceph RBD rbd-01 to ovt-demo-2 (playbooks/attach.yml)"
ansible-playbook -i "$inv" playbooks/attach.yml

step "Run it again: nothing to change"
ansible-playbook -i "$inv" playbooks/attach.yml | tail -n 3

step "Volume states and the domains' disks"
ANSIBLE_DISPLAY_OK_HOSTS=true ansible-playbook -i "$inv" playbooks/report.yml \
  | sed -n 's/^ *"\(.*\)",\{0,1\}$/  \1/p'

step "Grow rbd-01 to 96 MiB while in use (playbooks/extend.yml; QEMU grows the image through librbd)"
ansible-playbook -i "$inv" playbooks/extend.yml -e volume=rbd-01 -e size=96M | tail -n 3
virsh -q domblkinfo ovt-demo-2 "$(virsh -q domblklist ovt-demo-2 | awk '$2 ~ /rbd-01$/ {print $1}')" | head -n 1

step "Compare the reservation store with the host (playbooks/reconcile.yml --check): nothing to repair"
ansible-playbook -i "$inv" playbooks/reconcile.yml --check | sed -n 's/^ *"\(.*\)",\{0,1\}$/  \1/p'

step "Detach them again (playbooks/detach.yml)"
ansible-playbook -i "$inv" playbooks/detach.yml | tail -n 3

step "After the detach"
ansible-playbook -i "$inv" playbooks/report.yml | sed -n 's/^ *"\(.*\)",\{0,1\}$/  \1/p'

echo
echo "demo: done in $(( $(date +%s) - start )) s; the lab stays up for reuse (make lab-down stops it)"
