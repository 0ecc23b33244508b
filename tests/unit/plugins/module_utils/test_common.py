from __future__ import annotations

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
