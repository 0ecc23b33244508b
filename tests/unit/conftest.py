"""Make ``ansible_collections.openvolume.compute`` importable from a checkout.

The repository root is the collection root; pytest sees it through a
symlink tree under build/collections (the same one the Makefile gives
ansible), so the tests import the code exactly as Ansible does.
"""

from __future__ import annotations

import os
import sys
import typing as t

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TREE = os.path.join(_ROOT, "build", "collections")
_LINK = os.path.join(_TREE, "ansible_collections", "openvolume", "compute")

if not os.path.islink(_LINK) and not os.path.isdir(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(_ROOT, _LINK)
if _TREE not in sys.path:
    sys.path.insert(0, _TREE)


# A skip is an explicit opt-out, never a silent pass: `make test` (and CI)
# must not go green without the parts a test needs. OV_ALLOW_SKIP lists the
# components whose absence may skip tests (e.g. OV_ALLOW_SKIP=etcd), or "all".
_ALLOWED = {part.strip() for part in os.environ.get("OV_ALLOW_SKIP", "").split(",") if part.strip()}


def _skip_allowed(reason: str) -> bool:
    return "all" in _ALLOWED or any(part in reason for part in _ALLOWED)


import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: t.Any, call: t.Any) -> t.Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if not _skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = (f"skipped without an opt-out: {reason}\n(set OV_ALLOW_SKIP to the component, "
                               "e.g. OV_ALLOW_SKIP=etcd, to allow this skip)")
