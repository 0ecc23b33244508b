#!/usr/bin/python
# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: libvirt_secret
short_description: Manage libvirt secrets for CHAP (iSCSI), cephx (RBD) and LUKS passphrases of disks
version_added: 0.1.0
description:
  - Defines a libvirt secret for a usage (an iSCSI target, a ceph user or a volume) and sets its value, or
    removes it. M(openvolume.compute.libvirt_disk) network disks name the secret in C(source.auth).
  - Idempotent. The stored value is compared with O(value) inside the module and is never returned, logged or
    shown in a diff; a diff says only whether it changes.
  - With O(secrets), many secrets in one task; when one fails, the secrets this task defined are removed again.
  - Secrets are defined persistent and not private (libvirt cannot compare a private secret's value); on the
    host, root can read them, as it can read libvirt's secret store anyway.
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
  action_group:
    support: full
    membership: [openvolume.compute.libvirt]
options:
  usage_type:
    description:
      - What the secret is for - V(iscsi) a CHAP password, V(ceph) a cephx key, V(volume) the passphrase of an
        encrypted volume (O(openvolume.compute.libvirt_disk#module:source.encryption)).
    type: str
    choices: [ceph, iscsi, volume]
    default: iscsi
  usage:
    description:
      - The usage id that disks refer to, for example C(openvolume/VOLUME_ID), an iSCSI target or a ceph name.
      - Required unless O(secrets) is given.
    type: str
  uuid:
    description: The secret's UUID; left out, libvirt makes one.
    type: str
  value:
    description:
      - The secret value, a CHAP password, a cephx key or a LUKS passphrase. Required with O(state=present). Never
        returned.
      - With O(usage_type=ceph), the user's key as C(ceph auth get-key client.NAME) prints it (base64, C(AQD...==));
        the module stores its bytes, as C(virsh secret-set-value --base64) does, which is what QEMU's librbd needs.
        A value that is not such a key is an error.
    type: str
  state:
    description: V(present) or V(absent).
    type: str
    choices: [present, absent]
    default: present
  secrets:
    description: Many secrets, each with the options above. Mutually exclusive with O(usage), O(uuid), O(value).
    type: list
    elements: dict
    suboptions:
      usage_type:
        description: See O(usage_type).
        type: str
        choices: [ceph, iscsi, volume]
        default: iscsi
      usage:
        description: See O(usage).
        type: str
        required: true
      uuid:
        description: See O(uuid).
        type: str
      value:
        description: See O(value).
        type: str
      state:
        description: See O(state).
        type: str
        choices: [present, absent]
        default: present
seealso:
  - module: openvolume.compute.libvirt_disk
"""

EXAMPLES = r"""
- name: CHAP secret for a volume attached by QEMU's own iSCSI client
  openvolume.compute.libvirt_secret:
    usage_type: iscsi
    usage: openvolume/0b5e6a4c
    value: "{{ chap_password }}"

- name: cephx key of the client.cinder user (the key as "ceph auth get-key client.cinder" prints it)
  openvolume.compute.libvirt_secret:
    usage_type: ceph
    usage: client.cinder
    uuid: 457eb676-33da-42ec-9a8c-9293d545c337
    value: "{{ cephx_key }}"

- name: The LUKS passphrase of an encrypted volume (libvirt_disk source.encryption names it)
  openvolume.compute.libvirt_secret:
    usage_type: volume
    usage: openvolume/7c1d0e6a/luks
    value: "{{ luks_passphrase }}"

- name: Remove the CHAP secret
  openvolume.compute.libvirt_secret:
    usage: openvolume/0b5e6a4c
    state: absent
"""

RETURN = r"""
uuid:
  description: The secret's UUID (null for a secret that check mode would create, or that is absent).
  returned: without O(secrets)
  type: str
usage_type:
  description: The usage type.
  returned: without O(secrets)
  type: str
usage:
  description: The usage id.
  returned: without O(secrets)
  type: str
secrets:
  description: One entry per O(secrets) item with C(changed), C(uuid), C(usage_type) and C(usage).
  returned: with O(secrets)
  type: list
  elements: dict
"""

from ansible_collections.openvolume.compute.plugins.module_utils._libvirt import LibvirtModule
from ansible_collections.openvolume.compute.plugins.module_utils._libvirt_secret import argument_spec, run


def main() -> None:
    module = LibvirtModule(
        argument_spec(),
        mutually_exclusive=[("secrets", "usage"), ("secrets", "uuid"), ("secrets", "value")],
        required_one_of=[("secrets", "usage")],
    )
    run(module)


if __name__ == "__main__":
    main()
