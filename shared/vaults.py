"""Adapter over azure-mgmt-keyvault for what the preflight check reads about vaults:
soft delete, purge protection, deleted-vault retention, region, permission model and
access policies. Read-only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.mgmt.keyvault.models import Vault

from shared.clients import ClientFactory
from shared.keyuri import norm_vault_url
from shared.targets.base import enum_text, resource_group_of, sdk


@dataclass(frozen=True)
class VaultInfo:
    name: str
    id: str
    subscription: str
    resource_group: str
    location: str
    url: str  # normalised vault URL (as in KEYSTEWARD_VAULTS)
    soft_delete: bool
    purge_protection: bool
    retention_days: int
    rbac: bool
    # object id (lower-case) -> key permissions (lower-case)
    key_permissions: dict[str, frozenset[str]] = field(default_factory=dict)

    def grants(self, object_id: str | None, needed: Sequence[str]) -> bool:
        if object_id is None:
            return False
        perms = self.key_permissions.get(object_id.lower(), frozenset())
        return "all" in perms or all(p.lower() in perms for p in needed)


def locate(
    clients: ClientFactory, subscriptions: Sequence[str], urls: Sequence[str]
) -> Iterator[tuple[str, str, Vault]]:
    """``(subscription, normalised URL, vault)`` for each vault behind ``urls`` found in
    ``subscriptions`` (one ``vaults.list_by_subscription`` per subscription, lazily: a caller
    that stops early reads no further subscription)."""
    wanted = {norm_vault_url(u) for u in urls}
    for sub in subscriptions:
        with sdk(f"list key vaults in {sub}"):
            vaults = list(clients.keyvault_mgmt(sub).vaults.list_by_subscription())
        for vault in vaults:
            url = norm_vault_url(vault.properties.vault_uri if vault.properties else None)
            if vault.properties is not None and url in wanted:
                yield sub, url, vault


def find_vaults(clients: ClientFactory, subscriptions: Sequence[str], urls: Sequence[str]) -> dict[str, VaultInfo]:
    """The vaults behind ``urls`` (normalised vault URLs), found in ``subscriptions``.

    A vault that is in none of the subscriptions is absent from the result.
    """
    found: dict[str, VaultInfo] = {}
    for sub, url, vault in locate(clients, subscriptions, urls):
        props = vault.properties
        if props is None:
            continue
        perms: dict[str, frozenset[str]] = {}
        for entry in props.access_policies or []:
            # The generated model is a Mapping: its ``keys`` attribute is the dict method, so
            # read the wire field.
            wire: Mapping[str, Any] = entry.permissions or {}
            keys = wire.get("keys") or []
            oid = str(entry.object_id).lower()
            perms[oid] = perms.get(oid, frozenset()) | frozenset(
                (enum_text(k) or "").lower() for k in keys)
        rid = vault.id or ""
        found[url] = VaultInfo(
            name=vault.name or "",
            id=rid,
            subscription=sub,
            resource_group=resource_group_of(rid),
            location=(vault.location or "").lower().replace(" ", ""),
            url=url,
            # Soft delete is always on for vaults created since 2020; the property may be absent.
            soft_delete=props.enable_soft_delete is not False,
            purge_protection=bool(props.enable_purge_protection),
            retention_days=int(props.soft_delete_retention_in_days or 90),
            rbac=bool(props.enable_rbac_authorization),
            key_permissions=perms,
        )
    return found
