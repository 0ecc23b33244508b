# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only callback: crash or pause the controller at the start of a task.

OV_FAULT_KILL_AT=<text>: when a task whose name contains <text> starts,
SIGKILL the whole process group of ansible-playbook (the controller dies
with everything it started, as when a job is killed); the steps before that
task are done, that task never runs. OV_FAULT_PAUSE_AT=<text> with
OV_FAULT_PAUSE_FILE=<path>: at that task, write "paused" to the file and
wait until the file is removed. OV_FAULT_NTH=N: the Nth matching task
(default 1).
"""

from __future__ import annotations

import os
import signal
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: ov_fault
type: aggregate
short_description: crash or pause the controller at a task (tests only)
description: See the module docstring.
requirements: [enable in callbacks_enabled]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ov_fault"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def v2_playbook_on_task_start(self, task, is_conditional):  # type: ignore[no-untyped-def]
        name = task.get_name()
        kill_at = os.environ.get("OV_FAULT_KILL_AT")
        pause_at = os.environ.get("OV_FAULT_PAUSE_AT")
        nth = int(os.environ.get("OV_FAULT_NTH", "1"))
        if kill_at and kill_at in name:
            self.seen += 1
            if self.seen == nth:
                print(f"ov_fault: SIGKILL to the controller's process group at task '{name}'", flush=True)
                os.killpg(os.getpgid(0), signal.SIGKILL)
        if pause_at and pause_at in name:
            path = os.environ["OV_FAULT_PAUSE_FILE"]
            with open(path, "w") as f:
                f.write("paused")
            print(f"ov_fault: paused at task '{name}' until {path} is removed", flush=True)
            while os.path.exists(path):
                time.sleep(0.1)
