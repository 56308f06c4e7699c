"""The sandbox's management plane, driven through the official management SDKs
(azure-mgmt-keyvault, -kusto, -cosmosdb, -resourcegraph) and, for resource types without an
SDK in the stack, through azure-core's ARMPipelineClient."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.polling import LROPoller
from azure.core.rest import HttpResponse
from azure.mgmt.cosmosdb import models as cm
from azure.mgmt.keyvault import models as kvm
from azure.mgmt.kusto import models as km
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from sandbox.services import COSMOS_CMK_CONFIRMED, COSMOS_FIRST_PARTY_PRINCIPAL
from sandbox.state import principal_id_for
from sandbox.wire import Request, Service
from sandbox.world import World
from tests.sandbox.arm_helpers import (
    LOCATION,
    OTHER_SUB,
    RG,
    SUB,
    add_key_version,
    cosmos_client,
    create_vault,
    graph_client,
    kusto_client,
    kv_client,
    put_uai,
    raw,
    set_enabled,
    uai_id,
    vault_url,
)

SKU = km.AzureSku(name="Standard_E2a_v4", tier="Standard")


def make_cluster(world: World, name: str, *, identity: km.Identity | None = None, rg: str = RG) -> km.Cluster:
    cluster = km.Cluster(location=LOCATION, sku=SKU, identity=identity or km.Identity(type="SystemAssigned"))
    return kusto_client(world).clusters.begin_create_or_update(rg, name, cluster).result()


def make_account(world: World, name: str, **props: object) -> cm.DatabaseAccountGetResults:
    params = cm.DatabaseAccountCreateUpdateParameters(
        location=LOCATION,
        locations=[cm.Location(location_name=LOCATION)],
        database_account_offer_type="Standard",
        **props,
    )
    return cosmos_client(world).database_accounts.begin_create_or_update(RG, name, params).result()


def kvp(world: World, vault: str, key: str, version: str = "", user: str | None = None) -> km.KeyVaultProperties:
    return km.KeyVaultProperties(
        key_name=key, key_version=version, key_vault_uri=vault_url(world, vault) + "/", user_identity=user
    )


def error_code(err: HttpResponseError) -> str | None:
    return err.error.code if err.error is not None else None


# ---- pipeline: api-version, subscriptions, throttling, malformed bodies ------------------------
def test_missing_api_version_is_refused(arm_world: World) -> None:
    resp = raw(arm_world, "GET", f"/subscriptions/{SUB}/providers/Microsoft.Kusto/clusters", api_version=None)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "MissingApiVersionParameter"


def test_unknown_subscription_is_not_found(arm_world: World) -> None:
    client = kusto_client(arm_world, sub="11111111-2222-3333-4444-555555555555")
    with pytest.raises(HttpResponseError) as info:
        list(client.clusters.list())
    assert info.value.status_code == 404
    assert error_code(info.value) == "SubscriptionNotFound"


def test_malformed_json_is_invalid_request_content_and_changes_nothing(arm_world: World) -> None:
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kvbroken"
    resp = raw(arm_world, "PUT", path, body=b"{not json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "InvalidRequestContent"
    assert "kvbroken" not in arm_world.vaults


def test_paths_are_case_insensitive(arm_world: World) -> None:
    create_vault(arm_world, "kvcase")
    resp = raw(arm_world, "GET", f"/SUBSCRIPTIONS/{SUB}/RESOURCEGROUPS/{RG}/PROVIDERS/microsoft.keyvault/VAULTS/KVCASE")
    assert resp.status_code == 200
    assert resp.json()["name"] == "kvcase"


def test_throttling_answers_429_with_retry_after_and_budget_header(arm_world: World) -> None:
    arm_world.throttle.configure(enabled=True, arm_read_burst=2, arm_reads_per_s=0.5)
    path = f"/subscriptions/{SUB}/providers/Microsoft.Kusto/clusters"
    first = raw(arm_world, "GET", path)
    assert first.status_code == 200
    assert first.headers["x-ms-ratelimit-remaining-subscription-reads"] == "1"
    raw(arm_world, "GET", path)
    refused = raw(arm_world, "GET", path)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert int(refused.headers["Retry-After"]) >= 1
    # The SDK honours Retry-After; the transport's sleep moves the sandbox clock, so it succeeds.
    before = arm_world.clock.now()
    assert list(kusto_client(arm_world).clusters.list()) == []
    assert arm_world.clock.now() > before


# ---- Key Vault: vaults ------------------------------------------------------------------------
def test_vault_create_get_and_the_three_lists(arm_world: World) -> None:
    created = create_vault(arm_world, "kvalpha")
    assert created.properties.vault_uri == "https://kvalpha.vault.azure.net/"
    assert created.properties.enable_soft_delete is True
    assert created.properties.soft_delete_retention_in_days == 90
    assert created.properties.provisioning_state == "Succeeded"
    create_vault(arm_world, "kvbeta", rg="rg-other")
    create_vault(arm_world, "kvgamma", sub=OTHER_SUB)
    client = kv_client(arm_world)
    assert client.vaults.get(RG, "kvalpha").id == created.id
    assert sorted(v.name for v in client.vaults.list_by_subscription()) == ["kvalpha", "kvbeta"]
    assert [v.name for v in client.vaults.list_by_resource_group(RG)] == ["kvalpha"]
    assert sorted(r.name for r in client.vaults.list()) == ["kvalpha", "kvbeta"]
    assert arm_world.vaults["kvalpha"].keys == {}


def test_vault_lists_page_through_next_links(arm_world: World) -> None:
    for i in range(5):
        create_vault(arm_world, f"kvpage{i}")
    seq = arm_world.last_seq
    names = [v.name for v in kv_client(arm_world).vaults.list_by_subscription(top=2)]
    assert names == [f"kvpage{i}" for i in range(5)]
    assert len([e for e in arm_world.requests_since(seq) if e.method == "GET"]) == 3


def test_vault_names_are_global(arm_world: World) -> None:
    create_vault(arm_world, "kvunique")
    with pytest.raises(HttpResponseError) as info:
        create_vault(arm_world, "kvunique", rg="rg-elsewhere")
    assert info.value.status_code == 409
    assert error_code(info.value) == "VaultAlreadyExists"
    assert arm_world.vaults["kvunique"].resource_group == RG


def test_vault_update_keeps_keys_and_purge_protection_is_irreversible(arm_world: World) -> None:
    create_vault(arm_world, "kvpurge")
    version = add_key_version(arm_world, "kvpurge", "cmk")
    client = kv_client(arm_world)
    patched = client.vaults.update(
        RG, "kvpurge", kvm.VaultPatchParameters(tags={"team": "data"}, properties=kvm.VaultPatchProperties())
    )
    assert patched.tags == {"team": "data"}
    assert version in arm_world.vaults["kvpurge"].keys["cmk"].versions
    with pytest.raises(HttpResponseError) as info:
        client.vaults.update(
            RG, "kvpurge", kvm.VaultPatchParameters(properties=kvm.VaultPatchProperties(enable_purge_protection=False))
        )
    assert info.value.status_code == 400
    with pytest.raises(HttpResponseError):
        client.vaults.update(
            RG,
            "kvpurge",
            kvm.VaultPatchParameters(properties=kvm.VaultPatchProperties(soft_delete_retention_in_days=30)),
        )
    assert client.vaults.get(RG, "kvpurge").properties.enable_purge_protection is True


def test_vault_retention_must_be_7_to_90_days(arm_world: World) -> None:
    params = kvm.VaultCreateOrUpdateParameters(
        location=LOCATION,
        properties=kvm.VaultProperties(
            tenant_id=arm_world.tenant_id, sku=kvm.Sku(family="A", name="standard"), soft_delete_retention_in_days=120
        ),
    )
    with pytest.raises(HttpResponseError) as info:
        kv_client(arm_world).vaults.begin_create_or_update(RG, "kvretain", params).result()
    assert info.value.status_code == 400
    assert "kvretain" not in arm_world.vaults


def _policy(world: World, oid: str, keys: list[str], secrets: list[str] | None = None) -> kvm.AccessPolicyEntry:
    return kvm.AccessPolicyEntry(
        tenant_id=world.tenant_id,
        object_id=oid,
        permissions=kvm.Permissions(keys_property=keys, secrets=secrets),
    )


def _update_policy(world: World, kind: str, *entries: kvm.AccessPolicyEntry) -> None:
    kv_client(world).vaults.update_access_policy(
        RG,
        "kvpolicy",
        kind,
        kvm.VaultAccessPolicyParameters(properties=kvm.VaultAccessPolicyProperties(access_policies=list(entries))),
    )


def _perms(world: World) -> dict[str, dict[str, list[str]]]:
    vault = kv_client(world).vaults.get(RG, "kvpolicy")
    return {p.object_id: dict(p.permissions) for p in vault.properties.access_policies}


def test_access_policy_add_merges_remove_subtracts_replace_replaces(arm_world: World) -> None:
    create_vault(arm_world, "kvpolicy")
    _update_policy(arm_world, "add", _policy(arm_world, "alice", ["get"]))
    _update_policy(arm_world, "add", _policy(arm_world, "alice", ["Get", "wrapKey"], ["list"]))
    _update_policy(arm_world, "add", _policy(arm_world, "bob", ["get", "unwrapKey"]))
    assert _perms(arm_world) == {
        "alice": {"keys": ["get", "wrapKey"], "secrets": ["list"]},
        "bob": {"keys": ["get", "unwrapKey"]},
    }
    _update_policy(arm_world, "remove", _policy(arm_world, "alice", ["wrapkey"]))
    _update_policy(arm_world, "remove", _policy(arm_world, "bob", ["get", "unwrapKey"]))
    assert _perms(arm_world) == {"alice": {"keys": ["get"], "secrets": ["list"]}}
    _update_policy(arm_world, "replace", _policy(arm_world, "alice", ["unwrapKey"]))
    assert _perms(arm_world) == {"alice": {"keys": ["unwrapKey"]}}
    # The shared key-access check sees the result.
    assert arm_world.vaults["kvpolicy"].access_policy_permits("alice", ("unwrapkey",))
    assert not arm_world.vaults["kvpolicy"].access_policy_permits("alice", ("get",))


def test_vault_delete_then_get_is_not_found(arm_world: World) -> None:
    create_vault(arm_world, "kvgone")
    client = kv_client(arm_world)
    client.vaults.delete(RG, "kvgone")
    with pytest.raises(ResourceNotFoundError):
        client.vaults.get(RG, "kvgone")


# ---- Kusto clusters ---------------------------------------------------------------------------
def test_cluster_identities_are_assigned(arm_world: World) -> None:
    uai = put_uai(arm_world, "id-kusto")
    cluster = make_cluster(
        arm_world,
        "kustoid",
        identity=km.Identity(
            type="SystemAssigned, UserAssigned",
            user_assigned_identities={
                uai_id(
                    "id-kusto"
                ): km.ComponentsSgqdofSchemasIdentityPropertiesUserassignedidentitiesAdditionalproperties()
            },
        ),
    )
    assert cluster.identity.principal_id == principal_id_for(cluster.id)
    assert cluster.identity.tenant_id == arm_world.tenant_id
    assigned = cluster.identity.user_assigned_identities[uai_id("id-kusto")]
    assert assigned.principal_id == uai["properties"]["principalId"]
    assert assigned.client_id == uai["properties"]["clientId"]
    assert cluster.state == "Running"
    assert cluster.provisioning_state == "Succeeded"
    assert cluster.uri == f"https://kustoid.{LOCATION}.kusto.windows.net"


def test_cluster_lists_by_subscription_and_resource_group(arm_world: World) -> None:
    make_cluster(arm_world, "kustoa")
    make_cluster(arm_world, "kustob", rg="rg-two")
    client = kusto_client(arm_world)
    assert sorted(c.name for c in client.clusters.list()) == ["kustoa", "kustob"]
    assert [c.name for c in client.clusters.list_by_resource_group("rg-two")] == ["kustob"]
    with pytest.raises(ResourceNotFoundError):
        client.clusters.get(RG, "kustob")


def _cmk_cluster(world: World, name: str) -> tuple[km.Cluster, str]:
    cluster = make_cluster(world, name)
    create_vault(world, f"kv{name}", object_ids=(cluster.identity.principal_id,))
    version = add_key_version(world, f"kv{name}", "cmk")
    return cluster, version


def test_cluster_key_update_succeeds_and_get_shows_new_version(arm_world: World) -> None:
    _cluster, v1 = _cmk_cluster(arm_world, "kustocmk")
    client = kusto_client(arm_world)
    updated = client.clusters.begin_update(
        RG, "kustocmk", km.ClusterUpdate(key_vault_properties=kvp(arm_world, "kvkustocmk", "cmk", v1))
    ).result()
    assert updated.key_vault_properties.key_version == v1
    v2 = add_key_version(arm_world, "kvkustocmk", "cmk")
    client.clusters.begin_update(
        RG, "kustocmk", km.ClusterUpdate(key_vault_properties=kvp(arm_world, "kvkustocmk", "cmk", v2))
    ).result()
    fetched = client.clusters.get(RG, "kustocmk")
    assert fetched.key_vault_properties.key_version == v2
    assert fetched.state == "Running"
    assert fetched.provisioning_state == "Succeeded"


def test_cluster_patch_is_an_lro_on_sandbox_time(arm_world: World) -> None:
    _cluster, v1 = _cmk_cluster(arm_world, "kustolro")
    arm_world.lro.duration_s = 120
    client = kusto_client(arm_world)
    poller: LROPoller[km.Cluster] = client.clusters.begin_update(
        RG, "kustolro", km.ClusterUpdate(key_vault_properties=kvp(arm_world, "kvkustolro", "cmk", v1)), polling=False
    )
    initial = poller.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
    assert initial.status_code == 202
    async_url = initial.headers["Azure-AsyncOperation"]
    assert async_url.startswith(
        f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Kusto/locations/"
    )
    assert "/operationResults/" in async_url
    assert initial.headers["Retry-After"] == "120"
    during = client.clusters.get(RG, "kustolro")
    assert during.state == "Updating"
    assert during.key_vault_properties is None
    status = raw(arm_world, "GET", async_url.split("management.azure.com", 1)[1].split("?")[0])
    # kusto.json 2024-04-13 OperationResult.status (Status enum): Succeeded | Canceled | Failed | Running.
    assert status.json()["status"] == "Running"
    assert status.json()["properties"]["operationKind"] == "ServiceConfigurationAlter"
    arm_world.clock.advance(timedelta(seconds=121))
    done = raw(arm_world, "GET", async_url.split("management.azure.com", 1)[1].split("?")[0]).json()
    assert done["status"] == "Succeeded"
    assert done["percentComplete"] == 100.0
    assert "endTime" in done
    assert client.clusters.get(RG, "kustolro").key_vault_properties.key_version == v1


def test_cluster_update_polled_by_the_sdk_waits_retry_after_in_sandbox_time(arm_world: World) -> None:
    _cluster, v1 = _cmk_cluster(arm_world, "kustowait")
    arm_world.lro.duration_s = 300
    before = arm_world.clock.now()
    result = (
        kusto_client(arm_world)
        .clusters.begin_update(
            RG, "kustowait", km.ClusterUpdate(key_vault_properties=kvp(arm_world, "kvkustowait", "cmk", v1))
        )
        .result()
    )
    assert result.key_vault_properties.key_version == v1
    assert arm_world.clock.now() - before >= timedelta(seconds=300)


@pytest.mark.parametrize("breakage", ["disabled", "no-access", "missing-version", "missing-vault"])
def test_cluster_update_fails_when_the_identity_cannot_use_the_key(arm_world: World, breakage: str) -> None:
    cluster, v1 = _cmk_cluster(arm_world, "kustobad")
    client = kusto_client(arm_world)
    client.clusters.begin_update(
        RG, "kustobad", km.ClusterUpdate(key_vault_properties=kvp(arm_world, "kvkustobad", "cmk", v1))
    ).result()
    v2 = add_key_version(arm_world, "kvkustobad", "cmk")
    target = kvp(arm_world, "kvkustobad", "cmk", v2)
    expected = {
        "disabled": "KeyDisabled",
        "no-access": "AccessDenied",
        "missing-version": "VersionNotFound",
        "missing-vault": "VaultNotFound",
    }[breakage]
    if breakage == "disabled":
        set_enabled(arm_world, "kvkustobad", "cmk", v2, False)
    elif breakage == "no-access":
        kv_client(arm_world).vaults.update_access_policy(
            RG,
            "kvkustobad",
            "remove",
            kvm.VaultAccessPolicyParameters(
                properties=kvm.VaultAccessPolicyProperties(
                    access_policies=[_policy(arm_world, cluster.identity.principal_id, [])]
                )
            ),
        )
    elif breakage == "missing-version":
        target = kvp(arm_world, "kvkustobad", "cmk", "0" * 32)
    else:
        target = km.KeyVaultProperties(
            key_name="cmk", key_version=v2, key_vault_uri="https://kvnowhere.vault.azure.net/"
        )
    with pytest.raises(HttpResponseError) as info:
        client.clusters.begin_update(RG, "kustobad", km.ClusterUpdate(key_vault_properties=target)).result()
    assert expected in str(info.value)
    after = client.clusters.get(RG, "kustobad")
    assert after.key_vault_properties.key_version == v1
    assert after.provisioning_state == "Failed"
    assert after.state == "Running"


def test_cluster_update_fails_by_fault_injection(arm_world: World) -> None:
    make_cluster(arm_world, "kustoflaky")
    arm_world.lro.fail_rate = 1.0
    client = kusto_client(arm_world)
    with pytest.raises(HttpResponseError) as info:
        client.clusters.begin_update(RG, "kustoflaky", km.ClusterUpdate(tags={"a": "b"})).result()
    assert "fail_rate" in str(info.value)
    assert client.clusters.get(RG, "kustoflaky").provisioning_state == "Failed"


def test_cluster_if_match_and_concurrent_update(arm_world: World) -> None:
    cluster = make_cluster(arm_world, "kustoetag")
    client = kusto_client(arm_world)
    with pytest.raises(HttpResponseError) as info:
        client.clusters.begin_update(
            RG, "kustoetag", km.ClusterUpdate(tags={"a": "1"}), etag='"stale"', match_condition=_if_match()
        ).result()
    assert info.value.status_code == 412
    arm_world.lro.duration_s = 60
    client.clusters.begin_update(
        RG,
        "kustoetag",
        km.ClusterUpdate(tags={"a": "2"}),
        etag=cluster.etag,
        match_condition=_if_match(),
        polling=False,
    )
    with pytest.raises(HttpResponseError) as busy:
        client.clusters.begin_update(RG, "kustoetag", km.ClusterUpdate(tags={"a": "3"}), polling=False)
    assert busy.value.status_code == 409
    arm_world.clock.advance(timedelta(seconds=61))
    fetched = client.clusters.get(RG, "kustoetag")
    assert fetched.tags == {"a": "2"}
    assert fetched.etag != cluster.etag


def _if_match() -> MatchConditions:
    return MatchConditions.IfNotModified


def test_async_operation_urls_use_the_host_the_client_used(arm_world: World) -> None:
    make_cluster(arm_world, "kustohost")
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/kustohost"
    resp = arm_world.handle(
        Request.build(
            method="PATCH",
            host="127.0.0.1:8443",
            path=path,
            query_string="api-version=2025-02-14",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"tags": {"x": "y"}}).encode(),
            service=Service.ARM,
        )
    )
    assert resp.status == 202
    assert resp.headers["Azure-AsyncOperation"].startswith("https://127.0.0.1:8443/subscriptions/")
    assert resp.headers["Location"].startswith("https://127.0.0.1:8443/subscriptions/")


# ---- Cosmos DB accounts -----------------------------------------------------------------------
def test_cosmos_account_create_with_versionless_cmk(arm_world: World) -> None:
    create_vault(arm_world, "kvcosmos", object_ids=(COSMOS_FIRST_PARTY_PRINCIPAL,))
    version = add_key_version(arm_world, "kvcosmos", "cmk")
    uri = f"{vault_url(arm_world, 'kvcosmos')}/keys/cmk"
    account = make_account(arm_world, "cosmosone", key_vault_key_uri=uri)
    assert account.provisioning_state == "Succeeded"
    assert account.document_endpoint == "https://cosmosone.documents.azure.com:443/"
    assert account.default_identity == "FirstPartyIdentity"
    assert account.key_vault_key_uri == uri
    assert account.key_vault_key_uri_version == f"{uri}/{version}"
    assert account.customer_managed_key_status == COSMOS_CMK_CONFIRMED
    client = cosmos_client(arm_world)
    assert [a.name for a in client.database_accounts.list()] == ["cosmosone"]
    assert [a.name for a in client.database_accounts.list_by_resource_group(RG)] == ["cosmosone"]


def test_cosmos_update_is_a_200_lro_and_ignores_read_only_fields(arm_world: World) -> None:
    make_account(arm_world, "cosmosupd")
    arm_world.lro.duration_s = 90
    client = cosmos_client(arm_world)
    poller = client.database_accounts.begin_update(
        RG, "cosmosupd", cm.DatabaseAccountUpdateParameters(tags={"env": "test"}), polling=False
    )
    initial = poller.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
    assert initial.status_code == 200
    assert "/providers/Microsoft.DocumentDB/locations/" in initial.headers["Azure-AsyncOperation"]
    assert client.database_accounts.get(RG, "cosmosupd").provisioning_state == "Updating"
    arm_world.clock.advance(timedelta(seconds=91))
    assert client.database_accounts.get(RG, "cosmosupd").provisioning_state == "Succeeded"
    # Read-only fields sent by a client are ignored.
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DocumentDB/databaseAccounts/cosmosupd"
    arm_world.lro.duration_s = 0
    resp = raw(arm_world, "PATCH", path, body={"properties": {"customerManagedKeyStatus": "forged"}})
    assert resp.status_code == 200
    arm_world.clock.advance(timedelta(seconds=1))
    assert client.database_accounts.get(RG, "cosmosupd").customer_managed_key_status is None


def test_cosmos_update_rejects_an_unassigned_default_identity(arm_world: World) -> None:
    make_account(arm_world, "cosmosid")
    client = cosmos_client(arm_world)
    with pytest.raises(HttpResponseError) as info:
        client.database_accounts.begin_update(
            RG,
            "cosmosid",
            cm.DatabaseAccountUpdateParameters(default_identity=f"UserAssignedIdentity={uai_id('nobody')}"),
        ).result()
    assert info.value.status_code == 400
    assert client.database_accounts.get(RG, "cosmosid").default_identity == "FirstPartyIdentity"


def test_cosmos_update_to_an_unusable_key_fails_and_keeps_the_old_one(arm_world: World) -> None:
    account = make_account(arm_world, "cosmoskey", identity=cm.ManagedServiceIdentity(type="SystemAssigned"))
    create_vault(arm_world, "kvcosmoskey")  # no access for anyone
    add_key_version(arm_world, "kvcosmoskey", "cmk")
    client = cosmos_client(arm_world)
    with pytest.raises(HttpResponseError) as info:
        client.database_accounts.begin_update(
            RG,
            "cosmoskey",
            cm.DatabaseAccountUpdateParameters(
                key_vault_key_uri=f"{vault_url(arm_world, 'kvcosmoskey')}/keys/cmk",
                default_identity="SystemAssignedIdentity",
            ),
        ).result()
    assert "AccessDenied" in str(info.value)
    after = client.database_accounts.get(RG, "cosmoskey")
    assert after.key_vault_key_uri is None
    assert after.provisioning_state == "Succeeded"
    assert account.identity.principal_id == principal_id_for(account.id)


# ---- Kusto databases (kusto.json 2024-04-13: Databases_*; ReadWriteDatabaseProperties) ---------------------
def test_database_with_its_own_key_put_get_list_patch_through_the_sdk(arm_world: World) -> None:
    _cluster, v1 = _cmk_cluster(arm_world, "kustodb")
    client = kusto_client(arm_world)
    created = client.databases.begin_create_or_update(
        RG, "kustodb", "sales",
        km.ReadWriteDatabase(kind="ReadWrite", location=LOCATION, properties=km.ReadWriteDatabaseProperties(
            key_vault_properties=kvp(arm_world, "kvkustodb", "cmk", v1))),
    ).result()
    assert isinstance(created, km.ReadWriteDatabase)
    # Example KustoDatabasesCreateOrUpdate.json: name "cluster/database", type .../Clusters/Databases.
    assert (created.name, created.type, created.kind) == ("kustodb/sales", "Microsoft.Kusto/Clusters/Databases",
                                                          "ReadWrite")
    got = client.databases.get(RG, "kustodb", "sales")
    assert got.properties.key_vault_properties.key_version == v1
    assert got.properties.provisioning_state == "Succeeded"
    assert got.properties.suspension_details is None
    assert [d.name for d in client.databases.list_by_cluster(RG, "kustodb")] == ["kustodb/sales"]
    v2 = add_key_version(arm_world, "kvkustodb", "cmk")
    arm_world.lro.duration_s = 60
    poller = client.databases.begin_update(
        RG, "kustodb", "sales", km.ReadWriteDatabase(kind="ReadWrite", properties=km.ReadWriteDatabaseProperties(
            key_vault_properties=kvp(arm_world, "kvkustodb", "cmk", v2))), polling=False)
    initial = poller.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
    assert initial.status_code == 202
    status = raw(arm_world, "GET", initial.headers["Azure-AsyncOperation"].split("management.azure.com", 1)[1]
                 .split("?")[0]).json()
    assert status["status"] == "Running"
    arm_world.clock.advance(timedelta(seconds=61))
    assert client.databases.get(RG, "kustodb", "sales").properties.key_vault_properties.key_version == v2
    rows = graph_client(arm_world).resources(QueryRequest(
        subscriptions=[SUB], query="Resources | where type =~ 'microsoft.kusto/clusters/databases'")).data
    assert [(r["name"], r["kind"]) for r in rows] == [("kustodb/sales", "ReadWrite")]


def test_database_suspended_while_its_key_is_unusable(arm_world: World) -> None:
    _cluster, v1 = _cmk_cluster(arm_world, "kustosusp")
    client = kusto_client(arm_world)
    client.databases.begin_create_or_update(
        RG, "kustosusp", "sales",
        km.ReadWriteDatabase(kind="ReadWrite", location=LOCATION, properties=km.ReadWriteDatabaseProperties(
            key_vault_properties=kvp(arm_world, "kvkustosusp", "cmk", v1))),
    ).result()
    set_enabled(arm_world, "kvkustosusp", "cmk", v1, False)
    arm_world.clock.advance(timedelta(seconds=arm_world.service_settings.usage_interval_s + 1))
    details = client.databases.get(RG, "kustosusp", "sales").properties.suspension_details
    assert details is not None and details.suspension_start_date is not None
    set_enabled(arm_world, "kvkustosusp", "cmk", v1, True)
    arm_world.clock.advance(timedelta(seconds=arm_world.service_settings.usage_interval_s + 1))
    assert client.databases.get(RG, "kustosusp", "sales").properties.suspension_details is None


def test_database_requests_that_azure_refuses(arm_world: World) -> None:
    make_cluster(arm_world, "kustorefuse")
    client = kusto_client(arm_world)
    with pytest.raises(HttpResponseError) as info:
        client.databases.get(RG, "nosuchcluster", "sales")
    assert info.value.status_code == 404 and error_code(info.value) == "ParentResourceNotFound"
    follower = raw(arm_world, "PUT", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/"
                   "kustorefuse/databases/f", body={"kind": "ReadOnlyFollowing", "location": LOCATION})
    assert follower.status_code == 400
    no_kind = raw(arm_world, "PUT", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Kusto/clusters/"
                  "kustorefuse/databases/nokind", body={"location": LOCATION, "properties": {}})
    assert no_kind.status_code == 400  # kind is Database's required discriminator
    client.databases.begin_create_or_update(RG, "kustorefuse", "plain", km.ReadWriteDatabase(
        kind="ReadWrite", location=LOCATION, properties=km.ReadWriteDatabaseProperties())).result()
    client.clusters.begin_delete(RG, "kustorefuse").result()
    assert not [r for r in arm_world.resources.values() if "kustorefuse" in r.id.lower()]


# ---- generic resources --------------------------------------------------------------------------
def _pg_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/serverGroupsv2/{name}"


def _energy_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.OpenEnergyPlatform/energyServices/{name}"


def test_user_assigned_identity_is_recorded(arm_world: World) -> None:
    body = put_uai(arm_world, "id-one")
    assert body["properties"]["tenantId"] == arm_world.tenant_id
    assert arm_world.identities[uai_id("id-one").lower()]["principalId"] == body["properties"]["principalId"]
    listed = raw(arm_world, "GET", f"/subscriptions/{SUB}/providers/Microsoft.ManagedIdentity/userAssignedIdentities")
    assert [r["name"] for r in listed.json()["value"]] == ["id-one"]
    assert raw(arm_world, "GET", uai_id("id-one")).json()["properties"] == body["properties"]


PG_API = "2023-03-02-preview"  # postgresqlhsc: the only api-version with dataEncryption


def test_postgres_cmk_cannot_change_after_creation(arm_world: World) -> None:
    put_uai(arm_world, "id-pg")
    create_vault(arm_world, "kvpg")
    v1 = add_key_version(arm_world, "kvpg", "cmk")
    v2 = add_key_version(arm_world, "kvpg", "cmk")
    identity = {"type": "UserAssigned", "userAssignedIdentities": {uai_id("id-pg"): {}}}

    def enc(version: str) -> dict[str, object]:
        return {
            "type": "AzureKeyVault",
            "primaryKeyUri": f"{vault_url(arm_world, 'kvpg')}/keys/cmk/{version}",
            "primaryUserAssignedIdentityId": uai_id("id-pg"),
        }

    created = raw(
        arm_world,
        "PUT",
        _pg_path("pgone"),
        body={"location": LOCATION, "identity": identity, "properties": {"dataEncryption": enc(v1)}},
        api_version=PG_API,
    )
    assert created.status_code == 201, created.text()
    assert created.json()["properties"]["dataEncryption"]["primaryKeyUri"].endswith(v1)
    changed = raw(arm_world, "PATCH", _pg_path("pgone"), body={"properties": {"dataEncryption": enc(v2)}},
                  api_version=PG_API)
    assert changed.status_code == 400
    assert changed.json()["error"]["code"] == "CustomerManagedKeyUpdateNotSupported"
    tagged = raw(arm_world, "PATCH", _pg_path("pgone"), body={"tags": {"k": "v"}}, api_version=PG_API)
    assert tagged.status_code == 200
    got = raw(arm_world, "GET", _pg_path("pgone"), api_version=PG_API).json()
    assert got["properties"]["dataEncryption"]["primaryKeyUri"].endswith(v1)
    no_uai = raw(
        arm_world,
        "PUT",
        _pg_path("pgtwo"),
        body={"location": LOCATION, "properties": {"dataEncryption": enc(v1)}},
        api_version=PG_API,
    )
    assert no_uai.status_code == 400


def test_postgres_accepts_only_the_spec_casing_enum_and_api_version(arm_world: World) -> None:
    put_uai(arm_world, "id-pg2")
    create_vault(arm_world, "kvpg2")
    v1 = add_key_version(arm_world, "kvpg2", "cmk")
    identity = {"type": "UserAssigned", "userAssignedIdentities": {uai_id("id-pg2"): {}}}
    enc = {
        "type": "AzureKeyVault",
        "primaryKeyUri": f"{vault_url(arm_world, 'kvpg2')}/keys/cmk/{v1}",
        "primaryUserAssignedIdentityId": uai_id("id-pg2"),
    }

    def put(name: str, props: dict[str, object], api: str = PG_API) -> HttpResponse:
        return raw(arm_world, "PUT", _pg_path(name), body={"location": LOCATION, "identity": identity,
                                                            "properties": props}, api_version=api)

    lower = put("pglower", {"dataencryption": enc})
    assert lower.status_code == 400 and "dataEncryption" in lower.json()["error"]["message"]
    assert put("pgsysman", {"dataEncryption": {"type": "SystemManaged"}}).status_code == 400
    assert put("pgsys", {"dataEncryption": {"type": "SystemAssigned"}}).status_code == 201
    assert put("pgold", {"dataEncryption": enc}, api="2022-11-08").status_code == 400
    assert put("pgcmk", {"dataEncryption": enc}).status_code == 201
    # Stable 2022-11-08 has neither dataEncryption nor identity: a read at that version shows no key.
    old = raw(arm_world, "GET", _pg_path("pgcmk"), api_version="2022-11-08").json()
    assert "dataEncryption" not in old["properties"] and "identity" not in old
    new = raw(arm_world, "GET", _pg_path("pgcmk"), api_version=PG_API).json()
    assert new["properties"]["dataEncryption"] == enc and new["identity"]["type"] == "UserAssigned"


ENERGY_API = "2024-05-21"  # oep stable: encryption.keyVaultProperties, also in the PATCH model


def test_energy_service_cmk_cannot_change_after_creation(arm_world: World) -> None:
    put_uai(arm_world, "id-oep")
    create_vault(arm_world, "kvoep")
    add_key_version(arm_world, "kvoep", "cmk")
    add_key_version(arm_world, "kvoep", "other")
    identity = {"type": "UserAssigned", "userAssignedIdentities": {uai_id("id-oep"): {}}}

    def enc(key: str) -> dict[str, object]:
        return {
            "keySource": "Microsoft.Keyvault",
            "keyVaultProperties": {
                "keyName": key,
                "keyVaultUri": f"{vault_url(arm_world, 'kvoep')}/",
                "userIdentity": uai_id("id-oep"),
            },
        }

    created = raw(
        arm_world,
        "PUT",
        _energy_path("oepone"),
        body={"location": LOCATION, "identity": identity, "properties": {"encryption": enc("cmk")}},
        api_version=ENERGY_API,
    )
    assert created.status_code == 201, created.text()
    assert created.json()["properties"]["encryption"]["keyVaultProperties"]["keyName"] == "cmk"
    # The product document: CMK settings cannot be edited after creation (PUT, and PATCH before 2024-05-21).
    again = raw(
        arm_world,
        "PUT",
        _energy_path("oepone"),
        body={"location": LOCATION, "identity": identity, "properties": {"encryption": enc("other")}},
        api_version=ENERGY_API,
    )
    assert again.status_code == 400
    old_patch = raw(arm_world, "PATCH", _energy_path("oepone"), body={"properties": {"encryption": enc("other")}},
                    api_version="2023-11-12")
    assert old_patch.status_code == 400
    # oep 2024-05-21 EnergyServiceUpdateProperties.encryption: a PATCH at that version may change it.
    patched = raw(arm_world, "PATCH", _energy_path("oepone"), body={"properties": {"encryption": enc("other")}},
                  api_version=ENERGY_API)
    assert patched.status_code == 200, patched.text()
    assert patched.json()["properties"]["encryption"]["keyVaultProperties"]["keyName"] == "other"
    # The shape the sandbox once invented is refused: keyVaultProperties is required.
    invented = raw(
        arm_world,
        "PUT",
        _energy_path("oeptwo"),
        body={"location": LOCATION, "identity": identity, "properties": {"encryption": {
            "customerManagedKeyEncryption": {"keyEncryptionKeyUrl": f"{vault_url(arm_world, 'kvoep')}/keys/cmk"}}}},
        api_version=ENERGY_API,
    )
    assert invented.status_code == 400


def test_unknown_resource_type_is_not_found(arm_world: World) -> None:
    resp = raw(arm_world, "GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Nope/things/x")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "InvalidResourceType"


# ---- Resource Graph --------------------------------------------------------------------------
def _graph(world: World, query: str, **options: object) -> object:
    return graph_client(world).resources(
        QueryRequest(subscriptions=[SUB, OTHER_SUB], query=query, options=QueryRequestOptions(**options))
    )


def test_resource_graph_filters_projects_and_pages(arm_world: World) -> None:
    for i in range(3):
        make_cluster(arm_world, f"kustog{i}")
    make_account(arm_world, "cosmosg")
    create_vault(arm_world, "kvgraph")
    put_uai(arm_world, "id-graph")
    query = (
        "Resources | where type =~ 'Microsoft.Kusto/clusters' or type in~ ('microsoft.documentdb/databaseaccounts') "
        "| project id, name, type, properties"
    )
    first = _graph(arm_world, query, top=3)
    assert first.total_records == 4
    assert first.count == 3
    assert first.skip_token
    second = _graph(arm_world, query, top=3, skip_token=first.skip_token)
    assert second.count == 1
    assert second.skip_token is None
    rows = first.data + second.data
    assert sorted(r["name"] for r in rows) == ["cosmosg", "kustog0", "kustog1", "kustog2"]
    assert set(rows[0]) == {"id", "name", "type", "properties"}
    assert {r["type"] for r in rows} == {"microsoft.kusto/clusters", "microsoft.documentdb/databaseaccounts"}
    vaults = _graph(arm_world, "Resources | where type == 'microsoft.keyvault/vaults' and name != 'x'")
    assert [r["name"] for r in vaults.data] == ["kvgraph"]
    assert vaults.data[0]["properties"]["enablePurgeProtection"] is True


def test_resource_graph_has_tolower_and_paths_follow_kql(arm_world: World) -> None:
    """``has`` is case-insensitive and matches whole terms (runs of letters and digits):
    'Cmk' is a term of 'cmk-2' but 'cm' is not; ``=~``/``in~`` ignore case, ``==`` does not;
    ``tolower``/``tostring`` and paths into ``properties`` work as in KQL."""
    make_cluster(arm_world, "kustoone")
    make_cluster(arm_world, "kustotwo")
    make_account(arm_world, "cmk-2", tags={"Owner": "Team-Blue"})
    make_account(arm_world, "team-kusto")

    def names(where: str) -> list[str]:
        return sorted(r["name"] for r in _graph(arm_world, f"Resources | where {where} | project name").data)

    assert names("name has 'CMK'") == ["cmk-2"]
    assert names("name has 'cm'") == []
    assert names("name has 'kusto'") == ["team-kusto"]  # 'kustoone' is one term
    assert names("name =~ 'KUSTOTWO'") == ["kustotwo"]
    assert names("name == 'KUSTOTWO'") == []
    assert names("name in~ ('CMK-2', 'x')") == ["cmk-2"]
    assert names("tolower(tags.Owner) == 'team-blue'") == ["cmk-2"]
    assert names("tags.Owner == 'team-blue'") == []
    assert names("type =~ 'Microsoft.Kusto/clusters' and tostring(properties) has 'succeeded'") == [
        "kustoone", "kustotwo"]
    assert names("name !has 'kusto' and type =~ 'microsoft.documentdb/databaseaccounts'") == ["cmk-2"]


def test_resource_graph_answers_carry_the_user_quota_and_throttle_past_it(arm_world: World) -> None:
    arm_world.throttle.reset()
    arm_world.throttle.configure(graph_quota=3, graph_window_s=5)
    client = graph_client(arm_world)
    seen: list[dict[str, str]] = []

    def hook(response: Any) -> None:
        seen.append(dict(response.http_response.headers))

    for _ in range(3):
        client.resources(QueryRequest(subscriptions=[SUB], query="Resources | limit 1"), raw_response_hook=hook)
    assert [h["x-ms-user-quota-remaining"] for h in seen] == ["2", "1", "0"]
    assert seen[0]["x-ms-user-quota-resets-after"] == "00:00:05"
    with pytest.raises(HttpResponseError) as info:
        client.resources(QueryRequest(subscriptions=[SUB], query="Resources | limit 1"), retry_total=0)
    assert info.value.status_code == 429
    arm_world.clock.advance(timedelta(seconds=5))
    client.resources(QueryRequest(subscriptions=[SUB], query="Resources | limit 1"))


@pytest.mark.parametrize(
    "query",
    [
        "Resources | where properties.keyVaultProperties.keyName matches regex 'x'",
        "Resources | where sku.name.x.y has 'x' and plan.x == 'y'",
        "Resources | summarize count() by type",
        "ResourceContainers",
        "Resources | where type contains 'kusto'",
        "Resources | where type =~ 'unterminated",
    ],
)
def test_resource_graph_refuses_unsupported_queries(arm_world: World, query: str) -> None:
    with pytest.raises(HttpResponseError) as info:
        _graph(arm_world, query)
    assert info.value.status_code == 400
    assert "InvalidQuery" in str(info.value)
