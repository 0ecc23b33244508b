# Copyright: openvolume.compute contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LUKS volumes that QEMU decrypts itself: the header, written once, and the passphrase, checked.

libvirt's ``<encryption format='luks' engine='qemu'>`` makes QEMU open a
volume through its ``luks`` block driver: the guest sees plaintext, the
storage only ciphertext. QEMU does not write a header, so the first attach
of an encrypted volume writes one, as os-brick formats a volume on its
first attach; a volume that has one is never formatted again.

Everything runs on the compute host with QEMU's own tools, which open iSCSI
LUNs and RBD images the way the domain's QEMU will:

* the first 64 KiB are read with ``qemu-img dd``: ``LUKS\\xba\\xbe`` is a
  header; all zeros is a blank volume, which gets one; anything else is
  data without a header, which is refused (formatting would destroy it);
* the header is made with ``qemu-img create -f luks`` in a private
  temporary file and copied onto the volume with ``qemu-img convert -n``:
  ``qemu-img create`` takes only a file name for its target, where a CHAP
  password or cephx key would be on the command line, and cannot write
  into an RBD image that exists;
* a header found is unlocked with ``qemu-io -r`` first, so a wrong
  passphrase is an error before anything is hot-plugged.

The passphrase, the CHAP password and the cephx key reach QEMU's tools as
``--object secret,...,file=`` files of mode 0600 in a directory of mode
0700 that lives only for the call; never on a command line, in the
environment or in a result.

A host block device (host mode: the multipath map or by-path link of a
kernel iSCSI session) has a backend of its own, ``HostDeviceLuks``, with
``cryptsetup`` as os-brick's LuksEncryptor uses it: ``isLuks`` tells a
header, ``luksFormat --type luks1`` writes one (LUKS1: QEMU's luks driver
opens nothing else) and ``open --test-passphrase`` checks the passphrase,
which reaches cryptsetup on its standard input (``--key-file=-``), never on
its command line. The decisions (header, blank, data; LUKS1 only; written
once) are ``LuksVolume.ensure``'s for both.
"""

from __future__ import annotations

import base64
import os
import tempfile
import typing as t
from dataclasses import dataclass

from ansible_collections.openvolume.compute.plugins.module_utils._common import (
    OpenVolumeError,
    bracketed,
    mask_secrets,
    skip_if_check_mode,
)
from ansible_collections.openvolume.compute.plugins.module_utils._rbd import monitor_addresses

LUKS_MAGIC = b"LUKS\xba\xbe"
# What is read to tell a header, a blank volume and data apart.
HEAD_BYTES = 65536
ISCSI_PORT = 3260
# QEMU's PBKDF2 benchmark for the new header (qcrypto_pbkdf2_count_iters)
# fails with "Unable to get accurate CPU usage" when the thread's CPU time
# reads 0 after its first ~20 ms round: a kernel that accounts CPU time by
# ticks can report that on a busy host. Another try measures again.
CREATE_TRIES = 3
# The header's version (big-endian, after the magic): QEMU opens 1 only.
LUKS_VERSION_1 = b"\x00\x01"
# Where each tool comes from, for the error when it is missing.
PACKAGES = {
    "qemu-img": "Debian: qemu-utils, RHEL: qemu-img",
    "qemu-io": "Debian: qemu-utils, RHEL: qemu-img",
    "cryptsetup": "Debian: cryptsetup-bin, RHEL: cryptsetup",
}
# luksFormat's choices spelt out rather than left to the distribution's
# defaults, which may change: all three are what QEMU's luks driver opens.
CRYPTSETUP_FORMAT = ["--type", "luks1", "--cipher", "aes-xts-plain64", "--key-size", "256", "--hash", "sha256"]
# The QEMU secret objects' ids.
PASSPHRASE_ID = "ovluks"
AUTH_ID = "ovauth"


class LuksError(OpenVolumeError):
    """A LUKS volume could not be checked or formatted."""


def qemu_opts(options: t.Mapping[str, t.Any]) -> str:
    """``key=value,...`` for ``--image-opts`` (QEMU's option syntax: a comma in a value is doubled)."""
    return ",".join(f"{k}={str(v).replace(',', ',,')}" for k, v in options.items())


@dataclass
class Credentials:
    """The secret values, as libvirt keeps them (never shown)."""

    passphrase: bytes
    # The CHAP password (iSCSI) or the cephx key's bytes (RBD), if the source has auth.
    auth: bytes | None = None


def protocol_options(source: t.Mapping[str, t.Any], workdir: str, *, with_auth: bool) -> dict[str, str]:
    """QEMU block options of the protocol node under the LUKS (or raw) node, as ``file.*`` keys.

    ``source`` is a libvirt_disk source. An RBD source with monitors gets a
    ceph.conf of its own in ``workdir`` naming them (a monitor without a
    port keeps none, as in the disk's XML); without monitors librbd reads
    the host's /etc/ceph/ceph.conf, as QEMU does for the domain.
    """
    kind = source.get("type")
    if kind == "block":
        return {"file.driver": "host_device", "file.filename": str(source["path"])}
    if kind == "file":
        return {"file.driver": "file", "file.filename": str(source["path"])}
    auth = source.get("auth") or {}
    if source.get("protocol") == "iscsi":
        iqn, _slash, lun = str(source["name"]).rpartition("/")
        host = (source.get("hosts") or [{}])[0]
        portal = f"{bracketed(str(host.get('name')))}:{host.get('port') or ISCSI_PORT}"
        opts = {"file.driver": "iscsi", "file.transport": "tcp", "file.portal": portal, "file.target": iqn,
                "file.lun": lun}
        if auth and with_auth:
            opts.update({"file.user": str(auth["username"]), "file.password-secret": AUTH_ID})
        return opts
    parts = str(source["name"]).split("/")
    opts = {"file.driver": "rbd", "file.pool": parts[0], "file.image": parts[-1]}
    if len(parts) == 3:
        opts["file.namespace"] = parts[1]
    hosts = source.get("hosts") or []
    if hosts:
        conf = os.path.join(workdir, "ceph.conf")
        lines = ["[global]", f"mon_host = {','.join(monitor_addresses(hosts))}"]
        if not auth:
            lines.append("auth_client_required = none")
        if not os.path.exists(conf):
            _write_private(conf, ("\n".join(lines) + "\n").encode())
        opts["file.conf"] = conf
    if auth and with_auth:
        opts.update({"file.user": str(auth["username"]), "file.key-secret": AUTH_ID})
    return opts


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


class LuksVolume:
    """One volume's LUKS header: read, unlocked, or written once.

    ``module`` is the AnsibleModule (run_command, get_bin_path, check_mode);
    ``_write_header`` is the only method that changes the volume, and the
    only place check mode is guarded.
    """

    def __init__(self, module: t.Any, source: t.Mapping[str, t.Any], credentials: Credentials, *,
                 where: str = "", label: str = "the volume", secret: str = "") -> None:
        self.module = module
        self.source = source
        self.credentials = credentials
        self.where = where
        self.label = label
        self.secret = secret
        self._workdir = ""

    @property
    def _with_auth(self) -> bool:
        return self.credentials.auth is not None and bool(self.source.get("auth"))

    # -- the tools ------------------------------------------------------------------------
    def _secret_args(self) -> list[str]:
        """``--object secret`` arguments for the passphrase and the source's auth, from private files."""
        path = os.path.join(self._workdir, PASSPHRASE_ID)
        if not os.path.exists(path):
            _write_private(path, self.credentials.passphrase)
        args = ["--object", f"secret,id={PASSPHRASE_ID},file={path},format=raw"]
        if self._with_auth and self.credentials.auth is not None:
            path = os.path.join(self._workdir, AUTH_ID)
            rbd = self.source.get("protocol") == "rbd"
            if not os.path.exists(path):
                # QEMU hands librbd the key as base64 text: its secret object
                # holds the key's bytes, given base64-encoded.
                _write_private(path, base64.b64encode(self.credentials.auth) if rbd else self.credentials.auth)
            args += ["--object", f"secret,id={AUTH_ID},file={path},format={'base64' if rbd else 'raw'}"]
        return args

    def _run(self, binary: str, args: list[str], what: str, *, data: bytes | None = None,
             ok: tuple[int, ...] = (0,)) -> tuple[int, str]:
        """Run ``binary`` with ``args``; ``data`` (a secret) goes to its standard input, never to argv."""
        path = self.module.get_bin_path(binary)
        if not path:
            raise LuksError(
                f"{self.where}source.encryption: {what} needs {binary} on the compute host ({PACKAGES[binary]}); "
                "install it there"
            )
        # binary_data: the passphrase is given as it is, without the newline
        # run_command would add (cryptsetup's --key-file=- reads every byte).
        rc, out, err = self.module.run_command([path, *args], environ_update={"LC_ALL": "C"}, check_rc=False,
                                               data=data, binary_data=data is not None)
        if rc not in ok:
            said = " ".join((err or out or "").split())
            raise LuksError(self._explain(what, rc, self._mask(said)))
        return rc, str(out)

    def _mask(self, text: str) -> str:
        known = [self.credentials.passphrase, self.credentials.auth or b""]
        texts = [v.decode(errors="replace") for v in known if v]
        texts += [base64.b64encode(v).decode() for v in known if v]
        return str(mask_secrets(text, texts))

    def _explain(self, what: str, rc: int, said: str) -> str:
        hint = ""
        if "Invalid password" in said or "cannot unlock" in said or "No key available" in said:
            hint = (f"; the passphrase in libvirt secret {self.secret or '(given)'} does not open the LUKS header "
                    f"of {self.label}: give the volume's own passphrase (the header was left as it is)")
        elif "Unsupported LUKS version" in said:
            hint = "; the header is LUKS2, which QEMU's luks driver cannot open: QEMU supports LUKS1 only"
        elif "Authentication failure" in said or "Permission denied" in said:
            hint = "; source.auth: the storage refused the credentials of the disk's libvirt secret"
        return f"{self.where}source.encryption: {what} of {self.label} failed (exit {rc}): {said}{hint}"

    def _raw_opts(self) -> str:
        return qemu_opts({"driver": "raw", **protocol_options(self.source, self._workdir, with_auth=self._with_auth)})

    # -- the steps ------------------------------------------------------------------------
    def read_head(self) -> bytes:
        """The volume's first ``HEAD_BYTES`` bytes (fewer for a smaller volume)."""
        out = os.path.join(self._workdir, "head")
        if os.path.exists(out):
            os.unlink(out)
        self._run("qemu-img", ["dd", *self._secret_args(), "--image-opts", "-O", "raw", f"bs={HEAD_BYTES}",
                               "count=1", f"if={self._raw_opts()}", f"of={out}"], "reading the first bytes")
        with open(out, "rb") as handle:
            return handle.read(HEAD_BYTES)

    def unlock(self) -> None:
        """Open the header with the passphrase (read-only); a wrong one is an error naming the secret."""
        opts = qemu_opts({"driver": "luks", "key-secret": PASSPHRASE_ID,
                          **protocol_options(self.source, self._workdir, with_auth=self._with_auth)})
        self._run("qemu-io", ["-r", *self._secret_args(), "--image-opts", "-c", "read 0 512", opts],
                  "opening the LUKS header")

    def has_header(self, head: bytes) -> bool:
        """Whether ``head`` (the volume's first bytes) starts with a LUKS header."""
        return head.startswith(LUKS_MAGIC)

    def unreadable(self) -> str:
        """Why the volume cannot be read yet (a device check mode did not connect), or ``""``."""
        return ""

    @skip_if_check_mode
    def _write_header(self) -> None:
        header = os.path.join(self._workdir, "header.luks")
        # Size 0: the header alone. LUKS stores no size; QEMU's luks driver
        # gives the guest the volume minus the header.
        for attempt in range(CREATE_TRIES):
            if os.path.exists(header):
                os.unlink(header)
            try:
                self._run("qemu-img", ["create", "-q", "-f", "luks", *self._secret_args(), "-o",
                                       f"key-secret={PASSPHRASE_ID}", header, "0"], "making a LUKS header")
                break
            except LuksError as exc:
                if "accurate CPU usage" not in exc.msg or attempt == CREATE_TRIES - 1:
                    raise
        self._run("qemu-img", ["convert", "-n", *self._secret_args(), "-f", "raw", header, "--target-image-opts",
                               self._raw_opts()], "writing the LUKS header")

    def ensure(self) -> dict[str, t.Any]:
        """Make sure the volume has a LUKS header the passphrase opens.

        Returns ``header`` (``found``: it had one, the passphrase opens it;
        ``written``: it was blank and got one; ``absent``: it is blank and
        would get one, in check mode; ``unknown``: check mode could not read
        it, see ``note``) and
        ``formatted`` (whether this call wrote, or would write, a header).
        """
        with tempfile.TemporaryDirectory(prefix="ov-luks-") as workdir:
            self._workdir = workdir
            why = self.unreadable()
            if why:
                if not self.module.check_mode:
                    raise LuksError(f"{self.where}source.encryption: {self.label} cannot be read: {why}")
                return {"format": "luks", "header": "unknown", "formatted": False, "note": f"check mode: {why}"}
            head = self.read_head()
            if self.has_header(head):
                if head[len(LUKS_MAGIC):len(LUKS_MAGIC) + 2] != LUKS_VERSION_1:
                    raise LuksError(
                        f"{self.where}source.encryption: {self.label} has a LUKS2 (or newer) header, which QEMU's "
                        "luks driver cannot open (LUKS1 only); it is left as it is: convert it with cryptsetup "
                        "convert --type luks1 where the volume is not in use, or attach it without encrypted"
                    )
                self.unlock()
                return {"format": "luks", "header": "found", "formatted": False}
            if any(head):
                raise LuksError(
                    f"{self.where}source.encryption: {self.label} has no LUKS header but holds data in its first "
                    f"{HEAD_BYTES // 1024} KiB; formatting it would destroy that data, so it is left as it is. If "
                    "the volume is meant to be empty, zero it (at least its first 64 KiB) and attach again; if it "
                    "holds data, it is not an encrypted volume: attach it without encrypted"
                )
            self._write_header()
            if self.module.check_mode:
                # Nothing was written: the header is still absent.
                return {"format": "luks", "header": "absent", "formatted": True}
            if not self.has_header(self.read_head()):
                raise LuksError(f"{self.where}source.encryption: the LUKS header written to {self.label} does not "
                                "read back; check the volume")
            return {"format": "luks", "header": "written", "formatted": True}


class HostDeviceLuks(LuksVolume):
    """A host block device's LUKS header, with cryptsetup (host mode).

    The first bytes are read from the device directly; ``cryptsetup isLuks``
    says whether they are a header (the magic alone could be a damaged
    one, which is refused as data rather than formatted over).
    """

    @property
    def _device(self) -> str:
        return str(self.source["path"])

    def unreadable(self) -> str:
        if os.path.exists(self._device):
            return ""
        return f"source.path {self._device} does not exist (not connected yet)"

    def read_head(self) -> bytes:
        try:
            with open(self._device, "rb", buffering=0) as handle:
                return handle.read(HEAD_BYTES)
        except OSError as exc:
            raise LuksError(f"{self.where}source.encryption: reading the first bytes of {self.label} "
                            f"({self._device}) failed: {exc.strerror}") from None

    def has_header(self, head: bytes) -> bool:
        if not head.startswith(LUKS_MAGIC):
            return False
        # isLuks: 0 a valid header, 1 none (or a damaged one).
        rc, _out = self._run("cryptsetup", ["isLuks", self._device], "checking the LUKS header", ok=(0, 1))
        return rc == 0

    def unlock(self) -> None:
        """Check the passphrase against the header: no mapping is made, nothing is written."""
        self._run("cryptsetup", ["open", "--test-passphrase", "--type", "luks1", "--key-file=-", self._device],
                  "opening the LUKS header", data=self.credentials.passphrase)

    @skip_if_check_mode
    def _write_header(self) -> None:
        self._run("cryptsetup", ["luksFormat", "--batch-mode", *CRYPTSETUP_FORMAT, "--key-file=-", self._device],
                  "writing the LUKS header", data=self.credentials.passphrase)


def luks_volume(module: t.Any, source: t.Mapping[str, t.Any], credentials: Credentials, *, where: str = "",
                label: str = "the volume", secret: str = "") -> LuksVolume:
    """The backend for ``source``: cryptsetup for a host block device, QEMU's tools for the rest."""
    cls = HostDeviceLuks if source.get("type") == "block" else LuksVolume
    return cls(module, source, credentials, where=where, label=label, secret=secret)
