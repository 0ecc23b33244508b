# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The connection option and requirements of the libvirt modules (see module_utils._libvirt.uri_spec)."""

    DOCUMENTATION = r"""
requirements:
  - libvirt-python
  - lxml
options:
  uri:
    description: The libvirt connection URI.
    type: str
    default: qemu:///system
"""
