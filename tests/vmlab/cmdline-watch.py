"""Record every process's command line until a flag file goes away.

Usage: python3 cmdline-watch.py FLAG OUT

Reads /proc/PID/cmdline (what any local user can read) of every process
every 50 ms while FLAG exists, then writes the distinct command lines to OUT
(mode 0600), one a line, arguments separated by spaces. The VM playbook
55_host_mode_luks.yml searches OUT for the LUKS passphrase afterwards, so
the watcher itself never holds it.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    flag, out = sys.argv[1], sys.argv[2]
    seen: set[bytes] = set()
    while os.path.exists(flag):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        seen.add(handle.read().replace(b"\0", b" ").strip())
                except OSError:
                    pass  # the process ended meanwhile
        time.sleep(0.05)
    fd = os.open(out + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"\n".join(sorted(seen)) + b"\n")
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
