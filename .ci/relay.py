"""Run a command with output of its own and relay it to this process's stdout.

Usage: python3 .ci/relay.py COMMAND [ARG ...]; exits with the command's exit code.

Why: a CI log is one open file (a pipe) shared by every process the run
starts. Some tools set O_NONBLOCK on the descriptors they were given (Ceph's
tools, ssh), and the flag belongs to the open file, not to the process: from
then on any writer of the log may get EAGAIN when the log's reader is slow,
and Python writers (ansible-test passing on a playbook's output) die of it in
the middle of a target, with their last lines lost. Here the command writes to
a pipe that only this relay reads: a thread drains it into memory at once, and
the relay writes to the real stdout, waiting when that is full, whatever flags
somebody set on it. stderr is merged into stdout, so an error appears in the
log where it happened.

A run that fails ends with a short summary: the exit code and the last lines
it printed, so that the end of the log says what went wrong.

Daemons the command starts may keep the pipe open after it ends; the relay
stops reading once the command has exited and the pipe has been quiet for a
moment, instead of waiting for an end of file that never comes.
"""

import collections
import contextlib
import fcntl
import os
import queue
import select
import subprocess
import sys
import threading

F_SETPIPE_SZ = 1031  # Linux: fcntl.F_SETPIPE_SZ from Python 3.10 on
PIPE_SIZE = 1 << 20
QUIET_AFTER_EXIT = 2.0  # seconds without output once the command has exited
TAIL_LINES = 40


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def drain(read_fd, chunks, exited):
    """Read the pipe into ``chunks`` until its end, or until quiet after the command exited."""
    while True:
        ready = select.select([read_fd], [], [], QUIET_AFTER_EXIT if exited.is_set() else 1.0)[0]
        if not ready:
            if exited.is_set():
                break
            continue
        data = os.read(read_fd, 65536)
        if not data:
            break
        chunks.put(data)
    chunks.put(None)


def main(argv):
    if not argv:
        sys.stderr.write("usage: relay.py COMMAND [ARG ...]\n")
        return 2
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # else the default size: the thread drains it all the same
        fcntl.fcntl(read_fd, F_SETPIPE_SZ, PIPE_SIZE)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd)
    finally:
        os.close(write_fd)
    chunks = queue.Queue()
    exited = threading.Event()
    reader = threading.Thread(target=drain, args=(read_fd, chunks, exited), daemon=True)
    reader.start()
    waiter = threading.Thread(target=lambda: (proc.wait(), exited.set()), daemon=True)
    waiter.start()

    out = sys.stdout.fileno()
    tail = collections.deque(maxlen=TAIL_LINES)
    partial = b""
    while True:
        data = chunks.get()
        if data is None:
            break
        write_all(out, data)
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        tail.extend(lines)
    if partial:
        tail.append(partial)
    rc = proc.wait()
    if rc < 0:
        rc = 128 - rc  # killed by a signal: the shell's convention
    if rc != 0:
        summary = [b"", b"=" * 72, f"{' '.join(argv)}: failed with exit code {rc}; its last lines:".encode()]
        summary += [b"  " + line for line in tail]
        summary += [b"=" * 72, b""]
        write_all(out, b"\n".join(summary))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
