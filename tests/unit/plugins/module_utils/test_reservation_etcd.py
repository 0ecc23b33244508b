"""The etcd backend's own promises, on the lab etcd: leases, refusals, auth."""

from __future__ import annotations

import json
import socket
import time
import typing as t
import uuid

import pytest
from reservation_lab import CI, Store, etcd_params_or_skip, lab_facts

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import BackendError, open_backend
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_etcd import EtcdBackend


@pytest.fixture
def store() -> t.Iterator[Store]:
    s = Store(etcd_params_or_skip())
    yield s
    s.cleanup()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_etcd_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(BackendError) as err:
        EtcdBackend([url], timeout=2)
    assert err.value.msg.startswith(f"etcd is unreachable ({url}: ")
    assert "nothing was changed. Check etcd_endpoints" in err.value.msg


def test_first_answering_endpoint_is_used(store: Store) -> None:
    params = dict(store.params, etcd_endpoints=[f"http://127.0.0.1:{closed_port()}", *store.params["etcd_endpoints"]])
    Store(params).apply(volume_id="v", state="present")
    assert store.get("v") is not None


def test_etcd_gone_during_a_run_changes_nothing(store: Store) -> None:
    store.apply(volume_id="v", state="present")
    backend = store.open()
    assert isinstance(backend, EtcdBackend)
    # etcd stops answering after the connection was made.
    backend.client.port = closed_port()
    with pytest.raises(BackendError, match=r"failed to read volume v: .*nothing was changed"):
        backend.update("v", lambda v: None)
    assert store.get("v") is not None


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        ("127.0.0.1:2379", "is not an etcd client URL"),
        ("ftp://127.0.0.1:2379", "is not an etcd client URL"),
        ("http://127.0.0.1:99999", "has a bad port"),
    ],
)
def test_bad_endpoint_names_the_parameter(endpoint: str, match: str) -> None:
    with pytest.raises(BackendError, match=f"etcd_endpoints: .*{match}"):
        EtcdBackend([endpoint])


def test_transitional_states_are_durable_with_owner_and_lease_end(store: Store) -> None:
    store.apply(volume_id="v", state="present")
    store.apply(volume_id="v", state="attaching", instance="i1", host="h1", lease_ttl=120)
    backend = store.open()
    assert isinstance(backend, EtcdBackend)
    (value, meta), = backend.client.get_prefix(f"{backend.prefix}volumes/v/attachment/")
    doc = json.loads(value)
    # No etcd lease: a lease that ends must not delete the record (it lapses).
    assert int(meta.get("lease", 0)) == 0
    assert doc["status"] == "attaching" and doc["owner"]["token"] == "test-run"
    assert 100 < doc["expires_at"] - time.time() <= 120
    assert "lapsed" not in doc


def test_records_of_the_earlier_layout_are_read_and_rewritten(store: Store) -> None:
    backend = store.open()
    assert isinstance(backend, EtcdBackend)
    base = f"{backend.prefix}volumes/v/"
    backend.client.put(base + "volume", json.dumps({"volume_id": "v", "multiattach": False}))
    backend.client.put(base + "lease/i1", json.dumps(
        {"instance": "i1", "host": "h1", "status": "attaching", "expires_at": time.time() - 1}))
    att = store.get("v").attachments["i1"]
    # Its run is long gone (the lease ended): lapsed, taken over by the next run.
    assert (att.status, att.host, att.lapsed) == ("attaching", "h1", True)
    store.apply(volume_id="v", state="attaching", instance="i1", host="h1", connection_info=CI)
    assert backend.client.get_prefix(base + "lease/") == []
    assert store.get("v").attachments["i1"].connection_info == CI


def test_foreign_data_under_the_prefix_is_refused(store: Store) -> None:
    backend = store.open()
    assert isinstance(backend, EtcdBackend)
    backend.client.put(f"{backend.prefix}volumes/v/volume", "not json")
    with pytest.raises(BackendError, match="is not an openvolume record.*give this collection its own prefix"):
        store.apply(volume_id="v", state="present")
    assert backend.client.get(f"{backend.prefix}volumes/v/volume") == [b"not json"]


def test_records_are_json_under_the_prefix(store: Store) -> None:
    store.apply(volume_id="vol/odd id", state="present", multiattach=True)
    backend = store.open()
    assert isinstance(backend, EtcdBackend)
    (value, _meta), = backend.client.get_prefix(f"{backend.prefix}volumes/vol%2Fodd%20id/")
    assert json.loads(value) == {"volume_id": "vol/odd id", "multiattach": True}
    assert [v.volume_id for v in backend.list_volumes()] == ["vol/odd id"]


def auth_params_or_skip() -> dict[str, t.Any]:
    etcd_params_or_skip()
    facts = lab_facts()
    if "ETCD_AUTH_ENDPOINT" not in facts:
        pytest.skip("the lab's auth-enabled etcd is not up: run `tests/lab/lab.sh up etcd`")
    return {
        "backend": "etcd",
        "etcd_endpoints": [facts["ETCD_AUTH_ENDPOINT"]],
        "etcd_username": facts["ETCD_AUTH_USERNAME"],
        "etcd_password": facts["ETCD_AUTH_PASSWORD"],
        "etcd_prefix": f"{facts['ETCD_AUTH_PREFIX']}{uuid.uuid4().hex}/",
    }


def test_auth_login_works() -> None:
    params = auth_params_or_skip()
    s = Store(params)
    try:
        s.apply(volume_id="v", state="present")
        s.apply(volume_id="v", state="attaching", instance="i1", host="h1")
        assert s.get("v").status == "attaching"
    finally:
        s.cleanup()


def test_auth_wrong_password_is_refused_and_not_shown() -> None:
    params = dict(auth_params_or_skip(), etcd_password="wrong-password-42")
    with pytest.raises(BackendError) as err:
        open_backend(params)
    assert "refused the login of etcd_username 'openvolume'" in err.value.msg
    assert "wrong-password-42" not in err.value.msg


def test_auth_missing_credentials_say_what_to_check() -> None:
    params = auth_params_or_skip()
    del params["etcd_username"], params["etcd_password"]
    with pytest.raises(BackendError, match=r"user name is empty; nothing was changed.*etcd_username/etcd_password"):
        Store(params).get("v")


def test_auth_outside_granted_prefix_is_denied() -> None:
    params = dict(auth_params_or_skip(), etcd_prefix="/not-granted/")
    with pytest.raises(BackendError, match=r"permission denied; nothing was changed"):
        Store(params).get("v")
