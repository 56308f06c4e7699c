"""Simulated services over sandbox time: key use by clusters and accounts, versionless lag,
Cosmos recovery, seeded LRO failures, and the cost of time passing. Driven through the
management SDKs; keys are placed in the world's state directly."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cosmosdb import models as cm
from azure.mgmt.kusto import models as km

from sandbox.services import (
    COSMOS_CMK_CONFIRMED,
    COSMOS_FIRST_PARTY_PRINCIPAL,
    KUSTO_SUSPENDED_STATE,
)
from sandbox.wire import Request, Service
from sandbox.world import World
from tests.sandbox.arm_helpers import (
    LOCATION,
    RG,
    SUB,
    add_key_version,
    cosmos_client,
    create_vault,
    grant,
    kusto_client,
    put_uai,
    raw,
    revoke,
    set_enabled,
    uai_id,
    vault_url,
)

SKU = km.AzureSku(name="Standard_E2a_v4", tier="Standard")


def interval(world: World) -> timedelta:
    return timedelta(seconds=world.service_settings.usage_interval_s + 1)


def cmk_cluster(world: World, name: str, *, version: str | None = "") -> tuple[str, str]:
    """A running cluster bound to key ``cmk`` in vault ``kv{name}``; returns (principal, v1)."""
    client = kusto_client(world)
    cluster = client.clusters.begin_create_or_update(
        RG, name, km.Cluster(location=LOCATION, sku=SKU, identity=km.Identity(type="SystemAssigned"))
    ).result()
    principal = cluster.identity.principal_id
    create_vault(world, f"kv{name}", object_ids=(principal,))
    v1 = add_key_version(world, f"kv{name}", "cmk")
    client.clusters.begin_update(
        RG,
        name,
        km.ClusterUpdate(
            key_vault_properties=km.KeyVaultProperties(
                key_name="cmk",
                key_version=v1 if version == "" else (version or ""),
                key_vault_uri=vault_url(world, f"kv{name}") + "/",
            )
        ),
    ).result()
    return principal, v1


def cluster_sim(world: World, name: str) -> dict[str, object]:
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/{name}".lower()
    return world.resources[rid].sim


# ---- Kusto ----------------------------------------------------------------------------------
def test_kusto_suspends_on_lost_access_and_resumes_when_it_returns(arm_world: World) -> None:
    principal, v1 = cmk_cluster(arm_world, "kustouse")
    client = kusto_client(arm_world)
    set_enabled(arm_world, "kvkustouse", "cmk", v1, False)
    assert client.clusters.get(RG, "kustouse").state == "Running"  # not used yet
    arm_world.clock.advance(interval(arm_world))
    suspended = client.clusters.get(RG, "kustouse")
    assert suspended.state == KUSTO_SUSPENDED_STATE
    assert "KeyDisabled" in (suspended.state_reason or "")
    set_enabled(arm_world, "kvkustouse", "cmk", v1, True)
    revoke(arm_world, "kvkustouse", principal)
    arm_world.clock.advance(interval(arm_world))
    still = client.clusters.get(RG, "kustouse")
    assert still.state == KUSTO_SUSPENDED_STATE  # the first cause is kept until access returns
    grant(arm_world, "kvkustouse", principal)
    arm_world.clock.advance(interval(arm_world))
    resumed = client.clusters.get(RG, "kustouse")
    assert resumed.state == "Running"
    assert resumed.state_reason is None


def test_kusto_versionless_follows_a_new_version_only_after_the_lag(arm_world: World) -> None:
    arm_world.service_settings.versionless_lag_s = 3600
    _principal, v1 = cmk_cluster(arm_world, "kustofree", version=None)
    assert cluster_sim(arm_world, "kustofree")["versionInUse"] == v1
    v2 = add_key_version(arm_world, "kvkustofree", "cmk")
    arm_world.clock.advance(interval(arm_world))
    assert cluster_sim(arm_world, "kustofree")["versionInUse"] == v1
    arm_world.clock.advance(timedelta(hours=1))
    assert cluster_sim(arm_world, "kustofree")["versionInUse"] == v2
    # Once moved, the old version can go without harm.
    set_enabled(arm_world, "kvkustofree", "cmk", v1, False)
    arm_world.clock.advance(interval(arm_world))
    assert kusto_client(arm_world).clusters.get(RG, "kustofree").state == "Running"


def test_kusto_versionless_is_suspended_if_its_version_is_disabled_before_the_switch(arm_world: World) -> None:
    _principal, v1 = cmk_cluster(arm_world, "kustoearly", version=None)
    add_key_version(arm_world, "kvkustoearly", "cmk")
    set_enabled(arm_world, "kvkustoearly", "cmk", v1, False)
    arm_world.clock.advance(interval(arm_world))
    assert kusto_client(arm_world).clusters.get(RG, "kustoearly").state == KUSTO_SUSPENDED_STATE


# ---- Cosmos DB --------------------------------------------------------------------------------
def cmk_account(world: World, name: str, *, versioned: bool = False) -> tuple[str, str]:
    create_vault(world, f"kv{name}", object_ids=(COSMOS_FIRST_PARTY_PRINCIPAL,))
    v1 = add_key_version(world, f"kv{name}", "cmk")
    uri = f"{vault_url(world, f'kv{name}')}/keys/cmk" + (f"/{v1}" if versioned else "")
    cosmos_client(world).database_accounts.begin_create_or_update(
        RG,
        name,
        cm.DatabaseAccountCreateUpdateParameters(
            location=LOCATION,
            locations=[cm.Location(location_name=LOCATION)],
            database_account_offer_type="Standard",
            key_vault_key_uri=uri,
        ),
    ).result()
    return f"{vault_url(world, f'kv{name}')}/keys/cmk", v1


def test_cosmos_revoke_shows_a_4xxx_status_and_recovers_only_after_the_recovery_time(arm_world: World) -> None:
    arm_world.service_settings.cosmos_recovery_s = 3600
    cmk_account(arm_world, "cosmosrev")
    client = cosmos_client(arm_world)
    revoke(arm_world, "kvcosmosrev", COSMOS_FIRST_PARTY_PRINCIPAL)
    arm_world.clock.advance(interval(arm_world))
    status = client.database_accounts.get(RG, "cosmosrev").customer_managed_key_status
    assert status == DOCUMENTED_4002
    # Revoked accounts accept only identity updates.
    with pytest.raises(HttpResponseError):
        client.database_accounts.begin_update(
            RG, "cosmosrev", cm.DatabaseAccountUpdateParameters(key_vault_key_uri="https://kvx.vault.azure.net/keys/k")
        ).result()
    grant(arm_world, "kvcosmosrev", COSMOS_FIRST_PARTY_PRINCIPAL)
    arm_world.clock.advance(interval(arm_world))
    assert client.database_accounts.get(RG, "cosmosrev").customer_managed_key_status != COSMOS_CMK_CONFIRMED
    arm_world.clock.advance(timedelta(seconds=3600))
    assert client.database_accounts.get(RG, "cosmosrev").customer_managed_key_status == COSMOS_CMK_CONFIRMED


# Values of the CustomerManagedKeyStatus enum of the Cosmos DB spec (stable/2023-09-15/cosmos-db.json),
# written out here from the published text rather than taken from the sandbox's constants.
DOCUMENTED_4002 = (
    "Access to your account is currently revoked because the current default identity no longer has permission to "
    "the associated Key Vault key; for more details about this error and how to restore access to your account please "
    "visit https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide"
    "#default-identity-is-unauthorized-to-access-the-azure-key-vault-key (4002)."
)
DOCUMENTED_4017 = (
    "Access to your account is currently revoked because the correspondent Azure Key Vault was not found; for more "
    "details about this error and how to restore access to your account please visit "
    "https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide#azure-key-vault-resource-not-found "
    "(4017)."
)


def test_cosmos_status_texts_are_the_documented_ones(arm_world: World) -> None:
    _uri, v1 = cmk_account(arm_world, "cosmoscause")
    client = cosmos_client(arm_world)
    assert client.database_accounts.get(RG, "cosmoscause").customer_managed_key_status == (
        "Access to the configured customer managed key confirmed.")
    # The troubleshooting guide files a disabled or expired key under 4002.
    set_enabled(arm_world, "kvcosmoscause", "cmk", v1, False)
    arm_world.clock.advance(interval(arm_world))
    assert client.database_accounts.get(RG, "cosmoscause").customer_managed_key_status == DOCUMENTED_4002
    with arm_world.lock:
        del arm_world.vaults["kvcosmoscause"]
    arm_world.clock.advance(interval(arm_world))
    assert client.database_accounts.get(RG, "cosmoscause").customer_managed_key_status == DOCUMENTED_4017


def test_cosmos_versionless_key_uri_version_moves_after_the_lag(arm_world: World) -> None:
    arm_world.service_settings.versionless_lag_s = 7200
    uri, v1 = cmk_account(arm_world, "cosmoslag")
    client = cosmos_client(arm_world)
    assert client.database_accounts.get(RG, "cosmoslag").key_vault_key_uri_version == f"{uri}/{v1}"
    v2 = add_key_version(arm_world, "kvcosmoslag", "cmk")
    arm_world.clock.advance(timedelta(hours=1))
    assert client.database_accounts.get(RG, "cosmoslag").key_vault_key_uri_version == f"{uri}/{v1}"
    arm_world.clock.advance(timedelta(hours=1, minutes=10))
    account = client.database_accounts.get(RG, "cosmoslag")
    assert account.key_vault_key_uri_version == f"{uri}/{v2}"
    assert account.key_vault_key_uri == uri  # the configured URI stays versionless
    assert account.customer_managed_key_status == COSMOS_CMK_CONFIRMED


def test_cosmos_refuses_a_versioned_key_uri_as_azure_does(arm_world: World) -> None:
    with pytest.raises(HttpResponseError) as err:
        cmk_account(arm_world, "cosmospin", versioned=True)
    assert err.value.status_code == 400
    assert err.value.error is not None
    assert err.value.error.code == "BadRequest"
    assert str(err.value.error.message).startswith(
        "Please provide KeyVault Key Uri without version. We will use latest version of the key")
    # And on an update of an existing account: refused, nothing changed.
    uri, v1 = cmk_account(arm_world, "cosmospin2")
    client = cosmos_client(arm_world)
    with pytest.raises(HttpResponseError) as err2:
        client.database_accounts.begin_update(
            RG, "cosmospin2", cm.DatabaseAccountUpdateParameters(key_vault_key_uri=f"{uri}/{v1}")).result()
    assert err2.value.status_code == 400
    assert client.database_accounts.get(RG, "cosmospin2").key_vault_key_uri == uri


def test_cosmos_backup_policy_defaults_and_validation(arm_world: World) -> None:
    cmk_account(arm_world, "cosmosbak")
    client = cosmos_client(arm_world)
    policy = client.database_accounts.get(RG, "cosmosbak").backup_policy
    # Omitted at creation: periodic, every 240 minutes, kept 8 hours, geo-redundant.
    assert policy.type == "Periodic"
    assert policy.periodic_mode_properties.backup_interval_in_minutes == 240
    assert policy.periodic_mode_properties.backup_retention_interval_in_hours == 8
    assert policy.periodic_mode_properties.backup_storage_redundancy == "Geo"
    client.database_accounts.begin_update(RG, "cosmosbak", cm.DatabaseAccountUpdateParameters(
        backup_policy=cm.PeriodicModeBackupPolicy(
            periodic_mode_properties=cm.PeriodicModeProperties(backup_retention_interval_in_hours=48)))).result()
    policy = client.database_accounts.get(RG, "cosmosbak").backup_policy
    assert policy.periodic_mode_properties.backup_retention_interval_in_hours == 48
    assert policy.periodic_mode_properties.backup_interval_in_minutes == 240
    with pytest.raises(HttpResponseError) as err:  # outside 8-720 hours
        client.database_accounts.begin_update(RG, "cosmosbak", cm.DatabaseAccountUpdateParameters(
            backup_policy=cm.PeriodicModeBackupPolicy(
                periodic_mode_properties=cm.PeriodicModeProperties(backup_retention_interval_in_hours=2)))).result()
    assert err.value.status_code == 400
    client.database_accounts.begin_update(RG, "cosmosbak", cm.DatabaseAccountUpdateParameters(
        backup_policy=cm.ContinuousModeBackupPolicy())).result()
    policy = client.database_accounts.get(RG, "cosmosbak").backup_policy
    assert policy.type == "Continuous"
    assert policy.continuous_mode_properties.tier == "Continuous30Days"
    client.database_accounts.begin_update(RG, "cosmosbak", cm.DatabaseAccountUpdateParameters(
        backup_policy=cm.ContinuousModeBackupPolicy(
            continuous_mode_properties=cm.ContinuousModeProperties(tier="Continuous7Days")))).result()
    assert client.database_accounts.get(RG, "cosmosbak").backup_policy.continuous_mode_properties.tier == (
        "Continuous7Days")
    with pytest.raises(HttpResponseError):  # no way back from continuous to periodic
        client.database_accounts.begin_update(RG, "cosmosbak", cm.DatabaseAccountUpdateParameters(
            backup_policy=cm.PeriodicModeBackupPolicy())).result()
    assert client.database_accounts.get(RG, "cosmosbak").backup_policy.type == "Continuous"


# ---- PostgreSQL / Energy: sim state only ----------------------------------------------------
def test_postgres_cluster_uses_its_key_in_sim_state(arm_world: World) -> None:
    put_uai(arm_world, "id-pguse")
    create_vault(arm_world, "kvpguse")
    pid = arm_world.identities[uai_id("id-pguse").lower()]["principalId"]
    grant(arm_world, "kvpguse", pid)
    v1 = add_key_version(arm_world, "kvpguse", "cmk")
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2/pguse"
    resp = raw(
        arm_world,
        "PUT",
        path,
        body={
            "location": LOCATION,
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai_id("id-pguse"): {}}},
            "properties": {
                "dataEncryption": {
                    "type": "AzureKeyVault",
                    "primaryKeyUri": f"{vault_url(arm_world, 'kvpguse')}/keys/cmk/{v1}",
                    "primaryUserAssignedIdentityId": uai_id("id-pguse"),
                }
            },
        },
        api_version="2023-03-02-preview",
    )
    assert resp.status_code == 201
    arm_world.clock.advance(interval(arm_world))
    sim = arm_world.resources[path.lower()].sim
    assert sim["lastUse"]["ok"] is True  # type: ignore[index]
    assert sim["versionInUse"] == v1
    set_enabled(arm_world, "kvpguse", "cmk", v1, False)
    arm_world.clock.advance(interval(arm_world))
    assert sim["lastUse"]["code"] == "KeyDisabled"  # type: ignore[index]


# ---- LRO failures are seeded --------------------------------------------------------------------
def _outcomes(seed: int) -> list[bool]:
    world = World(seed=seed)
    world.throttle.configure(enabled=False)
    world.lro.fail_rate = 0.5
    client = kusto_client(world)
    client.clusters.begin_create_or_update(RG, "kustoseed", km.Cluster(location=LOCATION, sku=SKU)).result()
    out = []
    for i in range(12):
        try:
            client.clusters.begin_update(RG, "kustoseed", km.ClusterUpdate(tags={"i": str(i)})).result()
            out.append(True)
        except HttpResponseError:
            out.append(False)
    return out


def test_lro_failures_are_reproducible_from_the_world_seed() -> None:
    first = _outcomes(5)
    assert first == _outcomes(5)
    assert True in first
    assert False in first


# ---- cost of time passing ------------------------------------------------------------------------
def test_requests_do_not_sweep_between_intervals(arm_world: World) -> None:
    cmk_cluster(arm_world, "kustocheap")
    arm_world.clock.advance(interval(arm_world))
    used_at = cluster_sim(arm_world, "kustocheap")["lastUse"]
    client = kusto_client(arm_world)
    for _ in range(20):
        client.clusters.get(RG, "kustocheap")
    arm_world.clock.advance(timedelta(seconds=10))
    assert cluster_sim(arm_world, "kustocheap")["lastUse"] is used_at
    arm_world.clock.advance(interval(arm_world))
    assert cluster_sim(arm_world, "kustocheap")["lastUse"] is not used_at


def test_a_get_costs_the_same_with_two_thousand_clusters(arm_world: World) -> None:
    def put(i: int) -> None:
        resp = arm_world.handle(
            Request.build(
                method="PUT",
                host="management.azure.com",
                path=f"/subscriptions/{SUB}/resourceGroups/rg-fleet/providers/Microsoft.Kusto/clusters/fleet{i:05d}",
                query_string="api-version=2025-02-14",
                headers={"Content-Type": "application/json"},
                body=json.dumps(
                    {"location": LOCATION, "sku": {"name": "Standard_E2a_v4", "tier": "Standard"}}
                ).encode(),
                service=Service.ARM,
            )
        )
        assert resp.status == 201

    client = kusto_client(arm_world)
    put(0)
    start = time.perf_counter()
    for _ in range(50):
        client.clusters.get("rg-fleet", "fleet00000")
    small = time.perf_counter() - start
    for i in range(1, 2000):
        put(i)
    arm_world.clock.advance(timedelta(seconds=1))  # completes the creations
    start = time.perf_counter()
    for _ in range(50):
        client.clusters.get("rg-fleet", "fleet00000")
    large = time.perf_counter() - start
    # Generous bound: a per-request scan of 2,000 resources would cost several times more.
    assert large < small * 3 + 0.05
