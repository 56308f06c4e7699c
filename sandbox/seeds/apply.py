"""Seeds: applying a plan (:func:`apply_plan`, :func:`apply_seed`) through the same wire path as the
SDKs: each request is built as the SDK sends it and passed to ``World.handle``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from sandbox.seeds.check import compile_seed
from sandbox.seeds.model import (
    API_COSMOS,
    API_ENERGY,
    API_IDENTITY,
    API_KEYS,
    API_KUSTO,
    API_POSTGRES,
    API_VAULT,
    ARM_HOST,
    COSMOS_TYPE,
    KUSTO_TYPE,
    POSTGRES_TYPE,
    JsonObj,
    Plan,
    ResourceSpec,
    SeedApplyError,
    SeedError,
    SeedResult,
    VaultSpec,
)
from sandbox.state import principal_id_for
from sandbox.wire import Request, Service

if TYPE_CHECKING:
    from sandbox.world import World


# ---- applying ------------------------------------------------------------------------------
def vault_url(world: World, name: str) -> str:
    """The vault's data-plane URL as the world serves it (in-process host or loopback port)."""
    # World.vault_url_for is a replaceable attribute (the loopback server swaps it), not typed.
    url_for = cast("Callable[[str], str]", world.vault_url_for)
    return url_for(name)


class _Sender:
    """Builds wire requests the way the SDKs send them and passes them to ``world.handle``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.count = 0

    def arm(self, method: str, path: str, api_version: str, body: JsonObj, what: str) -> JsonObj:
        return self._send(
            Request.build(
                method=method,
                host=ARM_HOST,
                path=path,
                query_string=f"api-version={api_version}",
                headers=self._headers(body),
                body=json.dumps(body).encode(),
                service=Service.ARM,
            ),
            what,
        )

    def vault(self, vault: str, method: str, path: str, body: JsonObj, what: str) -> JsonObj:
        host = urlsplit(vault_url(self.world, vault)).netloc
        return self._send(
            Request.build(
                method=method,
                host=host,
                path=path,
                query_string=f"api-version={API_KEYS}",
                headers=self._headers(body),
                body=json.dumps(body).encode(),
                service=Service.VAULT,
                vault=vault,
            ),
            what,
        )

    def admin(self, method: str, path: str, body: JsonObj, what: str) -> JsonObj:
        data = json.dumps(body).encode()
        req = Request.build(method=method, host="sandbox.local", path=path, query_string="",
                            headers=self._headers(body), body=data, service=Service.ADMIN, vault=None)
        return self._send(req, what)

    @staticmethod
    def _headers(body: JsonObj) -> dict[str, str]:
        return {
            "Authorization": "Bearer sandbox-seed",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Content-Length": str(len(json.dumps(body))),
            "User-Agent": "keysteward-sandbox-seed",
        }

    def _send(self, req: Request, what: str) -> JsonObj:
        self.count += 1
        resp = self.world.handle(req)
        if resp.status >= 400 or resp.drop:
            raise SeedApplyError(what, resp.status, resp.body)
        if not resp.body:
            return {}
        try:
            parsed = json.loads(resp.body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


def apply_seed(world: World, doc: Any) -> SeedResult:
    """Checks then applies a seed document (see the module docstring)."""
    return apply_plan(world, compile_seed(doc))


def load_seed_file(path: str | Path) -> Any:
    """Reads a seed file; raises :class:`SeedError` when it is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SeedError(str(path), f"cannot read the seed: {err}") from err


def apply_plan(world: World, plan: Plan) -> SeedResult:
    """Sends the plan's requests; raises :class:`SeedApplyError` on the first refusal."""
    started = time.perf_counter()
    result = SeedResult()
    send = _Sender(world)
    with world.lock:
        for sub in plan.subscriptions:
            if sub not in world.subscriptions:
                world.subscriptions.append(sub)
        saved_throttle = world.throttle.settings.enabled
        saved_lro = (world.lro.duration_s, world.lro.fail_rate)
        world.throttle.configure(enabled=False)
        world.lro.duration_s, world.lro.fail_rate = 0.0, 0.0
    try:
        _apply(world, plan, send, result)
    finally:
        with world.lock:
            world.throttle.configure(enabled=saved_throttle)
            world.lro.duration_s, world.lro.fail_rate = saved_lro
        # Operations created with zero duration complete on the next tick.
        world.tick(world.clock.now())
    result.requests = send.count
    result.elapsed_s = time.perf_counter() - started
    return result


def _apply(world: World, plan: Plan, send: _Sender, result: SeedResult) -> None:
    # Resource groups are not modelled by the sandbox's ARM: resources are placed directly.
    principals: dict[str, str] = {}
    for ident in plan.identities:
        out = send.arm("PUT", ident.id, API_IDENTITY, {"location": ident.location}, f"identity {ident.name}")
        props = out.get("properties") or {}
        principal = str(props.get("principalId") or principal_id_for(ident.id))
        principals[ident.name.lower()] = principal
        result.identities[ident.name] = {
            "id": ident.id,
            "principalId": principal,
            "clientId": props.get("clientId"),
        }
    for vault in plan.vaults:
        _put_vault(world, vault, principals, send)
        result.vault_urls[vault.name] = vault_url(world, vault.name)
    # Resources are created once every version exists, at the clock's final time.
    _create_versions(world, plan, send, result)
    identity_ids = {i.name.lower(): i.id for i in plan.identities}
    for res in plan.resources:
        rid, body, api = _resource_body(world, res, identity_ids, result)
        send.arm("PUT", rid, api, body, f"{res.type} {res.name}")
        result.resources[res.name] = rid
    for consumer in plan.consumers:
        version = result.versions[f"{consumer.vault}/{consumer.key}/{consumer.label}"]
        body = {"principal_id": consumer.principal_id, "every_s": consumer.every_s,
                "key": f"{vault_url(world, consumer.vault)}/keys/{consumer.key}/{version}"}
        send.admin("POST", "/sandbox/consumers", body, f"consumer {consumer.principal_id}")


def _put_vault(world: World, vault: VaultSpec, principals: dict[str, str], send: _Sender) -> None:
    policies = [
        {
            "tenantId": world.tenant_id,
            "objectId": principals[p.identity] if p.identity else p.object_id,
            "permissions": {"keys": list(p.keys), "secrets": [], "certificates": []},
        }
        for p in vault.policies
    ]
    properties: JsonObj = {
        "tenantId": world.tenant_id,
        "sku": {"family": "A", "name": vault.sku},
        "accessPolicies": policies,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": vault.soft_delete_retention_days,
        "enableRbacAuthorization": vault.rbac,
        "publicNetworkAccess": vault.public_network_access,
    }
    if vault.purge_protection:
        # Azure refuses enablePurgeProtection=false; leaving it out is how it stays off.
        properties["enablePurgeProtection"] = True
    body = {"location": vault.location, "tags": vault.tags, "properties": properties}
    path = (
        f"/subscriptions/{vault.subscription}/resourceGroups/{vault.resource_group}"
        f"/providers/Microsoft.KeyVault/vaults/{vault.name}"
    )
    send.arm("PUT", path, API_VAULT, body, f"vault {vault.name}")


def _create_versions(world: World, plan: Plan, send: _Sender, result: SeedResult) -> None:
    """Creates every version oldest first, moving the clock so ages come out right."""
    items = [(v.age, vault, key, v) for vault in plan.vaults for key in vault.keys for v in key.versions]
    if not items:
        return
    oldest = max(age for age, *_ in items)
    start = world.clock.now()
    end = start + oldest
    # Stable sort: same-age versions keep document order, so a key's versions stay in order.
    items.sort(key=lambda item: -item[0].total_seconds())
    for age, vault, key, version in items:
        at = end - age
        if at > world.clock.now():
            world.clock.set(at)
        attributes: JsonObj = {"enabled": version.enabled}
        if version.exp is not None:
            attributes["exp"] = int((end + version.exp).timestamp())
        if version.nbf is not None:
            attributes["nbf"] = int((end + version.nbf).timestamp())
        body: JsonObj = {"kty": key.kty, "key_size": key.size, "attributes": attributes}
        if version.tags:
            body["tags"] = version.tags
        out = send.vault(vault.name, "POST", f"/keys/{key.name}/create", body, f"key {vault.name}/{key.name}")
        kid = str((out.get("key") or {}).get("kid") or "")
        ref = f"{vault.name}/{key.name}/{version.label}"
        result.key_ids[ref] = kid
        result.versions[ref] = kid.rstrip("/").rsplit("/", 1)[-1] if kid else ""
    if world.clock.now() < end:
        world.clock.set(end)
    # Policies go on last: set earlier, Key Vault would auto-rotate while the clock catches up,
    # and the seeded keys would carry versions the document never described.
    for vault in plan.vaults:
        for key in vault.keys:
            if key.rotation_policy:
                send.vault(
                    vault.name,
                    "PUT",
                    f"/keys/{key.name}/rotationpolicy",
                    key.rotation_policy,
                    f"rotation policy {vault.name}/{key.name}",
                )


def _resource_body(
    world: World, res: ResourceSpec, identity_ids: dict[str, str], result: SeedResult
) -> tuple[str, JsonObj, str]:
    base_url = vault_url(world, res.vault).rstrip("/")
    version_id = result.versions.get(f"{res.vault}/{res.key}/{res.version}", "") if res.version else ""
    uai = identity_ids.get(res.identity)
    identity: JsonObj = (
        {"type": "UserAssigned", "userAssignedIdentities": {uai: {}}} if uai else {"type": "SystemAssigned"}
    )
    base = f"/subscriptions/{res.subscription}/resourceGroups/{res.resource_group}/providers/{res.type}/{res.name}"
    key_uri = f"{base_url}/keys/{res.key}" + (f"/{version_id}" if version_id else "")
    body: JsonObj = {"location": res.location, "tags": res.tags, "identity": identity}
    if res.type == KUSTO_TYPE:
        body["sku"] = res.sku or {"name": "Standard_E8ads_v5", "tier": "Standard", "capacity": 2}
        body["properties"] = {
            "keyVaultProperties": {
                "keyName": res.key,
                "keyVersion": version_id,
                "keyVaultUri": f"{base_url}/",
                "userIdentity": uai or "",
            }
        }
        return base, body, API_KUSTO
    if res.type == COSMOS_TYPE:
        body["kind"] = "GlobalDocumentDB"
        body["properties"] = {
            "databaseAccountOfferType": "Standard",
            "locations": [{"locationName": res.location, "failoverPriority": 0, "isZoneRedundant": False}],
            "keyVaultKeyUri": key_uri,
            "defaultIdentity": f"UserAssignedIdentity={uai}" if uai else "SystemAssignedIdentity",
        }
        if res.backup_policy is not None:
            body["properties"]["backupPolicy"] = res.backup_policy
        return base, body, API_COSMOS
    if res.type == POSTGRES_TYPE:
        body["kind"] = "CosmosDBForPostgreSQL"
        body["properties"] = {
            "createMode": "Default",
            "postgresqlVersion": "16",
            "dataEncryption": {
                "primaryKeyUri": key_uri,
                "primaryUserAssignedIdentityId": uai,
                "type": "AzureKeyVault",
            },
        }
        return base, body, API_POSTGRES
    # Energy: oep 2024-05-21 EnergyServiceProperties.encryption.
    body["properties"] = {
        "dataPartitionNames": [{"name": "dp1"}],
        "encryption": {
            "keySource": "Microsoft.Keyvault",
            "keyVaultProperties": {
                "keyName": res.key,
                "keyVersion": version_id,
                "keyVaultUri": f"{base_url}/",
                "userIdentity": uai,
            },
        },
    }
    return base, body, API_ENERGY


