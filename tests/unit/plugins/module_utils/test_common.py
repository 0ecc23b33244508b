from __future__ import annotations

import typing as t

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._common import MASK, is_secret_key, mask_secrets


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("auth_password", True),
        ("auth_password_in", True),
        ("node.session.auth.password", True),
        ("password_in", True),
        ("etcd_password", True),
        ("cephx_key", True),
        ("secret", True),
        ("auth_username", False),
        ("secret_uuid", False),
        ("secret_usage", False),
        ("target_iqn", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_mask_secrets_nested_and_in_text() -> None:
    value = {
        "data": {"auth_username": "user", "auth_password": "s3cr3t-pw"},
        "msg": "login failed for user with s3cr3t-pw",
        "list": [{"password": "x"}, "plain"],
        "empty_password": "",
        "noted_password": f"{MASK} (changed)",
        "secrets": [{"usage": "openvolume/v1", "value": "s3cr3t-pw"}],
    }
    masked = mask_secrets(value, ["s3cr3t-pw"])
    assert masked["data"] == {"auth_username": "user", "auth_password": MASK}
    assert masked["msg"] == f"login failed for user with {MASK}"
    assert masked["list"] == [{"password": MASK}, "plain"]
    assert masked["empty_password"] == ""
    assert masked["noted_password"] == f"{MASK} (changed)"
    assert masked["secrets"] == [{"usage": "openvolume/v1", "value": MASK}]
    assert value["data"]["auth_password"] == "s3cr3t-pw"


def test_undo_after_adds_failed_undos_to_the_original_error() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, undo_after

    done = []

    def fails() -> None:
        raise OpenVolumeError("logout failed: iscsiadm exit 10")

    error = OpenVolumeError("login to t at p failed: iscsiadm exit 24", rc=24)
    undo_after(error, [("logout from t at p1", fails), ("logout from t at p2", lambda: done.append("p2"))])
    # Every undo was tried; the original error leads, the failed undo follows.
    assert done == ["p2"]
    assert error.msg == ("login to t at p failed: iscsiadm exit 24; and could NOT undo: "
                         "logout from t at p1 (logout failed: iscsiadm exit 10)")
    assert error.details == {"rc": 24, "not_undone": ["logout from t at p1 (logout failed: iscsiadm exit 10)"]}
    clean = OpenVolumeError("x")
    undo_after(clean, [("nothing", lambda: None)])
    assert clean.msg == "x" and "not_undone" not in clean.details


def test_unreadable_holders_are_an_error_not_none(monkeypatch: t.Any) -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils import _scsi_devices
    from ansible_collections.openvolume.compute.plugins.module_utils._scsi_devices import DeviceError, Disk

    def denied(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(_scsi_devices.os, "listdir", denied)
    with pytest.raises(DeviceError, match="reading the holders of /dev/sdq failed .* left alone"):
        Disk("sdq").holders()

    def gone(path: str) -> list[str]:
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(_scsi_devices.os, "listdir", gone)
    monkeypatch.setattr(_scsi_devices.os.path, "exists", lambda p: False)
    assert Disk("sdq").holders() == []
    monkeypatch.setattr(_scsi_devices.os.path, "exists", lambda p: True)
    with pytest.raises(DeviceError, match="no holders directory"):
        Disk("sdq").holders()


def test_apply_batch_undoes_the_items_done_before_a_failure_in_reverse() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, apply_batch

    log: list[str] = []

    def apply(item: str) -> dict[str, t.Any]:
        if item == "c":
            raise OpenVolumeError("c failed")
        log.append(f"do {item}")
        return {"changed": item == "a"}

    def undo(item: str, outcome: dict[str, t.Any]) -> list[tuple[str, t.Callable[[], object]]]:
        return [(f"undo {item}", lambda: log.append(f"undo {item}"))] if outcome["changed"] else []

    assert apply_batch(["a", "b"], apply, undo) == [{"changed": True}, {"changed": False}]
    log.clear()
    with pytest.raises(OpenVolumeError, match="^c failed$"):
        apply_batch(["a", "b", "c", "d"], apply, undo)
    # b changed nothing, so only a is undone; d never ran.
    assert log == ["do a", "do b", "undo a"]


def test_dispatch_state_calls_the_method_of_the_state() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, dispatch_state

    class Thing:
        def state_present(self, spec: str) -> str:
            return f"present {spec}"

        def state_absent(self, spec: str) -> str:
            return f"absent {spec}"

        def absent_all(self, specs: list[str]) -> list[str]:
            return [f"absent {s}" for s in specs]

    assert dispatch_state(Thing(), "present", "a") == "present a"
    assert dispatch_state(Thing(), "absent", "a") == "absent a"
    assert dispatch_state(Thing(), "absent", ["a", "b"], method="{}_all") == ["absent a", "absent b"]
    with pytest.raises(OpenVolumeError, match=r"^state: 'gone' is not a state of Thing \(it has no state_gone\)$"):
        dispatch_state(Thing(), "gone", "a")
    with pytest.raises(OpenVolumeError, match=r"\(it has no present_all\)$"):
        dispatch_state(Thing(), "present", ["a"], method="{}_all")


def test_batch_entries_default_iface_and_refuse_the_single_form() -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils._common import OpenVolumeError, batch_entries

    params = {"items": [{"iface": None, "ifaces": None}, {"iface": "eth1", "ifaces": None}], "iface": "default",
              "ifaces": None, "target": None, "lun": None}
    assert [e["iface"] for e in batch_entries(params, "items", ["target", "lun", "iface"])] == ["default", "eth1"]
    with pytest.raises(OpenVolumeError, match=r"^items: give either items or target, lun \(the single form\)"):
        batch_entries(dict(params, target="t", lun=2), "items", ["target", "lun"])
    # What counts as not given is the caller's: an empty dict here.
    assert batch_entries(dict(params, settings={}), "items", ["settings"], unset=(None, {}))
    with pytest.raises(OpenVolumeError, match=r"^items\[0\]: iface and ifaces are mutually exclusive"):
        batch_entries(dict(params, items=[{"iface": "a", "ifaces": ["b"]}]), "items", [])
