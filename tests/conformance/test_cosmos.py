"""Azure Cosmos DB accounts (Microsoft.DocumentDB/databaseAccounts) at 2026-03-15, the api-version
azure-mgmt-cosmosdb 10.0.0 sends; plus the ARM async-operation status a PUT hands out.

Spec: specification/cosmos-db/resource-manager/Microsoft.DocumentDB/DocumentDB/stable/2026-03-15/cosmos-db.json.
The create body is the Get example's writable part. Adapted beyond ids: the example's account
has no customer-managed key; the replay adds one the product document's way (a versionless
``keyVaultKeyUri`` and ``defaultIdentity: UserAssignedIdentity=<id>`` with that identity assigned).
"""

from __future__ import annotations

from typing import Any

from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

API = "2026-03-15"
SCHEMA = "cosmos-db-2026-03-15"
EXAMPLE = "CosmosDBDatabaseAccountGet"
RG = "rg1"


def _body(estate: Estate, *, versioned: bool = False) -> tuple[dict[str, Any], str, str]:
    got = example("cosmos", EXAMPLE).response_body(200)
    uai = estate.identity(RG, "cosmos-identity")
    vault_url = estate.cmk_vault(RG, "cosmos-kv", grant=[uai])
    version = estate.key("cosmos-kv", "cmk")
    key_uri = f"{vault_url}/keys/cmk" + (f"/{version}" if versioned else "")
    props = got["properties"]
    body = {
        "location": got["location"],
        "kind": got["kind"],
        "tags": got["tags"],
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}},
        "properties": {
            "databaseAccountOfferType": props["databaseAccountOfferType"],
            "consistencyPolicy": props["consistencyPolicy"],
            "locations": [{"locationName": loc["locationName"], "failoverPriority": loc["failoverPriority"]} for loc in props["locations"]],
            "keyVaultKeyUri": key_uri,
            "defaultIdentity": f"UserAssignedIdentity={uai}",
        },
    }
    return body, version, f"/subscriptions/{estate.sub}/resourceGroups/{RG}/providers/Microsoft.DocumentDB/databaseAccounts/{got['name']}"


def test_account_with_a_versionless_key_is_accepted_and_answered_in_the_spec_shape(estate: Estate) -> None:
    body, version, path = _body(estate)
    got = estate.arm("PUT", path, API, body)
    assert got.status == 200, got.body
    assert_conforms(SCHEMA, "DatabaseAccountGetResults", got.body)
    status_url = got.header("Azure-AsyncOperation")
    assert status_url, "a PUT on a database account hands out Azure-AsyncOperation"
    estate.settle()
    status = estate.arm_url("GET", status_url)
    assert status.status == 200, status.body
    assert_conforms("common-types-v3", "OperationStatusResult", status.body)
    assert status.body["status"] == "Succeeded"
    read = estate.arm("GET", path, API)
    assert read.status == 200
    assert_conforms(SCHEMA, "DatabaseAccountGetResults", read.body)
    props = read.body["properties"]
    assert props["keyVaultKeyUri"] == body["properties"]["keyVaultKeyUri"]
    assert props["defaultIdentity"] == body["properties"]["defaultIdentity"]
    assert props["provisioningState"] == "Succeeded"
    if "keyVaultKeyUriVersion" in props:  # absent in some api-versions; when present, the version in use
        # The spec says "the version of the Customer Managed Key currently being used" (a string):
        # whether that is the bare version or the versioned key URI is not documented; both are read.
        assert props["keyVaultKeyUriVersion"].rstrip("/").rsplit("/", 1)[-1] == version


def test_account_with_a_versioned_key_uri_is_refused(estate: Estate) -> None:
    body, _, path = _body(estate, versioned=True)
    got = estate.arm("PUT", path, API, body)
    assert got.status == 400, got.body
    assert_conforms("common-types-v3", "ErrorResponse", got.body)


def test_the_specs_own_example_passes_the_schema_excerpt() -> None:
    assert violations(SCHEMA, "DatabaseAccountGetResults", example("cosmos", EXAMPLE).response_body(200)) == []
