# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of volume_reservation: the reservation runs in the controller's process.

The reservation only talks to the controller's store (a SQLite file or
etcd), so shipping a module to a host and starting a Python there is pure
cost (about a second of round trip per task). The module file keeps the
documentation and the argument spec; this runs the same ``handle``.
"""

from __future__ import annotations

import os
import typing as t

from ansible.plugins.action import ActionBase

from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, mask_secrets
from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    MODULE_KWARGS,
    handle,
    module_argument_spec,
    param_secrets,
)


class ActionModule(ActionBase):
    """Reserve, attach, detach and release volumes in the controller's store."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        # Raises AnsibleActionFail with the validation errors, as a module would fail.
        _validation, params = self.validate_argument_spec(argument_spec=module_argument_spec(), **MODULE_KWARGS)
        secrets = param_secrets(params)
        try:
            # This runs in a worker process forked from ansible-playbook (or
            # ansible): its parent is the run that owns what this task holds.
            out = handle(params, check_mode=bool(self._task.check_mode), diff=bool(self._task.diff),
                         run_pid=os.getppid())
        except OpenVolumeError as exc:
            result.update(failed=True, msg=mask_secrets(exc.msg, secrets), **mask_secrets(exc.details, secrets))
            return result
        result.update(mask_secrets(out, secrets))
        return result
