"""The domain's value objects: frozen dataclasses, no I/O, no SDK types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, order=True)
class KeyRef:
    """A Key Vault key, optionally one version of it.

    ``vault_url`` is normalised: scheme ``https``, lower-case host, no default port, no
    trailing slash (``https://myvault.vault.azure.net``). ``version`` is ``None`` for the
    whole key (versionless).
    """

    vault_url: str
    name: str
    version: str | None = None

    @property
    def vault_name(self) -> str:
        host = self.vault_url.split("://", 1)[-1].split("/", 1)[0]
        return host.split(".", 1)[0].split(":", 1)[0]

    @property
    def uri(self) -> str:
        base = f"{self.vault_url}/keys/{self.name}"
        return f"{base}/{self.version}" if self.version else base

    def versionless(self) -> KeyRef:
        return KeyRef(self.vault_url, self.name, None)

    def with_version(self, version: str) -> KeyRef:
        return KeyRef(self.vault_url, self.name, version)

    @property
    def key_id(self) -> str:
        """Identity of the key regardless of version (case-insensitive in Azure)."""
        return f"{self.vault_url}/keys/{self.name}".lower()

    def __str__(self) -> str:
        return self.uri


class ServiceType(StrEnum):
    KUSTO = "kusto"
    COSMOS = "cosmos"
    POSTGRES = "postgres"  # Cosmos DB for PostgreSQL: CMK fixed at creation
    ENERGY = "energy"  # Azure Data Manager for Energy: CMK fixed at creation
    KUSTO_DATABASE = "kusto-database"  # a Data Explorer database with its own key


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key as Key Vault reports it."""

    ref: KeyRef  # always versioned
    enabled: bool
    created: datetime | None
    not_before: datetime | None
    expires_on: datetime | None
    key_type: str | None = None  # "RSA", "RSA-HSM", ...
    key_size: int | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def version(self) -> str:
        if self.ref.version is None:
            raise ValueError("a KeyVersion always names its version")
        return self.ref.version


@dataclass(frozen=True)
class BackupRetention:
    """How long a service keeps restore points that need the key version they were taken with.

    ``window`` is the retention read from the resource (``None`` when it could not be read:
    ``reason`` then says why and the retention guard keeps every version the resource may
    have used). ``description`` names the policy in words for verdicts ("continuous 30-day
    restore points", "periodic backups kept 48 h").
    """

    window: timedelta | None
    description: str
    reason: str | None = None

    @property
    def readable(self) -> bool:
        return self.window is not None

    @staticmethod
    def unreadable(reason: str) -> BackupRetention:
        return BackupRetention(None, "backup policy unknown", reason)


@dataclass(frozen=True)
class Binding:
    """A service resource that encrypts with a Key Vault key: the unit keysteward keeps current.

    ``pinned_version`` is the version named in the resource's CMK settings, ``None`` when the
    binding is versionless ("always use current key version"). ``in_use_version`` is what the
    service reports it uses (Cosmos ``keyVaultKeyUriVersion``); ``None`` means unknown.
    ``updatable`` is False for services whose CMK is fixed at creation (PostgreSQL, Energy).
    """

    resource_id: str
    service: ServiceType
    subscription: str
    resource_group: str
    name: str
    location: str
    key: KeyRef  # versionless reference to the key
    pinned_version: str | None
    in_use_version: str | None
    updatable: bool
    principal_id: str | None = None
    user_identity: str | None = None
    provisioning_state: str | None = None
    state: str | None = None  # Kusto cluster state
    health: str | None = None  # Cosmos customerManagedKeyStatus / Kusto stateReason / database suspension
    # The service reports its key access revoked and accepts no key change until it returns
    # (Cosmos DB: only an identity change or deletion).
    access_revoked: bool = False
    # Kusto keyVaultProperties.federatedIdentityClientId (cross-tenant CMK): carried unchanged
    # into every update, which changes only the version.
    federated_client_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Restore points that need the key version in use when they were taken (Cosmos DB backup
    # policy, PostgreSQL point-in-time restore). ``None``: the service keeps no such backups,
    # or its adapter does not read them (see shared.retention.backup_of for the defaults).
    backup: BackupRetention | None = field(default=None, compare=False)

    @property
    def versionless(self) -> bool:
        return self.pinned_version is None

    @property
    def effective_version(self) -> str | None:
        """The version the service uses, as far as is known."""
        return self.pinned_version or self.in_use_version

    def held(self, hold_tag: str) -> bool:
        return any(k.lower() == hold_tag.lower() and v.strip().lower() not in ("", "false", "0")
                   for k, v in self.tags.items())
