#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: libvirt_disk
short_description: Hot-plug volumes into libvirt domains, live and persistent, the way Nova does
version_added: 0.1.0
description:
  - Attaches a disk to a libvirt domain or detaches it (steps 10-11 and detach step 2 of the attach flow in the
    collection README).
  - A persistent domain always gets the change in its persistent config; a running or paused domain gets it live
    too; a shut-off domain only in its config.
  - A disk is found by O(serial) (the volume id) first, else by its source. Attaching the same volume again
    changes nothing. A different disk already on the requested O(target_dev) is an error, never a replacement.
  - Sources are compared the way libvirt reads them, so a disk attached by an earlier version of this module or
    by hand is found again - an iSCSI portal without a port is 3260, an iSCSI name without C(/LUN) is LUN 0, and a
    Ceph monitor without a port, on 3300 or on 6789 is the same monitor.
  - The disk XML follows Nova's libvirt volume drivers - C(cache=none), C(io=native) for host block devices, no
    port forced on a Ceph monitor, no C(<serial>) on a O(device=lun) disk, and the image format of a file source
    as the file has it.
  - Before an RBD disk is hot-plugged the module checks that one of the monitors in O(source.hosts) accepts a
    connection (QEMU would otherwise wait up to five minutes inside libvirt's call when the cluster is down).
  - A volume is attached once per domain; its source already attached under another serial is an error, a block
    device under any of its names too (a by-path link and C(/dev/sdc), a multipath map and one of its paths). The
    disk found attached with other settings (O(bus), O(cache), O(io), O(discard), O(readonly), O(shareable),
    O(device), O(target_dev)) is an error too, since a hot-plugged disk cannot change them in place; detach it
    first.
  - A detach waits until the device has left the live domain, asking the guest again now and then, within
    O(detach_timeout). A guest that never releases the disk (for example a virtio disk of a domain without an
    OS) makes the task fail and say the disk is still attached; the persistent config is changed only after
    the live detach succeeded.
  - The wait ends on libvirt's C(DEVICE_REMOVED) event for the disk's alias (the module runs libvirt's event loop
    for its connection), not on repeated reads of the domain's XML. A C(DEVICE_REMOVAL_FAILED) event (the guest
    refused the unplug) fails the task at once, naming the disk and the domain, with the disk still attached live
    and persistent, as after a timeout. A connection whose driver sends no such events, or a disk without an
    alias, falls back to reading the live XML; RV(disk.released_by) says which told.
  - With O(disks), many disks of one or more domains in one task; when one fails, the disks this task attached
    are detached again.
  - With O(secrets), the libvirt secrets the disks name (CHAP, cephx, LUKS passphrases) in the same task, as
    M(openvolume.compute.libvirt_secret) would handle them - defined before the disks are attached, removed after
    they are detached, and a secret still named by a disk of any domain on the host is kept.
  - Runs on the compute host. Needs libvirt-python and lxml there.
author:
  - openvolume.compute developers (@openvolume)
extends_documentation_fragment:
  - openvolume.compute.attributes
  - openvolume.compute.libvirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the disk's XML before and after, in the live domain and in the persistent config, each
        under a comment naming it (C(<!-- live -->), C(<!-- persistent config -->)).
      - A secret of O(secrets) that changes shows under C(secret USAGE), its value masked (C(********), with
        C((changed)) when the value is new).
  action_group:
    support: full
    membership: [openvolume.compute.libvirt]
options:
  domain:
    description: The domain, by name or UUID. Required unless O(disks) is given.
    type: str
  state:
    description: V(present) attaches the disk, V(absent) detaches it.
    type: str
    choices: [present, absent]
    default: present
  source: &source_option
    description:
      - Where the disk's data is. Required with O(state=present).
    type: dict
    suboptions:
      type:
        description:
          - V(block) for a host block device (an iSCSI by-path link or a multipath map), V(file) for an image
            file, V(network) for QEMU's own iSCSI or RBD client (no session on the host).
        type: str
        choices: [block, file, network]
        required: true
      path:
        description: The device or file, with V(block) and V(file).
        type: str
      format:
        description:
          - The image format of a V(file) source. Left out, it is read from the file's first bytes (V(raw) when no
            format is recognised), so a qcow2 image is never handed to the guest as raw, which its writes would
            corrupt.
          - A detected qcow2 image that refers to another file (a backing file or an external data file) is refused
            unless O(source.format) is given, since a guest could have written such a header into a raw image.
          - Block and network volumes are V(raw).
        type: str
        choices: [raw, qcow2, qed, vmdk, vhdx]
      protocol:
        description: V(iscsi) or V(rbd), with V(network).
        type: str
        choices: [iscsi, rbd]
      name:
        description:
          - C(IQN/LUN) for iSCSI; C(pool/image) for RBD, the C(name) of Cinder's RBD C(connection_info) (libvirt
            cannot attach an image in a namespace, C(pool/namespace/image)).
        type: str
      hosts:
        description:
          - The iSCSI portals or the Ceph monitors, with V(network). Required for iSCSI.
          - For RBD they may be left out; QEMU's librbd then takes the monitors from the compute host's
            C(/etc/ceph/ceph.conf).
        type: list
        elements: dict
        suboptions:
          name:
            description: Host name or address.
            type: str
            required: true
          port:
            description:
              - Port. An iSCSI portal without one is 3260.
              - A Ceph monitor without one gets no port in the XML, and librbd tries the messenger v2 port 3300 and
                the v1 port 6789 (forcing 6789 breaks clusters whose monitors speak v2 only).
            type: int
      auth:
        description:
          - CHAP (iSCSI) or cephx (RBD) through a libvirt secret, see M(openvolume.compute.libvirt_secret); the secret
            type is V(iscsi) or V(ceph) after the protocol.
        type: dict
        suboptions:
          username:
            description: The CHAP user, or the cephx user without C(client.) (Cinder's C(auth_username)).
            type: str
            required: true
          secret_usage:
            description: The secret's usage (its iSCSI target or ceph name).
            type: str
          secret_uuid:
            description: The secret's UUID, instead of O(source.auth.secret_usage).
            type: str
      encryption:
        description:
          - The volume is LUKS-encrypted and QEMU decrypts it itself (libvirt's C(<encryption format='luks'
            engine='qemu'>) inside C(<source>)), so the guest sees plaintext and the storage only ciphertext.
          - The passphrase is in a libvirt secret of usage type C(volume), see M(openvolume.compute.libvirt_secret)
            O(openvolume.compute.libvirt_secret#module:usage_type=volume).
          - "Before the disk is hot-plugged, the module reads the volume's first 64 KiB on the host: a LUKS header is
            opened with the passphrase first (a wrong passphrase fails the task and leaves the header as it is); a
            blank volume (all zeros there) gets a LUKS1 header, once; a volume with other data there is refused,
            since formatting would destroy it, and so is a LUKS2 header (QEMU opens LUKS1 only). Check mode reads but
            never writes (a device it did not connect yet is not read: C(disk.luks.header=unknown))."
          - "A network source (O(source.type=network): qemu-mode iSCSI, RBD) is read and formatted with QEMU's tools,
            through QEMU's own client with the disk's CHAP or cephx secret (C(qemu-img dd); C(qemu-img create -f
            luks), copied onto the volume with C(qemu-img convert -n); C(qemu-io) to open it). Needs qemu-utils on
            the compute host. The passphrase, CHAP password and cephx key reach them in files of mode 0600 that live
            only for the call."
          - "A host block device (O(source.type=block), host mode: the multipath map or by-path link of a kernel
            iSCSI session) is read directly and handled with C(cryptsetup), as os-brick's LuksEncryptor does:
            C(cryptsetup isLuks) tells a header, C(cryptsetup luksFormat --type luks1) (aes-xts-plain64, 256-bit key,
            sha256) writes one, C(cryptsetup open --test-passphrase) checks the passphrase without opening a
            mapping. The passphrase reaches cryptsetup on its standard input (C(--key-file=-)). Needs cryptsetup on
            the compute host (Debian: cryptsetup-bin, RHEL: cryptsetup)."
          - The passphrase never appears on a command line, in the environment, a result, a diff or the domain XML.
          - The guest sees the volume minus the LUKS header (about 2 MiB).
        type: dict
        suboptions:
          format:
            description: The encryption format; only V(luks) (LUKS1, which QEMU's luks driver opens).
            type: str
            choices: [luks]
            default: luks
          secret_usage:
            description: The usage of the passphrase's libvirt secret (usage type C(volume)).
            type: str
          secret_uuid:
            description: The secret's UUID, instead of O(source.encryption.secret_usage).
            type: str
  target_dev:
    description:
      - The device name in the guest (C(vdb), C(sdc)). Left out, the next free name of the O(bus) is taken.
    type: str
  bus:
    description: The disk bus.
    type: str
    choices: [virtio, scsi, sata]
    default: virtio
  serial:
    description:
      - The disk's serial, the volume id; the disk's identity for idempotence. At most 64 letters, digits, C(.),
        C(_), C(:) and C(-).
      - A virtio guest sees only the first 20 bytes of a serial (C(/dev/disk/by-id/virtio-...)); a virtio disk
        whose serial begins with the same 20 bytes as another virtio disk's of the domain is refused.
      - Not with O(device=lun) - libvirt refuses a serial there, since the guest sees the LUN's own; such a disk is
        found by its source.
      - A serial found on two disks of the domain (attached by other means) is an error unless O(target_dev) names
        one of them; the module never guesses which disk to detach or check.
      - An RBD disk with monitors is its image (C(pool/image)) - asked for through other monitors than it was
        attached with, it is the same disk (a warning says so); the same image under another serial is refused.
    type: str
  cache:
    description: The cache mode of QEMU's driver.
    type: str
    choices: [none, writethrough, writeback, directsync, unsafe]
    default: none
  io:
    description:
      - The I/O mode of QEMU's driver.
      - Left out, a V(block) source gets V(native) when O(cache) is V(none) or V(directsync), as Nova attaches
        volumes; other sources and cache modes keep QEMU's default. A disk attached without it is still the same
        disk.
      - V(native) needs O(cache) V(none) or V(directsync).
    type: str
    choices: [native, threads, io_uring]
  discard:
    description: Pass discard requests to the volume (V(unmap)) or not (V(ignore)).
    type: str
    choices: [unmap, ignore]
  readonly:
    description: Attach read-only.
    type: bool
    default: false
  shareable:
    description:
      - The disk may be used by several domains at once (multiattach volumes).
      - For an RBD source the image must allow several writers - without the C(exclusive-lock) feature, which Ceph
        turns on by default - or the attach fails saying how to turn it off. The check runs C(rbd info) on the host
        (the C(rbd) command, package ceph-common) with the key of the disk's libvirt secret, in a file that lives only
        for the call.
    type: bool
    default: false
  device:
    description:
      - V(disk), or V(lun) to pass SCSI commands through (a block or iSCSI source, no O(serial)).
    type: str
    choices: [disk, lun]
    default: disk
  detach_timeout:
    description:
      - Seconds to wait for the guest to release a detached disk.
      - With several detaches in O(disks), every removal is asked for first and all are waited for together, each
        for at most this long from its own request; RV(disk.waited) says how long each took.
      - A disk the guest refuses to release (libvirt's C(DEVICE_REMOVAL_FAILED) event) fails the task without
        waiting this long.
    type: float
    default: 30
  size:
    description:
      - "With O(state=present), the size the live disk must have at least, in bytes or with a unit (V(128M), V(2G);
        binary units): Nova's C(extend_volume). A live disk that is smaller is grown with QEMU's C(block_resize)
        (libvirt C(blockResize)). QEMU re-reads the size of an iSCSI LUN or a host block device, which the storage
        must have grown first (in host mode, rescan them first with M(openvolume.compute.iscsi_session)
        O(openvolume.compute.iscsi_session#module:resize)),
        and grows an RBD image itself through librbd."
      - A disk that is already bigger is an error (a volume is never shrunk); one of that size is no change. A
        shut-off domain reads the size when it starts, so nothing is done.
    type: raw
  missing_domain:
    description:
      - What a detach (O(state=absent)) does when the domain does not exist.
      - V(fail) fails the task, naming the domain.
      - V(skip) changes nothing for that disk and warns that the domain is gone (a domain destroyed and undefined
        took its disks with it); the disk's result has C(domain_missing=true). The volume_detach role uses this
        to free the volumes of deleted domains.
      - An attach (O(state=present)) to a missing domain always fails.
    type: str
    choices: [fail, skip]
    default: fail
  disks:
    description:
      - Many disks in one task, each a dict with the per-disk options above plus O(domain) and O(state).
        Mutually exclusive with O(domain), O(source), O(target_dev) and O(serial).
      - Applied in order; consecutive detaches are asked for at once and waited for together (see
        O(detach_timeout)). When one fails, the disks this task attached are detached again and the task fails
        naming the entry, for example C(disks[3].target_dev).
    type: list
    elements: dict
    suboptions:
      domain:
        description: See O(domain).
        type: str
        required: true
      state:
        description: See O(state).
        type: str
        choices: [present, absent]
        default: present
      source: *source_option
      target_dev:
        description: See O(target_dev).
        type: str
      bus:
        description: See O(bus).
        type: str
        choices: [virtio, scsi, sata]
        default: virtio
      serial:
        description: See O(serial).
        type: str
      cache:
        description: See O(cache).
        type: str
        choices: [none, writethrough, writeback, directsync, unsafe]
        default: none
      io:
        description: See O(io).
        type: str
        choices: [native, threads, io_uring]
      discard:
        description: See O(discard).
        type: str
        choices: [unmap, ignore]
      readonly:
        description: See O(readonly).
        type: bool
        default: false
      shareable:
        description: See O(shareable).
        type: bool
        default: false
      device:
        description: See O(device).
        type: str
        choices: [disk, lun]
        default: disk
      size:
        description: See O(size).
        type: raw
  secrets:
    description:
      - The libvirt secrets the disks name, handled in this task - one round trip instead of a
        M(openvolume.compute.libvirt_secret) task before an attach and another after a detach. Each entry takes the
        options of M(openvolume.compute.libvirt_secret) (C(usage_type), C(usage), C(uuid), C(value), C(state)); a
        value is never returned, logged or shown in a diff.
      - Entries with C(state=present) are defined (or their value set) before any disk is attached, since QEMU
        gets a secret's value when the disk is hot-plugged. When a disk fails, the secrets this task defined are
        removed again, after the disks it attached were detached.
      - Entries with C(state=absent) are removed after every disk was done. A secret that a disk of any domain on
        the host still names (live or persistent, a disk attached by another tool included; the disks this task
        detaches do not count) is kept, and its result entry says which disk in C(kept). A removal that fails
        fails the task after the disks were detached; the error says so and its result has RV(disks).
    type: list
    elements: dict
    suboptions:
      usage_type:
        description: See O(openvolume.compute.libvirt_secret#module:usage_type).
        type: str
        choices: [ceph, iscsi, volume]
        default: iscsi
      usage:
        description: See O(openvolume.compute.libvirt_secret#module:usage).
        type: str
        required: true
      uuid:
        description: See O(openvolume.compute.libvirt_secret#module:uuid).
        type: str
      value:
        description: See O(openvolume.compute.libvirt_secret#module:value). Required with C(state=present).
        type: str
      state:
        description: V(present) or V(absent).
        type: str
        choices: [present, absent]
        default: present
seealso:
  - module: openvolume.compute.libvirt_secret
  - module: openvolume.compute.iscsi_session
"""

EXAMPLES = r"""
- name: Hot-plug an iSCSI LUN connected by iscsi_session (host mode)
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: block
      path: /dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.example:volume-0b5e-lun-1
    serial: 0b5e6a4c
  register: attached

- name: QEMU's own iSCSI client with CHAP from a libvirt secret (no session on the host)
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: network
      protocol: iscsi
      name: iqn.2010-10.org.example:volume-0b5e/1
      hosts: [{name: 192.0.2.10, port: 3260}]
      auth:
        username: compute
        secret_usage: openvolume/0b5e6a4c
    bus: scsi
    serial: 0b5e6a4c

- name: A Ceph RBD volume opened by QEMU's librbd with a cephx key (Cinder's RBD connection_info)
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: network
      protocol: rbd
      name: volumes/volume-0b5e6a4c
      hosts: [{name: 192.0.2.21}, {name: 192.0.2.22}, {name: 192.0.2.23}]
      auth:
        username: cinder
        secret_usage: openvolume/0b5e6a4c
    serial: 0b5e6a4c

- name: An encrypted volume that QEMU decrypts, the passphrase in a libvirt secret of usage type volume
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: network
      protocol: rbd
      name: volumes/volume-7c1d0e6a
      hosts: [{name: 192.0.2.21}]
      auth:
        username: cinder
        secret_usage: openvolume/7c1d0e6a
      encryption:
        format: luks
        secret_usage: openvolume/7c1d0e6a/luks
    serial: 7c1d0e6a

- name: The same in host mode - the multipath map of a kernel session, the header written with cryptsetup on the host
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: block
      path: /dev/mapper/3600140564f1b7c1d0e6a4c0db01a5e7b
      encryption:
        format: luks
        secret_usage: openvolume/0b5e6a4c/luks
    serial: 0b5e6a4c

- name: Detach by serial, waiting up to a minute for the guest
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    serial: 0b5e6a4c
    state: absent
    detach_timeout: 60

- name: Several disks in one round trip
  openvolume.compute.libvirt_disk:
    disks:
      - {domain: vm1, serial: vol-1, source: {type: block, path: /dev/mapper/mpatha}}
      - {domain: vm2, serial: vol-2, source: {type: block, path: /dev/mapper/mpathb}, target_dev: vdc}

- name: QEMU's iSCSI client with CHAP, the secret defined in the same task
  openvolume.compute.libvirt_disk:
    disks:
      - domain: instance-0001
        serial: 0b5e6a4c
        bus: scsi
        source:
          type: network
          protocol: iscsi
          name: iqn.2010-10.org.example:volume-0b5e/1
          hosts: [{name: 192.0.2.10, port: 3260}]
          auth: {username: compute, secret_usage: openvolume/0b5e6a4c}
    secrets:
      - {usage_type: iscsi, usage: openvolume/0b5e6a4c, value: "{{ chap_password }}"}

- name: Detach it and remove its secret, unless another disk on the host still names it
  openvolume.compute.libvirt_disk:
    disks:
      - {domain: instance-0001, serial: 0b5e6a4c, state: absent}
    secrets:
      - {usage_type: iscsi, usage: openvolume/0b5e6a4c, state: absent}
  register: detached

- name: Say when the secret stayed
  ansible.builtin.debug:
    msg: "{{ detached.secrets | selectattr('kept', 'defined') | map(attribute='kept') }}"
"""

RETURN = r"""
disk:
  description: The disk as attached (or as it would be, in check mode; as it was, with O(state=absent)).
  returned: without O(disks)
  type: dict
  contains:
    domain:
      description: The domain's name.
      type: str
    target_dev:
      description: The device name in the guest.
      type: str
      sample: vdb
    bus:
      description: The bus.
      type: str
    serial:
      description: The serial.
      type: str
    source:
      description: The source, in the form of O(source).
      type: dict
    xml:
      description: The disk's XML.
      type: str
    luks:
      description:
        - With O(source.encryption), when the disk was (or in check mode would be) hot-plugged - C(format)
          (V(luks)), C(header) (V(found) - it had one and the passphrase opens it; V(written) - the blank volume got
          one; V(absent) - check mode, it would get one; V(unknown) - check mode before the libvirt secrets or the
          host's device exist, C(note) says which) and C(formatted) (whether a header was, or would be, written).
      type: dict
      returned: with O(source.encryption), when the disk was missing
      sample: {format: luks, header: written, formatted: true}
    waited:
      description:
        - With O(state=absent), the seconds from asking the guest to release the disk until it left the live domain
          (until the timeout, when it did not). V(0) for a disk that was not in the live domain, and in check mode.
      type: float
      returned: with O(state=absent)
      sample: 1.52
    released_by:
      description:
        - With O(state=absent), what told that the disk left the live domain - V(event) (libvirt's
          C(DEVICE_REMOVED) event for the disk's alias, the normal case), V(live_xml) (the live XML no longer showed
          it - a connection without device events, a disk without an alias, or one gone before its removal was
          asked for), V(domain_stopped) (the domain stopped or was destroyed during the wait, so no live disk is
          left), or V(null) (the disk was not in the live domain, check mode, or it was not released).
      type: str
      returned: with O(state=absent)
      sample: event
size:
  description: With O(size), the live disk's size in bytes before and after (C(before), C(after)).
  returned: with O(size), when the domain runs or is paused
  type: dict
  sample: {before: 67108864, after: 134217728}
disks:
  description:
    - One entry per O(disks) item, the keys of RV(disk) (with O(state=absent) C(waited) and C(released_by)) plus
      C(changed), C(state) and, with O(size), C(size).
  returned: with O(disks)
  type: list
  elements: dict
secrets:
  description:
    - One entry per O(secrets) item, in its order - C(changed), C(created) (with C(state=present)), C(uuid),
      C(usage_type), C(usage) and, for a secret a disk still names, C(kept) (which disk of which domain).
  returned: with O(secrets)
  type: list
  elements: dict
  sample: [{changed: false, uuid: 0f5c2b9e-5c2d-4a5e-9a55-3c0e1b6d2f10, usage_type: iscsi, usage: openvolume/0b5e6a4c,
            kept: "secret openvolume/0b5e6a4c stays: disk sdb of domain instance-0002 names it"}]
"""

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtModule
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import argument_spec, run


def main() -> None:
    module = LibvirtModule(
        argument_spec(),
        events=True,
        mutually_exclusive=[("disks", "domain"), ("disks", "source"), ("disks", "target_dev"), ("disks", "serial")],
        required_one_of=[("disks", "domain")],
    )
    run(module)


if __name__ == "__main__":
    main()
