#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: libvirt_disk_info
short_description: List the disks of libvirt domains
version_added: 0.1.0
description:
  - Returns the disks of the given domains (live when the domain runs or is paused, else persistent) in the
    form M(openvolume.compute.libvirt_disk) uses. Changes nothing.
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
    description: The domains, by name or UUID.
    type: list
    elements: str
    required: true
seealso:
  - module: openvolume.compute.libvirt_disk
"""

EXAMPLES = r"""
- name: Disks of two instances
  openvolume.compute.libvirt_disk_info:
    domains: [instance-0001, instance-0002]
  register: info
"""

RETURN = r"""
domains:
  description: One entry per domain.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The domain's name.
      type: str
    state:
      description: running, paused or shut off.
      type: str
    persistent:
      description: Whether the domain is persistent.
      type: bool
    disks:
      description: The disks, with C(target_dev), C(bus), C(serial), C(source), C(readonly), C(shareable), C(device).
      type: list
      elements: dict
"""

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtModule
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_disk import info_argument_spec, run_info


def main() -> None:
    module = LibvirtModule(info_argument_spec())
    run_info(module)


if __name__ == "__main__":
    main()
