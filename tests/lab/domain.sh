#!/usr/bin/env bash
# Throwaway test domains on the lab's libvirtd.
# Usage: tests/lab/domain.sh create NAME [paused|running|shutoff]
#        tests/lab/domain.sh remove NAME
# NAME must start with "ovt-" (tests/lab/libvirt.sh down removes those).
# The domain has no OS and no disk: QEMU (TCG) starts it and, paused, it
# costs no CPU, while live attach and detach still work. It has ACPI (PCI
# hot-plug on i440fx needs it) and a virtio-scsi controller for bus=scsi.
set -euo pipefail
uri=${LIBVIRT_URI:-qemu:///system}
virsh() { command virsh -q -c "$uri" "$@"; }
verb=${1:-}; name=${2:-}; state=${3:-paused}
case "$name" in ovt-*) ;; *) echo "domain.sh: the name must start with ovt- (got '$name')" >&2; exit 2 ;; esac
case "$verb" in
  create)
    if ! virsh dominfo "$name" >/dev/null 2>&1; then
      xml=$(mktemp)
      trap 'rm -f "$xml"' EXIT
      cat > "$xml" <<XML
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <console type='pty'/>
  </devices>
</domain>
XML
      virsh define "$xml" >/dev/null
    fi
    current=$(virsh domstate "$name")
    case "$state:$current" in
      paused:paused|running:running|shutoff:"shut off") ;;
      paused:"shut off") virsh start --paused "$name" >/dev/null ;;
      running:"shut off") virsh start "$name" >/dev/null ;;
      running:paused) virsh resume "$name" >/dev/null ;;
      shutoff:*) virsh destroy "$name" >/dev/null ;;
      *) echo "domain.sh: $name is '$current', cannot make it $state" >&2; exit 1 ;;
    esac
    echo "$name: $(virsh domstate "$name")"
    ;;
  remove)
    virsh destroy "$name" >/dev/null 2>&1 || true
    virsh undefine "$name" >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 create NAME [paused|running|shutoff] | remove NAME" >&2; exit 2 ;;
esac
