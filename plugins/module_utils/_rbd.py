# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ceph's rbd command: what the compute host must ask of an RBD image itself.

QEMU opens RBD images through librbd, so attaching needs no Ceph tool on the
host. One question does: may several domains write the image at once
(multiattach)? Not with the ``exclusive-lock`` feature, which Ceph turns on
by default: two writers would pass the lock back and forth on every write,
which Cinder avoids by requiring the feature off for multiattach volumes.
This asks ``rbd info`` with the cephx user's key in a file of mode 0600 that
lives only for the call (never on the command line).
"""

from __future__ import annotations

import json
import os
import tempfile
import typing as t

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    OpenVolumeError,
    bracketed,
    mask_secrets,
)

# Features that keep an image from being written by several clients at once.
EXCLUSIVE_FEATURES = ("exclusive-lock",)


class RbdError(OpenVolumeError):
    """rbd failed, or is missing on the host."""


class Rbd:
    """Runs ``rbd`` on the managed host through ``AnsibleModule.run_command``."""

    def __init__(self, module: t.Any) -> None:
        self.module = module

    def info(self, *, image: str, monitors: t.Sequence[str], user: str | None, key: str | None,
             param: str = "source") -> dict[str, t.Any]:
        """``rbd info`` of ``image`` (pool/image): size, features, ...

        ``monitors`` (host or host:port) are used instead of the host's
        ceph.conf when given, as libvirt does with the disk's ``<host>``s.
        """
        binary = self.module.get_bin_path("rbd")
        if not binary:
            raise RbdError(
                f"{param}: checking whether RBD image {image} can be shared needs the rbd command on the compute "
                "host (Debian: ceph-common, RHEL: ceph-common)"
            )
        args = [binary, "--format", "json", "info", image]
        if monitors:
            # Only these monitors, no ceph.conf: what the disk's XML says.
            args += ["-c", os.devnull, "--mon_host", ",".join(monitors)]
        keyfile = None
        try:
            if user:
                args += ["--id", user]
            if key:
                fd, keyfile = tempfile.mkstemp(prefix="ov-rbd-")
                with os.fdopen(fd, "w") as handle:
                    handle.write(key)
                args += ["--keyfile", keyfile]
            rc, out, err = self.module.run_command(args, environ_update={"LC_ALL": "C"}, check_rc=False)
        finally:
            if keyfile:
                os.unlink(keyfile)
        if rc != 0:
            said = mask_secrets(" ".join((err or out).split()), [key])
            raise RbdError(f"{param}: rbd info {image} failed (exit {rc}): {said}")
        try:
            return t.cast("dict[str, t.Any]", json.loads(out))
        except ValueError:
            raise RbdError(f"{param}: rbd info {image} printed no JSON: {out[:200]}") from None


def monitor_addresses(hosts: t.Sequence[t.Mapping[str, t.Any]] | None) -> list[str]:
    """The monitors of a libvirt RBD source as Ceph reads them: ``host:port``, IPv6 in brackets, no port if none."""
    return [f"{bracketed(str(h['name']))}:{h['port']}" if h.get("port") else bracketed(str(h["name"]))
            for h in hosts or []]


def sharing_blockers(info: t.Mapping[str, t.Any]) -> list[str]:
    """The features of an image that forbid several writers (empty: it may be shared)."""
    return [f for f in info.get("features") or [] if f in EXCLUSIVE_FEATURES]
