"""LUKS headers with the real tools on image files: written once, opened, never formatted twice.

QEMU's tools (qemu mode, RBD) and cryptsetup (host mode: a block device,
here a regular file, which cryptsetup treats alike).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import typing as t
from pathlib import Path

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils import _luks
from ansible_collections.openvolume.compute.plugins.module_utils._luks import (
    AUTH_ID,
    LUKS_MAGIC,
    Credentials,
    HostDeviceLuks,
    LuksError,
    LuksVolume,
    luks_volume,
    protocol_options,
    qemu_opts,
)

PASSPHRASE = b"correct horse, battery staple"


class FakeModule:
    """What LuksVolume uses of AnsibleModule, running the real commands and keeping their argv."""

    def __init__(self, check_mode: bool = False) -> None:
        self.check_mode = check_mode
        self.argv: list[list[str]] = []
        self.stdin: list[bytes | None] = []

    @staticmethod
    def get_bin_path(name: str) -> str | None:
        return shutil.which(name)

    def run_command(self, args: list[str], environ_update: dict[str, str], check_rc: bool,
                    data: bytes | None = None, binary_data: bool = False) -> tuple[int, str, str]:
        self.argv.append(list(args))
        self.stdin.append(data)
        # As AnsibleModule.run_command: without binary_data a newline is added.
        if data is not None and not binary_data:
            data += b"\n"
        res = subprocess.run(args, env=dict(os.environ, **environ_update), capture_output=True, input=data,
                             check=False)
        return res.returncode, res.stdout.decode(), res.stderr.decode()


@pytest.fixture(autouse=True)
def _tools() -> None:
    assert shutil.which("qemu-img") and shutil.which("qemu-io"), \
        "qemu-img and qemu-io (Debian qemu-utils, installed by make deps) are needed"


def volume(path: Path, passphrase: bytes = PASSPHRASE, check_mode: bool = False) -> tuple[LuksVolume, FakeModule]:
    module = FakeModule(check_mode)
    vol = LuksVolume(module, {"type": "file", "path": str(path)}, Credentials(passphrase=passphrase),
                     label="disk vol-9 of d", secret="openvolume/vol-9/luks")
    return vol, module


def head_hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(4 << 20)).hexdigest()


def test_blank_volume_gets_a_header_once_and_opens(tmp_path: Path) -> None:
    img = tmp_path / "vol.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    vol, module = volume(img)
    assert vol.ensure() == {"format": "luks", "header": "written", "formatted": True}
    assert img.read_bytes()[:6] == LUKS_MAGIC
    assert img.stat().st_size == 16 << 20
    before = head_hash(img)
    again, module2 = volume(img)
    assert again.ensure() == {"format": "luks", "header": "found", "formatted": False}
    assert head_hash(img) == before
    # The passphrase was in a file, never on a command line.
    for argv in module.argv + module2.argv:
        assert PASSPHRASE.decode() not in " ".join(argv)
    assert any(a.startswith("secret,id=ovluks,file=") for argv in module.argv for a in argv)


def test_wrong_passphrase_is_refused_and_the_header_kept(tmp_path: Path) -> None:
    img = tmp_path / "vol.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    volume(img)[0].ensure()
    before = head_hash(img)
    wrong, _module = volume(img, passphrase=b"not it")
    with pytest.raises(LuksError) as err:
        wrong.ensure()
    assert err.value.msg.startswith("source.encryption: opening the LUKS header of disk vol-9 of d failed")
    assert "the passphrase in libvirt secret openvolume/vol-9/luks does not open the LUKS header" in err.value.msg
    assert "not it" not in err.value.msg
    assert head_hash(img) == before


def test_data_without_a_header_is_never_formatted(tmp_path: Path) -> None:
    img = tmp_path / "vol.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    with open(img, "r+b") as f:
        f.seek(4096)
        f.write(b"a filesystem's superblock")
    before = head_hash(img)
    with pytest.raises(LuksError, match="has no LUKS header but holds data in its first 64 KiB"):
        volume(img)[0].ensure()
    assert head_hash(img) == before


def test_check_mode_reads_but_never_writes(tmp_path: Path) -> None:
    img = tmp_path / "vol.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    vol, module = volume(img, check_mode=True)
    assert vol.ensure() == {"format": "luks", "header": "absent", "formatted": True}
    assert not any(img.read_bytes()[:65536])
    assert [argv[1] for argv in module.argv] == ["dd"]


def test_the_work_files_go_with_the_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    img = tmp_path / "vol.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    volume(img)[0].ensure()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_qemu_option_syntax_doubles_commas() -> None:
    assert qemu_opts({"driver": "raw", "file.filename": "/a,b"}) == "driver=raw,file.filename=/a,,b"


def test_iscsi_options_with_chap_name_a_secret_object() -> None:
    src = {"type": "network", "protocol": "iscsi", "name": "iqn.2026-11.org.example:v1/1",
           "hosts": [{"name": "fd00::1", "port": 3261}], "auth": {"username": "u", "secret_usage": "openvolume/v1"}}
    assert protocol_options(src, "/nonexistent", with_auth=True) == {
        "file.driver": "iscsi", "file.transport": "tcp", "file.portal": "[fd00::1]:3261",
        "file.target": "iqn.2026-11.org.example:v1", "file.lun": "1", "file.user": "u",
        "file.password-secret": AUTH_ID}


def test_rbd_options_get_a_ceph_conf_of_their_own(tmp_path: Path) -> None:
    src = {"type": "network", "protocol": "rbd", "name": "volumes/ns/img",
           "hosts": [{"name": "192.0.2.1"}, {"name": "192.0.2.2", "port": 6789}],
           "auth": {"username": "cinder", "secret_usage": "openvolume/v2"}}
    opts = protocol_options(src, str(tmp_path), with_auth=True)
    assert opts == {"file.driver": "rbd", "file.pool": "volumes", "file.namespace": "ns", "file.image": "img",
                    "file.conf": str(tmp_path / "ceph.conf"), "file.user": "cinder", "file.key-secret": AUTH_ID}
    conf = tmp_path / "ceph.conf"
    assert conf.read_text() == "[global]\nmon_host = 192.0.2.1,192.0.2.2:6789\n"
    assert conf.stat().st_mode & 0o777 == 0o600


def test_rbd_without_monitors_uses_the_hosts_ceph_conf(tmp_path: Path) -> None:
    src = {"type": "network", "protocol": "rbd", "name": "volumes/img"}
    assert protocol_options(src, str(tmp_path), with_auth=False) == {
        "file.driver": "rbd", "file.pool": "volumes", "file.image": "img"}


@pytest.mark.parametrize(("kind", "driver"), [("block", "host_device"), ("file", "file")])
def test_local_sources(kind: str, driver: str) -> None:
    assert protocol_options({"type": kind, "path": "/dev/x"}, "", with_auth=False) == {
        "file.driver": driver, "file.filename": "/dev/x"}


def test_a_missing_tool_says_which_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol, module = volume(tmp_path / "x.img")
    monkeypatch.setattr(module, "get_bin_path", lambda name: None)
    with pytest.raises(LuksError, match="needs qemu-img on the compute host \\(Debian: qemu-utils"):
        vol.ensure()


def test_secrets_are_masked_in_what_qemu_says(tmp_path: Path) -> None:
    vol, _module = volume(tmp_path / "x.img")
    t.cast(t.Any, vol)._workdir = str(tmp_path)
    assert PASSPHRASE.decode() not in vol._mask(f"echoed {PASSPHRASE.decode()} back")


# -- host mode: cryptsetup on the host's block device ------------------------------------------


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """cryptsetup's default PBKDF2 time is 2 s per format and per open: 100 ms keeps the tests quick."""
    assert shutil.which("cryptsetup"), "cryptsetup (Debian cryptsetup-bin, installed by make deps) is needed"
    monkeypatch.setattr(_luks, "CRYPTSETUP_FORMAT", [*_luks.CRYPTSETUP_FORMAT, "--iter-time", "100"])


def host_volume(path: Path, passphrase: bytes = PASSPHRASE,
                check_mode: bool = False) -> tuple[LuksVolume, FakeModule]:
    module = FakeModule(check_mode)
    vol = luks_volume(module, {"type": "block", "path": str(path)}, Credentials(passphrase=passphrase),
                      label="disk vol-9 of d", secret="openvolume/vol-9/luks")
    assert isinstance(vol, HostDeviceLuks)
    return vol, module


def blank(tmp_path: Path) -> Path:
    img = tmp_path / "dev.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    return img


@pytest.mark.usefixtures("fast_kdf")
def test_host_device_gets_a_luks1_header_qemu_opens(tmp_path: Path) -> None:
    img = blank(tmp_path)
    vol, module = host_volume(img)
    assert vol.ensure() == {"format": "luks", "header": "written", "formatted": True}
    assert [a[1] for a in module.argv] == ["luksFormat", "isLuks"]
    assert img.read_bytes()[:8] == LUKS_MAGIC + b"\x00\x01"
    # The header cryptsetup wrote is one QEMU's luks driver opens: write and
    # read a pattern through it, and it is not on the file in plaintext.
    secret = tmp_path / "pw"
    secret.write_bytes(PASSPHRASE)
    opts = f"driver=luks,key-secret=pw,file.driver=file,file.filename={img}"
    for cmd in ("write -P 0xab 0 64k", "read -P 0xab 0 64k"):
        res = subprocess.run(["qemu-io", "--object", f"secret,id=pw,file={secret},format=raw", "--image-opts",
                              "-c", cmd, opts], capture_output=True, text=True, check=False)
        assert res.returncode == 0 and "Pattern verification failed" not in res.stdout, res.stdout + res.stderr
    assert b"\xab" * 4096 not in img.read_bytes()


@pytest.mark.usefixtures("fast_kdf")
def test_host_device_passphrase_only_on_stdin(tmp_path: Path) -> None:
    img = blank(tmp_path)
    vol, module = host_volume(img)
    vol.ensure()
    again, module2 = host_volume(img)
    assert again.ensure() == {"format": "luks", "header": "found", "formatted": False}
    for m in (module, module2):
        for argv, data in zip(m.argv, m.stdin, strict=True):
            assert PASSPHRASE.decode() not in " ".join(argv)
            assert data in (None, PASSPHRASE)
            assert (data is not None) == ("--key-file=-" in argv)
    assert [a[1:3] for a in module2.argv] == [["isLuks", str(img)], ["open", "--test-passphrase"]]


@pytest.mark.usefixtures("fast_kdf")
def test_host_device_wrong_passphrase_keeps_the_header(tmp_path: Path) -> None:
    img = blank(tmp_path)
    host_volume(img)[0].ensure()
    before = head_hash(img)
    wrong, module = host_volume(img, passphrase=b"not it")
    with pytest.raises(LuksError) as err:
        wrong.ensure()
    assert err.value.msg.startswith("source.encryption: opening the LUKS header of disk vol-9 of d failed (exit 2)")
    assert "the passphrase in libvirt secret openvolume/vol-9/luks does not open the LUKS header" in err.value.msg
    assert "not it" not in err.value.msg
    assert head_hash(img) == before
    assert "luksFormat" not in [a[1] for a in module.argv]


def test_host_device_data_without_a_header_is_never_formatted(tmp_path: Path) -> None:
    img = blank(tmp_path)
    with open(img, "r+b") as f:
        f.seek(1024)
        f.write(b"\x53\xef an ext4 superblock")
    before = head_hash(img)
    vol, module = host_volume(img)
    with pytest.raises(LuksError, match="has no LUKS header but holds data in its first 64 KiB"):
        vol.ensure()
    assert head_hash(img) == before
    assert module.argv == []


@pytest.mark.usefixtures("fast_kdf")
def test_host_device_damaged_header_is_data_not_blank(tmp_path: Path) -> None:
    img = blank(tmp_path)
    with open(img, "r+b") as f:
        f.write(LUKS_MAGIC + b"\x00\x01" + b"garbage")
    before = head_hash(img)
    vol, module = host_volume(img)
    with pytest.raises(LuksError, match="has no LUKS header but holds data"):
        vol.ensure()
    assert [a[1] for a in module.argv] == ["isLuks"]
    assert head_hash(img) == before


@pytest.mark.usefixtures("fast_kdf")
def test_host_device_luks2_is_refused_as_it_is(tmp_path: Path) -> None:
    img = blank(tmp_path)
    subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                    "--iter-time", "100", "--key-file=-", str(img)], input=PASSPHRASE, check=True)
    before = head_hash(img)
    with pytest.raises(LuksError, match="LUKS2 \\(or newer\\) header, which QEMU's luks driver cannot open"):
        host_volume(img)[0].ensure()
    assert head_hash(img) == before


def test_host_device_check_mode_reads_but_never_writes(tmp_path: Path) -> None:
    img = blank(tmp_path)
    vol, module = host_volume(img, check_mode=True)
    assert vol.ensure() == {"format": "luks", "header": "absent", "formatted": True}
    assert not any(img.read_bytes())
    assert module.argv == []


def test_host_device_not_connected_yet(tmp_path: Path) -> None:
    missing = tmp_path / "by-path-link"
    vol, _module = host_volume(missing, check_mode=True)
    assert vol.ensure() == {"format": "luks", "header": "unknown", "formatted": False,
                            "note": f"check mode: source.path {missing} does not exist (not connected yet)"}
    vol, _module = host_volume(missing)
    with pytest.raises(LuksError, match=f"disk vol-9 of d cannot be read: source.path {missing} does not exist"):
        vol.ensure()


def test_host_device_without_cryptsetup_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = blank(tmp_path)
    with open(img, "r+b") as f:
        f.write(LUKS_MAGIC + b"\x00\x01")
    vol, module = host_volume(img)
    monkeypatch.setattr(module, "get_bin_path", lambda name: None)
    with pytest.raises(LuksError, match="needs cryptsetup on the compute host \\(Debian: cryptsetup-bin, RHEL: "
                                        "cryptsetup\\); install it there"):
        vol.ensure()


def test_network_and_file_sources_keep_qemus_tools() -> None:
    for src in ({"type": "file", "path": "/x"}, {"type": "network", "protocol": "rbd", "name": "p/i"}):
        assert not isinstance(luks_volume(FakeModule(), src, Credentials(passphrase=b"x")), HostDeviceLuks)
