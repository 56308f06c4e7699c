"""Azure Cosmos DB for PostgreSQL clusters (Microsoft.DBforPostgreSQL/serverGroupsv2) at
2023-03-02-preview, the first api-version whose Cluster has ``dataEncryption`` and ``identity``.

Spec: specification/postgresqlhsc/resource-manager/Microsoft.DBforPostgreSQL/preview/2023-03-02-preview/postgresqlhsc.json.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

API = "2023-03-02-preview"
SCHEMA = "postgresqlhsc-2023-03-02-preview"
EXAMPLE = "ClusterCreateWithCMK"


def _setup(estate: Estate) -> tuple[dict[str, Any], str]:
    """The example's identity, vault and key in this estate; returns the adapted body and the path."""
    ex = example("postgresql", EXAMPLE)
    rg = ex.parameters["resourceGroupName"]
    uai = estate.identity(rg, "test-usermanagedidentity")
    estate.substitutions[ex.parameters["subscriptionId"]] = estate.sub
    estate.cmk_vault(rg, "test-kv", grant=[uai])
    version = estate.key("test-kv", "test-key1")
    body: dict[str, Any] = estate.adapt(ex.param("parameters"))
    body["properties"]["dataEncryption"]["primaryKeyUri"] = f"https://test-kv.vault.azure.net/keys/test-key1/{version}"
    path = f"/subscriptions/{estate.sub}/resourceGroups/{rg}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2/{ex.parameters['clusterName']}"
    return body, path


def test_cluster_create_with_cmk_is_accepted_and_answered_in_the_spec_shape(estate: Estate) -> None:
    body, path = _setup(estate)
    got = estate.arm("PUT", path, API, body)
    assert got.status in (200, 201), got.body
    assert_conforms(SCHEMA, "Cluster", got.body)
    estate.settle()
    read = estate.arm("GET", path, API)
    assert read.status == 200
    assert_conforms(SCHEMA, "Cluster", read.body)
    assert read.body["properties"]["dataEncryption"] == body["properties"]["dataEncryption"]
    assert "administratorLoginPassword" not in read.body["properties"], "a secret is never echoed"
    listed = estate.arm("GET", f"/subscriptions/{estate.sub}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2", API)
    assert_conforms(SCHEMA, "ClusterListResult", listed.body)
    assert [c["name"] for c in listed.body["value"]] == [path.rsplit("/", 1)[-1]]


def test_cluster_create_with_a_key_that_does_not_exist_is_refused(estate: Estate) -> None:
    body, path = _setup(estate)
    body["properties"]["dataEncryption"]["primaryKeyUri"] = "https://test-kv.vault.azure.net/keys/no-such-key/0123"
    got = estate.arm("PUT", path, API, body)
    assert got.status == 400, got.body
    assert_conforms("common-types-v4", "ErrorResponse", got.body)


def test_data_encryption_type_outside_the_spec_enum_is_refused(estate: Estate) -> None:
    body, path = _setup(estate)
    body["properties"]["dataEncryption"] = {"type": "SystemManaged"}
    got = estate.arm("PUT", path, API, body)
    assert got.status == 400, got.body


def test_the_specs_own_example_passes_the_schema_excerpt() -> None:
    assert violations(SCHEMA, "Cluster", example("postgresql", EXAMPLE).response_body(200)) == []


def test_the_schema_excerpt_rejects_the_sandboxs_old_encryption_type() -> None:
    body = example("postgresql", EXAMPLE).response_body(200)
    body["properties"]["dataEncryption"]["type"] = "SystemManaged"
    assert violations(SCHEMA, "Cluster", body) != []
