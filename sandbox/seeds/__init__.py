"""Seeds: a JSON description of a world, applied through the same wire path as the SDKs.

A seed document is checked in full first (:func:`compile_seed`, raising :class:`SeedError`
that names the field at fault), then applied (:func:`apply_plan`) by building the HTTP
requests the SDKs would send and passing each one to :meth:`sandbox.world.World.handle`:
ARM ``PUT`` for identities, vaults, Kusto clusters, Cosmos DB accounts,
Cosmos DB for PostgreSQL clusters and Energy instances; Key Vault ``POST /keys/{name}/create``
and ``PUT /keys/{name}/rotationpolicy``. Nothing writes to the state model directly, so a
seeded world is exactly what the handlers would have built.

Time: key versions may carry an ``age`` (ISO-8601 duration, how long before the end of
seeding the version was created). Versions are created oldest first and the sandbox clock is
advanced between them, so seeding a document with ages moves the clock forward by the largest
age; ``exp`` and ``nbf`` are offsets (``"P30D"``, ``"-P1D"``) from the clock at the end of
seeding. Throttling is switched off and LROs made instant while seeding, then restored.

Document shape (see ``sandbox/seeds/demo.json``)::

    {"subscriptions": [{"id", "name"}],
     "identities": [{"name", "subscription", "resource_group", "location"}],
     "vaults": [{"name", "subscription", "resource_group", "location", "sku",
                 "soft_delete_retention_days", "purge_protection", "rbac", "public_network_access",
                 "access_policies": [{"identity" | "object_id", "keys": [...]}],
                 "keys": [{"name", "kty", "size", "tags", "rotation_policy",
                           "versions": [{"label", "age", "exp", "nbf", "enabled", "tags"}]}]}],
     "kusto_clusters" | "cosmos_accounts" | "postgresql_clusters" | "energy_instances":
         [{"name", "subscription", "resource_group", "location", "identity", "key": "vault/key",
           "version": <label> | null, "tags"}],
     "consumers": [{"principal_id", "key": "vault/key", "version": <label>, "every_s"}]}

``identity`` is an identity's name from ``identities`` or ``"system"``; ``version`` null means
versionless (Kusto: empty ``keyVersion``; Cosmos: a versionless ``keyVaultKeyUri``, the only
form Azure takes, so Cosmos accounts must have ``version`` null). A Cosmos account may carry
``backup_policy``: its ``properties.backupPolicy`` as ARM takes it (default: periodic, 8 h).
PostgreSQL and Energy need a user-assigned identity and a pinned version. ``consumers`` are
identities nobody inventories that unwrap with one version on a schedule (sandbox time); they
are added through the admin API (``POST /sandbox/consumers``, see :mod:`sandbox.audit`).

The package follows the seams of a seed's life: ``model`` (constants, errors, the compiled
plan), ``check`` (the document checked in full into a plan), ``apply`` (the plan applied
through the wire) and ``fleet`` (generated fleets for benchmarks, the bundled demo estate
``demo.json``, a summary).
"""

from __future__ import annotations

from sandbox.seeds.apply import apply_plan, apply_seed, load_seed_file
from sandbox.seeds.check import compile_seed
from sandbox.seeds.fleet import demo_seed, generate_fleet, seed_summary
from sandbox.seeds.model import (
    API_ENERGY,
    COSMOS_TYPE,
    DEMO_PATH,
    KUSTO_TYPE,
    Plan,
    SeedApplyError,
    SeedError,
    SeedResult,
)

__all__ = [
    "API_ENERGY",
    "COSMOS_TYPE",
    "DEMO_PATH",
    "KUSTO_TYPE",
    "Plan",
    "SeedApplyError",
    "SeedError",
    "SeedResult",
    "apply_plan",
    "apply_seed",
    "compile_seed",
    "demo_seed",
    "generate_fleet",
    "load_seed_file",
    "seed_summary",
]
