"""Helpers shared by the ARM and simulated-service tests: SDK clients on a world, and keys
placed straight into the world's state (the data plane has its own tests)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault import models as kvm
from azure.mgmt.kusto import KustoManagementClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.state import Key, KeyVersion
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World

SUB = "00000000-0000-0000-0000-00000000a001"
OTHER_SUB = "00000000-0000-0000-0000-00000000b002"
RG = "rg-keys"
LOCATION = "westeurope"

# Key material is irrelevant to ARM behaviour; one RSA key serves every version.
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CMK_KEY_PERMS = ["get", "wrapKey", "unwrapKey"]


def kv_client(world: World, sub: str = SUB) -> KeyVaultManagementClient:
    return KeyVaultManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def kusto_client(world: World, sub: str = SUB) -> KustoManagementClient:
    return KustoManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def cosmos_client(world: World, sub: str = SUB) -> CosmosDBManagementClient:
    return CosmosDBManagementClient(StaticTokenCredential(), sub, transport=SandboxTransport(world), polling_interval=0)


def graph_client(world: World) -> ResourceGraphClient:
    return ResourceGraphClient(StaticTokenCredential(), transport=SandboxTransport(world))


def create_vault(
    world: World, name: str, *, rg: str = RG, sub: str = SUB, object_ids: tuple[str, ...] = ()
) -> kvm.Vault:
    """A vault (purge protection on) granting get/wrapKey/unwrapKey to ``object_ids``."""
    policies = [
        kvm.AccessPolicyEntry(
            tenant_id=world.tenant_id, object_id=oid, permissions=kvm.Permissions(keys_property=CMK_KEY_PERMS)
        )
        for oid in object_ids
    ]
    params = kvm.VaultCreateOrUpdateParameters(
        location=LOCATION,
        properties=kvm.VaultProperties(
            tenant_id=world.tenant_id,
            sku=kvm.Sku(family="A", name="standard"),
            access_policies=policies,
            enable_purge_protection=True,
        ),
    )
    return kv_client(world, sub).vaults.begin_create_or_update(rg, name, params).result()


def grant(world: World, vault: str, object_id: str, *, rg: str = RG) -> None:
    kv_client(world).vaults.update_access_policy(
        rg,
        vault,
        "add",
        kvm.VaultAccessPolicyParameters(
            properties=kvm.VaultAccessPolicyProperties(
                access_policies=[
                    kvm.AccessPolicyEntry(
                        tenant_id=world.tenant_id,
                        object_id=object_id,
                        permissions=kvm.Permissions(keys_property=CMK_KEY_PERMS),
                    )
                ]
            )
        ),
    )


def revoke(world: World, vault: str, object_id: str, *, rg: str = RG) -> None:
    kv_client(world).vaults.update_access_policy(
        rg,
        vault,
        "remove",
        kvm.VaultAccessPolicyParameters(
            properties=kvm.VaultAccessPolicyProperties(
                access_policies=[
                    kvm.AccessPolicyEntry(
                        tenant_id=world.tenant_id,
                        object_id=object_id,
                        permissions=kvm.Permissions(keys_property=CMK_KEY_PERMS),
                    )
                ]
            )
        ),
    )


def add_key_version(world: World, vault: str, key: str, *, enabled: bool = True) -> str:
    """Adds a new version of ``key`` (created now, sandbox time) and returns its version id."""
    now = world.now_ts()
    with world.lock:
        entry = world.vaults[vault.lower()].keys.setdefault(key.lower(), Key(name=key))
        version = uuid.uuid4().hex
        entry.versions[version] = KeyVersion(
            version=version,
            kty="RSA",
            private_key=_RSA,
            key_ops=["wrapKey", "unwrapKey", "encrypt", "decrypt", "sign", "verify"],
            enabled=enabled,
            created=now,
            updated=now,
        )
    return version


def set_enabled(world: World, vault: str, key: str, version: str, enabled: bool) -> None:
    with world.lock:
        world.vaults[vault.lower()].keys[key.lower()].versions[version].enabled = enabled


def vault_url(world: World, vault: str) -> str:
    url_for: Callable[[str], str] = world.vault_url_for
    return url_for(vault)


def uai_id(name: str, *, rg: str = RG, sub: str = SUB) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def arm_pipeline(world: World) -> ARMPipelineClient[Any, Any]:
    """A bare ARM pipeline client (public azure-core API) for types without an SDK in the stack."""
    return ARMPipelineClient(
        base_url="https://management.azure.com",
        policies=[BearerTokenCredentialPolicy(StaticTokenCredential(), "https://management.azure.com/.default")],
        transport=SandboxTransport(world),
    )


def raw(
    world: World,
    method: str,
    path: str,
    *,
    body: Any = None,
    api_version: str | None = "2024-01-01",
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """One ARM request over the wire through ARMPipelineClient; ``bytes`` bodies go as they are."""
    params = {"api-version": api_version} if api_version else {}
    url = f"https://management.azure.com{path}"
    if isinstance(body, bytes):
        request = HttpRequest(
            method, url, params=params, content=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
    else:
        request = HttpRequest(method, url, params=params, json=body, headers=headers)
    with arm_pipeline(world) as client:
        response: HttpResponse = client.send_request(request)
        response.read()
        return response


def put_uai(world: World, name: str, *, rg: str = RG) -> dict[str, Any]:
    resp = raw(world, "PUT", uai_id(name, rg=rg), body={"location": LOCATION})
    assert resp.status_code in (200, 201), resp.text()
    return dict(resp.json())
