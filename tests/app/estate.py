"""Builds a test estate in the sandbox through the official SDK clients only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.keyvault.keys import KeyClient
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.kusto import KustoManagementClient

from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.app import Keysteward, build
from shared.config import load_settings
from shared.notify import RecordingNotifier
from shared.workqueue import MemoryQueue

RG = "rg-data"
LOCATION = "westeurope"
CMK_PERMS = ["get", "wrapKey", "unwrapKey"]


def kv_mgmt(world: World, sub: str) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def kusto(world: World, sub: str) -> KustoManagementClient:
    return KustoManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def cosmos(world: World, sub: str) -> CosmosDBManagementClient:
    return CosmosDBManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def key_client(world: World, vault_url: str) -> KeyClient:
    return KeyClient(vault_url, StaticTokenCredential(), transport=SandboxTransport(world))


@dataclass
class Estate:
    world: World
    subs: list[str]
    vault_name: str
    vault_url: str
    key_name: str
    v1: str
    clusters: list[tuple[str, str]] = field(default_factory=list)  # (sub, name)
    accounts: list[tuple[str, str]] = field(default_factory=list)  # (sub, name), one per subscription
    versionless_accounts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def keys(self) -> KeyClient:
        return key_client(self.world, self.vault_url)

    @property
    def key_uri(self) -> str:
        return f"{self.vault_url}/keys/{self.key_name}"

    def cluster(self, sub: str, name: str) -> Any:
        return kusto(self.world, sub).clusters.get(RG, name)

    def account(self, sub: str, name: str) -> Any:
        return cosmos(self.world, sub).database_accounts.get(RG, name)

    def pinned_versions(self) -> dict[str, str]:
        out = {}
        for sub, name in self.clusters:
            out[name] = self.cluster(sub, name).key_vault_properties.key_version
        return out

    def writes(self, since: int) -> list[Any]:
        return [e for e in self.world.requests_since(since) if e.method in ("PATCH", "PUT", "POST", "DELETE")
                and e.service == "arm"]


def make_vault(world: World, sub: str, name: str, *, purge_protection: bool = True) -> str:
    vault = kv_mgmt(world, sub).vaults.begin_create_or_update(RG, name, {
        "location": LOCATION,
        "properties": {
            "tenantId": world.tenant_id, "sku": {"family": "A", "name": "standard"}, "accessPolicies": [],
            "enableSoftDelete": True, "enablePurgeProtection": purge_protection, "softDeleteRetentionInDays": 90,
        },
    }).result()
    return str(vault.properties.vault_uri).rstrip("/")


def grant(world: World, sub: str, vault: str, principal: str) -> None:
    kv_mgmt(world, sub).vaults.update_access_policy(RG, vault, "add", {"properties": {"accessPolicies": [{
        "tenantId": world.tenant_id, "objectId": principal, "permissions": {"keys": CMK_PERMS}}]}})


def make_cluster(world: World, sub: str, name: str, *, vault_url: str, key: str, version: str,
                 grant_in: tuple[str, str], tags: dict[str, str] | None = None) -> str:
    """Creates a cluster with a system identity, grants it on the vault, then sets the CMK (the real order)."""
    client = kusto(world, sub)
    cluster = client.clusters.begin_create_or_update(RG, name, {
        "location": LOCATION, "sku": {"name": "Standard_E8ads_v5", "tier": "Standard", "capacity": 2},
        "identity": {"type": "SystemAssigned"}, "tags": tags or {},
    }).result()
    principal = str(cluster.identity.principal_id)
    grant(world, grant_in[0], grant_in[1], principal)
    client.clusters.begin_update(RG, name, {"properties": {"keyVaultProperties": {
        "keyName": key, "keyVersion": version, "keyVaultUri": vault_url + "/"}}}).result()
    return principal


def make_account(world: World, sub: str, name: str, *, key_uri: str, grant_in: tuple[str, str],
                 tags: dict[str, str] | None = None) -> str:
    client = cosmos(world, sub)
    account = client.database_accounts.begin_create_or_update(RG, name, {
        "location": LOCATION, "kind": "GlobalDocumentDB", "identity": {"type": "SystemAssigned"}, "tags": tags or {},
        "properties": {"databaseAccountOfferType": "Standard",
                       "locations": [{"locationName": LOCATION, "failoverPriority": 0}]},
    }).result()
    principal = str(account.identity.principal_id)
    grant(world, grant_in[0], grant_in[1], principal)
    client.database_accounts.begin_update(RG, name, {"properties": {
        "keyVaultKeyUri": key_uri, "defaultIdentity": "SystemAssignedIdentity"}}).result()
    return principal


def make_estate(world: World, *, clusters_per_sub: int = 2, accounts_per_sub: int = 1, versionless: int = 1,
                key_size: int = 2048, held: tuple[str, ...] = ()) -> Estate:
    subs = list(world.subscriptions[:2])
    vault_url = make_vault(world, subs[0], "kv-estate")
    kc = key_client(world, vault_url)
    v1 = kc.create_rsa_key("cmk", size=key_size).properties.version
    estate = Estate(world, subs, "kv-estate", vault_url, "cmk", str(v1))
    for sub in subs:
        for i in range(clusters_per_sub):
            name = f"adx{sub[-4:]}{i}"
            make_cluster(world, sub, name, vault_url=vault_url, key="cmk", version=str(v1),
                         grant_in=(subs[0], "kv-estate"), tags={"keysteward-hold": "true"} if name in held else None)
            estate.clusters.append((sub, name))
        for i in range(accounts_per_sub):
            name = f"cosmos-{sub[-4:]}-{i}"
            # Cosmos DB takes only a versionless key URI (Azure refuses a versioned one).
            make_account(world, sub, name, key_uri=f"{vault_url}/keys/cmk", grant_in=(subs[0], "kv-estate"))
            estate.accounts.append((sub, name))
    for i in range(versionless):
        name = f"cosmos-vl-{i}"
        make_account(world, subs[0], name, key_uri=f"{vault_url}/keys/cmk", grant_in=(subs[0], "kv-estate"))
        estate.versionless_accounts.append((subs[0], name))
    return estate


def steward(world: World, estate: Estate, *, journal: Any = None,
            **env: str) -> tuple[Keysteward, MemoryQueue, RecordingNotifier]:
    """The app over ``estate``; ``journal`` (e.g. tests.memory_journal.MemoryJournal) for runbooks."""
    settings = load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": ",".join(estate.subs),
        "KEYSTEWARD_VAULTS": estate.vault_url,
        "KEYSTEWARD_ARM_WRITE_BURST": "1000",
        "KEYSTEWARD_ARM_WRITES_PER_S": "100",
        **env,
    })
    queue, notifier = MemoryQueue(), RecordingNotifier()
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=notifier, queue=queue, polling_interval=0,
                journal=journal)
    return app, queue, notifier


class EventCapture:
    """Subscribes to the sandbox's Event Grid and keeps what it delivers, as the Functions
    host would hand it to the trigger."""

    URL = "https://capture.test"

    def __init__(self, world: World) -> None:
        self.events: list[dict[str, Any]] = []
        world.eventgrid.register_local_endpoint(self.URL, self._receive)
        world.eventgrid.subscribe(endpoint=self.URL + "/events", schema="EventGridSchema")
        world.tick(world.clock.now())

    def _receive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        import json

        payload = json.loads(body) if body else []
        if headers.get("aeg-event-type", headers.get("Aeg-Event-Type", "")).lower() == "subscriptionvalidation":
            code = payload[0]["data"]["validationCode"]
            return 200, {"Content-Type": "application/json"}, json.dumps({"validationResponse": code}).encode()
        self.events.extend(payload)
        return 200, {}, b""

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["eventType"].endswith(suffix)]


def grid_event(raw: dict[str, Any]) -> func.EventGridEvent:
    from datetime import datetime

    return func.EventGridEvent(
        id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"], event_type=raw["eventType"],
        event_time=datetime.fromisoformat(raw["eventTime"].replace("Z", "+00:00")), data_version=raw["dataVersion"],
    )
