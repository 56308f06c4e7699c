"""Azure Data Explorer (Microsoft.Kusto) at 2025-02-14, the api-version azure-mgmt-kusto 4.0.0 sends.

Spec: specification/azure-kusto/resource-manager/Microsoft.Kusto/Kusto/stable/2025-02-14/kusto.json.
Adaptation beyond ids: the examples' cluster name ``kustoClusterCMK`` is sent lower-cased
(the sandbox enforces the documented naming rule, lowercase letters and digits).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import Estate
from tests.conformance.spec import Example, assert_conforms, example, violations

API = "2025-02-14"
SCHEMA = "kusto-2025-02-14"
RG = "kustoRgTest"


def _sub_of(ex: Example) -> str:
    return str(ex.parameters["subscriptionId"])


def _cmk_estate(estate: Estate, ex: Example) -> dict[str, str]:
    """Identity, vault and key the cluster examples name; returns the key's first version."""
    uai = estate.identity(RG, "kustoClusterIdentity")
    estate.cmk_vault(RG, "myvault", grant=[uai])
    estate.substitutions[_sub_of(ex)] = estate.sub
    return {"uai": uai, "v1": estate.key("myvault", "myClusterCMKKey")}


def _cluster_path(estate: Estate, name: str) -> str:
    return f"/subscriptions/{estate.sub}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/{name}"


def _create(estate: Estate) -> tuple[str, dict[str, str]]:
    ex = example("kusto", "KustoClusterCreateWithCMKUserAssignedIdentity")
    made = _cmk_estate(estate, ex)
    body: dict[str, Any] = estate.adapt(ex.param("parameters"))
    body["properties"]["keyVaultProperties"]["keyVersion"] = made["v1"]
    path = _cluster_path(estate, ex.parameters["clusterName"].lower())
    got = estate.arm("PUT", path, API, body)
    assert got.status in (200, 201), got.body
    assert_conforms(SCHEMA, "Cluster", got.body)
    estate.settle()
    return path, made


def test_cluster_create_with_cmk_is_accepted_and_answered_in_the_spec_shape(estate: Estate) -> None:
    path, made = _create(estate)
    got = estate.arm("GET", path, API)
    assert got.status == 200
    assert_conforms(SCHEMA, "Cluster", got.body)
    expected = example("kusto", "KustoClusterCreateWithCMKUserAssignedIdentity").response_body(200)
    kvp = got.body["properties"]["keyVaultProperties"]
    want = estate.adapt(expected["properties"]["keyVaultProperties"])
    want["keyVersion"] = made["v1"]
    assert kvp == want
    assert got.body["properties"]["provisioningState"] == expected["properties"]["provisioningState"]
    assert got.body["sku"] == expected["sku"]
    assert got.body["identity"]["type"] == "UserAssigned"
    assert list(got.body["identity"]["userAssignedIdentities"]) == [made["uai"]]


def test_cluster_key_rotation_patch_is_accepted_as_a_long_running_operation(estate: Estate) -> None:
    path, made = _create(estate)
    v2 = estate.key("myvault", "myClusterCMKKey")
    ex = example("kusto", "KustoClusterUpdateCMKKeyRotation")
    body: dict[str, Any] = estate.adapt(ex.param("parameters"))
    body["properties"]["keyVaultProperties"]["keyVersion"] = v2
    got = estate.arm("PATCH", path, API, body, **{"If-Match": ex.parameters["If-Match"]})
    assert got.status == 202, got.body
    assert got.header("Azure-AsyncOperation"), "a 202 from Clusters_Update carries Azure-AsyncOperation"
    assert_conforms(SCHEMA, "Cluster", got.body)
    estate.settle()
    status = estate.arm_url("GET", str(got.header("Azure-AsyncOperation")))
    assert status.status == 200
    assert_conforms(SCHEMA, "OperationResult", status.body)
    assert status.body["status"] == "Succeeded"
    after = estate.arm("GET", path, API)
    assert after.body["properties"]["keyVaultProperties"]["keyVersion"] == v2
    assert after.body["properties"]["keyVaultProperties"]["userIdentity"] == made["uai"]


def test_cluster_update_with_a_federated_identity_keeps_every_key_vault_field(estate: Estate) -> None:
    """Cross-tenant CMK: ``federatedIdentityClientId`` is part of keyVaultProperties and is kept.
    The example updates its own cluster (kustoCluster2); the replay updates the one just created."""
    path, _ = _create(estate)
    v2 = estate.key("myvault", "myClusterCMKKey")
    ex = example("kusto", "KustoClusterUpdateWithCMKFederatedIdentity")
    body: dict[str, Any] = estate.adapt(ex.param("parameters"))
    body["properties"]["keyVaultProperties"]["keyVersion"] = v2
    got = estate.arm("PATCH", path, API, body, **{"If-Match": ex.parameters["If-Match"]})
    assert got.status in (200, 202), got.body
    assert_conforms(SCHEMA, "Cluster", got.body)
    estate.settle()
    after = estate.arm("GET", path, API)
    assert_conforms(SCHEMA, "Cluster", after.body)
    assert after.body["properties"]["keyVaultProperties"] == body["properties"]["keyVaultProperties"]


def test_operation_status_while_running_uses_the_spec_enum(estate: Estate) -> None:
    path, _ = _create(estate)
    v2 = estate.key("myvault", "myClusterCMKKey")
    estate.world.lro.duration_s = 600.0  # keep the operation running while it is polled
    body: dict[str, Any] = estate.adapt(example("kusto", "KustoClusterUpdateCMKKeyRotation").param("parameters"))
    body["properties"]["keyVaultProperties"]["keyVersion"] = v2
    got = estate.arm("PATCH", path, API, body)
    assert got.status == 202, got.body
    status = estate.arm_url("GET", str(got.header("Azure-AsyncOperation")))
    assert status.status in (200, 202)
    assert_conforms(SCHEMA, "OperationResult", status.body)
    assert status.body["status"] == "Running"


def test_database_with_its_own_key_is_accepted_and_answered_in_the_spec_shape(estate: Estate) -> None:
    ex = example("kusto", "KustoDatabasesUpdateWithCMKFederatedIdentity")
    estate.substitutions[_sub_of(ex)] = estate.sub
    cluster_path, made = _create(estate)
    # A database's key is reached through an identity assigned to its cluster: the example's
    # identity id is replaced by the cluster's (the sandbox resolves the principal there).
    estate.cmk_vault(RG, "mydbvault", grant=[made["uai"]])
    version = estate.key("mydbvault", "myDatabaseCMKKey")
    body: dict[str, Any] = estate.adapt(ex.param("parameters"))
    body["properties"]["keyVaultProperties"]["keyVersion"] = version
    body["properties"]["keyVaultProperties"]["userIdentity"] = made["uai"]
    db_path = f"{cluster_path}/databases/{ex.parameters['databaseName']}"
    got = estate.arm("PUT", db_path, API, body)
    assert got.status in (200, 201, 202), got.body
    assert_conforms(SCHEMA, "ReadWriteDatabase", got.body)
    estate.settle()
    read = estate.arm("GET", db_path, API)
    assert read.status == 200, read.body
    assert_conforms(SCHEMA, "ReadWriteDatabase", read.body)
    assert read.body["kind"] == "ReadWrite"
    assert read.body["properties"]["keyVaultProperties"] == body["properties"]["keyVaultProperties"]
    listed = estate.arm("GET", f"{cluster_path}/databases", API)
    assert listed.status == 200, listed.body
    assert_conforms(SCHEMA, "DatabaseListResult", listed.body)


@pytest.mark.parametrize(
    ("name", "status", "definition"),
    [
        ("KustoClusterCreateWithCMKUserAssignedIdentity", 200, "Cluster"),
        ("KustoClusterUpdateCMKKeyRotation", 202, "Cluster"),
        ("KustoClusterUpdateWithCMKFederatedIdentity", 200, "Cluster"),
        ("KustoOperationResultsGet", 200, "OperationResult"),
        ("KustoDatabasesUpdateWithCMKFederatedIdentity", 200, "ReadWriteDatabase"),
        ("KustoDatabasesGet", 200, "ReadWriteDatabase"),
    ],
)
def test_the_specs_own_examples_pass_the_schema_excerpt(name: str, status: int, definition: str) -> None:
    """The schema excerpt is faithful enough that the spec's own examples pass it."""
    assert violations(SCHEMA, definition, example("kusto", name).response_body(status)) == []


def test_the_schema_excerpt_rejects_an_off_spec_operation_status() -> None:
    body = example("kusto", "KustoOperationResultsGet").response_body(200)
    body["status"] = "InProgress"
    assert any("status" in v for v in violations(SCHEMA, "OperationResult", body))
