"""Seeds: generated fleets for benchmarks, the bundled demo estate and a seeding summary."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sandbox.seeds.apply import load_seed_file
from sandbox.seeds.model import DEFAULT_KEY_PERMISSIONS, DEMO_PATH, JsonObj, SeedError, SeedResult

if TYPE_CHECKING:
    pass


# ---- fleets for benchmarks -----------------------------------------------------------------
def generate_fleet(
    n_clusters: int,
    n_accounts: int,
    n_subscriptions: int = 1,
    *,
    versions: int = 2,
    pinned_fraction: float = 1.0,
    location: str = "westeurope",
) -> JsonObj:
    """A seed with ``n_clusters`` Kusto clusters and ``n_accounts`` Cosmos accounts spread
    round-robin over ``n_subscriptions`` subscriptions, all on one key (``kv-fleet/cmk-fleet``)
    through one user-assigned identity. The first ``pinned_fraction`` of clusters pin the
    oldest version; the rest are versionless. Cosmos accounts are always versionless (Azure
    takes no versioned key URI on them)."""
    if n_subscriptions < 1:
        raise ValueError("n_subscriptions must be at least 1")
    if versions < 1:
        raise ValueError("versions must be at least 1")
    subs = [f"00000000-0000-0000-0000-{i + 1:012x}" for i in range(n_subscriptions)]
    version_specs = [{"label": f"v{i + 1}", "age": f"P{(versions - i) * 10}D", "exp": "P365D"} for i in range(versions)]
    doc: JsonObj = {
        "description": f"fleet: {n_clusters} clusters, {n_accounts} accounts, {n_subscriptions} subs",
        "subscriptions": [{"id": s, "name": f"fleet-{i + 1}"} for i, s in enumerate(subs)],
        "identities": [
            {
                "name": "uai-fleet",
                "subscription": subs[0],
                "resource_group": "rg-fleet-security",
                "location": location,
            }
        ],
        "vaults": [
            {
                "name": "kv-fleet",
                "subscription": subs[0],
                "resource_group": "rg-fleet-security",
                "location": location,
                "access_policies": [{"identity": "uai-fleet", "keys": DEFAULT_KEY_PERMISSIONS}],
                "keys": [{"name": "cmk-fleet", "size": 3072, "versions": version_specs}],
            }
        ],
    }
    pinned_clusters = int(n_clusters * pinned_fraction)
    doc["kusto_clusters"] = [
        {
            "name": f"adxfleet{i:05d}",
            "subscription": subs[i % n_subscriptions],
            "resource_group": f"rg-fleet-data-{i % n_subscriptions}",
            "location": location,
            "identity": "uai-fleet",
            "key": "kv-fleet/cmk-fleet",
            "version": "v1" if i < pinned_clusters else None,
        }
        for i in range(n_clusters)
    ]
    doc["cosmos_accounts"] = [
        {
            "name": f"cosmos-fleet-{i:05d}",
            "subscription": subs[i % n_subscriptions],
            "resource_group": f"rg-fleet-data-{i % n_subscriptions}",
            "location": location,
            "identity": "uai-fleet",
            "key": "kv-fleet/cmk-fleet",
            "version": None,
        }
        for i in range(n_accounts)
    ]
    return doc


def demo_seed() -> JsonObj:
    """The bundled demo estate (``sandbox/seeds/demo.json``)."""
    doc = load_seed_file(DEMO_PATH)
    if not isinstance(doc, dict):
        raise SeedError(str(DEMO_PATH), "must be a JSON object")
    return doc


def seed_summary(result: SeedResult, when: datetime) -> str:
    return (
        f"seeded {len(result.resources)} resources, {len(result.versions)} key versions "
        f"with {result.requests} requests in {result.elapsed_s:.2f}s; clock at {when.isoformat()}"
    )
