"""Key Vault keys (data plane) at 2025-07-01, the default api-version of azure-keyvault-keys 4.11.3:
list keys, list versions, get, rotate, update, rotation policy, and the error shape.

Spec: specification/keyvault/data-plane/Microsoft.KeyVault/stable/2025-07-01/keys.json. The
update and list-versions examples are the 7.6 ones (the 2025-07-01 folder in reach has no copy;
the operations and definitions are unchanged between the two).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

SCHEMA = "keyvault-keys-2025-07-01"
RG = "rg-keys"


def _vault(estate: Estate) -> str:
    estate.cmk_vault(RG, "myvault", grant=[])
    return "myvault"


def test_list_keys_pages_with_maxresults(estate: Estate) -> None:
    vault = _vault(estate)
    for name in ("sdktestkey", "sdktestkey2"):
        estate.key(vault, name)
    ex = example("keyvault-keys", "GetKeys-example")
    got = estate.vault("GET", vault, f"/keys?maxresults={ex.parameters['maxresults']}", api_version=ex.api_version)
    assert got.status == 200, got.body
    assert_conforms(SCHEMA, "KeyListResult", got.body)
    assert len(got.body["value"]) == 1
    base = estate.vault_url(vault)
    assert got.body["value"][0]["kid"] == f"{base}/keys/sdktestkey"  # versionless, as in the example
    assert got.body["nextLink"].startswith(base)
    rest = estate.session.get(got.body["nextLink"], headers={"Authorization": "Bearer conformance"}, verify=estate.verify).json()
    assert_conforms(SCHEMA, "KeyListResult", rest)
    assert [k["kid"].rsplit("/", 1)[-1] for k in rest["value"]] == ["sdktestkey2"]


def test_list_key_versions(estate: Estate) -> None:
    vault = _vault(estate)
    ex = example("keyvault-keys", "GetKeyVersions-example")
    name = ex.parameters["key-name"]
    versions = [estate.key(vault, name) for _ in range(2)]
    got = estate.vault("GET", vault, f"/keys/{name}/versions", api_version=ex.api_version)
    assert got.status == 200, got.body
    assert_conforms(SCHEMA, "KeyListResult", got.body)
    assert sorted(k["kid"].rsplit("/", 1)[-1] for k in got.body["value"]) == sorted(versions)


def test_get_and_rotate_answer_key_bundles(estate: Estate) -> None:
    vault = _vault(estate)
    first = estate.key(vault, "cmk")
    got = estate.vault("GET", vault, "/keys/cmk")
    assert got.status == 200
    assert_conforms(SCHEMA, "KeyBundle", got.body)
    assert got.body["key"]["kid"].endswith(f"/keys/cmk/{first}")
    assert got.body["key"]["kty"] == "RSA"
    rotated = estate.vault("POST", vault, "/keys/cmk/rotate")
    assert rotated.status == 200, rotated.body
    assert_conforms(SCHEMA, "KeyBundle", rotated.body)
    assert not rotated.body["key"]["kid"].endswith(first)
    # Soft delete is on for every new vault: recoverableDays is the retention, 7..90 (keys.json KeyAttributes).
    assert 7 <= got.body["attributes"]["recoverableDays"] <= 90


def test_update_key_with_the_examples_body(estate: Estate) -> None:
    vault = _vault(estate)
    ex = example("keyvault-keys", "UpdateKey-example")
    name = ex.parameters["key-name"]
    version = estate.key(vault, name)
    body: dict[str, Any] = ex.param("parameters")
    assert violations(SCHEMA, "KeyUpdateParameters", body) == []
    got = estate.vault("PATCH", vault, f"/keys/{name}/{version}", body, api_version=ex.api_version)
    assert got.status == 200, got.body
    assert_conforms(SCHEMA, "KeyBundle", got.body)
    want = ex.response_body(200)
    assert got.body["key"]["key_ops"] == want["key"]["key_ops"]
    for attr in ("enabled", "nbf", "exp"):
        assert got.body["attributes"][attr] == want["attributes"][attr], attr


def test_rotation_policy_with_the_examples_body(estate: Estate) -> None:
    vault = _vault(estate)
    ex = example("keyvault-keys", "UpdateKeyRotationPolicy-example")
    name = ex.parameters["key-name"]
    estate.key(vault, name)
    got = estate.vault("PUT", vault, f"/keys/{name}/rotationpolicy", ex.param("keyRotationPolicy"), api_version=ex.api_version)
    assert got.status == 200, got.body
    assert_conforms(SCHEMA, "KeyRotationPolicy", got.body)
    want = ex.response_body(200)
    assert got.body["id"] == want["id"].replace("https://myvault.vault.azure.net", estate.vault_url(vault))
    assert got.body["lifetimeActions"] == want["lifetimeActions"]
    assert got.body["attributes"]["expiryTime"] == want["attributes"]["expiryTime"]
    read = estate.vault("GET", vault, f"/keys/{name}/rotationpolicy")
    assert read.status == 200
    assert_conforms(SCHEMA, "KeyRotationPolicy", read.body)
    assert read.body["lifetimeActions"] == want["lifetimeActions"]


def test_a_missing_key_answers_the_key_vault_error_shape(estate: Estate) -> None:
    vault = _vault(estate)
    got = estate.vault("GET", vault, "/keys/no-such-key")
    assert got.status == 404
    assert_conforms(SCHEMA, "KeyVaultError", got.body)
    assert got.body["error"]["code"] == "KeyNotFound"


@pytest.mark.parametrize(
    ("name", "definition"),
    [
        ("GetKeys-example", "KeyListResult"),
        ("UpdateKey-example", "KeyBundle"),
        ("UpdateKeyRotationPolicy-example", "KeyRotationPolicy"),
    ],
)
def test_the_specs_own_examples_pass_the_schema_excerpt(name: str, definition: str) -> None:
    assert violations(SCHEMA, definition, example("keyvault-keys", name).response_body(200)) == []


def test_the_specs_list_versions_example_has_fractional_timestamps() -> None:
    """GetKeyVersions-example writes ``created: 1493937.61`` where KeyAttributes says integer: the
    example, not the sandbox, is off; the schema is applied as written."""
    found = violations(SCHEMA, "KeyListResult", example("keyvault-keys", "GetKeyVersions-example").response_body(200))
    assert found and all("is not of type 'integer'" in v for v in found)
