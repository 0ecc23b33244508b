#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_host_info
short_description: What a compute host has of the volumes - disks by serial, libvirt secrets, iSCSI sessions
version_added: 0.1.0
description:
  - Reads the truth of a compute host that the reservation store is compared with, by the
    P(openvolume.compute.volume_attach#role) and P(openvolume.compute.volume_detach#role) roles and by
    C(playbooks/reconcile.yml). Changes nothing.
  - Every domain (or those in O(domains)) with its disks, each listed once with the views it is in - C(live)
    (a running or paused domain) and C(config) (a persistent domain) - so a disk removed from one side shows.
    The collection's disks carry the volume id as their C(serial).
  - The libvirt secrets of the collection (usage C(openvolume/...)), without their values.
  - With O(iscsi), the host's iSCSI sessions with the disk of each LUN, and its node records.
  - Runs on the compute host. Needs libvirt-python and lxml there, and iscsiadm for O(iscsi).
author:
  - openvolume.compute developers (@openvolume)
extends_documentation_fragment:
  - openvolume.compute.attributes
  - openvolume.compute.libvirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  action_group:
    support: full
    membership: [openvolume.compute.libvirt]
options:
  domains:
    description:
      - The domains to read, by name or UUID. Those that do not exist are listed in RV(missing_domains).
      - Default is every domain of the host.
    type: list
    elements: str
  iscsi:
    description:
      - Read the iSCSI sessions and node records too. Without iscsiadm on the host, RV(iscsi.available) is
        V(false).
    type: bool
    default: true
seealso:
  - module: openvolume.compute.libvirt_disk_info
  - module: openvolume.compute.volume_reservation
"""

EXAMPLES = r"""
- name: What this host has
  openvolume.compute.volume_host_info:
  register: host_truth

- name: Instances whose disk of vol-01 is missing from the persistent config
  ansible.builtin.debug:
    msg: >-
      {{ host_truth.domains | selectattr('persistent')
         | rejectattr('disks', 'contains', 'vol-01') | map(attribute='name') }}
"""

RETURN = r"""
domains:
  description: One entry per domain, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The domain's name.
      type: str
    uuid:
      description: The domain's UUID.
      type: str
    state:
      description: running, paused or shut off.
      type: str
    active:
      description: Whether the domain runs or is paused (it has a live side).
      type: bool
    persistent:
      description: Whether the domain is persistent (it has a config side).
      type: bool
    disks:
      description:
        - The disks, as M(openvolume.compute.libvirt_disk_info) shows them, plus C(views) (the sides the disk is
          in, C(live) and/or C(config)) and C(block_device) (for a block source, the kernel device under it,
          C(name) and, for a multipath map, its C(slaves); C(null) when the path does not exist).
      type: list
      elements: dict
  sample:
    - name: instance-0001
      uuid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427
      state: running
      active: true
      persistent: true
      disks:
        - target_dev: vdb
          bus: virtio
          serial: vol-01
          device: disk
          readonly: false
          shareable: false
          views: [live]
          source: {type: block, path: /dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.example:vol-01-lun-1}
          block_device: {name: sdb, slaves: []}
missing_domains:
  description: The names of O(domains) that do not exist on the host.
  returned: always
  type: list
  elements: str
secrets:
  description: The libvirt secrets of the collection (usage C(openvolume/...)), never their values.
  returned: always
  type: list
  elements: dict
  sample: [{uuid: 7e3b9c1e-6a8f-4b0e-9a57-3c9e1f2a4b5d, usage_type: iscsi, usage: openvolume/vol-01}]
iscsi:
  description: The host's iSCSI sessions and node records.
  returned: always
  type: dict
  contains:
    available:
      description: Whether iscsiadm is there (and O(iscsi) was asked for).
      type: bool
    sessions:
      description: Sessions with C(target), C(portal), C(iface), C(sid) and C(luns) (C(lun), C(device)).
      type: list
      elements: dict
    nodes:
      description: Node records with C(target), C(portal), C(tpgt).
      type: list
      elements: dict
"""

from ansible_collections.openvolume.compute.plugins.module_utils._host_info import argument_spec, run
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtModule


def main() -> None:
    module = LibvirtModule(argument_spec())
    run(module)


if __name__ == "__main__":
    main()
