"""Issue 13 (points 1, 2, 4, 5, 7): the services as their published REST specs shape them.

Each resource is created through an official client (the Kusto management SDK, or ARM's generic
pipeline for the providers without an SDK in the stack) against the sandbox, in the spec's
shape; keysteward must then find, protect and update it through its adapters.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest
from azure.eventgrid._legacy import EventGridPublisherClient
from azure.mgmt.core import ARMPipelineClient

import functions._root as root
from functions.runbooks import revoke
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.auth import ROLE_READ, encode_principal
from shared.inventory import GRAPH_QUERY
from shared.model import Binding, KeyRef, ServiceType
from shared.retention import RetentionRefused
from shared.targets import build_targets
from shared.targets.base import Health
from tests.app.estate import LOCATION, RG, Estate, grant, key_client, kusto, make_estate, make_vault, steward
from tests.memory_journal import MemoryJournal

ENERGY_API = "2024-05-21"  # oep stable: EnergyServiceProperties.encryption.keyVaultProperties
PG_API = "2023-03-02-preview"  # postgresqlhsc: the only api-version with dataEncryption


def arm(world: World, method: str, path: str, body: dict[str, Any] | None, api_version: str) -> dict[str, Any]:
    client = ARMPipelineClient(
        base_url="https://management.azure.com",
        policies=[BearerTokenCredentialPolicy(StaticTokenCredential(), "https://management.azure.com/.default")],
        transport=SandboxTransport(world),
    )
    with client:
        response = client.send_request(HttpRequest(method, f"https://management.azure.com{path}",
                                                   params={"api-version": api_version}, json=body))
        response.read()
        assert response.status_code in (200, 201, 202), response.text()
        return dict(response.json())


def user_identity(world: World, estate: Estate, name: str) -> str:
    sub = estate.subs[0]
    uai = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    ident = arm(world, "PUT", uai, {"location": LOCATION}, "2023-01-31")
    grant(world, sub, estate.vault_name, ident["properties"]["principalId"])
    return uai


def make_energy(world: World, estate: Estate, name: str, version: str) -> str:
    """An Energy instance shaped as oep 2024-05-21 defines it (example EnergyServices_Get_MaximumSet_Gen)."""
    uai = user_identity(world, estate, f"id-{name}")
    path = f"/subscriptions/{estate.subs[0]}/resourceGroups/{RG}/providers/Microsoft.OpenEnergyPlatform/energyServices/{name}"
    arm(world, "PUT", path, {
        "location": LOCATION,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}},
        "properties": {"dataPartitionNames": [{"name": "dp1"}], "encryption": {
            "keySource": "Microsoft.Keyvault",
            "keyVaultProperties": {"keyName": estate.key_name, "keyVersion": version,
                                   "keyVaultUri": estate.vault_url + "/", "userIdentity": uai}}},
    }, ENERGY_API)
    return path


def make_pg(world: World, estate: Estate, name: str, version: str) -> str:
    """A cluster shaped as postgresqlhsc 2023-03-02-preview example ClusterCreateWithCMK.json."""
    uai = user_identity(world, estate, f"id-{name}")
    path = f"/subscriptions/{estate.subs[0]}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2/{name}"
    arm(world, "PUT", path, {
        "location": LOCATION,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}},
        "properties": {"dataEncryption": {"type": "AzureKeyVault", "primaryKeyUri": f"{estate.key_uri}/{version}",
                                          "primaryUserAssignedIdentityId": uai}},
    }, PG_API)
    return path


def make_database(world: World, estate: Estate, cluster: str, name: str, version: str) -> str:
    """A ReadWrite database with its own key, through KustoManagementClient (kusto.json 2024-04-13)."""
    sub, _ = next(c for c in estate.clusters if c[1] == cluster)
    db = kusto(world, sub).databases.begin_create_or_update(RG, cluster, name, {
        "kind": "ReadWrite", "location": LOCATION,
        "properties": {"softDeletePeriod": "P30D", "keyVaultProperties": {
            "keyName": estate.key_name, "keyVersion": version, "keyVaultUri": estate.vault_url + "/"}},
    }).result()
    return str(db.id)


def of(bindings: list[Binding], service: ServiceType) -> list[Binding]:
    return [b for b in bindings if b.service is service]


@pytest.fixture
def world() -> World:
    return World()


# ---- 1. Data Manager for Energy -------------------------------------------------------------------------
@pytest.mark.parametrize("inventory", ["arm", "resourcegraph"])
def test_energy_instance_in_the_spec_shape_is_found_and_its_version_protected(world: World, inventory: str) -> None:
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_INVENTORY=inventory)
    path = make_energy(world, estate, "oep-subsurface", estate.v1)
    [b] = of(app.all_bindings(), ServiceType.ENERGY)
    assert (b.resource_id.lower(), b.pinned_version, b.updatable) == (path.lower(), estate.v1, False)
    assert b.key == KeyRef(estate.vault_url, estate.key_name)
    assert b.principal_id is not None  # the user-assigned identity named in keyVaultProperties.userIdentity
    estate.keys.rotate_key(estate.key_name)
    world.clock.advance(timedelta(days=400))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(KeyRef(estate.vault_url, estate.key_name, estate.v1), reason="r", ticket="t", caller="c")
    assert [x.kind for x in refused.value.verdict.blockers] == ["read-only"]


# ---- 2. Cosmos DB for PostgreSQL ------------------------------------------------------------------------
@pytest.mark.parametrize("inventory", ["arm", "resourcegraph"])
def test_postgres_cluster_read_at_the_api_version_that_has_data_encryption(world: World, inventory: str) -> None:
    estate = make_estate(world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate, KEYSTEWARD_INVENTORY=inventory)
    path = make_pg(world, estate, "pg-orders", estate.v1)
    seq = world.last_seq
    [b] = of(app.all_bindings(), ServiceType.POSTGRES)
    if inventory == "arm":
        # Stable 2022-11-08 has neither dataEncryption nor identity: Azure shows no key at that version.
        reads = [e.query for e in world.requests_since(seq) if "serverGroupsv2" in e.path]
        assert reads and all("api-version=2023-03-02-preview" in q for q in reads), reads
    assert (b.resource_id.lower(), b.pinned_version, b.updatable) == (path.lower(), estate.v1, False)
    assert b.principal_id is not None
    assert app.targets[ServiceType.POSTGRES].get_binding(path) == b


# ---- 4. Data Explorer databases with their own key --------------------------------------------------------
def test_databases_with_their_own_key_are_inventoried_on_both_paths(world: World) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    cluster = estate.clusters[0][1]
    rid = make_database(world, estate, cluster, "sales", estate.v1)
    kusto(world, estate.clusters[0][0]).databases.begin_create_or_update(RG, cluster, "plain", {
        "kind": "ReadWrite", "location": LOCATION, "properties": {"softDeletePeriod": "P30D"}}).result()
    via_arm = of(steward(world, estate)[0].all_bindings(), ServiceType.KUSTO_DATABASE)
    via_graph = of(steward(world, estate, KEYSTEWARD_INVENTORY="resourcegraph")[0].all_bindings(),
                   ServiceType.KUSTO_DATABASE)
    assert via_arm == via_graph
    [b] = via_arm
    assert (b.resource_id.lower(), b.pinned_version, b.updatable, b.name) == (
        rid.lower(), estate.v1, True, f"{cluster}/sales")
    # The database uses its key as its cluster's (system) identity: remove-access must reach that principal.
    assert b.principal_id == estate.cluster(estate.clusters[0][0], cluster).identity.principal_id
    assert steward(world, estate)[0].targets[ServiceType.KUSTO_DATABASE].get_binding(rid) == b
    assert "microsoft.kusto/clusters/databases" in GRAPH_QUERY


def test_retention_guard_protects_the_version_a_database_uses(world: World) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    cluster_sub, cluster = estate.clusters[0]
    # The cluster moves on to v2; the database, created afterwards, names v1 as its own key.
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    kusto(world, cluster_sub).clusters.begin_update(RG, cluster, {"properties": {"keyVaultProperties": {
        "keyName": estate.key_name, "keyVersion": v2, "keyVaultUri": estate.vault_url + "/"}}}).result()
    make_database(world, estate, cluster, "sales", estate.v1)
    world.clock.advance(timedelta(days=3))
    with pytest.raises(RetentionRefused) as refused:
        app.retention.disable_version(KeyRef(estate.vault_url, estate.key_name, estate.v1), reason="r", ticket="t", caller="c")
    assert any("sales" in x.message for x in refused.value.verdict.blockers)


def test_reconcile_moves_a_pinned_database_to_the_new_version_keeping_its_fields(world: World) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    cluster_sub, cluster = estate.clusters[0]
    make_database(world, estate, cluster, "sales", estate.v1)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    results = app.reconcile_all()
    started = {u.binding.service for r in results for u in r.started}
    assert ServiceType.KUSTO_DATABASE in started
    world.clock.advance(timedelta(minutes=10))
    db: Any = kusto(world, cluster_sub).databases.get(RG, cluster, "sales")
    kvp = db.properties.key_vault_properties
    assert (kvp.key_version, kvp.key_name, kvp.key_vault_uri) == (v2, estate.key_name, estate.vault_url + "/")


def test_blast_radius_counts_databases_next_to_clusters(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    make_database(world, estate, estate.clusters[0][1], "sales", estate.v1)
    app, _, _ = steward(world, estate, journal=MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true")
    reader = encode_principal("33333333-cccc-4000-8000-000000000003", name="Rita", roles=(ROLE_READ,))
    body = {"key": estate.key_uri, "mode": "disable", "reason": "drill", "ticket": "T-1", "dryRun": True}
    req = func.HttpRequest(method="POST", url="https://keysteward.azurewebsites.net/api/revoke",
                           headers={"Content-Type": "application/json", "X-MS-CLIENT-PRINCIPAL": reader},
                           params={}, route_params={}, body=json.dumps(body).encode())
    root.install(app)
    try:
        resp = revoke(req)
    finally:
        root.install(None)
    assert resp.status_code == 200, resp.get_body()
    services = sorted(b["service"] for b in json.loads(resp.get_body())["bindings"])
    assert services == ["kusto", "kusto", "kusto-database"]


def test_database_health_reads_suspension_details(world: World) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    app, _, _ = steward(world, estate)
    rid = make_database(world, estate, estate.clusters[0][1], "sales", estate.v1)
    target = app.targets[ServiceType.KUSTO_DATABASE]
    b = target.get_binding(rid)
    assert b is not None and target.health(b) == Health.OK
    estate.keys.update_key_properties(estate.key_name, estate.v1, enabled=False)
    world.clock.advance(timedelta(seconds=world.service_settings.usage_interval_s + 1))
    b = target.get_binding(rid)
    assert b is not None and b.state == "suspended" and target.health(b) == Health.REVOKED


# ---- 5. Kusto details ----------------------------------------------------------------------------------
def test_kusto_update_carries_every_key_vault_property_and_changes_only_the_version(world: World) -> None:
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    sub, cluster = estate.clusters[0]
    client = kusto(world, sub)
    uai = user_identity(world, estate, "id-adx")
    client.clusters.begin_update(RG, cluster, {"identity": {"type": "SystemAssigned, UserAssigned",
                                                            "userAssignedIdentities": {uai: {}}}}).result()
    federated = "0f0e0d0c-0b0a-4909-8807-060504030201"
    client.clusters.begin_update(RG, cluster, {"properties": {"keyVaultProperties": {
        "keyName": estate.key_name, "keyVersion": estate.v1, "keyVaultUri": estate.vault_url + "/",
        "userIdentity": uai, "federatedIdentityClientId": federated}}}).result()
    app, _, _ = steward(world, estate)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    app.reconcile_all()
    world.clock.advance(timedelta(minutes=10))
    kvp = client.clusters.get(RG, cluster).key_vault_properties
    assert (kvp.key_version, kvp.user_identity, kvp.federated_identity_client_id) == (v2, uai, federated)


def test_kusto_health_is_revoked_only_when_the_reason_speaks_of_the_key() -> None:
    target = build_targets(None)[ServiceType.KUSTO]  # type: ignore[arg-type]  # health reads no client

    def cluster(state: str, reason: str | None) -> Binding:
        return Binding(resource_id="/subscriptions/s/resourceGroups/r/providers/Microsoft.Kusto/clusters/c",
                       service=ServiceType.KUSTO, subscription="s", resource_group="r", name="c", location="x",
                       key=KeyRef("https://v.vault.azure.net", "k"), pinned_version=None, in_use_version=None,
                       updatable=True, state=state, health=reason)

    assert target.health(cluster("Running", None)) == Health.OK
    assert target.health(cluster("Stopped", "Cluster stopped by the owner for the weekend")) == Health.UNKNOWN
    assert target.health(cluster("Unavailable", "Platform maintenance")) == Health.UNKNOWN
    assert target.health(cluster("Stopped", "Cannot access the customer-managed key in Key Vault")) == Health.REVOKED


# ---- 7. Event Grid publishing, recoverableDays ------------------------------------------------------------
def test_topic_refuses_an_event_without_data_version(world: World) -> None:
    client = EventGridPublisherClient("https://outcomes.westeurope-1.eventgrid.azure.net/api/events",
                                      StaticTokenCredential(), transport=SandboxTransport(world))
    bare = {"id": "1", "subject": "s", "eventType": "t", "eventTime": "2026-01-01T00:00:00Z", "data": {}}
    with pytest.raises(HttpResponseError) as info:
        client.send([bare])
    assert info.value.status_code == 400 and "dataVersion" in str(info.value)
    with pytest.raises(HttpResponseError) as info:
        client.send([{k: v for k, v in bare.items() if k != "data"} | {"dataVersion": "1.0"}])
    assert info.value.status_code == 400 and "data" in str(info.value)
    client.send([bare | {"dataVersion": "1.0"}])


def test_recoverable_days_is_zero_without_soft_delete(world: World) -> None:
    sub = world.subscriptions[0]
    url = make_vault(world, sub, "kv-legacy")
    world.vaults["kv-legacy"].properties["enableSoftDelete"] = False  # a legacy vault (soft delete off)
    key = key_client(world, url).create_rsa_key("k", size=2048)
    assert key.properties.recovery_level == "Purgeable"
    assert key.properties.recoverable_days == 0
