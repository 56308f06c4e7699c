"""Seeds: the constants (API versions and resource types the seeding requests use), the errors, and
the compiled plan a seed document becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass



JsonObj = dict[str, Any]

ARM_HOST = "management.azure.com"
# API versions the installed SDKs send (azure-mgmt-keyvault 14.1.0, -kusto 4.0.0, -cosmosdb 10.0.0).
API_VAULT = "2026-05-15"
API_KUSTO = "2025-02-14"
API_COSMOS = "2026-03-15"
API_KEYS = "2025-07-01"
API_IDENTITY = "2023-01-31"
# Cosmos DB for PostgreSQL: the only api-version with dataEncryption (postgresqlhsc 2023-03-02-preview).
API_POSTGRES = "2023-03-02-preview"
# Data Manager for Energy: oep stable 2024-05-21 (encryption.keyVaultProperties).
API_ENERGY = "2024-05-21"

KUSTO_TYPE = "Microsoft.Kusto/clusters"
COSMOS_TYPE = "Microsoft.DocumentDB/databaseAccounts"
POSTGRES_TYPE = "Microsoft.DBforPostgreSQL/serverGroupsv2"
ENERGY_TYPE = "Microsoft.OpenEnergyPlatform/energyServices"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"

DEFAULT_KEY_PERMISSIONS = ["get", "list", "wrapKey", "unwrapKey"]
DEMO_PATH = Path(__file__).with_name("demo.json")

_RESOURCE_SECTIONS = {
    "kusto_clusters": KUSTO_TYPE,
    "cosmos_accounts": COSMOS_TYPE,
    "postgresql_clusters": POSTGRES_TYPE,
    "energy_instances": ENERGY_TYPE,
}
_TOP_FIELDS = {"description", "subscriptions", "identities", "vaults", "consumers", *_RESOURCE_SECTIONS}


class SeedError(ValueError):
    """The seed document is wrong; ``field`` is a path such as ``vaults[1].keys[0].size``."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


class SeedApplyError(RuntimeError):
    """A request made while seeding was refused; the world keeps what was applied before it."""

    def __init__(self, what: str, status: int, body: bytes) -> None:
        super().__init__(f"seeding {what} failed with HTTP {status}: {body[:500]!r}")
        self.what = what
        self.status = status


# ---- the compiled plan ----------------------------------------------------------------------
@dataclass(frozen=True)
class IdentitySpec:
    name: str
    subscription: str
    resource_group: str
    location: str

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{IDENTITY_TYPE}/{self.name}"
        )


@dataclass(frozen=True)
class VersionSpec:
    label: str
    age: timedelta
    exp: timedelta | None
    nbf: timedelta | None
    enabled: bool
    tags: dict[str, str]


@dataclass(frozen=True)
class KeySpec:
    name: str
    kty: str
    size: int
    versions: list[VersionSpec]
    rotation_policy: JsonObj | None


@dataclass(frozen=True)
class PolicySpec:
    identity: str | None  # identity name (resolved to its principal id)
    object_id: str | None
    keys: list[str]


@dataclass(frozen=True)
class VaultSpec:
    name: str
    subscription: str
    resource_group: str
    location: str
    sku: str
    soft_delete_retention_days: int
    purge_protection: bool
    rbac: bool
    public_network_access: str
    policies: list[PolicySpec]
    keys: list[KeySpec]
    tags: dict[str, str]


@dataclass(frozen=True)
class ResourceSpec:
    type: str
    name: str
    subscription: str
    resource_group: str
    location: str
    identity: str  # identity name or "system"
    vault: str
    key: str
    version: str | None  # a version label; None = versionless
    tags: dict[str, str]
    sku: JsonObj | None
    backup_policy: JsonObj | None = None  # Cosmos DB: properties.backupPolicy as ARM takes it


@dataclass
class Plan:
    subscriptions: list[str]
    identities: list[IdentitySpec]
    vaults: list[VaultSpec]
    resources: list[ResourceSpec]
    consumers: list[ConsumerSpec] = field(default_factory=list)


@dataclass(frozen=True)
class ConsumerSpec:
    """An unknown consumer: ``principal_id`` unwraps with ``vault/key`` version ``label`` every ``every_s``."""

    principal_id: str
    vault: str
    key: str
    label: str
    every_s: float


@dataclass
class SeedResult:
    """What seeding built: version labels resolved to real version ids, and timings."""

    versions: dict[str, str] = field(default_factory=dict)  # "vault/key/label" -> version id
    key_ids: dict[str, str] = field(default_factory=dict)  # "vault/key/label" -> full key id
    identities: dict[str, JsonObj] = field(default_factory=dict)  # name -> {id, principalId, clientId}
    resources: dict[str, str] = field(default_factory=dict)  # name -> resource id
    vault_urls: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> JsonObj:
        return {
            "versions": dict(self.versions),
            "key_ids": dict(self.key_ids),
            "identities": dict(self.identities),
            "resources": dict(self.resources),
            "vault_urls": dict(self.vault_urls),
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
        }


