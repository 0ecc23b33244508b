#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: iscsi_session
short_description: Connect a compute host to an iSCSI LUN (login, multipath, device wait) or disconnect it
version_added: 0.1.0
description:
  - Logs in to an iSCSI target only where no session exists yet, waits for the LUN's
    C(/dev/disk/by-path/ip-PORTAL-iscsi-IQN-lun-N) link with a short, bounded poll and, with
    O(multipath=true), for the device-mapper multipath map over all paths. This is what os-brick's
    iSCSI connector does for OpenStack Nova (steps 7 to 9 of the attach flow in the collection README).
  - With O(state=absent), removes the multipath map and the LUN's SCSI disks
    (C(/sys/block/sdX/device/delete)) and logs out of a session only when no other LUN of the target
    is still attached on this host.
  - The node records (CHAP, settings) must exist; create them with M(openvolume.compute.iscsi_node).
  - After a good login the record's C(node.startup) is set to C(automatic), so the session comes back
    after a host reboot.
  - A call that fails leaves no session it logged in to.
  - Runs on the compute host, as root. Needs C(iscsiadm) and a running C(iscsid), the kernel's
    C(iscsi_tcp) module, and for multipath C(multipath-tools) with C(multipathd) running.
author:
  - openvolume.compute developers (@openvolume)
extends_documentation_fragment:
  - openvolume.compute.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports which portals it would log in to or out of; it does not wait for devices.
  diff_mode:
    support: full
options:
  target:
    description: The target's iSCSI name (IQN, EUI or NAA).
    type: str
    required: true
  portals:
    description:
      - The target's portals, C(host[:port]) or C([ipv6][:port]).
      - Without O(multipath), the first portal that logs in is used (an existing session wins).
      - With O(multipath), every portal is logged in to.
      - With O(state=absent), an empty list means every portal of O(target).
    type: list
    elements: str
    default: []
  lun:
    description: The LUN of the volume (C(target_lun) of the connection_info).
    type: int
    default: 1
  iface:
    description: The open-iscsi iface of the node records.
    type: str
    default: default
  state:
    description: V(present) connects the LUN, V(absent) disconnects it.
    type: str
    choices: [present, absent]
    default: present
  multipath:
    description:
      - Log in to all O(portals) and return the multipath device instead of a single path.
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for the LUN's device (and the multipath map) to appear, or for a deleted device
        to go. The wait is a 50 ms poll, not a sleep.
    type: float
    default: 30
  rescan:
    description:
      - Rescan sessions that existed before this call, so a LUN mapped since their login shows up.
    type: bool
    default: true
seealso:
  - module: openvolume.compute.iscsi_node
  - module: openvolume.compute.libvirt_disk
"""

EXAMPLES = r"""
- name: Connect a volume's LUN through two portals with multipath
  openvolume.compute.iscsi_session:
    target: iqn.2010-10.org.example:volume-0b5e
    portals: [192.0.2.10:3260, 198.51.100.10:3260]
    lun: 1
    multipath: true
  register: conn

- name: Hot-plug the multipath device into the instance
  openvolume.compute.libvirt_disk:
    domain: instance-0001
    source:
      type: block
      path: "{{ conn.multipath_device }}"
    serial: 0b5e6a4c

- name: Disconnect (logs out only if no other LUN of the target is in use here)
  openvolume.compute.iscsi_session:
    target: iqn.2010-10.org.example:volume-0b5e
    lun: 1
    state: absent
"""

RETURN = r"""
target:
  description: The target.
  returned: always
  type: str
lun:
  description: The LUN.
  returned: always
  type: int
initiator:
  description: This host's initiator name (from C(/etc/iscsi/initiatorname.iscsi)), the connector's C(initiator).
  returned: state=present
  type: str
  sample: iqn.1993-08.org.debian:01:b3f441c969
logged_in:
  description: Portals this call logged in to (or would, in check mode).
  returned: state=present
  type: list
  elements: str
sessions:
  description: The sessions that carry the LUN, with their session ids.
  returned: state=present
  type: list
  elements: dict
  sample: [{portal: "192.0.2.10:3260", sid: 3}]
by_path:
  description: The by-path link of the LUN through the first portal.
  returned: state=present and not check mode
  type: str
  sample: /dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.example:volume-0b5e-lun-1
by_paths:
  description: The by-path links through every portal used.
  returned: state=present and not check mode
  type: list
  elements: str
device:
  description: The SCSI disk of the first path.
  returned: state=present and not check mode
  type: str
  sample: /dev/sdb
devices:
  description: The SCSI disks of every path.
  returned: state=present and not check mode
  type: list
  elements: str
multipath_device:
  description: The multipath device, with O(multipath=true); null otherwise.
  returned: state=present and not check mode
  type: str
  sample: /dev/mapper/mpatha
wwn:
  description: The LUN's WWID (the multipath map's WWID with O(multipath=true)).
  returned: state=present and not check mode
  type: str
size:
  description: The LUN's size in bytes.
  returned: state=present and not check mode
  type: int
removed_devices:
  description: SCSI disks removed (or that would be).
  returned: state=absent
  type: list
  elements: str
removed_multipath:
  description: Multipath maps removed (or that would be).
  returned: state=absent
  type: list
  elements: str
logged_out:
  description: Portals logged out of (or that would be).
  returned: state=absent
  type: list
  elements: str
kept_sessions:
  description: Sessions kept because other LUNs of the target are still attached on this host.
  returned: state=absent
  type: list
  elements: dict
  sample: [{portal: "192.0.2.10:3260", luns_in_use: [2]}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_session import argument_spec, run


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run(module)


if __name__ == "__main__":
    main()
