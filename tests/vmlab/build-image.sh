#!/usr/bin/env bash
# Builds the compute-host guest image of the VM lab: Debian 12 (bookworm) with
# Debian's kernel and modules (iscsi_tcp, sd_mod, dm-multipath), open-iscsi,
# multipath-tools, python3 and sshd, for direct boot under qemu (-kernel/-initrd).
#
# Usage: tests/vmlab/build-image.sh          build if needed, print the image dir
#        tests/vmlab/build-image.sh --path   only print the image dir (no build)
#
# The image lives outside the repository in $OV_VMIMAGE_DIR/<recipe hash>/
# (default /var/tmp/openvolume-vmimage): base.img (raw ext4, sparse), vmlinuz,
# initrd.img, the lab's ssh key (id_ed25519, generated here, never committed)
# and READY once complete. The hash covers this script, so the image is rebuilt
# only when the recipe changes. Debian packages are downloaded from the mirror
# that apt on this machine is configured with (read from apt at run time) and
# kept in $OV_VMIMAGE_DIR/debs for the next build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=${OV_VMIMAGE_DIR:-/var/tmp/openvolume-vmimage}
suite=bookworm
image_size=${OV_VMIMAGE_SIZE:-2G}
packages=(
  linux-image-amd64 initramfs-tools zstd
  systemd-sysv udev dbus kmod iproute2
  openssh-server
  python3 python3-apt
  open-iscsi multipath-tools sg3-utils
  procps less
  # libvirt + QEMU inside the guest, for host mode (block disks hot-plugged
  # into the guest's own paused TCG domains), and the modules' python side.
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  python3-libvirt python3-lxml
  # Host-mode encrypted volumes: libvirt_disk formats and checks LUKS
  # headers on the host's block device with cryptsetup.
  cryptsetup-bin
  # The VM-tier benchmark's baseline (tests/vmlab/bench/baseline.sh) keeps
  # its rows with the sqlite3 CLI, as a hand-written script would.
  sqlite3
)

recipe_hash() {
  sha256sum "$here/build-image.sh" | cut -c1-16
}

dir="$root/$(recipe_hash)"
if [ "${1:-}" = "--path" ]; then
  echo "$dir"
  exit 0
fi
if [ -e "$dir/READY" ]; then
  echo "build-image: cached image $dir" >&2
  echo "$dir"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: must run as root (debootstrap, chroot)" >&2
  exit 1
fi

log() { printf 'build-image: [%4ds] %s\n' $(($(date +%s) - start)) "$*" >&2; }
start=$(date +%s)

# The Debian mirror apt uses here, for the main archive of $suite.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 2>/dev/null \
  | awk -v s="$suite" '$2 == s && $3 == "main" { print $1; exit }')
if [ -z "$mirror" ]; then
  echo "build-image: apt has no '$suite main' source configured; cannot pick a mirror" >&2
  exit 1
fi
log "recipe $(recipe_hash), mirror from apt config: $mirror"

mkdir -p "$root/debs"
work=$(mktemp -d "$root/build.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
  # debootstrap mounts proc/sys inside the target; never leave them behind.
  local m
  for m in $(awk -v r="$rootfs" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap $suite (minbase + ${#packages[@]} packages) into $rootfs"
include=$(IFS=,; echo "${packages[*]}")
if ! debootstrap --variant=minbase --components=main --include="$include" \
    --cache-dir="$root/debs" "$suite" "$rootfs" "$mirror" > "$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  echo "build-image: debootstrap failed (log above)" >&2
  exit 1
fi
log "debootstrap done ($(du -sm "$rootfs" | cut -f1) MB)"

# --- configuration -----------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C openvolume-vmlab -f "$work/id_ed25519"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"

echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$rootfs/etc/fstab"
# Every guest gets its own machine id at first boot (and its own initiator
# name: Debian's iscsi-init.service generates one from this placeholder).
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
echo "GenerateName=yes" > "$rootfs/etc/iscsi/initiatorname.iscsi"
echo "ovlab" > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$rootfs/etc/hosts"
: > "$rootfs/etc/resolv.conf"

# Networking: the guest's address comes from the kernel command line (ip=...),
# turned into a networkd unit by systemd-network-generator; eth0 by net.ifnames=0.
chroot "$rootfs" systemctl enable -q systemd-networkd.service systemd-network-generator.service
chroot "$rootfs" systemctl mask -q systemd-networkd-wait-online.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true

# sshd: key only, no DNS lookups (no resolver in the lab).
cat > "$rootfs/etc/ssh/sshd_config.d/ovlab.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF

# Boot speed under TCG: a small initrd with only what mounts the root disk
# (the rest loads from the root filesystem), no hardware the guest lacks.
sed -i 's/^MODULES=.*/MODULES=list/' "$rootfs/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic > "$rootfs/etc/initramfs-tools/modules"
printf 'blacklist %s\n' pcspkr floppy parport_pc kvm kvm_intel kvm_amd > "$rootfs/etc/modprobe.d/ovlab.conf"
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" update-initramfs -u -k all > "$work/initramfs.log" 2>&1 \
  || { cat "$work/initramfs.log" >&2; exit 1; }
umount "$rootfs/proc"
chroot "$rootfs" systemctl mask -q e2scrub_reap.service

# libvirtd without libvirt-daemon-system (whose dependencies bring firewall
# and polkit): the user it insists on, its directories, and two units under
# the standard names, started on demand (not at boot: boot time counts).
chroot "$rootfs" groupadd --system kvm 2>/dev/null || true
chroot "$rootfs" groupadd --system libvirt-qemu
chroot "$rootfs" useradd --system --no-create-home --home-dir /var/lib/libvirt \
  --shell /usr/sbin/nologin --gid libvirt-qemu --groups kvm libvirt-qemu
install -d "$rootfs/var/log/libvirt/qemu" "$rootfs/var/lib/libvirt/qemu" "$rootfs/var/cache/libvirt"
cat > "$rootfs/etc/systemd/system/virtlogd.service" <<'EOF'
[Unit]
Description=libvirt's log daemon (openvolume VM lab)
[Service]
ExecStart=/usr/sbin/virtlogd
EOF
cat > "$rootfs/etc/systemd/system/libvirtd.service" <<'EOF'
[Unit]
Description=libvirt daemon (openvolume VM lab)
Requires=virtlogd.service
After=virtlogd.service iscsid.service multipathd.service
[Service]
Type=notify
ExecStart=/usr/sbin/libvirtd
KillMode=process
EOF

# No multipath.conf: the iscsi_initiator role (or the test playbooks) write it.
rm -f "$rootfs/etc/multipath.conf"
# Keep the image small.
rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

# --- kernel, initrd, filesystem image ------------------------------------------
vmlinuz=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -n1)
[ -s "$vmlinuz" ] && [ -s "$initrd" ] || { echo "build-image: no kernel/initrd in /boot" >&2; exit 1; }
cp "$vmlinuz" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
log "kernel $(basename "$vmlinuz"), initrd $(du -h "$initrd" | cut -f1)"

log "mkfs.ext4 -d ($image_size, sparse)"
truncate -s "$image_size" "$work/base.img"
mkfs.ext4 -q -F -L ovlab-root -d "$rootfs" "$work/base.img"
echo "$(basename "$vmlinuz" | sed 's/^vmlinuz-//')" > "$work/kernel-version"
echo "$mirror" > "$work/mirror"

mkdir -p "$dir"
for f in base.img vmlinuz initrd.img id_ed25519 id_ed25519.pub kernel-version mirror debootstrap.log; do
  mv "$work/$f" "$dir/$f"
done
chmod 0600 "$dir/id_ed25519"
touch "$dir/READY"
log "image ready in $dir, built in $(($(date +%s) - start)) s"
echo "$dir"
