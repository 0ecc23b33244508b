"""meta/runtime.yml against the modules and filters it describes."""

from __future__ import annotations

import ast
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[4]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def _documentation(module: str) -> dict:
    tree = ast.parse((ROOT / "plugins" / "modules" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(ast.literal_eval(node.value))
    raise AssertionError(f"{module} has no DOCUMENTATION")


def _options(module: str) -> set[str]:
    doc = _documentation(module)
    options = set(doc.get("options") or {})
    # The libvirt fragment adds uri (the module's own spec has it through LibvirtModule).
    if "openvolume.compute.libvirt" in doc.get("extends_documentation_fragment", []):
        options.add("uri")
    return options


GROUPS = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]
# The options each group is for (the README's module_defaults table).
GROUP_OPTIONS = {
    "libvirt": {"uri"},
    "iscsi": {"iface", "ifaces"},
    "reservation": {"backend", "sqlite_path", "etcd_endpoints", "etcd_username", "etcd_password", "etcd_ca_cert",
                    "etcd_prefix", "etcd_timeout", "lease_ttl", "owner"},
}


def test_every_module_is_in_a_group() -> None:
    grouped = {m for members in GROUPS.values() for m in members}
    assert grouped == set(MODULES)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_members_have_the_group_options(group: str) -> None:
    # ansible-core gives a group's defaults to every member, and a module
    # fails on an option it lacks: each member must have them all.
    for module in GROUPS[group]:
        missing = GROUP_OPTIONS[group] - _options(module)
        assert not missing, f"{module} lacks {sorted(missing)} of group {group}"


@pytest.mark.parametrize("module", MODULES)
def test_action_group_attribute_matches_runtime(module: str) -> None:
    membership = _documentation(module)["attributes"]["action_group"]["membership"]
    expected = [f"openvolume.compute.{g}" for g, members in GROUPS.items() if module in members]
    assert membership == expected
