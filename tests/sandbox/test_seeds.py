"""Seeds: checked in full before anything is sent, applied over the wire, read back with the SDKs."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.kusto import KustoManagementClient

from sandbox import seeds
from sandbox.transport import SandboxTransport, StaticTokenCredential, sandbox_session
from sandbox.world import World

PROD = "00000000-0000-0000-0000-00000000a001"
DEV = "00000000-0000-0000-0000-00000000b002"
ARM = "https://management.azure.com"


@pytest.fixture(scope="module")
def seeds_demo() -> tuple[World, seeds.SeedResult]:
    """The demo estate, seeded once for the read-only tests of this module."""
    world = World(seed=1)
    start = world.clock.now()
    result = seeds.apply_seed(world, seeds.demo_seed())
    world.sim_start = start  # type: ignore[attr-defined]
    return world, result


def key_client(world: World, vault: str) -> KeyClient:
    return KeyClient(f"https://{vault}.vault.azure.net", StaticTokenCredential(), transport=SandboxTransport(world))


def mgmt(world: World, cls: Any, sub: str) -> Any:
    return cls(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


# ---- checking ----------------------------------------------------------------------------------
def base_doc() -> dict[str, Any]:
    return {
        "subscriptions": [{"id": PROD, "name": "prod"}],
        "identities": [{"name": "uai", "subscription": "prod"}],
        "vaults": [
            {
                "name": "kv-one",
                "subscription": "prod",
                "access_policies": [{"identity": "uai"}],
                "keys": [{"name": "cmk", "versions": [{"label": "a", "age": "P10D"}, {"label": "b"}]}],
            }
        ],
        "kusto_clusters": [
            {"name": "adx1", "subscription": "prod", "identity": "uai", "key": "kv-one/cmk", "version": "a"}
        ],
    }


def mutate(path: list[Any], value: Any) -> dict[str, Any]:
    doc = base_doc()
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (mutate(["vaults", 0, "subscription"], "nope"), "vaults[0].subscription"),
        (mutate(["vaults", 0, "keys", 0, "size"], 1024), "vaults[0].keys[0].size"),
        (mutate(["vaults", 0, "keys", 0, "kty"], "EC"), "vaults[0].keys[0].kty"),
        (mutate(["vaults", 0, "keys", 0, "versions", 0, "age"], "ten days"), "vaults[0].keys[0].versions[0].age"),
        (mutate(["vaults", 0, "keys", 0, "versions", 1, "age"], "P20D"), "vaults[0].keys[0].versions[1].age"),
        (mutate(["vaults", 0, "keys", 0, "versions", 1, "label"], "a"), "vaults[0].keys[0].versions[1].label"),
        (mutate(["vaults", 0, "keys", 0, "versions", 0, "enabled"], "no"), "vaults[0].keys[0].versions[0].enabled"),
        (mutate(["vaults", 0, "access_policies", 0, "identity"], "ghost"), "vaults[0].access_policies[0].identity"),
        (mutate(["vaults", 0, "soft_delete_retention_days"], 3), "vaults[0].soft_delete_retention_days"),
        (mutate(["kusto_clusters", 0, "key"], "kv-one/other"), "kusto_clusters[0].key"),
        (mutate(["kusto_clusters", 0, "version"], "zzz"), "kusto_clusters[0].version"),
        (mutate(["kusto_clusters", 0, "identity"], "ghost"), "kusto_clusters[0].identity"),
        (mutate(["kusto_clusters", 0, "colour"], "blue"), "kusto_clusters[0].colour"),
        (
            mutate(
                ["postgresql_clusters"],
                [{"name": "pg", "subscription": "prod", "identity": "system", "key": "kv-one/cmk", "version": "a"}],
            ),
            "postgresql_clusters[0].identity",
        ),
        (
            mutate(
                ["energy_instances"], [{"name": "e", "subscription": "prod", "identity": "uai", "key": "kv-one/cmk"}]
            ),
            "energy_instances[0].version",
        ),
        (mutate(["extra"], 1), "seed.extra"),
    ],
)
def test_bad_seeds_name_the_field_and_send_nothing(doc: dict[str, Any], field: str) -> None:
    world = World()
    with pytest.raises(seeds.SeedError) as info:
        seeds.apply_seed(world, doc)
    assert info.value.field == field
    assert world.requests_since(0) == []
    assert world.vaults == {}


def test_a_refused_request_stops_seeding_and_restores_settings() -> None:
    world = World()
    world.lro.duration_s = 5.0
    doc = base_doc()
    doc["kusto_clusters"][0]["name"] = "Not_A_Kusto_Name!"
    with pytest.raises(seeds.SeedApplyError) as info:
        seeds.apply_seed(world, doc)
    assert info.value.status == 400
    assert world.lro.duration_s == 5.0
    assert world.throttle.settings.enabled is True


# ---- the demo estate ----------------------------------------------------------------------------------
def test_demo_seeds_through_the_wire(seeds_demo: tuple[World, seeds.SeedResult]) -> None:
    world, result = seeds_demo
    log = world.requests_since(0)
    assert len(log) == result.requests
    assert all(200 <= e.status < 300 for e in log)
    assert {e.service for e in log} == {"arm", "vault"}
    assert sum(1 for e in log if e.path.endswith("/create")) == 10
    assert len(result.resources) == 8
    assert world.clock.now() - world.sim_start == timedelta(days=400)  # type: ignore[attr-defined]


def test_demo_key_versions_read_back_with_key_client(seeds_demo: tuple[World, seeds.SeedResult]) -> None:
    world, result = seeds_demo
    now = world.clock.now()
    kv = key_client(world, "kv-contoso-prod-weu")
    versions = {p.version: p for p in kv.list_properties_of_key_versions("cmk-cosmos")}
    v1 = versions[result.versions["kv-contoso-prod-weu/cmk-cosmos/v1"]]
    v3 = versions[result.versions["kv-contoso-prod-weu/cmk-cosmos/v3"]]
    assert v1.enabled is False
    assert v3.enabled is True
    assert v1.created_on is not None
    assert v1.expires_on is not None
    assert abs((now - v1.created_on) - timedelta(days=400)) < timedelta(seconds=2)
    assert abs((v1.expires_on - now) - timedelta(days=20)) < timedelta(seconds=2)
    key = kv.get_key("cmk-cosmos")
    assert key.properties.version == result.versions["kv-contoso-prod-weu/cmk-cosmos/v3"]
    assert key.key_type == "RSA-HSM"
    assert key.key.n is not None
    assert len(key.key.n) * 8 == 3072
    assert len(list(kv.list_properties_of_key_versions("cmk-adx"))) == 2, "no auto-rotation while seeding"
    adx = kv.get_key("cmk-adx", result.versions["kv-contoso-prod-weu/cmk-adx/v1"])
    assert adx.properties.tags == {"ticket": "SEC-101"}
    policy = kv.get_key_rotation_policy("cmk-adx")
    assert policy.expires_in == "P365D"
    assert {a.action.lower() for a in policy.lifetime_actions} == {"rotate", "notify"}
    dev = key_client(world, "kv-contoso-dev-weu").get_key("cmk-dev")
    assert dev.properties.not_before is not None
    assert dev.properties.not_before > now


def test_demo_vaults_grant_the_identities(seeds_demo: tuple[World, seeds.SeedResult]) -> None:
    world, result = seeds_demo
    client = mgmt(world, KeyVaultManagementClient, PROD)
    vault = client.vaults.get("rg-security-weu", "kv-contoso-prod-weu")
    assert vault.properties.enable_purge_protection is True
    assert vault.properties.sku.name == "premium"
    # The model names the field keys_property (keys is the mapping method).
    grants = {p.object_id: {k.lower() for k in p.permissions.keys_property} for p in vault.properties.access_policies}
    adx_principal = result.identities["uai-adx-prod"]["principalId"]
    assert {"get", "wrapkey", "unwrapkey"} <= grants[adx_principal]
    assert vault.properties.vault_uri.rstrip("/") == "https://kv-contoso-prod-weu.vault.azure.net"


def test_demo_clusters_and_accounts(seeds_demo: tuple[World, seeds.SeedResult]) -> None:
    world, result = seeds_demo
    kusto = mgmt(world, KustoManagementClient, PROD)
    pinned = kusto.clusters.get("rg-analytics", "adxcontosoprod1")
    assert pinned.key_vault_properties.key_version == result.versions["kv-contoso-prod-weu/cmk-adx/v1"]
    assert pinned.key_vault_properties.key_name == "cmk-adx"
    assert pinned.key_vault_properties.key_vault_uri.rstrip("/") == "https://kv-contoso-prod-weu.vault.azure.net"
    assert pinned.key_vault_properties.user_identity == result.identities["uai-adx-prod"]["id"]
    assert pinned.provisioning_state == "Succeeded"
    versionless = kusto.clusters.get("rg-analytics", "adxcontosoprod2")
    assert not versionless.key_vault_properties.key_version

    cosmos = mgmt(world, CosmosDBManagementClient, PROD)
    orders = cosmos.database_accounts.get("rg-apps", "cosmos-contoso-orders")
    assert orders.key_vault_key_uri == "https://kv-contoso-prod-weu.vault.azure.net/keys/cmk-cosmos"
    assert orders.backup_policy.type == "Continuous"
    assert orders.backup_policy.continuous_mode_properties.tier == "Continuous30Days"
    billing = cosmos.database_accounts.get("rg-apps", "cosmos-contoso-billing")
    assert billing.key_vault_key_uri == "https://kv-contoso-prod-weu.vault.azure.net/keys/cmk-cosmos"
    assert billing.backup_policy.periodic_mode_properties.backup_retention_interval_in_hours == 48
    # The account reports the version it follows (the key's newest usable one).
    assert billing.key_vault_key_uri_version == result.key_ids["kv-contoso-prod-weu/cmk-cosmos/v3"]
    assert billing.default_identity == f"UserAssignedIdentity={result.identities['uai-cosmos-prod']['id']}"
    dev = mgmt(world, KustoManagementClient, DEV).clusters.get("rg-dev-analytics", "adxcontosodev1")
    assert dev.key_vault_properties.key_version == result.versions["kv-contoso-dev-weu/cmk-dev/v1"]


def test_demo_postgres_and_energy(seeds_demo: tuple[World, seeds.SeedResult]) -> None:
    world, result = seeds_demo
    session = sandbox_session(world)
    pg = session.get(f"{ARM}{result.resources['pg-contoso-analytics']}", params={"api-version": "2023-03-02-preview"})
    assert pg.status_code == 200
    enc = pg.json()["properties"]["dataEncryption"]
    assert enc["primaryKeyUri"] == result.key_ids["kv-contoso-prod-neu/cmk-pg/v1"]
    assert enc["primaryUserAssignedIdentityId"] == result.identities["uai-pg-prod"]["id"]
    energy = session.get(
        f"{ARM}{result.resources['energy-contoso-subsurface']}", params={"api-version": seeds.API_ENERGY}
    ).json()
    kvp = energy["properties"]["encryption"]["keyVaultProperties"]
    key_id = result.key_ids["kv-contoso-prod-neu/cmk-energy/v1"]
    assert f"{kvp['keyVaultUri'].rstrip('/')}/keys/{kvp['keyName']}/{kvp['keyVersion']}" == key_id


def test_seeding_restores_throttle_and_lro_settings() -> None:
    world = World()
    world.lro.duration_s, world.lro.fail_rate = 30.0, 0.5
    seeds.apply_seed(world, base_doc())
    assert (world.lro.duration_s, world.lro.fail_rate) == (30.0, 0.5)
    assert world.throttle.settings.enabled is True
    assert world.resources, "the cluster exists"


def test_admin_seed_endpoint(admin_session: Any, eventgrid_world: World) -> None:
    resp = admin_session.post("https://sandbox.local/sandbox/seed", json=base_doc())
    assert resp.status_code == 200
    body = resp.json()
    assert set(body["versions"]) == {"kv-one/cmk/a", "kv-one/cmk/b"}
    assert "kv-one" in eventgrid_world.vaults


# ---- fleets ---------------------------------------------------------------------------------------
def test_generate_fleet_shape() -> None:
    doc = seeds.generate_fleet(10, 4, 3, pinned_fraction=0.5)
    plan = seeds.compile_seed(copy.deepcopy(doc))
    assert len(plan.subscriptions) == 3
    kinds = [r.type for r in plan.resources]
    assert kinds.count(seeds.KUSTO_TYPE) == 10
    assert kinds.count(seeds.COSMOS_TYPE) == 4
    assert sum(1 for r in plan.resources if r.version == "v1") == 5  # Cosmos accounts are never pinned
    assert all(r.version is None for r in plan.resources if r.type == seeds.COSMOS_TYPE)
    assert {r.subscription for r in plan.resources} == set(plan.subscriptions)
    with pytest.raises(ValueError):
        seeds.generate_fleet(1, 1, 0)


def test_small_fleet_applies() -> None:
    world = World()
    result = seeds.apply_seed(world, seeds.generate_fleet(30, 12, 3))
    assert len(result.resources) == 42
    pinned = result.versions["kv-fleet/cmk-fleet/v1"]
    clusters = [r for r in world.resources.values() if r.type == seeds.KUSTO_TYPE]
    assert len(clusters) == 30
    assert {c.properties["keyVaultProperties"]["keyVersion"] for c in clusters} == {pinned}
    assert {c.subscription for c in clusters} == set(world.subscriptions[-3:])
