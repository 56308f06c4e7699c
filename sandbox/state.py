"""The sandbox's state model: vaults with their keys, ARM resources, identities, operations.

Everything here is plain data guarded by ``World.lock``; route handlers in ``keyvault/``,
``arm/`` and ``admin.py`` mutate it, and ``services/`` reads it as time passes.
The one piece of shared semantics lives here too: :func:`key_access`, the question every
simulated service asks when it uses its key ("can identity P wrap/unwrap with this key now?").
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

JsonObj = dict[str, Any]

# Permissions a service identity needs on a vault to use a CMK (seeds: get, wrapKey, unwrapKey).
CMK_PERMISSIONS = ("get", "wrapkey", "unwrapkey")


@dataclass
class KeyVersion:
    version: str
    kty: str  # "RSA" or "RSA-HSM"
    private_key: rsa.RSAPrivateKey
    key_ops: list[str]
    enabled: bool
    created: int  # unix seconds, sandbox time
    updated: int
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.private_key.key_size

    def valid_at(self, now: int) -> bool:
        if self.nbf is not None and now < self.nbf:
            return False
        return not (self.exp is not None and now >= self.exp)


@dataclass
class Key:
    name: str
    versions: dict[str, KeyVersion] = field(default_factory=dict)  # insertion order = creation order
    rotation_policy: JsonObj | None = None
    deleted_date: int | None = None
    scheduled_purge_date: int | None = None
    # (event type, version) pairs already emitted, so NearExpiry/Expired fire once per version.
    emitted: set[tuple[str, str]] = field(default_factory=set)

    @property
    def current(self) -> KeyVersion:
        return next(reversed(self.versions.values()))


@dataclass
class Vault:
    """A Key Vault: its ARM resource view and its data-plane contents."""

    name: str
    subscription: str
    resource_group: str
    location: str
    properties: JsonObj
    tags: dict[str, str] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)  # lower-cased name -> live key
    deleted_keys: dict[str, Key] = field(default_factory=dict)  # lower-cased name -> soft-deleted key

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    @property
    def purge_protection(self) -> bool:
        return bool(self.properties.get("enablePurgeProtection"))

    @property
    def rbac(self) -> bool:
        return bool(self.properties.get("enableRbacAuthorization"))

    def access_policy_permits(self, principal_id: str, needed: tuple[str, ...] = CMK_PERMISSIONS) -> bool:
        if self.rbac:
            # RBAC vaults: role assignments are not simulated; a service identity is assumed granted.
            return True
        granted: set[str] = set()
        for entry in self.properties.get("accessPolicies") or []:
            if str(entry.get("objectId", "")).lower() == principal_id.lower():
                perms = (entry.get("permissions") or {}).get("keys") or []
                granted.update(str(p).lower() for p in perms)
        return "all" in granted or all(p in granted for p in needed)


@dataclass
class ArmResource:
    """A tracked ARM resource (Kusto cluster, Cosmos account, or a generic one)."""

    id: str
    type: str  # e.g. "Microsoft.Kusto/clusters"
    name: str
    subscription: str
    resource_group: str
    location: str
    properties: JsonObj
    tags: dict[str, str] = field(default_factory=dict)
    identity: JsonObj | None = None
    sku: JsonObj | None = None
    kind: str | None = None
    etag: str = field(default_factory=lambda: f'"{uuid.uuid4()}"')
    # Simulation bookkeeping for sandbox.services (never serialised).
    sim: JsonObj = field(default_factory=dict)

    def new_etag(self) -> None:
        self.etag = f'"{uuid.uuid4()}"'


@dataclass
class Operation:
    """An ARM long-running operation, polled through Azure-AsyncOperation."""

    id: str
    subscription: str
    location: str
    provider: str  # "Microsoft.Kusto", "Microsoft.DocumentDB", ...
    resource_id: str
    kind: str  # e.g. "ServiceConfigurationAlter"
    started: datetime
    due: datetime
    status: str = "InProgress"  # InProgress | Succeeded | Failed | Canceled
    error: JsonObj | None = None
    # What to apply to the resource when the operation completes (merged into properties).
    patch: JsonObj = field(default_factory=dict)
    will_fail: bool = False


@dataclass
class AccessResult:
    ok: bool
    version: str | None
    code: str  # "" when ok; else a short cause code (see sandbox.services.status for the per-service mapping)
    reason: str


def principal_id_for(resource_id: str) -> str:
    """A stable principal (object) id for an identity, derived from its resource id."""
    return str(uuid.UUID(hashlib.sha256(resource_id.lower().encode()).hexdigest()[:32]))


def key_access(
    vaults: dict[str, Vault],
    *,
    vault_name: str,
    key_name: str,
    version: str | None,
    principal_id: str | None,
    now: int,
) -> AccessResult:
    """Can ``principal_id`` use ``key_name`` (``version`` or the newest enabled one) right now?

    ``version=None`` means versionless: the newest version that is enabled and valid.
    Returns the version that would be used and, when refused, the cause:
    ``VaultNotFound``, ``KeyNotFound``, ``KeyDeleted``, ``VersionNotFound``, ``KeyDisabled``,
    ``KeyNotYetValid``, ``KeyExpired``, ``AccessDenied``, ``NoIdentity``.
    """
    vault = vaults.get(vault_name.lower())
    if vault is None:
        return AccessResult(False, version, "VaultNotFound", f"Key vault {vault_name} was not found.")
    if key_name.lower() in vault.deleted_keys and key_name.lower() not in vault.keys:
        return AccessResult(False, version, "KeyDeleted", f"Key {key_name} is deleted.")
    key = vault.keys.get(key_name.lower())
    if key is None:
        return AccessResult(False, version, "KeyNotFound", f"Key {key_name} was not found in {vault_name}.")
    if principal_id is None:
        return AccessResult(False, version, "NoIdentity", "The resource has no managed identity.")
    if not vault.access_policy_permits(principal_id):
        return AccessResult(
            False,
            version,
            "AccessDenied",
            f"Identity {principal_id} lacks get/wrapKey/unwrapKey on key vault {vault_name}.",
        )
    if version:
        kv = key.versions.get(version)
        if kv is None:
            return AccessResult(False, version, "VersionNotFound", f"Key version {version} was not found.")
    else:
        candidates = [v for v in key.versions.values() if v.enabled and v.valid_at(now)]
        if not candidates:
            return AccessResult(False, None, "KeyDisabled", f"Key {key_name} has no enabled, valid version.")
        kv = candidates[-1]
    if not kv.enabled:
        return AccessResult(False, kv.version, "KeyDisabled", f"Key version {kv.version} is disabled.")
    if kv.nbf is not None and now < kv.nbf:
        return AccessResult(False, kv.version, "KeyNotYetValid", f"Key version {kv.version} is not yet valid.")
    if kv.exp is not None and now >= kv.exp:
        return AccessResult(False, kv.version, "KeyExpired", f"Key version {kv.version} has expired.")
    return AccessResult(True, kv.version, "", "")
