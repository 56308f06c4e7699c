"""Preflight: is every vault, key and bound service set up the way Azure requires?

Per vault: soft delete and purge protection on (and the 90-day deleted-vault retention that
Cosmos DB for PostgreSQL needs). Per key and bound service: key type and size accepted, nbf in
the past and exp in the future with margin, the service in the vault's region (Kusto), the
service identity granted get/wrapKey/unwrapKey by access policy (or "RBAC: not verifiable"),
and a rotation policy where keysteward is to rotate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.clock import Clock
from shared.config import Settings
from shared.errors import KeystewardError
from shared.inventory import Inventory, by_key
from shared.keyvault import KeyStore
from shared.model import Binding, KeyVersion
from shared.reconcile import ACCEPTED_KEY_TYPES
from shared.rotation import managed_max_age
from shared.targets import (
    accepted_key_sizes,
    recommended_key_size,
    vault_permissions,
    vault_retention_days,
    vault_same_region,
)
from shared.vaults import VaultInfo


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warning | violation
    scope: str  # vault URL, key URI or resource id
    check: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "scope": self.scope, "check": self.check, "message": self.message}


def _vault_findings(vault_url: str, info: VaultInfo | None, bindings: list[Binding]) -> list[Finding]:
    if info is None:
        return [Finding("violation", vault_url, "vault", "vault not found in the watched subscriptions")]
    out = [
        Finding("ok" if info.soft_delete else "violation", vault_url, "soft-delete",
                "soft delete on" if info.soft_delete else "soft delete is off"),
        Finding("ok" if info.purge_protection else "violation", vault_url, "purge-protection",
                "purge protection on" if info.purge_protection else "purge protection is off (required by every "
                "CMK service)"),
    ]
    needs = {b.service: days for b in bindings if (days := vault_retention_days(b.service)) is not None}
    if needs:
        service, days = max(needs.items(), key=lambda item: item[1])
        good = info.retention_days >= days
        out.append(Finding("ok" if good else "violation", vault_url, "deleted-vault-retention",
                           f"soft-delete retention {info.retention_days} days"
                           + ("" if good else f" ({service.value} needs {days})")))
    return out


def _key_findings(
    current: KeyVersion, bindings: list[Binding], info: VaultInfo | None, *, now: datetime, settings: Settings,
    rotation_policy: Callable[[], list[str]],
) -> list[Finding]:
    key_uri = current.ref.versionless().uri
    out: list[Finding] = []
    if current.not_before is not None and current.not_before > now:
        out.append(Finding("violation", key_uri, "not-before",
                           f"current version not valid before {current.not_before}"))
    if current.expires_on is not None:
        if current.expires_on <= now:
            out.append(Finding("violation", key_uri, "expiry", "current version has expired"))
        elif current.expires_on <= now + settings.expiry_margin:
            out.append(Finding("violation", key_uri, "expiry", f"current version expires {current.expires_on}"))
    if not current.enabled:
        out.append(Finding("violation", key_uri, "enabled", "current version is disabled"))
    for b in bindings:
        rid = b.resource_id
        if current.key_type is not None and current.key_type not in ACCEPTED_KEY_TYPES:
            out.append(Finding("violation", rid, "key-type", f"key type {current.key_type} is not RSA"))
        if current.key_size is not None:
            accepted = accepted_key_sizes(b.service, settings.key_sizes)
            if current.key_size not in accepted:
                sizes = ", ".join(str(s) for s in sorted(accepted))
                out.append(Finding("violation", rid, "key-size",
                                   f"RSA {current.key_size} is not accepted by {b.service.value} (accepts {sizes})"))
            else:
                want = recommended_key_size(b.service)
                if want and current.key_size < want:
                    out.append(Finding("warning", rid, "key-size",
                                       f"RSA {current.key_size}: {b.service.value} recommends {want} or more"))
        if info is not None:
            if vault_same_region(b.service) and b.location and info.location and (
                b.location.lower().replace(" ", "") != info.location
            ):
                out.append(Finding("violation", rid, "region",
                                   f"{b.service.value} resource in {b.location}, vault in {info.location}: "
                                   "its docs need the same region"))
            needed = vault_permissions(b.service)
            if info.rbac:
                out.append(Finding("warning", rid, "access", "RBAC: not verifiable (vault uses Azure RBAC)"))
            elif b.principal_id is None:
                out.append(Finding("warning", rid, "access", "identity not known (first-party or missing identity)"))
            elif not info.grants(b.principal_id, needed):
                out.append(Finding("violation", rid, "access",
                                   f"identity {b.principal_id} lacks {'/'.join(needed)} on the vault"))
    if managed_max_age(current.ref.versionless(), current, settings) is not None:
        policy = rotation_policy()
        if not policy:
            out.append(Finding("warning", key_uri, "rotation-policy",
                               "keysteward rotates this key but it has no Key Vault rotation policy "
                               "(expiry time for new versions is not set)"))
    return out


class Preflight:
    """The checks over live facts: the inventory, the key store and the vaults' properties."""

    def __init__(self, *, settings: Settings, clock: Clock, keys: KeyStore, inventory: Inventory,
                 vaults: Callable[[], Mapping[str, VaultInfo]]) -> None:
        self._settings = settings
        self._clock = clock
        self._keys = keys
        self._inventory = inventory
        self._vaults = vaults  # vault URL -> its properties, for the vaults found in the subscriptions

    def check(self) -> dict[str, Any]:
        """Every finding, and ``ok`` False when any is a violation."""
        settings = self._settings
        bindings = [b for b in self._inventory.bindings(settings.subscriptions) if b.key.vault_url in settings.vaults]
        grouped = by_key(bindings)
        vaults = self._vaults()
        findings: list[Finding] = []
        for vault_url in settings.vaults:
            findings.extend(_vault_findings(vault_url, vaults.get(vault_url),
                                            [b for b in bindings if b.key.vault_url == vault_url]))
        now = self._clock.now()
        for group in grouped.values():
            key = group[0].key
            try:
                current = self._keys.current(key)
            except KeystewardError as err:
                findings.append(Finding("violation", key.uri, "key", f"cannot read key: {err}"))
                continue
            versionless = current.ref.versionless()
            findings.extend(_key_findings(current, group, vaults.get(key.vault_url), now=now, settings=settings,
                                          rotation_policy=functools.partial(self._keys.rotation_policy, versionless)))
        return {
            "ok": not any(f.level == "violation" for f in findings),
            "violations": sum(1 for f in findings if f.level == "violation"),
            "warnings": sum(1 for f in findings if f.level == "warning"),
            "findings": [f.as_dict() for f in findings],
        }
