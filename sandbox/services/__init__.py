"""Simulated services over sandbox time: LRO completion and CMK use by clusters and accounts.

What happens as the sandbox clock moves (:func:`tick`, called on every request and on every
clock move):

* Due long-running operations complete (a heap keyed by due time, so nothing is scanned when
  nothing is due). An operation fails when fault injection says so (``world.lro.fail_rate``,
  seeded from ``world.seed``) or when the key it would bind cannot be used by the resource's
  identity (:func:`sandbox.state.key_access`); otherwise its patch is applied.
* Every ``service_settings.usage_interval_s`` of sandbox time, one sweep makes every
  resource with a customer-managed key "use" it through its identity. A 10,000-cluster world
  therefore pays one scan per interval, never one per request.

Outcomes of a use, per service:

* Kusto: on lost access the cluster's ``state`` becomes :data:`KUSTO_SUSPENDED_STATE` with a
  ``stateReason`` naming the cause; it returns to ``Running`` at the first successful use.
* Cosmos DB: ``customerManagedKeyStatus`` becomes the documented revoked text for the cause
  (see :data:`COSMOS_REVOKED_MESSAGES`); after access returns it goes back to
  :data:`COSMOS_CMK_CONFIRMED` only once ``service_settings.cosmos_recovery_s`` have passed.
* Kusto databases with their own key: ``suspensionDetails {suspensionStartDate}`` appears while
  the key cannot be used and goes when it can (kusto.json 2024-04-13 ``ReadWriteDatabaseProperties``).
* PostgreSQL clusters and Energy services document no status field for key access, so the
  outcome lives in simulation state only.

Simulation state kept in ``ArmResource.sim`` (never serialised; the admin API may read it):
``versionInUse`` (key version the service currently uses), ``lastUse`` (``at``, ``ok``,
``code``, ``reason``, ``version``), ``suspended`` (Kusto, key-caused), ``revoked`` and
``recoverAt`` (Cosmos), ``pendingOperation`` (id of the running LRO), ``creating``,
``stateBefore``.

Versionless bindings (Cosmos ``keyVaultKeyUri`` without a version, Kusto empty
``keyVersion``) follow a new key version only ``service_settings.versionless_lag_s`` after
that version was created; until then the version in use stays where it was, so disabling it
early revokes the service, exactly the hazard the 24-hour retention rule guards against.

The package: ``status`` (resource types, the status texts of a refused key), ``bindings``
(bookkeeping, key URIs, identities and bindings) and ``effects`` (the clock's effects).
"""

from __future__ import annotations

from sandbox.services.bindings import (
    Binding,
    binding_for,
    check_binding,
    cosmos_principal,
    identity_of,
    parse_key_uri,
    roll_failure,
    system_principal,
    track_operation,
    uai_principal,
    vault_name_for_url,
    wake_at,
)
from sandbox.services.effects import complete_operation, settings_changed, sweep, tick, use_key
from sandbox.services.status import (
    COSMOS_ACCOUNTS,
    COSMOS_CMK_CONFIRMED,
    COSMOS_FIRST_PARTY_PRINCIPAL,
    COSMOS_REVOKED_GENERIC,
    COSMOS_REVOKED_MESSAGES,
    ENERGY_SERVICES,
    KUSTO_CLUSTERS,
    KUSTO_DATABASES,
    KUSTO_SUSPENDED_STATE,
    POSTGRES_CLUSTERS,
    USER_IDENTITIES,
    JsonObj,
    cosmos_revoked_status,
)

__all__ = [
    "COSMOS_ACCOUNTS",
    "COSMOS_CMK_CONFIRMED",
    "COSMOS_FIRST_PARTY_PRINCIPAL",
    "COSMOS_REVOKED_GENERIC",
    "COSMOS_REVOKED_MESSAGES",
    "ENERGY_SERVICES",
    "KUSTO_CLUSTERS",
    "KUSTO_DATABASES",
    "KUSTO_SUSPENDED_STATE",
    "POSTGRES_CLUSTERS",
    "USER_IDENTITIES",
    "Binding",
    "JsonObj",
    "binding_for",
    "check_binding",
    "complete_operation",
    "cosmos_principal",
    "cosmos_revoked_status",
    "identity_of",
    "parse_key_uri",
    "roll_failure",
    "settings_changed",
    "sweep",
    "system_principal",
    "tick",
    "track_operation",
    "uai_principal",
    "use_key",
    "vault_name_for_url",
    "wake_at",
]
