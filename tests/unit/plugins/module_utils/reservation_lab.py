"""Fixtures of the reservation tests: a real SQLite file and the lab's real etcd.

Nothing here starts a server. The etcd tests use the etcd that
``tests/lab/lab.sh up etcd`` started (its facts are in $OV_LAB_DIR/etcd.env)
and skip, saying why, when it is not up. Each test gets its own etcd prefix
and deletes it afterwards.
"""

from __future__ import annotations

import os
import types
import typing as t
import uuid

import pytest

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (
    Backend,
    Request,
    Reservations,
    open_backend,
)
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import Owner

# The run the tests act as, unless a test names another one: a token only,
# so that only its lease tells whether it is alive.
TEST_RUN = Owner(token="test-run", controller="test-controller")

LAB_DIR = os.environ.get("OV_LAB_DIR", "/var/tmp/openvolume-lab")
CI = {
    "driver_volume_type": "iscsi",
    "data": {
        "target_iqn": "iqn.2026-11.org.openvolume.lab:vol-01",
        "target_portal": "127.0.0.1:3260",
        "target_lun": 1,
        "auth_method": "CHAP",
        "auth_username": "ovlab-initiator",
        "auth_password": "chap-secret-0123",
    },
}


def lab_facts() -> dict[str, str]:
    facts: dict[str, str] = {}
    path = os.path.join(LAB_DIR, "etcd.env")
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep:
                    facts[key] = value
    return facts


def etcd_params_or_skip(prefix: str | None = None) -> dict[str, t.Any]:
    """Backend options for the lab etcd; skip the test with the reason when it is not up."""
    facts = lab_facts()
    if "ETCD_ENDPOINT" not in facts:
        pytest.skip(f"lab etcd is not up ({LAB_DIR}/etcd.env missing): run `tests/lab/lab.sh up etcd`")
    params = {
        "backend": "etcd",
        "etcd_endpoints": [facts["ETCD_ENDPOINT"]],
        "etcd_prefix": prefix or f"/ovtest/{uuid.uuid4().hex}/",
        "etcd_timeout": 5.0,
    }
    try:
        open_backend(params).close()
    except Exception as exc:  # the reason is printed with the skip
        pytest.skip(f"lab etcd at {facts['ETCD_ENDPOINT']} does not answer ({exc}): run `tests/lab/lab.sh up etcd`")
    return params


class Store:
    """One backend's options; opens connections like separate module runs do."""

    def __init__(self, params: dict[str, t.Any]) -> None:
        self.params = params
        self.kind = params["backend"]

    def open(self) -> Backend:
        return open_backend(self.params)

    def service(self, check_mode: bool = False) -> Reservations:
        return Reservations(types.SimpleNamespace(check_mode=check_mode), self.open())

    def apply(self, check_mode: bool = False, lease_ttl: int = 600, owner: Owner = TEST_RUN,  # type: ignore[no-untyped-def]
              **params: t.Any):
        service = self.service(check_mode)
        try:
            return service.apply(Request.from_params(params, lease_ttl=lease_ttl, owner=owner))
        finally:
            service.backend.close()

    def get(self, volume_id: str):  # type: ignore[no-untyped-def]
        backend = self.open()
        try:
            return backend.get(volume_id)
        finally:
            backend.close()

    def cleanup(self) -> None:
        if self.kind == "etcd":
            backend = self.open()
            backend.client.delete_prefix(self.params["etcd_prefix"])  # type: ignore[attr-defined]
            backend.close()


BACKENDS = ["sqlite", "etcd"]


def make_store(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Store]:
    """Body of the ``store`` fixtures: a fresh SQLite file or a fresh etcd prefix."""
    if request.param == "sqlite":
        params: dict[str, t.Any] = {"backend": "sqlite", "sqlite_path": str(tmp_path / "volumes.db")}
    else:
        params = etcd_params_or_skip()
    s = Store(params)
    yield s
    s.cleanup()
