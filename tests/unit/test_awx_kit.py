"""The AWX kit (meta/awx, collections/requirements.yml) agrees with the code it feeds.

AWX validates these only when someone imports them; a renamed variable would
otherwise surface as a job that silently ignores its credential or survey.
"""

from __future__ import annotations

import json
import os
import re
import typing as t

import pytest
import yaml

from ansible_collections.openvolume.compute.plugins.module_utils._reservation import STORE_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CREDENTIAL_TYPES = os.path.join(ROOT, "meta", "awx", "credential_types")
SURVEYS = os.path.join(ROOT, "meta", "awx", "surveys")


def _load(path: str) -> t.Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


@pytest.mark.parametrize("name", sorted(os.listdir(CREDENTIAL_TYPES)))
def test_credential_type_is_consistent(name: str) -> None:
    cred = _load(os.path.join(CREDENTIAL_TYPES, name))
    assert cred["kind"] == "cloud" and cred["name"]
    fields = {f["id"]: f for f in cred["inputs"]["fields"]}
    assert set(cred["inputs"].get("required", [])) <= set(fields)
    # Every secret-looking field is marked secret (AWX encrypts and hides those).
    for fid, field in fields.items():
        if fid in ("password", "key", "passphrases"):
            assert field.get("secret") is True, fid
    templates = json.dumps(cred["injectors"])
    used = set(re.findall(r"\{\{\s*(?:tower\.filename\.)?([a-z_]+)", templates)) - {"tower"}
    assert used <= set(fields), used - set(fields)
    for var in cred["injectors"].get("env", {}):
        assert var in STORE_ENV.values(), f"{var} is not read by volume_reservation"


def test_the_etcd_credential_sets_every_store_variable() -> None:
    env = _load(os.path.join(CREDENTIAL_TYPES, "openvolume_etcd.yml"))["injectors"]["env"]
    assert set(env) == set(STORE_ENV.values())
    assert env["OV_RESERVATION_BACKEND"] == "etcd"


def test_credential_extra_vars_are_documented() -> None:
    readme = _read("README.md")
    for name in ("openvolume_chap.yml", "openvolume_cephx.yml", "openvolume_luks.yml"):
        for var in _load(os.path.join(CREDENTIAL_TYPES, name))["injectors"]["extra_vars"]:
            assert var in readme, var


@pytest.mark.parametrize("name", ["attach.json", "detach.json", "reconcile.json"])
def test_survey_asks_for_what_the_playbook_reads(name: str) -> None:
    survey = json.loads(_read("meta", "awx", "surveys", name))
    variables = {q["variable"] for q in survey["spec"]}
    for q in survey["spec"]:
        assert q["type"] in ("text", "textarea", "password", "integer", "float", "multiplechoice",
                             "multiselect"), q
        assert {"question_name", "required", "variable"} <= set(q)
    playbook = _read("playbooks", name.replace(".json", ".yml"))
    assert "openvolume_target_hosts" in variables and "openvolume_target_hosts" in playbook
    role = name.replace(".json", "")
    defaults = _read("roles", f"volume_{role}", "defaults", "main.yml")
    for var in variables - {"openvolume_target_hosts"}:
        assert re.search(rf"\b{var}\b", defaults), f"volume_{role} does not read {var}"


def test_collections_requirements_name_this_repository() -> None:
    req = _load(os.path.join(ROOT, "collections", "requirements.yml"))
    galaxy = _load(os.path.join(ROOT, "galaxy.yml"))
    (entry,) = req["collections"]
    assert entry["type"] == "git"
    assert entry["name"].removesuffix(".git") == galaxy["repository"]
