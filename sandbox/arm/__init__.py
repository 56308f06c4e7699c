"""
Answers what the official management SDKs send (azure-mgmt-keyvault, -kusto, -cosmosdb,
-resourcegraph) plus plain ARM calls for the resource types without an SDK in the stack:

* ``Microsoft.KeyVault/vaults``: PUT (201 new / 200 existing), GET, PATCH, DELETE, lists by
  subscription and resource group, ``/subscriptions/{sub}/resources?$filter=resourceType eq
  '...'`` (what ``vaults.list`` sends) and ``accessPolicies/{add|replace|remove}``.
* ``Microsoft.Kusto/clusters``: PUT create (201 + Azure-AsyncOperation), PATCH (202 +
  Azure-AsyncOperation/Location/Retry-After, ``operationKind: ServiceConfigurationAlter``),
  GET, DELETE, lists; ``If-Match``/``If-None-Match`` with ETags.
* ``Microsoft.Kusto/clusters/{cluster}/databases``: PUT/PATCH (201/202 + Azure-AsyncOperation), GET,
  DELETE, list by cluster; ``ReadWrite`` databases may carry their own ``keyVaultProperties``.
* ``Microsoft.DocumentDB/databaseAccounts``: PUT and PATCH answer 200 (the only code the
  generated client accepts) with an Azure-AsyncOperation header; GET, DELETE, lists.
* Generic tracked resources: user-assigned identities, Cosmos DB for PostgreSQL clusters
  (``serverGroupsv2``, ``dataEncryption`` at 2023-03-02-preview) and Azure Data Manager for Energy
  (``energyServices``, ``encryption.keyVaultProperties``); synchronous.

Each shape cites its REST spec file and api-version beside its code; ``sandbox/README.md`` has the
table and says where the sandbox still guesses.
* Operation status at ``/subscriptions/{sub}/providers/{ns}/locations/{loc}/operationResults|
  operationsStatus/{id}``; operations complete on sandbox time (see ``services/effects.py``).
* Resource Graph ``POST /providers/Microsoft.ResourceGraph/resources`` with a small, honest
  subset of KQL (see :func:`_parse_query`).

Every request needs ``api-version`` (any value), is throttled per subscription (GET is a
read, PUT/PATCH/POST/DELETE a write) and carries the remaining-budget header; a Resource Graph
query is metered per user by a quota per window and carries Resource Graph's quota headers.
Paths are case-insensitive; absolute URLs are built
from the host the client used.

The package follows the sections of the management plane: ``common`` (constants, the router and the
small helpers every section uses), ``vaults``, ``kusto`` (clusters and databases), ``cosmos``,
``operations`` (asynchronous operation status), ``tracked`` (generic tracked resources) and ``graph``
(Resource Graph). Routes are matched in registration order, which is the import order below.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sandbox.arm.common import ROUTER, _query
from sandbox.wire import Request, Response, SandboxError, error_response

if TYPE_CHECKING:
    from sandbox.world import World

# Routes register on import and are matched in registration order: keep this order.
# isort: off
from sandbox.arm import vaults  # noqa: F401
from sandbox.arm import kusto  # noqa: F401
from sandbox.arm import cosmos  # noqa: F401
from sandbox.arm import operations  # noqa: F401
from sandbox.arm import tracked  # noqa: F401
from sandbox.arm import graph  # noqa: F401

# isort: on


# ---- entry point ----------------------------------------------------------------------------
def handle(world: World, req: Request) -> Response:
    """Answers one ARM request (already past fault injection, under ``world.lock``)."""
    api_version = _query(req, "api-version")
    if not api_version:
        return error_response(
            400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
        )
    m = re.match(r"/subscriptions/([^/]+)", req.path, re.IGNORECASE)
    sub = m.group(1).lower() if m else None
    is_graph = req.method == "POST" and re.fullmatch(
        r"/providers/microsoft\.resourcegraph/resources/?", req.path, re.IGNORECASE
    )
    write = req.method not in ("GET", "HEAD") and not is_graph
    if is_graph:
        # Resource Graph meters queries per user, not per subscription (sandbox/faults.py cites it).
        granted, retry_after, headers = world.throttle.graph(f"tenant:{world.tenant_id}", now=world.clock.timestamp())
        if not granted:
            return error_response(
                429,
                "RateLimiting",
                "Please provide below info when asking for support: the client has exceeded its query quota. "
                f"Please try again after {retry_after} seconds.",
                {**headers, "Retry-After": str(retry_after)},
            )
    else:
        granted, retry_after, headers = world.throttle.arm(
            sub or f"tenant:{world.tenant_id}", write=write, now=world.clock.timestamp()
        )
    if not granted:
        return error_response(
            429,
            "SubscriptionRequestsThrottled",
            f"Number of {'write' if write else 'read'} requests for subscription '{sub or world.tenant_id}' "
            f"exceeded the limit. Please try again after {retry_after} seconds.",
            {**headers, "Retry-After": str(retry_after)},
        )
    if sub is not None and sub not in world.subscriptions:
        resp = error_response(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
    else:
        try:
            resp = ROUTER.dispatch(world, req, not_found=_no_route)
        except SandboxError as err:
            resp = err.response()
    resp.headers.update(headers)
    return resp


def _no_route(req: Request) -> Response:
    return error_response(
        404, "InvalidResourceType", f"The resource type for '{req.method} {req.path}' could not be found."
    )
