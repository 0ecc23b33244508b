"""Transitions per second of the reservation backends on this machine.

A small measurement, not a test: it runs the attach/detach cycle
(reserve, attach, begin_detaching, detach: four transitions) over N volumes
through module_utils, on a SQLite file and on the lab etcd
($OV_LAB_DIR/etcd.env, from `tests/lab/lab.sh up etcd`), and prints
transitions per second. Each transition is a full compare-and-set (read,
decide, write) as the module does it, over one open connection; in
batches, one transaction per batch of 50 volumes.

Usage: .venv/bin/python tests/bench/reservation_bench.py [--volumes N] [--backend sqlite|etcd]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TREE = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(TREE, "ansible_collections", "openvolume", "compute")
if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
sys.path.insert(0, TREE)

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import (  # noqa: E402
    Request,
    Reservations,
    open_backend,
)
from ansible_collections.openvolume.compute.plugins.module_utils._reservation_lease import Owner  # noqa: E402

# One run holds what it reserves (as a playbook run does).
RUN = Owner(token="bench-run")
# Volumes per batch, as the roles send a host's attachments in one task
# (50 volumes fit one etcd transaction of the default 128 operations).
BATCH = 50

CI = {"driver_volume_type": "iscsi", "data": {"target_iqn": "iqn.x:vol", "target_portal": "127.0.0.1:3260",
                                              "target_lun": 1, "auth_password": "bench-secret"}}
CYCLE = [
    {"state": "attaching", "instance": "vm1", "host": "compute1"},
    {"state": "in-use", "instance": "vm1", "connection_info": CI},
    {"state": "detaching", "instance": "vm1"},
    {"state": "available", "instance": "vm1"},
]


def bench(params: dict, volumes: int) -> tuple[float, float]:
    backend = open_backend(params)
    service = Reservations(types.SimpleNamespace(check_mode=False), backend)
    ids = [f"bench-{i:05}" for i in range(volumes)]
    for vid in ids:
        service.apply(Request.from_params({"volume_id": vid, "state": "present"}, lease_ttl=600))
    reqs = [Request.from_params(dict(step, volume_id=vid), lease_ttl=600, owner=RUN) for step in CYCLE for vid in ids]
    start = time.perf_counter()
    for req in reqs:
        if not service.apply(req).changed:
            raise SystemExit(f"bench: {req} did not change anything")
    single = len(reqs) / (time.perf_counter() - start)
    # The batch form the roles use: one apply_all (one transaction) per step
    # of the cycle and batch of volumes.
    start = time.perf_counter()
    for step in CYCLE:
        for first in range(0, len(ids), BATCH):
            service.apply_all([Request.from_params(dict(step, volume_id=vid), lease_ttl=600, owner=RUN)
                               for vid in ids[first:first + BATCH]])
    batch = len(reqs) / (time.perf_counter() - start)
    for vid in ids:
        service.apply(Request.from_params({"volume_id": vid, "state": "absent"}, lease_ttl=600))
    backend.close()
    return single, batch


def etcd_params() -> dict | None:
    path = os.path.join(os.environ.get("OV_LAB_DIR", "/var/tmp/openvolume-lab"), "etcd.env")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        facts = dict(line.strip().split("=", 1) for line in handle if "=" in line)
    return {"backend": "etcd", "etcd_endpoints": [facts["ETCD_ENDPOINT"]],
            "etcd_prefix": f"/ovbench/{uuid.uuid4().hex}/"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "etcd"], action="append")
    args = parser.parse_args()
    for kind in args.backend or ["sqlite", "etcd"]:
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                single, batch = bench({"backend": "sqlite", "sqlite_path": os.path.join(tmp, "v.db")}, args.volumes)
        else:
            params = etcd_params()
            if params is None:
                print("etcd: skipped, the lab etcd is not up (run tests/lab/lab.sh up etcd)")
                continue
            single, batch = bench(params, args.volumes)
        print(f"{kind}: {single:8.0f} transitions/s one by one, {batch:8.0f} transitions/s in batches "
              f"({args.volumes} volumes x {len(CYCLE)} transitions)")


if __name__ == "__main__":
    main()
