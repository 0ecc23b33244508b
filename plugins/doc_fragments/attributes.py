# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Attributes shared by the openvolume.compute modules."""

    DOCUMENTATION = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/openvolume.compute.<group>) in C(module_defaults) to set default values for the
      options this module shares with the other modules of its group (see the collection's C(meta/runtime.yml)).
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""
