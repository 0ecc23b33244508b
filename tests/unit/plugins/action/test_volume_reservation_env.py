"""The store options of volume_reservation fall back to the controller's environment.

An AWX credential injects OV_ETCD_* variables into the job's environment; the
action plugin validates its arguments in the controller's process, so the
fallback has to apply there (ArgumentSpecValidator), not only in a module.
"""

from __future__ import annotations

import typing as t
from unittest import mock

import pytest

from ansible_collections.openvolume.compute.plugins.action import volume_reservation as action
from ansible_collections.openvolume.compute.plugins.module_utils._reservation import STORE_ENV

SECRET = "s3cr3t-from-env"

ENV = {
    "OV_RESERVATION_BACKEND": "etcd",
    "OV_ETCD_ENDPOINTS": "http://192.0.2.1:2379,http://192.0.2.2:2379",
    "OV_ETCD_USERNAME": "openvolume",
    "OV_ETCD_PASSWORD": SECRET,
    "OV_ETCD_CA_CERT": "/run/awx/etcd-ca.pem",
    "OV_ETCD_PREFIX": "/awx-test/",
}


def _run_action(args: dict[str, t.Any], handled: dict[str, t.Any] | None = None) -> dict[str, t.Any]:
    """Run the action plugin on ``args`` with ``handle`` replaced; return its result."""
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = False
    task.diff = False
    plugin = action.ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader=None, templar=None,
                                 shared_loader_obj=None)

    def fake_handle(params: t.Mapping[str, t.Any], **kwargs: t.Any) -> dict[str, t.Any]:
        if handled is not None:
            handled.update(params)
        return {"changed": False, "echo": dict(params)}

    with mock.patch.object(action, "handle", fake_handle):
        return plugin.run(task_vars={})


@pytest.fixture
def etcd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_every_store_variable_is_documented() -> None:
    assert set(STORE_ENV.values()) == set(ENV)


@pytest.mark.usefixtures("etcd_env")
def test_action_plugin_takes_the_store_from_the_environment() -> None:
    seen: dict[str, t.Any] = {}
    _run_action({"volume_id": "vol-env"}, seen)
    assert seen["backend"] == "etcd"
    assert seen["etcd_endpoints"] == ["http://192.0.2.1:2379", "http://192.0.2.2:2379"]
    assert seen["etcd_username"] == "openvolume"
    assert seen["etcd_password"] == SECRET
    assert seen["etcd_ca_cert"] == "/run/awx/etcd-ca.pem"
    assert seen["etcd_prefix"] == "/awx-test/"


@pytest.mark.usefixtures("etcd_env")
def test_task_options_win_over_the_environment() -> None:
    seen: dict[str, t.Any] = {}
    _run_action({"volume_id": "vol-env", "backend": "sqlite", "etcd_username": "other",
                 "etcd_prefix": "/mine/"}, seen)
    assert seen["backend"] == "sqlite"
    assert seen["etcd_username"] == "other"
    assert seen["etcd_prefix"] == "/mine/"
    # Those the task left out still come from the environment.
    assert seen["etcd_password"] == SECRET


@pytest.mark.usefixtures("etcd_env")
def test_password_from_the_environment_is_masked_in_the_result() -> None:
    result = _run_action({"volume_id": "vol-env"})
    assert SECRET not in repr(result)


def test_without_the_environment_the_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    seen: dict[str, t.Any] = {}
    _run_action({"volume_id": "vol-env"}, seen)
    assert seen["backend"] == "sqlite"
    assert seen["etcd_endpoints"] == ["http://127.0.0.1:2379"]
    assert seen["etcd_password"] is None
    assert seen["etcd_prefix"] == "/openvolume/"


@pytest.mark.usefixtures("etcd_env")
def test_lookup_takes_the_store_from_the_environment() -> None:
    from ansible_collections.openvolume.compute.plugins.lookup import volumes

    seen: dict[str, t.Any] = {}

    class Stop(Exception):
        pass

    def fake_open(params: t.Mapping[str, t.Any]) -> t.Any:
        seen.update(params)
        raise Stop

    import yaml
    from ansible import constants as C

    # What the plugin loader does: register the options (with their env
    # entries) from the plugin's DOCUMENTATION under its name.
    name = "openvolume.compute.volumes"
    C.config.initialize_plugin_configuration_definitions("lookup", name,
                                                         yaml.safe_load(volumes.DOCUMENTATION)["options"])
    plugin = volumes.LookupModule()
    plugin._load_name = name
    with mock.patch.object(volumes, "open_backend", fake_open), pytest.raises(Stop):
        plugin.run([], variables={})
    assert seen["backend"] == "etcd"
    assert seen["etcd_password"] == SECRET
    assert seen["etcd_endpoints"] == ["http://192.0.2.1:2379", "http://192.0.2.2:2379"]


def test_empty_variables_count_as_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AWX credential injects every variable, empty for a blank field (no user, no CA)."""
    for name in ENV:
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("OV_RESERVATION_BACKEND", "etcd")
    seen: dict[str, t.Any] = {}
    _run_action({"volume_id": "vol-env"}, seen)
    assert seen["backend"] == "etcd"
    assert seen["etcd_username"] is None and seen["etcd_password"] is None and seen["etcd_ca_cert"] is None
    assert seen["etcd_endpoints"] == ["http://127.0.0.1:2379"]
    assert seen["etcd_prefix"] == "/openvolume/"


def test_open_backend_takes_empty_strings_for_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible_collections.openvolume.compute.plugins.module_utils import _reservation_etcd

    made: dict[str, t.Any] = {}

    class FakeEtcd:
        def __init__(self, endpoints: list[str], **kwargs: t.Any) -> None:
            made.update(kwargs, endpoints=endpoints)

    monkeypatch.setattr(_reservation_etcd, "EtcdBackend", FakeEtcd)
    from ansible_collections.openvolume.compute.plugins.module_utils._reservation import open_backend

    open_backend({"backend": "etcd", "etcd_endpoints": [], "etcd_username": "", "etcd_password": "",
                  "etcd_ca_cert": "", "etcd_prefix": ""})
    assert made["username"] is None and made["password"] is None and made["ca_cert"] is None
    assert made["endpoints"] == ["http://127.0.0.1:2379"] and made["prefix"] == "/openvolume/"
