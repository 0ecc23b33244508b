#!/usr/bin/env bash
# Installs the Debian packages the lab and the tests need, only those missing.
# Idempotent and quiet when everything is there already.
set -euo pipefail
packages=(
  tgt open-iscsi
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-block-extra qemu-utils
  libvirt-dev pkg-config gcc python3-dev python3-venv
  etcd-server etcd-client sqlite3
  ceph-mon ceph-osd ceph-common
  debootstrap e2fsprogs openssh-client iproute2 rsync
  rsyslog
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages (${missing[*]}); run as root or install them" >&2
  exit 1
fi
echo "install-deps: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
