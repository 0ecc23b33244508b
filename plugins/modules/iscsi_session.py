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
  - Logs in to an iSCSI target only where no session exists yet, finds the LUN's SCSI disk below each
    session in sysfs with a short, bounded poll, waits for the disk's C(/dev/disk/by-path) link and, with
    O(multipath=true), for the device-mapper multipath map over all paths. This is what os-brick's iSCSI
    connector does for OpenStack Nova (steps 7 to 9 of the attach flow in the collection README).
  - A path is a portal through an iface. With several O(ifaces) (for example two ifaces bound to two NICs
    with C(iscsiadm -m iface)) there is one session per portal and iface, also to a single portal.
  - A session counts as this module's when its target, its node record's portal (the persistent portal, which
    stays the same after a login redirect) and its iface are among those asked for, and its transport is
    C(tcp) or C(iser). Sessions of other ifaces are left alone.
  - Portals are compared as addresses, so C([2001:DB8::1]:3260) and C([2001:db8:0::1]:3260) are one portal;
    iscsiadm is handed each node record's own spelling.
  - The disk handed on is checked to be the volume. Every path must report the same WWID; with O(wwid), a disk
    with another WWID is refused (and a session this call logged in to is logged out again); with
    O(multipath=true), every path of the map must have that WWID; the by-path link returned is one that
    resolves to the disk found below the current session, never a link left from an earlier one.
  - With O(state=absent), removes the multipath map and the LUN's SCSI disks
    (C(/sys/block/sdX/device/delete)) and logs out of a session only when no other LUN of the target is
    still attached on this host through it. With O(wwid), the disks are first re-read (their identity may
    have changed since the login) and nothing is removed unless all of them still have that WWID.
  - The node records (CHAP, settings) must exist; create them with M(openvolume.compute.iscsi_node).
  - After a good login the record's C(node.startup) is set to C(automatic), so the session comes back
    after a host reboot.
  - A call that fails leaves no session it logged in to.
  - With O(volumes), connects or disconnects many volumes in one call (one module round trip per host instead of
    one per volume); see O(volumes).
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
      - With O(state=absent) and O(wwid), the disks are rescanned (the kernel reads their identity again) even
        in check mode, so the WWID check is the one a real run would make.
  diff_mode:
    support: full
  action_group:
    support: full
    membership: [openvolume.compute.iscsi]
options:
  target:
    description:
      - The target's iSCSI name (IQN, EUI or NAA).
      - Required unless O(volumes) is given.
    type: str
  portals:
    description:
      - The target's portals, C(host[:port]) or C([ipv6][:port]).
      - Without O(multipath), the first portal that logs in is used (an existing session wins).
      - With O(multipath), every portal is logged in to.
      - With O(state=absent), an empty list (the default) means every portal of O(target).
    type: list
    elements: str
  lun:
    description:
      - The LUN of the volume (C(target_lun) of the connection_info), as the target numbers it.
      - The kernel numbers a LUN of 256 or more after the target's addressing method (flat space addressing
        makes LUN 300 the kernel's 16684, and udev's by-path name C(lun-0x412c000000000000)); the disk is
        found by decoding the numbers of the session's SCSI devices in sysfs (peripheral, flat space,
        extended flat space and Linux's own mapping), so either number finds it.
      - Defaults to C(1).
    type: int
  addressing_mode:
    description:
      - How the target numbers its LUNs, with Cinder's names (os-brick's C(lun_for_addressing)), when the array's
        driver says so (C(addressing_mode) of its connection_info).
      - C(SAM) and C(transparent) - the kernel's LUN number is O(lun) (Linux's LIO); C(SAM2) - peripheral
        addressing below 256 and flat space addressing from it (tgt and most arrays); C(SAM3-flat) - flat space
        addressing for every LUN.
      - Given, the disk is the one with exactly that number; left out, every encoding is decoded, and two disks
        that both decode to O(lun) (a LIO LUN 16684 beside a flat LUN 300) are an error asking for it.
      - Check mode's predicted RV(device_path) follows it (left out, C(SAM2)).
    type: str
    choices: [SAM, transparent, SAM2, SAM3-flat]
  iface:
    description:
      - The open-iscsi iface of the node records and sessions (C(iscsiadm -m iface)).
      - Without O(iface) and O(ifaces), C(default) (the kernel's iscsi_tcp over the routing table).
      - With O(volumes), the iface of the entries that give neither O(volumes[].iface) nor O(volumes[].ifaces)
        (so that a C(module_defaults) group can set it once).
    type: str
  ifaces:
    description:
      - Several ifaces, one session per portal and iface (multipath over one portal through two NICs).
        Every iface needs its node record (M(openvolume.compute.iscsi_node) with
        O(openvolume.compute.iscsi_node#module:ifaces)).
      - Without O(multipath), the first portal and iface that logs in is used, as with several portals.
      - With O(state=absent), only sessions of these ifaces are logged out.
      - With O(volumes), the ifaces of the entries that give neither O(volumes[].iface) nor O(volumes[].ifaces).
    type: list
    elements: str
  wwid:
    description:
      - The WWID the volume must have, from the volume catalogue or from RV(wwid) at attach time, in
        the udev and multipath form (C(3) and the NAA in hex, as in C(/dev/disk/by-id/wwn-0x...) and
        C(multipath -ll)), C(naa.) and hex, or the bare NAA in hex.
      - With O(state=present), a disk with another WWID is refused; the call fails and logs out of any
        session it logged in to.
      - With O(state=absent), the disks are deleted only if all still have this WWID; otherwise the call fails
        and deletes nothing (another volume is mapped behind the LUN now, and may be in use elsewhere).
    type: str
    aliases: [wwn]
  resize:
    description:
      - With O(state=present), have the host take a size the volume grew to on the storage (Nova's
        C(extend_volume), the host side) - rescan the LUN's SCSI disks and, with O(multipath), resize the map
        (C(multipathd resize map)). RV(resized) tells the size before and after; a size that grew is a change.
      - The storage grows the volume; this only makes the host see it. Then tell QEMU with
        M(openvolume.compute.libvirt_disk) O(openvolume.compute.libvirt_disk#module:size).
      - Defaults to V(false).
    type: bool
  state:
    description:
      - V(present) connects the LUN, V(absent) disconnects it.
      - With O(volumes), for all of them.
    type: str
    choices: [present, absent]
    default: present
  multipath:
    description:
      - Log in to all O(portals) and return the multipath device instead of a single path.
      - Defaults to V(false).
    type: bool
  wait_timeout:
    description:
      - Seconds to wait for the LUN's device (and the multipath map) to appear, or for a deleted device
        to go. The wait is a 50 ms poll, not a sleep.
      - With O(volumes), one bound for the whole call, the devices of all volumes waited for together.
    type: float
    default: 30
  rescan:
    description:
      - Rescan sessions that existed before this call, so a LUN mapped since their login shows up.
      - With O(volumes), each such session once, however many of the volumes it carries.
    type: bool
    default: true
  volumes:
    description:
      - Several volumes in one call, each entry with the per-volume options of the single form; O(state),
        O(wait_timeout) and O(rescan) are shared, O(iface) and O(ifaces) are the entries' default. Mutually
        exclusive with the other top-level per-volume options (O(target), O(portals), O(lun), O(multipath),
        O(wwid), O(resize)).
      - With O(state=present), logs in first to every path of every volume, once per target and path (several
        LUNs of one target share its sessions), up to eight logins side by side (as os-brick logs in to a
        multipath volume's portals; each login waits on its target, not on the host; without multipath the
        paths of one target are tried in order until one logs in), rescans the sessions that existed before
        once, then waits for
        the disks of all volumes together under one O(wait_timeout), then checks each volume (WWID, by-path
        links, multipath map). All or nothing - when any volume fails, the call logs out of every session it
        logged in to, and fails naming the entry (C(volumes[N])).
      - With O(state=absent), finds and checks (O(volumes[].wwid)) the disks of every volume before removing
        anything, so a refusal removes nothing; then removes the maps and disks of all volumes and logs out
        of each session that carries no other disk afterwards (another LUN of the target still attached on
        this host keeps it).
      - See RV(volumes) for the per-volume results.
    type: list
    elements: dict
    suboptions:
      volume_id:
        description:
          - The caller's name for the volume, returned as is as C(volume_id) in its entry of RV(volumes), so that
            results can be matched to volumes. Not used otherwise.
        type: str
      target:
        description: As O(target).
        type: str
        required: true
      portals:
        description: As O(portals).
        type: list
        elements: str
      lun:
        description: As O(lun); defaults to C(1).
        type: int
      addressing_mode:
        description: As O(addressing_mode).
        type: str
        choices: [SAM, transparent, SAM2, SAM3-flat]
      iface:
        description: As O(iface).
        type: str
      ifaces:
        description: As O(ifaces).
        type: list
        elements: str
      multipath:
        description: As O(multipath); defaults to V(false).
        type: bool
      wwid:
        description: As O(wwid).
        type: str
        aliases: [wwn]
      resize:
        description: As O(resize); defaults to V(false).
        type: bool
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
    wwid: "{{ conn.wwid }}"  # refuse to delete a disk that is another volume by now
    state: absent

- name: Every volume of this host in one call, all or nothing (two LUNs of one target share its sessions)
  openvolume.compute.iscsi_session:
    volumes:
      - volume_id: vol-a
        target: iqn.2010-10.org.example:array1
        portals: [192.0.2.10:3260, 198.51.100.10:3260]
        lun: 1
        multipath: true
      - volume_id: vol-b
        target: iqn.2010-10.org.example:array1
        portals: [192.0.2.10:3260, 198.51.100.10:3260]
        lun: 2
        multipath: true
      - volume_id: vol-c
        target: iqn.2010-10.org.example:volume-7c1d
        portals: [192.0.2.10:3260]
    wait_timeout: 60
  register: conns

- name: The device each volume got (the multipath map, else the by-path link)
  ansible.builtin.debug:
    msg: "{{ item.volume_id }}: {{ item.device_path }}"
  loop: "{{ conns.volumes }}"

- name: Two sessions to one IPv6 portal through two NICs, a LUN above 255, the volume's WWN from the catalogue
  openvolume.compute.iscsi_session:
    target: iqn.2010-10.org.example:volume-7c1d
    portals: ["[2001:db8::10]:3260"]
    ifaces: [iface-eth1, iface-eth2]
    lun: 300
    multipath: true
    wwid: naa.600140512345678901234567890abcde

- name: A LUN of a LIO target, which numbers LUNs as Linux does (Cinder's addressing_mode SAM)
  openvolume.compute.iscsi_session:
    target: iqn.2003-01.org.linux-iscsi.storage1:volumes
    portals: [192.0.2.20:3260]
    lun: 16684
    addressing_mode: SAM
"""

RETURN = r"""
target:
  description: The target.
  returned: without O(volumes)
  type: str
lun:
  description: The LUN.
  returned: without O(volumes)
  type: int
initiator:
  description: This host's initiator name (from C(/etc/iscsi/initiatorname.iscsi)), the connector's C(initiator).
  returned: state=present, without O(volumes)
  type: str
  sample: iqn.1993-08.org.debian:01:b3f441c969
logged_in:
  description: Portals this call logged in to (or would, in check mode), one entry per new session.
  returned: state=present, without O(volumes)
  type: list
  elements: str
ifaces:
  description: The ifaces of the request.
  returned: without O(volumes)
  type: list
  elements: str
  sample: [default]
sessions:
  description: The sessions that carry the LUN, with their iface and session id.
  returned: state=present, without O(volumes)
  type: list
  elements: dict
  sample: [{portal: "192.0.2.10:3260", iface: default, sid: 3}]
by_path:
  description:
    - The by-path link of the LUN through the first path, as udev names it (C(ip-ADDRESS:PORT-iscsi-IQN-lun-N);
      an IPv6 address without brackets and spelt as in the node record; C(lun-0x...) for kernel LUN numbers from
      256; the PCI path in front for an offload HBA), checked to resolve to a disk of a current session of the
      target with the volume's WWID.
    - udev's name has no iface in it, so with several sessions to one portal (O(ifaces)) the link resolves to one
      of their disks, not always RV(device); use O(multipath=true) and RV(multipath_device) then.
  returned: state=present and not check mode, without O(volumes)
  type: str
  sample: /dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.example:volume-0b5e-lun-1
by_paths:
  description: The by-path links through every path used, in the order of RV(devices).
  returned: state=present and not check mode, without O(volumes)
  type: list
  elements: str
device_path:
  description:
    - The one block device to hand to libvirt - RV(multipath_device) with O(multipath=true), else RV(by_path).
    - In check mode, where no device exists yet, the by-path name the LUN will get through the first path.
  returned: state=present, without O(volumes)
  type: str
  sample: /dev/mapper/mpatha
hctls:
  description: The SCSI address (host:channel:target:LUN, the kernel's LUN number) of each of RV(devices).
  returned: state=present and not check mode, without O(volumes)
  type: list
  elements: str
  sample: ["2:0:0:16684"]
device:
  description: The SCSI disk of the first path.
  returned: state=present and not check mode, without O(volumes)
  type: str
  sample: /dev/sdb
devices:
  description: The SCSI disks of every path.
  returned: state=present and not check mode, without O(volumes)
  type: list
  elements: str
multipath_device:
  description: The multipath device, with O(multipath=true); null otherwise.
  returned: state=present and not check mode, without O(volumes)
  type: str
  sample: /dev/mapper/mpatha
wwid:
  description:
    - The LUN's WWID in the form udev and multipath use (C(3) and the NAA in hex for NAA designators, C(2) for
      EUI-64, C(1) for T10 vendor ids), the same on every path and the multipath map's. Store it with the
      attachment and give it back as O(wwid) on detach.
  returned: state=present and not check mode, without O(volumes)
  type: str
  sample: "360000000000000000e00000000010001"
wwn:
  description: The same as RV(wwid) (kept for compatibility).
  returned: state=present and not check mode, without O(volumes)
  type: str
size:
  description: The LUN's size in bytes (the multipath map's with O(multipath)).
  returned: state=present and not check mode, without O(volumes)
  type: int
resized:
  description: With O(resize), the size in bytes before and after the rescan (C(before), C(after)); else C(null).
  returned: state=present and not check mode, without O(volumes)
  type: dict
  sample: {before: 67108864, after: 134217728}
removed_devices:
  description: SCSI disks removed (or that would be).
  returned: state=absent, without O(volumes)
  type: list
  elements: str
removed_multipath:
  description: Multipath maps removed (or that would be).
  returned: state=absent, without O(volumes)
  type: list
  elements: str
logged_out:
  description: Portals logged out of (or that would be), one entry per session.
  returned: state=absent, without O(volumes)
  type: list
  elements: str
kept_sessions:
  description:
    - Sessions kept because other LUNs of the target are still attached on this host through them, with those
      LUNs' kernel numbers.
  returned: state=absent, without O(volumes)
  type: list
  elements: dict
  sample: [{portal: "192.0.2.10:3260", iface: default, sid: 3, luns_in_use: [2]}]
waited:
  description:
    - How long the call waited, in seconds, so that a slow target or udev shows in the results.
    - "With O(state=present): C(devices), per disk, the seconds until the LUN appeared below its session
      (all paths are waited for together, so each counts from the same start); C(links), the wait for the by-path
      links; C(multipath), the wait for the multipath map (C(null) without O(multipath)); C(total), from the
      logins to the end, all under one O(wait_timeout). All zero in check mode."
    - "With O(state=absent): C(devices), per disk, the seconds its deletion took to finish; C(multipath), the
      wait for the map's removal (C(null) when no map was removed); C(total)."
  returned: without O(volumes)
  type: dict
  sample: {devices: {/dev/sdb: 0.21, /dev/sdc: 0.23}, links: 0.05, multipath: 0.4, total: 0.71}
volumes:
  description:
    - With O(volumes), one result per entry, in the order of the entries, with the keys the single form returns
      for that volume (RV(target), RV(lun), RV(ifaces), RV(logged_in), RV(sessions), RV(by_path),
      RV(multipath_device), RV(wwid), RV(removed_devices), RV(kept_sessions), RV(waited) and the others) and
      C(changed) and C(volume_id).
    - In check mode, RV(logged_in) of the second LUN of a target lists no login when the first one's would
      make the session, as in a real run.
    - A failed call returns no per-volume results (every session it logged in to was logged out).
  returned: with O(volumes)
  type: list
  elements: dict
  sample:
    - {volume_id: vol-a, target: "iqn.2010-10.org.example:array1", lun: 1, changed: true,
       logged_in: ["192.0.2.10:3260", "198.51.100.10:3260"], multipath_device: /dev/mapper/mpatha, device: /dev/sdb}
    - {volume_id: vol-b, target: "iqn.2010-10.org.example:array1", lun: 2, changed: false, logged_in: [],
       multipath_device: /dev/mapper/mpathb, device: /dev/sdd}
"""

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeModule
from ansible_collections.openvolume.compute.plugins.module_utils._iscsi_session import (
    MODULE_KWARGS,
    argument_spec,
    run,
)


def main() -> None:
    run(OpenVolumeModule(argument_spec=argument_spec(), **MODULE_KWARGS))


if __name__ == "__main__":
    main()
