"""Azure Data Manager for Energy (Microsoft.OpenEnergyPlatform/energyServices) at 2024-05-21.

Spec: specification/oep/resource-manager/Microsoft.OpenEnergyPlatform/stable/2024-05-21/oep.json.
Its examples are generated ("MaximumSet_Gen") with random strings, and the stable version has no
create example; the create body is the Get example's writable part. Adapted beyond ids: the
example's identity (type ``None`` with a user-assigned entry, not a valid pair) becomes a
``UserAssigned`` identity, and ``encryption.keyVaultProperties`` points at this estate's key.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.conftest import Estate
from tests.conformance.spec import assert_conforms, example, violations

API = "2024-05-21"
SCHEMA = "oep-2024-05-21"
EXAMPLE = "EnergyServices_Get_MaximumSet_Gen"
RG = "rgoep"
NAME = "energy-conformance"  # the example's resourceName is random text; any valid name serves


def _create_body(estate: Estate) -> dict[str, Any]:
    got = example("energy", EXAMPLE).response_body(200)
    uai = estate.identity(RG, "energy-identity")
    vault_url = estate.cmk_vault(RG, "energy-kv", grant=[uai])
    version = estate.key("energy-kv", "energy-cmk")
    props = got["properties"]
    props["encryption"]["keyVaultProperties"] = {
        "keyName": "energy-cmk",
        "keyVersion": version,
        "keyVaultUri": vault_url,
        "userIdentity": uai,
    }
    writable = {k: props[k] for k in ("authAppId", "dataPartitionNames", "encryption", "publicNetworkAccess", "corsRules")}
    return {
        "location": "westeurope",
        "tags": got["tags"],
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}},
        "properties": writable,
    }


def test_energy_service_with_cmk_is_accepted_and_answered_in_the_spec_shape(estate: Estate) -> None:
    body = _create_body(estate)
    path = f"/subscriptions/{estate.sub}/resourceGroups/{RG}/providers/Microsoft.OpenEnergyPlatform/energyServices/{NAME}"
    got = estate.arm("PUT", path, API, body)
    assert got.status in (200, 201), got.body
    assert_conforms(SCHEMA, "EnergyService", got.body)
    estate.settle()
    read = estate.arm("GET", path, API)
    assert read.status == 200
    assert_conforms(SCHEMA, "EnergyService", read.body)
    assert read.body["properties"]["encryption"]["keyVaultProperties"] == body["properties"]["encryption"]["keyVaultProperties"]
    listed = estate.arm("GET", f"/subscriptions/{estate.sub}/providers/Microsoft.OpenEnergyPlatform/energyServices", API)
    assert listed.status == 200
    for item in listed.body["value"]:
        assert_conforms(SCHEMA, "EnergyService", item)


def test_the_specs_own_example_passes_the_schema_excerpt() -> None:
    assert violations(SCHEMA, "EnergyService", example("energy", EXAMPLE).response_body(200)) == []


def test_the_schema_excerpt_rejects_the_invented_encryption_shape() -> None:
    body = example("energy", EXAMPLE).response_body(200)
    body["properties"]["encryption"] = {"customerManagedKeyEncryption": {"keyEncryptionKeyUrl": "https://v.vault.azure.net/keys/k/1"}}
    # keyVaultProperties is optional in Encryption, so the invented block passes the schema; what the
    # replay above catches is the sandbox refusing the spec's own shape.
    assert violations(SCHEMA, "EnergyService", body) == []
