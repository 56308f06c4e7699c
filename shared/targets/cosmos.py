"""Cosmos DB accounts: ``properties.keyVaultKeyUri`` (+ read-only ``keyVaultKeyUriVersion``,
``customerManagedKeyStatus``, ``backupPolicy``).

Spec: azure-rest-api-specs ``specification/cosmos-db/resource-manager/Microsoft.DocumentDB/
DocumentDB/stable/2026-03-15`` (the api-version azure-mgmt-cosmosdb 10.0.0 sends;
``examples/CosmosDBDatabaseAccountGet.json`` shows ``backupPolicy``).

Cosmos DB accounts are versionless: the product document says to copy the key identifier
"except the part after the last forward slash", and ARM answers a versioned URI with 400
BadRequest "Please provide KeyVault Key Uri without version. We will use latest version of the
key" (seen in public: MicrosoftDocs/azure-docs#70179). The account follows a new key version
itself and reports the one it uses in ``keyVaultKeyUriVersion``; keysteward never writes the
key URI, it tracks that version (lag, retention) and reads the backup policy, whose restore
points need the version they were taken with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from azure.mgmt.cosmosdb.models import DatabaseAccountGetResults

from shared.clients import ClientFactory
from shared.errors import NotFoundError, PermanentError
from shared.model import BackupRetention, Binding, ServiceType
from shared.targets.base import (
    CMK_PERMISSIONS,
    RSA_SIZES,
    Health,
    JsonObj,
    UpdateStart,
    enum_text,
    parse_key_uri_loose,
    resource_group_of,
    sdk,
    subscription_of,
)

# customerManagedKeyStatus. The 2026-03-15 spec types it as a plain string ("In case there are
# errors, the property provides troubleshooting guidance"); the texts themselves were published
# as the ``CustomerManagedKeyStatus`` enum of the 2023-09-15 spec (specification/cosmos-db/
# resource-manager/Microsoft.DocumentDB/stable/2023-09-15/cosmos-db.json, read here through its
# verbatim mirror, hashicorp/pandora's CosmosDB v2023_09_15 CustomerManagedKeyStatusConstant): one
# "confirmed" text and revoked texts that all begin with the same sentence and end with a
# "(4xxx)." code. Health matches only on that documented structure; anything else is UNKNOWN.
CONFIRMED = "access to the configured customer managed key confirmed"
REVOKED_PREFIX = "access to your account is currently revoked"
_STATUS_CODE = re.compile(r"\((\d{4})\)\.?\s*$")

# backupPolicy (BackupPolicy / PeriodicModeBackupPolicy / ContinuousModeBackupPolicy in the spec
# above; ContinuousTier enum Continuous7Days | Continuous30Days).
CONTINUOUS_TIERS = {"continuous7days": 7, "continuous30days": 30}
# A continuous policy that does not report its tier is taken as the longer one: conservative,
# not a claim about which tier Azure applied.
CONTINUOUS_UNKNOWN_TIER_DAYS = 30


def status_code(status: str | None) -> int | None:
    """The 4xxx code at the end of a documented revoked ``customerManagedKeyStatus`` text."""
    m = _STATUS_CODE.search((status or "").strip())
    return int(m.group(1)) if m else None


def is_revoked_status(status: str | None) -> bool:
    """Documented structure: every revoked text of the spec's enum begins with this sentence."""
    return (status or "").strip().lower().startswith(REVOKED_PREFIX)


def backup_retention(policy: Any) -> BackupRetention:
    """The account's restore-point retention from ``properties.backupPolicy``.

    Periodic: ``periodicModeProperties.backupRetentionIntervalInHours``. Continuous:
    ``continuousModeProperties.tier``. Anything else (absent policy, unknown type, missing or
    non-positive hours) is unreadable, and the reason says what was seen.
    """
    if policy is None:
        return BackupRetention.unreadable("the account reports no backupPolicy")
    kind = (enum_text(getattr(policy, "type", None)) or "").strip()
    if kind.lower() == "periodic":
        props = getattr(policy, "periodic_mode_properties", None)
        hours = getattr(props, "backup_retention_interval_in_hours", None) if props is not None else None
        if not isinstance(hours, int) or isinstance(hours, bool) or hours <= 0:
            return BackupRetention.unreadable(
                f"periodic backup policy without a usable backupRetentionIntervalInHours ({hours!r})")
        result = BackupRetention(timedelta(hours=hours), f"periodic backups kept {hours} h")
    elif kind.lower() == "continuous":
        props = getattr(policy, "continuous_mode_properties", None)
        tier = enum_text(getattr(props, "tier", None)) if props is not None else None
        if tier is None:
            days = CONTINUOUS_UNKNOWN_TIER_DAYS
            result = BackupRetention(timedelta(days=days), f"continuous restore points (tier not reported, {days}-day"
                                     " assumed)")
        elif tier.lower() in CONTINUOUS_TIERS:
            days = CONTINUOUS_TIERS[tier.lower()]
            result = BackupRetention(timedelta(days=days), f"continuous {days}-day restore points")
        else:
            return BackupRetention.unreadable(f"continuous backup tier '{tier}' is not known")
    else:
        return BackupRetention.unreadable(f"backup policy type '{kind or 'missing'}' is not known")
    migration = getattr(policy, "migration_state", None)
    status = (enum_text(getattr(migration, "status", None)) or "").lower() if migration is not None else ""
    if status and status not in ("completed", "failed"):
        # Mid-migration both kinds of restore points may exist: keep the longer retention.
        window = max(result.window or timedelta(0), timedelta(days=CONTINUOUS_UNKNOWN_TIER_DAYS))
        result = BackupRetention(window, f"{result.description}, migrating to continuous")
    return result


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
    key, _ = parsed  # Azure refuses a versioned key URI on Cosmos DB; the account follows the key
    reported = parse_key_uri_loose(account.key_vault_key_uri_version)
    # keyVaultKeyUriVersion is absent in some api-versions and until the account reports it:
    # then the version in use is unknown (None) and the retention guard stays conservative.
    in_use = reported[1] if reported is not None and reported[0].key_id == key.key_id else None
    rid = account.id or ""
    principal, uid = _principal(account)
    status = account.customer_managed_key_status
    return Binding(
        resource_id=rid,
        service=ServiceType.COSMOS,
        subscription=subscription_of(rid),
        resource_group=resource_group_of(rid),
        name=account.name or "",
        location=account.location or "",
        key=key,
        pinned_version=None,
        in_use_version=in_use,
        updatable=True,
        principal_id=principal,
        user_identity=uid,
        provisioning_state=enum_text(account.provisioning_state),
        health=status,
        access_revoked=is_revoked_status(status),
        tags=dict(account.tags or {}),
        backup=backup_retention(account.backup_policy),
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
        """Never writes: a Cosmos DB account takes no versioned key URI (it follows the key)."""
        raise PermanentError(
            f"Cosmos DB account {binding.name} follows its key itself; keysteward does not write a versioned "
            f"key URI (asked for {version})",
            code="CosmosVersionless",
        )

    def health(self, binding: Binding) -> str:
        status = (binding.health or "").strip().lower()
        if status.startswith(CONFIRMED):
            return Health.OK
        if is_revoked_status(status):
            return Health.REVOKED
        return Health.UNKNOWN
