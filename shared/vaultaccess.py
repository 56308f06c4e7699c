"""Adapter over azure-mgmt-keyvault for what a runbook changes on a vault: its access policy.

:class:`VaultAccess` finds a vault by URL in the watched subscriptions, reads its access
policy entries fresh, and adds or removes entries with ``vaults.update_access_policy``
(``add`` unions permissions into an entry, ``remove`` takes the listed permissions away and
drops an entry left with none). SDK errors are translated here, once, into
Transient/Permanent errors.

Access policies are vault-wide: removing an identity's entry takes away its access to every
key in the vault, not only to the key being revoked. Vaults on the Azure RBAC permission
model have no access policy to edit; :meth:`VaultAccess.vault` reports ``rbac=True`` and the
caller decides (the runbooks refuse ``remove-access`` there).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    Permissions,
    Vault,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)

from shared.clients import ClientFactory
from shared.errors import NotFoundError
from shared.errors import azure_errors as _sdk
from shared.keyuri import norm_vault_url
from shared.targets.base import resource_group_of
from shared.vaults import locate

# Permission kinds of an access policy entry, as the REST API names them.
PERMISSION_KINDS = ("keys", "secrets", "certificates", "storage")
# The SDK's model attribute per kind: its models are mappings, so ``keys`` is renamed.
_SDK_ATTRIBUTE = {"keys": "keys_property", "secrets": "secrets", "certificates": "certificates", "storage": "storage"}


@dataclass(frozen=True)
class AccessEntry:
    """One access policy entry: who (tenant, object id, optional application id for a compound
    identity) and what (permission names per kind, as the vault lists them)."""

    tenant_id: str
    object_id: str
    application_id: str | None = None
    permissions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def same_principal(self, other: AccessEntry) -> bool:
        """Key Vault matches entries by (objectId, applicationId), case-insensitively."""
        return (self.object_id.lower() == other.object_id.lower()
                and (self.application_id or "").lower() == (other.application_id or "").lower())

    def covers(self, other: AccessEntry) -> bool:
        """Whether this entry grants at least every permission of ``other``."""
        for kind, wanted in other.permissions.items():
            have = {p.lower() for p in self.permissions.get(kind, ())}
            if not {p.lower() for p in wanted} <= have:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenantId": self.tenant_id,
            "objectId": self.object_id,
            "applicationId": self.application_id,
            "permissions": {k: list(v) for k, v in self.permissions.items() if v},
        }

    @staticmethod
    def from_dict(raw: Mapping[str, Any]) -> AccessEntry:
        perms = raw.get("permissions") or {}
        return AccessEntry(
            tenant_id=str(raw.get("tenantId") or ""),
            object_id=str(raw["objectId"]),
            application_id=str(raw["applicationId"]) if raw.get("applicationId") else None,
            permissions={str(k): tuple(str(p) for p in v) for k, v in dict(perms).items() if v},
        )

    def to_sdk(self) -> AccessPolicyEntry:
        perms = {_SDK_ATTRIBUTE[k]: list(v) for k, v in self.permissions.items() if k in PERMISSION_KINDS and v}
        return AccessPolicyEntry(
            tenant_id=self.tenant_id,
            object_id=self.object_id,
            application_id=self.application_id,
            permissions=Permissions(**perms),
        )


@dataclass(frozen=True)
class VaultRef:
    """Where a vault lives in ARM, and its permission model."""

    url: str  # normalised vault URL, as in KEYSTEWARD_VAULTS
    subscription: str
    resource_group: str
    name: str
    rbac: bool


def _text(value: object) -> str:
    return str(getattr(value, "value", value))


def _entries(vault: Vault) -> list[AccessEntry]:
    props = vault.properties
    out: list[AccessEntry] = []
    for entry in (props.access_policies if props is not None else None) or []:
        perms: dict[str, tuple[str, ...]] = {}
        if entry.permissions is not None:
            for kind in PERMISSION_KINDS:
                values = getattr(entry.permissions, _SDK_ATTRIBUTE[kind], None) or []
                if values:
                    perms[kind] = tuple(_text(v) for v in values)
        out.append(AccessEntry(
            tenant_id=str(entry.tenant_id or ""),
            object_id=str(entry.object_id or ""),
            application_id=str(entry.application_id) if entry.application_id else None,
            permissions=perms,
        ))
    return out


class VaultAccess:
    """Reads and edits vault access policies through ``KeyVaultManagementClient``.

    ``subscriptions`` are searched (``vaults.list_by_subscription``) to find a vault by URL;
    where a vault lives is cached for the life of the instance (it never moves), its access
    policy is always read fresh.
    """

    def __init__(self, clients: ClientFactory, *, subscriptions: Sequence[str]) -> None:
        self._clients = clients
        self._subscriptions = tuple(subscriptions)
        self._where: dict[str, VaultRef] = {}
        self._lock = threading.Lock()

    def vault(self, vault_url: str) -> VaultRef:
        """Where ``vault_url`` lives; raises NotFoundError if no watched subscription holds it."""
        wanted = norm_vault_url(vault_url)
        with self._lock:
            known = self._where.get(wanted)
        if known is not None:
            return known
        for sub, url, vault in locate(self._clients, self._subscriptions, [wanted]):
            ref = VaultRef(
                url=url, subscription=sub, resource_group=resource_group_of(vault.id or ""),
                name=vault.name or "", rbac=bool(vault.properties and vault.properties.enable_rbac_authorization),
            )
            with self._lock:
                self._where[wanted] = ref
            return ref
        raise NotFoundError(
            f"vault {vault_url} is in none of the watched subscriptions", code="VaultNotFound", status=404
        )

    def entries(self, vault: VaultRef) -> list[AccessEntry]:
        """The vault's access policy entries, read now."""
        with _sdk(f"read access policy of vault {vault.name}"):
            got = self._clients.keyvault_mgmt(vault.subscription).vaults.get(vault.resource_group, vault.name)
        return _entries(got)

    def _update(self, vault: VaultRef, kind: AccessPolicyUpdateKind, entries: Sequence[AccessEntry]) -> None:
        if not entries:
            return
        params = VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[e.to_sdk() for e in entries])
        )
        with _sdk(f"{kind.value} access policy entries on vault {vault.name}"):
            self._clients.keyvault_mgmt(vault.subscription).vaults.update_access_policy(
                vault.resource_group, vault.name, kind, params
            )

    def remove(self, vault: VaultRef, entries: Sequence[AccessEntry]) -> None:
        """Removes ``entries`` (each with every permission it lists, so the whole entry goes)."""
        self._update(vault, AccessPolicyUpdateKind.REMOVE, entries)

    def add(self, vault: VaultRef, entries: Sequence[AccessEntry]) -> None:
        """Adds ``entries`` (unioned into an existing entry for the same principal)."""
        self._update(vault, AccessPolicyUpdateKind.ADD, entries)


__all__ = ["PERMISSION_KINDS", "AccessEntry", "VaultAccess", "VaultRef"]
