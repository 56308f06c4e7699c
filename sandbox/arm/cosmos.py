"""``Microsoft.DocumentDB/databaseAccounts`` in the sandbox's ARM."""

from __future__ import annotations

import copy
import re
import uuid
from typing import TYPE_CHECKING, Any

from sandbox import services
from sandbox.arm.common import (
    _RG,
    _SUB,
    COSMOS_TYPE,
    KUSTO_TYPE,
    ROUTER,
    JsonObj,
    _bad,
    _body,
    _check_preconditions,
    _delete_tracked,
    _find,
    _global_name_taken,
    _identity,
    _index_name,
    _loc_slug,
    _location,
    _not_found,
    _page,
    _props,
    _resources_of,
    _rid,
    _start_operation,
    _tags,
    resource_json,
)
from sandbox.arm.kusto import _CLUSTER, databases_of
from sandbox.state import ArmResource
from sandbox.wire import (
    Request,
    Response,
    SandboxError,
    json_response,
)

if TYPE_CHECKING:
    import re as _re

    from sandbox.world import World

# ---- Cosmos DB accounts --------------------------------------------------------------------
# Spec: specification/cosmos-db/resource-manager/Microsoft.DocumentDB/DocumentDB/stable/2026-03-15
# (the api-version azure-mgmt-cosmosdb 10.0.0 sends); examples/CosmosDBDatabaseAccountGet.json.
_ACCOUNT = _RG + r"/providers/Microsoft\.DocumentDB/databaseAccounts/(?P<name>[^/]+)"
_COSMOS_READ_ONLY = (
    "provisioningState",
    "documentEndpoint",
    # Writable string in the spec; what Azure does with a written value is not documented, so the
    # sandbox keeps its own (the service's) text and ignores a written one. Guess.
    "customerManagedKeyStatus",
    "keyVaultKeyUriVersion",
    "writeLocations",
    "readLocations",
    "failoverPolicies",
    "instanceId",
    "privateEndpointConnections",
)


# Azure's answer to a versioned keyVaultKeyUri, as seen in public (MicrosoftDocs/azure-docs#70179:
# code "BadRequest", this message, then "\r\nActivityId: ..., Microsoft.Azure.Documents.Common/...").
# The HTTP status (400) follows from the code; the trailer's exact form is a guess.
COSMOS_VERSIONED_URI_MESSAGE = "Please provide KeyVault Key Uri without version. We will use latest version of the key"

# backupPolicy (BackupPolicy discriminator "type": Periodic | Continuous; PeriodicModeProperties;
# ContinuousModeProperties.tier: ContinuousTier Continuous7Days | Continuous30Days). Defaults Azure
# applies when the policy is omitted at creation: periodic, a backup every 240 minutes kept
# 8 hours, geo-redundant (product document "Periodic backup": "every 4 hours ... two most recent";
# the spec's own examples/CosmosDBDatabaseAccountGet.json shows 240 / 8 / Geo). Ranges of the
# product document: interval 60-1440 minutes, retention 8-720 hours.
COSMOS_DEFAULT_PERIODIC = {
    "backupIntervalInMinutes": 240,
    "backupRetentionIntervalInHours": 8,
    "backupStorageRedundancy": "Geo",
}
# A continuous policy without a tier: the 7-day tier came later than continuous backup itself,
# whose restore window was 30 days, so an omitted tier is taken as Continuous30Days. Reasoned, not
# documented: a guess.
COSMOS_DEFAULT_CONTINUOUS_TIER = "Continuous30Days"
_CONTINUOUS_TIERS = ("Continuous7Days", "Continuous30Days")
_REDUNDANCY = ("Geo", "Local", "Zone")


def _int_in(raw: JsonObj, name: str, low: int, high: int) -> None:
    value = raw.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"backupPolicy.periodicModeProperties.{name} must be an integer between {low} and {high}.")


def _cosmos_backup(raw: Any, existing: JsonObj | None) -> JsonObj:
    """The account's backupPolicy after a create (``existing`` None) or an update, defaults applied."""
    if raw is None:
        return (
            copy.deepcopy(existing)
            if existing
            else {"type": "Periodic", "periodicModeProperties": dict(COSMOS_DEFAULT_PERIODIC)}
        )
    if not isinstance(raw, dict):
        raise _bad("backupPolicy must be an object.", "InvalidRequestContent")
    kind = raw.get("type")
    if kind not in ("Periodic", "Continuous"):
        raise _bad(f"backupPolicy.type '{kind}' is invalid: use Periodic or Continuous.")
    if existing and existing.get("type") == "Continuous" and kind == "Periodic":
        raise _bad("An account with continuous backup cannot be changed back to periodic backup.")
    if kind == "Periodic":
        props = raw.get("periodicModeProperties") or {}
        if not isinstance(props, dict):
            raise _bad("backupPolicy.periodicModeProperties must be an object.", "InvalidRequestContent")
        _int_in(props, "backupIntervalInMinutes", 60, 1440)
        _int_in(props, "backupRetentionIntervalInHours", 8, 720)
        redundancy = props.get("backupStorageRedundancy")
        if redundancy is not None and redundancy not in _REDUNDANCY:
            raise _bad(f"backupStorageRedundancy '{redundancy}' is invalid: use Geo, Local or Zone.")
        before = (existing or {}).get("periodicModeProperties") if (existing or {}).get("type") == "Periodic" else None
        merged = {**COSMOS_DEFAULT_PERIODIC, **(before or {}), **{k: v for k, v in props.items() if v is not None}}
        return {"type": "Periodic", "periodicModeProperties": merged}
    props = raw.get("continuousModeProperties") or {}
    if not isinstance(props, dict):
        raise _bad("backupPolicy.continuousModeProperties must be an object.", "InvalidRequestContent")
    tier = props.get("tier") or (
        ((existing or {}).get("continuousModeProperties") or {}).get("tier")
        if (existing or {}).get("type") == "Continuous"
        else None
    )
    tier = tier or COSMOS_DEFAULT_CONTINUOUS_TIER
    if tier not in _CONTINUOUS_TIERS:
        raise _bad(f"continuousModeProperties.tier '{tier}' is invalid: use Continuous7Days or Continuous30Days.")
    return {"type": "Continuous", "continuousModeProperties": {"tier": tier}}


def _validate_cosmos(world: World, props: JsonObj, identity: JsonObj | None) -> None:
    uri = props.get("keyVaultKeyUri")
    parsed = services.parse_key_uri(world, uri) if uri is not None else None
    if uri is not None and parsed is None:
        raise _bad(
            f"The keyVaultKeyUri '{uri}' is not a Key Vault key URI (https://{{vault}}.vault.azure.net/keys/{{key}}).",
        )
    if parsed is not None and parsed[2] is not None:
        raise _bad(f"{COSMOS_VERSIONED_URI_MESSAGE}\r\nActivityId: {uuid.uuid4()}")
    default = props.get("defaultIdentity")
    if default is None:
        return
    if not isinstance(default, str):
        raise _bad("defaultIdentity must be a string.", "InvalidRequestContent")
    low = default.strip().lower()
    if low == "firstpartyidentity":
        return
    if low == "systemassignedidentity":
        if services.system_principal(identity) is None:
            raise _bad("defaultIdentity SystemAssignedIdentity needs a system-assigned identity on the account.")
        return
    if low.startswith("userassignedidentity="):
        if services.uai_principal(world, identity, default.split("=", 1)[1]) is None:
            raise _bad(f"The user-assigned identity in defaultIdentity '{default}' is not assigned to the account.")
        return
    raise _bad(
        f"defaultIdentity '{default}' is invalid: use FirstPartyIdentity, SystemAssignedIdentity or "
        "UserAssignedIdentity=<resource id>."
    )


def _cosmos_locations(name: str, raw: Any, fallback: str) -> list[JsonObj]:
    if raw is None:
        raw = [{"locationName": fallback, "failoverPriority": 0}]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, dict) for x in raw):
        raise _bad("locations must be a non-empty array of objects.", "InvalidRequestContent")
    out = []
    for entry in raw:
        loc = str(entry.get("locationName") or fallback)
        slug = _loc_slug(loc)
        out.append(
            {
                "id": f"{name}-{slug}",
                "locationName": loc,
                "documentEndpoint": f"https://{name}-{slug}.documents.azure.com:443/",
                "provisioningState": "Succeeded",
                "failoverPriority": int(entry.get("failoverPriority") or 0),
                "isZoneRedundant": bool(entry.get("isZoneRedundant", False)),
            }
        )
    return out


@ROUTER.route("PUT", _ACCOUNT)
def put_account(world: World, req: Request, m: _re.Match[str]) -> Response:
    rid = _rid(m["sub"], m["rg"], COSMOS_TYPE, m["name"])
    existing = _find(world, rid, COSMOS_TYPE)
    body = _body(req)
    if existing is not None:
        return _update_account(world, req, existing, body)
    name = m["name"]
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,48}[a-z0-9]", name):
        raise _bad(f"Database account name '{name}' is invalid: 3-50 lowercase letters, digits and hyphens.")
    if _global_name_taken(world, COSMOS_TYPE, name, rid):
        raise SandboxError(409, "Conflict", f"Database account name '{name}' already exists.")
    location = _location(body, required=True)
    assert location is not None  # noqa: S101 - _location raises when required and missing
    props = dict(_props(body))
    identity = _identity(world, rid, body.get("identity"), None)
    _validate_cosmos(world, props, identity)
    patch = {k: copy.deepcopy(v) for k, v in props.items() if k not in _COSMOS_READ_ONLY}
    patch["backupPolicy"] = _cosmos_backup(patch.get("backupPolicy"), None)
    locations = _cosmos_locations(name, patch.pop("locations", None), location)
    key_uri = patch.pop("keyVaultKeyUri", None)
    base = {
        **patch,
        "provisioningState": "Creating",
        "documentEndpoint": f"https://{name}.documents.azure.com:443/",
        "databaseAccountOfferType": props.get("databaseAccountOfferType", "Standard"),
        "defaultIdentity": props.get("defaultIdentity") or "FirstPartyIdentity",
        "locations": locations,
        "writeLocations": [locations[0]],
        "readLocations": locations,
        "consistencyPolicy": props.get("consistencyPolicy") or {"defaultConsistencyLevel": "Session"},
    }
    res = ArmResource(
        id=rid,
        type=COSMOS_TYPE,
        name=name,
        subscription=m["sub"],
        resource_group=m["rg"],
        location=location,
        properties=base,
        tags=_tags(body.get("tags")),
        identity=identity,
        kind=str(body.get("kind") or "GlobalDocumentDB"),
    )
    world.resources[rid.lower()] = res
    _index_name(world, res)
    res.sim["creating"] = True
    headers = _start_operation(
        world,
        req,
        res,
        provider="Microsoft.DocumentDB",
        segment="operationsStatus",
        kind="DatabaseAccountCreate",
        patch={"keyVaultKeyUri": key_uri} if key_uri else {},
        can_fail=False,
    )
    return json_response(200, resource_json(res), headers)


_REVOKED_ALLOWED = {"defaultIdentity"}


def _update_account(world: World, req: Request, res: ArmResource, body: JsonObj) -> Response:
    if res.sim.get("pendingOperation"):
        raise SandboxError(
            409,
            "Conflict",
            f"There is already an operation in progress on database account '{res.name}'; retry when it completes.",
        )
    props = dict(_props(body))
    patch = {k: copy.deepcopy(v) for k, v in props.items() if k not in _COSMOS_READ_ONLY}
    if res.sim.get("revoked"):
        changed = {k for k, v in patch.items() if res.properties.get(k) != v} - _REVOKED_ALLOWED
        if changed:
            raise _bad(
                "Access to the account is revoked: only an identity update (identity, defaultIdentity) or "
                f"deletion is allowed (refused: {', '.join(sorted(changed))}).",
            )
    identity = _identity(world, res.id, body.get("identity"), res.identity) if "identity" in body else res.identity
    _validate_cosmos(world, {**res.properties, **patch}, identity)
    if "backupPolicy" in patch:
        # Applied with the request (Azure runs the periodic-to-continuous migration in the
        # background; the sandbox does not model migrationState).
        res.properties["backupPolicy"] = _cosmos_backup(patch.pop("backupPolicy"), res.properties.get("backupPolicy"))
    if "locations" in patch:
        patch["locations"] = _cosmos_locations(res.name, patch["locations"], res.location)
    if "tags" in body:
        res.tags = _tags(body["tags"])
    if identity != res.identity:
        res.identity = identity
        patch["_identityChanged"] = True
    res.properties["provisioningState"] = "Updating"
    headers = _start_operation(
        world,
        req,
        res,
        provider="Microsoft.DocumentDB",
        segment="operationsStatus",
        kind="DatabaseAccountUpdate",
        patch=patch,
        can_fail=True,
    )
    return json_response(200, resource_json(res), headers)


@ROUTER.route("PATCH", _ACCOUNT)
def patch_account(world: World, req: Request, m: _re.Match[str]) -> Response:
    res = _find(world, _rid(m["sub"], m["rg"], COSMOS_TYPE, m["name"]), COSMOS_TYPE)
    if res is None:
        raise _not_found(COSMOS_TYPE, m["name"], m["rg"])
    return _update_account(world, req, res, _body(req))


@ROUTER.route("GET", _ACCOUNT)
def get_account(world: World, _req: Request, m: _re.Match[str]) -> Response:
    res = _find(world, _rid(m["sub"], m["rg"], COSMOS_TYPE, m["name"]), COSMOS_TYPE)
    if res is None:
        raise _not_found(COSMOS_TYPE, m["name"], m["rg"])
    return json_response(200, resource_json(res))


@ROUTER.route("GET", _RG + r"/providers/Microsoft\.DocumentDB/databaseAccounts")
def list_accounts_rg(world: World, req: Request, m: _re.Match[str]) -> Response:
    return _page(req, _resources_of(world, COSMOS_TYPE, m["sub"], m["rg"]), resource_json)


@ROUTER.route("GET", _SUB + r"/providers/Microsoft\.DocumentDB/databaseAccounts")
def list_accounts_sub(world: World, req: Request, m: _re.Match[str]) -> Response:
    return _page(req, _resources_of(world, COSMOS_TYPE, m["sub"]), resource_json)


@ROUTER.route("DELETE", _CLUSTER)
def delete_cluster(world: World, req: Request, m: _re.Match[str]) -> Response:
    rid = _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"])
    res = _find(world, rid, KUSTO_TYPE)
    if res is not None:
        _check_preconditions(req, res.etag)
        for db in databases_of(world, res.id):
            del world.resources[db.id.lower()]
    return _delete_tracked(world, rid, KUSTO_TYPE, gone_status=204, done_status=200)


@ROUTER.route("DELETE", _ACCOUNT)
def delete_account(world: World, _req: Request, m: _re.Match[str]) -> Response:
    # The generated client accepts 202/204 only; 204 ends its poller at once.
    return _delete_tracked(
        world, _rid(m["sub"], m["rg"], COSMOS_TYPE, m["name"]), COSMOS_TYPE, gone_status=204, done_status=204
    )
