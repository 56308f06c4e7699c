"""Adapter over Key Vault: keys (azure-keyvault-keys) and vault properties / access policies
(azure-mgmt-keyvault). SDK errors are translated here, once, into Transient/Permanent errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from azure.keyvault.keys import KeyProperties, KeyRotationLifetimeAction, KeyRotationPolicy, KeyVaultKey

from shared.clients import ClientFactory
from shared.errors import PermanentError
from shared.errors import azure_errors as _sdk
from shared.model import KeyRef, KeyVersion


def _version_from(vault_url: str, props: KeyProperties, key: KeyVaultKey | None = None) -> KeyVersion:
    size = None
    kty = None
    if key is not None and key.key is not None:
        raw = key.key_type
        kty = str(getattr(raw, "value", raw)) if raw is not None else None
        n = getattr(key.key, "n", None)
        size = len(n) * 8 if n else None
    return KeyVersion(
        ref=KeyRef(vault_url, props.name or "", props.version),
        enabled=bool(props.enabled),
        created=props.created_on,
        not_before=props.not_before,
        expires_on=props.expires_on,
        key_type=kty,
        key_size=size,
        tags=dict(props.tags or {}),
    )


@dataclass(frozen=True)
class DeletedKeyInfo:
    ref: KeyRef
    deleted_on: datetime | None
    scheduled_purge: datetime | None


class KeyStore(Protocol):
    """What the core needs from Key Vault's keys."""

    def current(self, key: KeyRef) -> KeyVersion: ...
    def version(self, key: KeyRef) -> KeyVersion: ...
    def versions(self, key: KeyRef) -> list[KeyVersion]: ...
    def set_enabled(self, key: KeyRef, *, enabled: bool, tags: Mapping[str, str] | None = None) -> KeyVersion: ...
    def set_tags(self, key: KeyRef, tags: Mapping[str, str]) -> KeyVersion: ...
    def rotate(self, key: KeyRef) -> KeyVersion: ...
    def deleted(self, key: KeyRef) -> DeletedKeyInfo | None: ...
    def recover(self, key: KeyRef) -> None: ...
    def list_keys(self, vault_url: str) -> list[KeyRef]: ...
    def rotation_policy(self, key: KeyRef) -> list[str]: ...
    def rotation_policy_doc(self, key: KeyRef) -> dict[str, Any] | None: ...
    def set_rotation_policy_doc(self, key: KeyRef, doc: Mapping[str, Any]) -> None: ...


class SdkKeyStore:
    """:class:`KeyStore` over ``KeyClient``."""

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def current(self, key: KeyRef) -> KeyVersion:
        """The newest version. Key Vault refuses ``get`` (403) when that version is disabled:
        then the version listing says which it is (without its size)."""
        try:
            with _sdk(f"get key {key.versionless()}"):
                got = self._clients.keys(key.vault_url).get_key(key.name)
        except PermanentError as err:
            if err.status != 403:
                raise
            versions = self.versions(key)
            if not versions:
                raise
            return versions[-1]
        return _version_from(key.vault_url, got.properties, got)

    def version(self, key: KeyRef) -> KeyVersion:
        with _sdk(f"get key {key}"):
            got = self._clients.keys(key.vault_url).get_key(key.name, key.version)
        return _version_from(key.vault_url, got.properties, got)

    def versions(self, key: KeyRef) -> list[KeyVersion]:
        """Every version, oldest first (by creation time). Sizes are not listed by Key Vault."""
        with _sdk(f"list versions of {key.versionless()}"):
            props = list(self._clients.keys(key.vault_url).list_properties_of_key_versions(key.name))
        out = [_version_from(key.vault_url, p) for p in props]
        # Stable sort: versions created within the same second keep the service's listing order.
        return sorted(out, key=lambda v: v.created.timestamp() if v.created else 0.0)

    def set_enabled(self, key: KeyRef, *, enabled: bool, tags: Mapping[str, str] | None = None) -> KeyVersion:
        with _sdk(f"{'enable' if enabled else 'disable'} {key}"):
            got = self._clients.keys(key.vault_url).update_key_properties(
                key.name, key.version, enabled=enabled, tags=dict(tags) if tags is not None else None
            )
        return _version_from(key.vault_url, got.properties, got)

    def set_tags(self, key: KeyRef, tags: Mapping[str, str]) -> KeyVersion:
        with _sdk(f"tag {key}"):
            got = self._clients.keys(key.vault_url).update_key_properties(key.name, key.version, tags=dict(tags))
        return _version_from(key.vault_url, got.properties, got)

    def rotate(self, key: KeyRef) -> KeyVersion:
        with _sdk(f"rotate {key.versionless()}"):
            got = self._clients.keys(key.vault_url).rotate_key(key.name)
        return _version_from(key.vault_url, got.properties, got)

    def deleted(self, key: KeyRef) -> DeletedKeyInfo | None:
        from shared.errors import NotFoundError  # noqa: PLC0415 - local to keep the import list short

        try:
            with _sdk(f"get deleted key {key.versionless()}"):
                got = self._clients.keys(key.vault_url).get_deleted_key(key.name)
        except NotFoundError:
            return None
        return DeletedKeyInfo(key.versionless(), got.deleted_date, got.scheduled_purge_date)

    def recover(self, key: KeyRef) -> None:
        with _sdk(f"recover {key.versionless()}"):
            self._clients.keys(key.vault_url).begin_recover_deleted_key(key.name).result()

    def list_keys(self, vault_url: str) -> list[KeyRef]:
        with _sdk(f"list keys of {vault_url}"):
            names = [p.name for p in self._clients.keys(vault_url).list_properties_of_keys() if p.name]
        return [KeyRef(vault_url, n) for n in names]

    def rotation_policy(self, key: KeyRef) -> list[str]:
        """The policy's lifetime actions as text (e.g. ``Rotate after P90D``); empty when none."""
        from shared.errors import NotFoundError  # noqa: PLC0415

        try:
            with _sdk(f"get rotation policy of {key.versionless()}"):
                policy = self._clients.keys(key.vault_url).get_key_rotation_policy(key.name)
        except NotFoundError:
            return []
        out = []
        for action in policy.lifetime_actions or []:
            when = action.time_after_create or action.time_before_expiry or "?"
            kind = getattr(action.action, "value", action.action)
            out.append(f"{kind} {'after' if action.time_after_create else 'before expiry'} {when}")
        return out

    # Rotation policy as data (Key Vault data plane, azure-rest-api-specs
    # specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.5/keys.json, KeyRotationPolicy:
    # lifetimeActions[{trigger: {timeAfterCreate | timeBeforeExpiry}, action: {type: Rotate | Notify}}],
    # attributes.expiryTime). The SDK (azure-keyvault-keys 4.11) maps these to KeyRotationPolicy.
    def rotation_policy_doc(self, key: KeyRef) -> dict[str, Any] | None:
        """The key's rotation policy as JSON-ready data (``lifetimeActions`` of ``action``,
        ``timeAfterCreate``, ``timeBeforeExpiry``; ``expiresIn``), or ``None`` when the key has none."""
        from shared.errors import NotFoundError  # noqa: PLC0415

        try:
            with _sdk(f"get rotation policy of {key.versionless()}"):
                policy = self._clients.keys(key.vault_url).get_key_rotation_policy(key.name)
        except NotFoundError:
            return None
        return {
            "lifetimeActions": [
                {"action": str(getattr(a.action, "value", a.action)), "timeAfterCreate": a.time_after_create,
                 "timeBeforeExpiry": a.time_before_expiry}
                for a in policy.lifetime_actions or []
            ],
            "expiresIn": policy.expires_in,
        }

    def set_rotation_policy_doc(self, key: KeyRef, doc: Mapping[str, Any]) -> None:
        """Replaces the key's rotation policy with ``doc`` (the form :meth:`rotation_policy_doc` returns)."""
        actions = [KeyRotationLifetimeAction(str(a["action"]), time_after_create=a.get("timeAfterCreate"),
                                             time_before_expiry=a.get("timeBeforeExpiry"))
                   for a in doc.get("lifetimeActions") or []]
        policy = KeyRotationPolicy(lifetime_actions=actions, expires_in=doc.get("expiresIn"))
        with _sdk(f"set rotation policy of {key.versionless()}"):
            self._clients.keys(key.vault_url).update_key_rotation_policy(key.name, policy)
