"""Simulated services: resource types and the status texts a service reports when its key cannot
be used (Kusto's state, Cosmos DB's ``customerManagedKeyStatus``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.state import AccessResult

if TYPE_CHECKING:
    pass



JsonObj = dict[str, Any]

KUSTO_CLUSTERS = "microsoft.kusto/clusters"
KUSTO_DATABASES = "microsoft.kusto/clusters/databases"
COSMOS_ACCOUNTS = "microsoft.documentdb/databaseaccounts"
POSTGRES_CLUSTERS = "microsoft.dbforpostgresql/servergroupsv2"
ENERGY_SERVICES = "microsoft.openenergyplatform/energyservices"
USER_IDENTITIES = "microsoft.managedidentity/userassignedidentities"

# Azure Cosmos DB's first-party application ("Azure Cosmos DB", app id a232010e-...). A vault
# grants it access by this id when an account uses defaultIdentity=FirstPartyIdentity; the
# sandbox uses the app id as its object id in every tenant so access policies can name it.
COSMOS_FIRST_PARTY_PRINCIPAL = "a232010e-820c-4083-83bb-3ace5fc29d0b"

# Kusto's State enum has no Suspended/Inaccessible member. ADX suspends a cluster that loses
# its key and resumes it when access returns; of the documented values, "Stopped" is the one
# that means "not serving, data kept, resumable", whereas "Unavailable" reads as a platform
# fault. ``stateReason`` says that the key is the cause.
KUSTO_SUSPENDED_STATE = "Stopped"

# customerManagedKeyStatus texts: the values of the ``CustomerManagedKeyStatus`` enum published in
# azure-rest-api-specs specification/cosmos-db/resource-manager/Microsoft.DocumentDB/stable/
# 2023-09-15/cosmos-db.json (read through its verbatim mirror, hashicorp/pandora's CosmosDB
# v2023_09_15 CustomerManagedKeyStatusConstant); 2026-03-15 types the property as a plain string. Which cause
# Azure reports with which text is the troubleshooting guide's mapping (cmk-troubleshooting-guide:
# "the key is disabled or expired" falls under 4002); a not-yet-valid key is mapped to 4002 too,
# and a deleted key or version to 4003: guesses by analogy.
COSMOS_CMK_CONFIRMED = "Access to the configured customer managed key confirmed."

_COSMOS_GUIDE = "https://learn.microsoft.com/en-us/azure/cosmos-db/cmk-troubleshooting-guide"
_COSMOS_REVOKED = "Access to your account is currently revoked"
_COSMOS_MORE = "for more details about this error and how to restore access to your account please visit"


def _cosmos_text(because: str, anchor: str, code: int) -> tuple[int, str]:
    return code, f"{_COSMOS_REVOKED} because {because}; {_COSMOS_MORE} {_COSMOS_GUIDE}{anchor} ({code})."


_UNAUTHORIZED = _cosmos_text(
    "the current default identity no longer has permission to the associated Key Vault key",
    "#default-identity-is-unauthorized-to-access-the-azure-key-vault-key", 4002)
_KEY_NOT_FOUND = _cosmos_text(
    "the correspondent key is not found on the specified Key Vault", "#azure-key-vault-resource-not-found", 4003)

# key_access cause -> (code, documented customerManagedKeyStatus text)
COSMOS_REVOKED_MESSAGES: dict[str, tuple[int, str]] = {
    "AccessDenied": _UNAUTHORIZED,
    "KeyDisabled": _UNAUTHORIZED,
    "KeyExpired": _UNAUTHORIZED,
    "KeyNotYetValid": _UNAUTHORIZED,
    "KeyNotFound": _KEY_NOT_FOUND,
    "KeyDeleted": _KEY_NOT_FOUND,
    "VersionNotFound": _KEY_NOT_FOUND,
    "VaultNotFound": _cosmos_text(
        "the correspondent Azure Key Vault was not found", "#azure-key-vault-resource-not-found", 4017),
    "NoIdentity": _cosmos_text(
        "the Azure Cosmos DB account has an undefined default identity",
        "#invalid-azure-cosmos-db-default-identity", 4015),
}
# The enum's one text without a cause or code, for any other refusal.
COSMOS_REVOKED_GENERIC = f"{_COSMOS_REVOKED}; {_COSMOS_MORE} {_COSMOS_GUIDE}"


def cosmos_revoked_status(result: AccessResult) -> str:
    """The ``customerManagedKeyStatus`` text for a refused key use."""
    known = COSMOS_REVOKED_MESSAGES.get(result.code)
    return known[1] if known is not None else COSMOS_REVOKED_GENERIC


