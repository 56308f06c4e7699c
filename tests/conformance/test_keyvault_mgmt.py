"""Key Vault vaults and access policies (Microsoft.KeyVault management) at 2026-05-15, the api-version
azure-mgmt-keyvault 14.1.0 sends.

Spec: specification/keyvault/resource-manager/Microsoft.KeyVault/KeyVault/stable/2026-05-15/openapi.json.
The examples use the zero GUID for subscription, tenant and object id alike; the replay sets the
subscription and tenant to this estate's and keeps the object id.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

API = "2026-05-15"
SCHEMA = "keyvault-mgmt-2026-05-15"
ZERO = "00000000-0000-0000-0000-000000000000"


def _with_tenant(estate: Estate, value: Any) -> Any:
    """The example's zero tenant ids replaced by the estate's tenant (object ids untouched)."""
    if isinstance(value, dict):
        return {k: (estate.world.tenant_id if k == "tenantId" and v == ZERO else _with_tenant(estate, v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_tenant(estate, v) for v in value]
    return value


def _vault_path(estate: Estate, rg: str, name: str) -> str:
    return f"/subscriptions/{estate.sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}"


def _create(estate: Estate) -> tuple[str, dict[str, Any]]:
    ex = example("keyvault-mgmt", "createVault")
    body = _with_tenant(estate, ex.param("parameters"))
    path = _vault_path(estate, ex.parameters["resourceGroupName"], ex.parameters["vaultName"])
    got = estate.arm("PUT", path, API, body)
    assert got.status in (200, 201), got.body
    assert_conforms(SCHEMA, "Vault", got.body)
    return path, body


def test_create_vault_with_the_examples_body(estate: Estate) -> None:
    path, body = _create(estate)
    read = estate.arm("GET", path, API)
    assert read.status == 200
    assert_conforms(SCHEMA, "Vault", read.body)
    want = _with_tenant(estate, example("keyvault-mgmt", "getVault").response_body(200))
    props = read.body["properties"]
    for name in ("accessPolicies", "enabledForDeployment", "enabledForDiskEncryption", "enabledForTemplateDeployment",
                 "sku", "tenantId", "provisioningState"):
        assert props[name] == want["properties"][name], name
    # The example writes the vault URI without the trailing slash that Azure's answers (and the
    # sandbox's) carry; the spec's type is a plain string, so both forms conform. Over loopback
    # the vault answers on its own port.
    assert props["vaultUri"].rstrip("/") == estate.vault_url(want["name"])
    assert want["properties"]["vaultUri"] == f"https://{want['name']}.vault.azure.net"
    assert read.body["type"] == want["type"]
    assert read.body["name"] == want["name"]
    assert read.body["location"] == want["location"]
    assert props["accessPolicies"] == body["properties"]["accessPolicies"]


def test_add_access_policy_with_the_examples_body(estate: Estate) -> None:
    ex = example("keyvault-mgmt", "updateAccessPoliciesAdd")
    _create(estate)
    body = _with_tenant(estate, ex.param("parameters"))
    assert violations(SCHEMA, "VaultAccessPolicyParameters", body) == []
    path = _vault_path(estate, "sample-resource-group", ex.parameters["vaultName"])
    got = estate.arm("PUT", f"{path}/accessPolicies/{ex.parameters['operationKind']}", API, body)
    assert got.status in (200, 201), got.body
    assert_conforms(SCHEMA, "VaultAccessPolicyParameters", got.body)
    assert got.body["type"] == ex.response_body(200)["type"]
    read = estate.arm("GET", path, API)
    entry = [p for p in read.body["properties"]["accessPolicies"] if p["objectId"] == ZERO]
    # "add" merges permissions into the existing entry for the same principal.
    assert "encrypt" in entry[0]["permissions"]["keys"]
    assert len(entry) == 1


def test_list_vaults_by_resource_group(estate: Estate) -> None:
    _create(estate)
    got = estate.arm("GET", f"/subscriptions/{estate.sub}/resourceGroups/sample-resource-group/providers/Microsoft.KeyVault/vaults", API)
    assert got.status == 200
    assert_conforms(SCHEMA, "VaultListResult", got.body)
    assert [v["name"] for v in got.body["value"]] == ["sample-vault"]


def test_a_missing_vault_answers_the_arm_error_shape(estate: Estate) -> None:
    got = estate.arm("GET", _vault_path(estate, "sample-resource-group", "no-such-vault"), API)
    assert got.status == 404
    assert_conforms("common-types-v3", "ErrorResponse", got.body)


@pytest.mark.parametrize(("name", "status", "definition"), [
    ("createVault", 201, "Vault"), ("getVault", 200, "Vault"), ("updateAccessPoliciesAdd", 200, "VaultAccessPolicyParameters"),
])
def test_the_specs_own_examples_pass_the_schema_excerpt(name: str, status: int, definition: str) -> None:
    assert violations(SCHEMA, definition, example("keyvault-mgmt", name).response_body(status)) == []
