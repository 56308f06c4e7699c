"""Cosmos DB accounts: ``properties.keyVaultKeyUri`` (+ read-only ``keyVaultKeyUriVersion``,
``customerManagedKeyStatus``). A versioned key URI is updated by PATCH; a versionless one is
never written (Cosmos follows the new version itself) but tracked for lag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from azure.mgmt.cosmosdb.models import (
    DatabaseAccountGetResults,
    DatabaseAccountUpdateParameters,
    DatabaseAccountUpdateProperties,
)

from shared.clients import ClientFactory
from shared.errors import NotFoundError
from shared.model import Binding, ServiceType
from shared.targets.base import (
    CMK_PERMISSIONS,
    RSA_SIZES,
    Health,
    JsonObj,
    UpdateStart,
    enum_text,
    expected_seconds,
    operation_recorder,
    parse_key_uri_loose,
    resource_group_of,
    sdk,
    subscription_of,
)

CONFIRMED = "access to the configured customer managed key confirmed"


def _principal(account: DatabaseAccountGetResults) -> tuple[str | None, str | None]:
    default = (account.default_identity or "").strip()
    identity: Any = account.identity
    if default.lower().startswith("userassignedidentity="):
        uid = default.split("=", 1)[1]
        if identity is not None and identity.user_assigned_identities:
            for rid, info in identity.user_assigned_identities.items():
                if rid.lower() == uid.lower():
                    return info.principal_id, uid
        return None, uid
    if default.lower() == "systemassignedidentity" and identity is not None:
        return identity.principal_id, None
    return None, None  # FirstPartyIdentity: the Azure Cosmos DB first-party principal


def _binding(account: DatabaseAccountGetResults) -> Binding | None:
    parsed = parse_key_uri_loose(account.key_vault_key_uri)
    if parsed is None:
        return None
    key, version = parsed
    in_use = parse_key_uri_loose(account.key_vault_key_uri_version)
    rid = account.id or ""
    principal, uid = _principal(account)
    return Binding(
        resource_id=rid,
        service=ServiceType.COSMOS,
        subscription=subscription_of(rid),
        resource_group=resource_group_of(rid),
        name=account.name or "",
        location=account.location or "",
        key=key,
        pinned_version=version,
        in_use_version=in_use[1] if in_use else version,
        updatable=True,
        principal_id=principal,
        user_identity=uid,
        provisioning_state=enum_text(account.provisioning_state),
        health=account.customer_managed_key_status,
        access_revoked="revoked" in (account.customer_managed_key_status or "").lower(),
        tags=dict(account.tags or {}),
    )


class CosmosTarget:
    service = ServiceType.COSMOS
    updatable = True
    # Registry declarations (see shared.targets.base.Target).
    arm_types: ClassVar[tuple[str, ...]] = ("microsoft.documentdb/databaseaccounts",)
    reports_key_status: ClassVar[bool] = True  # customerManagedKeyStatus
    key_sizes: ClassVar[frozenset[int]] = RSA_SIZES
    recommended_key_size: ClassVar[int | None] = 3072
    vault_permissions: ClassVar[tuple[str, ...]] = CMK_PERMISSIONS
    vault_same_region: ClassVar[bool] = False
    vault_retention_days: ClassVar[int | None] = None

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def list_bindings(self, subscription: str) -> list[Binding]:
        with sdk(f"list Cosmos DB accounts in {subscription}"):
            accounts = list(self._clients.cosmos(subscription).database_accounts.list())
        return [b for a in accounts if (b := _binding(a)) is not None]

    def bindings_from_row(self, row: JsonObj, rows: Mapping[str, JsonObj]) -> list[Binding]:  # noqa: ARG002
        b = _binding(DatabaseAccountGetResults(row))
        return [b] if b is not None else []

    def get_binding(self, resource_id: str) -> Binding | None:
        sub, rg, name = subscription_of(resource_id), resource_group_of(resource_id), resource_id.rsplit("/", 1)[-1]
        try:
            with sdk(f"get Cosmos DB account {name}"):
                account = self._clients.cosmos(sub).database_accounts.get(rg, name)
        except NotFoundError:
            return None
        return _binding(account)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:
        params = DatabaseAccountUpdateParameters(
            properties=DatabaseAccountUpdateProperties(key_vault_key_uri=binding.key.with_version(version).uri)
        )
        seen, hook = operation_recorder()
        with sdk(f"update Cosmos DB account {binding.name} to {version}"):
            self._clients.cosmos(binding.subscription).database_accounts.begin_update(
                binding.resource_group, binding.name, params, polling=False, raw_response_hook=hook
            )
        return UpdateStart(binding, version, seen.get("operation"), expected_seconds(seen))

    def health(self, binding: Binding) -> str:
        status = (binding.health or "").strip().lower()
        if status.startswith(CONFIRMED):
            return Health.OK
        if "revoked" in status:
            return Health.REVOKED
        return Health.UNKNOWN
