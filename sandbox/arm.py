"""Azure Resource Manager (management plane) of the sandbox.

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
  operationsStatus/{id}``; operations complete on sandbox time (see ``services.py``).
* Resource Graph ``POST /providers/Microsoft.ResourceGraph/resources`` with a small, honest
  subset of KQL (see :func:`_parse_query`).

Every request needs ``api-version`` (any value), is throttled per subscription (GET is a
read, PUT/PATCH/POST/DELETE a write) and carries the remaining-budget header; a Resource Graph
query is metered per user by a quota per window and carries Resource Graph's quota headers.
Paths are case-insensitive; absolute URLs are built
from the host the client used.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import uuid
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from sandbox import services
from sandbox.clock import isoformat
from sandbox.state import ArmResource, Operation, Vault, principal_id_for
from sandbox.wire import (
    BadBody,
    Request,
    Response,
    Router,
    SandboxError,
    empty_response,
    error_response,
    json_response,
)

if TYPE_CHECKING:
    import re as _re

    from sandbox.world import World

JsonObj = dict[str, Any]
T = TypeVar("T")

ROUTER = Router(case_insensitive=True)

PAGE_SIZE = 100  # ARM list pages; nextLink carries $skipToken=<offset>
GRAPH_DEFAULT_TOP = 100
GRAPH_MAX_TOP = 1000

KEYVAULT_TYPE = "Microsoft.KeyVault/vaults"
KUSTO_TYPE = "Microsoft.Kusto/clusters"
COSMOS_TYPE = "Microsoft.DocumentDB/databaseAccounts"
UAI_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
POSTGRES_TYPE = "Microsoft.DBforPostgreSQL/serverGroupsv2"
ENERGY_TYPE = "Microsoft.OpenEnergyPlatform/energyServices"
GENERIC_TYPES = {t.lower(): t for t in (UAI_TYPE, POSTGRES_TYPE, ENERGY_TYPE)}

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourceGroups/(?P<rg>[^/]+)"


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
        granted, retry_after, headers = world.throttle.graph(
            f"tenant:{world.tenant_id}", now=world.clock.timestamp()
        )
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


# ---- small helpers --------------------------------------------------------------------------
def _query(req: Request, name: str) -> str | None:
    for k, v in req.query.items():
        if k.lower() == name.lower():
            return v
    return None


def _body(req: Request) -> JsonObj:
    try:
        return req.json_object()
    except BadBody as err:
        raise SandboxError(400, "InvalidRequestContent", err.message) from err


def _bad(message: str, code: str = "BadRequest") -> SandboxError:
    return SandboxError(400, code, message)


def _not_found(kind: str, name: str, rg: str | None = None) -> SandboxError:
    where = f" under resource group '{rg}'" if rg else ""
    return SandboxError(404, "ResourceNotFound", f"The Resource '{kind}/{name}'{where} was not found.")


def _rid(sub: str, rg: str, rtype: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}"


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _bad("tags must be an object of string values.", "InvalidRequestContent")
    return dict(raw)


def _props(body: JsonObj) -> JsonObj:
    props = body.get("properties", {})
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise _bad("properties must be a JSON object.", "InvalidRequestContent")
    return props


def _location(body: JsonObj, *, required: bool) -> str | None:
    loc = body.get("location")
    if loc is None and not required:
        return None
    if not isinstance(loc, str) or not loc.strip():
        raise _bad("The 'location' property is required.", "LocationRequired")
    return loc


def _loc_slug(location: str) -> str:
    return location.replace(" ", "").lower()


def _page(
    req: Request,
    items: list[T],
    render: Callable[[T], JsonObj],
    *,
    page_size: int = PAGE_SIZE,
) -> Response:
    """One page of ``items`` (rendered only for the page) with a nextLink carrying the offset as ``$skipToken``."""
    raw = _query(req, "$skipToken")
    try:
        offset = int(raw) if raw else 0
    except ValueError:
        raise _bad(f"The $skipToken '{raw}' is not valid.", "InvalidSkipToken") from None
    top = _query(req, "$top")
    if top:
        try:
            page_size = max(1, min(int(top), 1000))
        except ValueError:
            raise _bad(f"The $top '{top}' is not an integer.") from None
    chunk = [render(item) for item in items[offset : offset + page_size]]
    out: JsonObj = {"value": chunk}
    if offset + page_size < len(items):
        params = {k: v for k, v in req.query.items() if k.lower() != "$skiptoken"}
        params["$skipToken"] = str(offset + page_size)
        out["nextLink"] = f"https://{req.host}{req.path}?{urlencode(params, quote_via=quote)}"
    return json_response(200, out)


def _check_preconditions(req: Request, etag: str | None) -> None:
    """If-Match / If-None-Match against the current ETag (None = the resource does not exist)."""
    if_match = req.headers.get("if-match")
    if if_match is not None and (etag is None or (if_match.strip() != "*" and if_match.strip() != etag)):
        raise SandboxError(
            412,
            "PreconditionFailed",
            "The specified precondition 'If-Match' does not match the resource ETag.",
        )
    if_none = req.headers.get("if-none-match")
    if if_none is not None and etag is not None and (if_none.strip() == "*" or if_none.strip() == etag):
        raise SandboxError(
            412,
            "PreconditionFailed",
            "The specified precondition 'If-None-Match' failed: the resource exists.",
        )


def _identity(world: World, rid: str, raw: Any, existing: JsonObj | None) -> JsonObj | None:
    """Normalises a managed-identity block, assigning principal/client ids like Azure would."""
    if raw is None:
        return existing
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise _bad("identity must be an object with a 'type'.", "InvalidIdentity")
    kinds = {p.strip().lower() for p in raw["type"].split(",") if p.strip()}
    if (
        not kinds
        or not kinds <= {"none", "systemassigned", "userassigned"}
        or ("none" in kinds and len(kinds) > 1)
    ):
        raise _bad(f"The identity type '{raw['type']}' is not supported.", "InvalidIdentityType")
    out: JsonObj = {"type": raw["type"]}
    if "systemassigned" in kinds:
        out["principalId"] = (existing or {}).get("principalId") or principal_id_for(rid)
        out["tenantId"] = world.tenant_id
    if "userassigned" in kinds:
        uais = raw.get("userAssignedIdentities")
        if not isinstance(uais, dict) or not uais:
            raise _bad("userAssignedIdentities is required for a UserAssigned identity.", "InvalidIdentity")
        assigned: JsonObj = {}
        for uai_id in uais:
            if uais[uai_id] is None:  # PATCH semantics: null removes the identity
                continue
            if not re.fullmatch(
                r"/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity/"
                r"userassignedidentities/[^/]+",
                uai_id,
                re.IGNORECASE,
            ):
                raise _bad(f"'{uai_id}' is not a user-assigned identity resource id.", "InvalidIdentity")
            known = world.identities.get(uai_id.lower()) or {}
            assigned[uai_id] = {
                "principalId": known.get("principalId") or principal_id_for(uai_id),
                "clientId": known.get("clientId") or principal_id_for(uai_id + "/clientid"),
            }
        out["userAssignedIdentities"] = assigned
    return out


def _start_operation(
    world: World,
    req: Request,
    res: ArmResource,
    *,
    provider: str,
    segment: str,
    kind: str,
    patch: JsonObj,
    can_fail: bool,
) -> dict[str, str]:
    """Queues an LRO for ``res``; returns the Azure-AsyncOperation/Location/Retry-After headers."""
    now = world.clock.now()
    duration = max(0.0, world.lro.duration_s)
    op = Operation(
        id=str(uuid.uuid4()),
        subscription=res.subscription,
        location=_loc_slug(res.location),
        provider=provider,
        resource_id=res.id,
        kind=kind,
        started=now,
        due=now + timedelta(seconds=duration),
        patch=patch,
        will_fail=can_fail and services.roll_failure(world),
    )
    world.operations[op.id] = op
    services.track_operation(world, op)
    res.sim["pendingOperation"] = op.id
    api = _query(req, "api-version") or ""
    url = (
        f"https://{req.host}/subscriptions/{res.subscription}/providers/{provider}/locations/{op.location}"
        f"/{segment}/{op.id}?api-version={quote(api)}"
    )
    return {
        "Azure-AsyncOperation": url,
        "Location": url + "&operationResultResponseType=Location",
        "Retry-After": str(math.ceil(duration)),
    }


def _find(world: World, rid: str, rtype: str) -> ArmResource | None:
    res = world.resources.get(rid.lower())
    return res if res is not None and res.type.lower() == rtype.lower() else None


def _resources_of(world: World, rtype: str, sub: str, rg: str | None = None) -> list[ArmResource]:
    rtype_l, sub_l, rg_l = rtype.lower(), sub.lower(), rg.lower() if rg else None
    return [
        r
        for r in world.resources.values()
        if r.type.lower() == rtype_l
        and r.subscription.lower() == sub_l
        and (rg_l is None or r.resource_group.lower() == rg_l)
    ]


def resource_json(res: ArmResource) -> JsonObj:
    """The ARM view of a tracked resource (simulation state is never shown)."""
    out: JsonObj = {
        "id": res.id,
        "name": res.name,
        "type": res.type,
        "location": res.location,
        "tags": dict(res.tags),
        "properties": copy.deepcopy(res.properties),
    }
    if res.identity is not None:
        out["identity"] = copy.deepcopy(res.identity)
    if res.sku is not None:
        out["sku"] = dict(res.sku)
    if res.kind is not None:
        out["kind"] = res.kind
    if res.type.lower() == KUSTO_TYPE.lower():
        out["etag"] = res.etag
    return out


def vault_json(world: World, vault: Vault) -> JsonObj:
    props = copy.deepcopy(vault.properties)
    url_for: Callable[[str], str] = world.vault_url_for
    props["vaultUri"] = url_for(vault.name) + "/"
    return {
        "id": vault.id,
        "name": vault.name,
        "type": KEYVAULT_TYPE,
        "location": vault.location,
        "tags": dict(vault.tags),
        "properties": props,
    }


# ---- Key Vault: vaults ----------------------------------------------------------------------
_VAULT = _RG + r"/providers/Microsoft\.KeyVault/vaults/(?P<name>[^/]+)"
_VAULT_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]")
_PERMISSION_KINDS = ("keys", "secrets", "certificates", "storage")


def _vault_for(world: World, m: _re.Match[str]) -> Vault:
    vault = world.vaults.get(m["name"].lower())
    if (
        vault is None
        or vault.subscription.lower() != m["sub"].lower()
        or vault.resource_group.lower() != m["rg"].lower()
    ):
        raise _not_found(KEYVAULT_TYPE, m["name"], m["rg"])
    return vault


def _access_policies(raw: Any) -> list[JsonObj]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("accessPolicies must be an array.", "InvalidRequestContent")
    out: list[JsonObj] = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("objectId"), str):
            raise _bad("Each access policy needs tenantId, objectId and permissions.", "InvalidAccessPolicy")
        perms = entry.get("permissions") or {}
        if not isinstance(perms, dict):
            raise _bad("permissions must be an object.", "InvalidAccessPolicy")
        clean: JsonObj = {}
        for kind, values in perms.items():
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _bad(f"permissions.{kind} must be an array of strings.", "InvalidAccessPolicy")
            clean[kind] = list(values)
        item: JsonObj = {
            "tenantId": str(entry.get("tenantId", "")),
            "objectId": entry["objectId"],
            "permissions": clean,
        }
        if entry.get("applicationId"):
            item["applicationId"] = str(entry["applicationId"])
        out.append(item)
    return out


def _vault_properties(incoming: JsonObj, existing: JsonObj | None) -> JsonObj:
    """Validated vault properties after applying ``incoming`` over ``existing`` (None = create)."""
    props: JsonObj = copy.deepcopy(existing) if existing else {}
    for read_only in ("vaultUri", "provisioningState", "hsmPoolResourceId", "privateEndpointConnections"):
        incoming.pop(read_only, None)
    if existing is None:
        if not isinstance(incoming.get("tenantId"), str):
            raise _bad("The property 'tenantId' is required.", "InvalidRequestContent")
        if not isinstance(incoming.get("sku"), dict):
            raise _bad("The property 'sku' is required.", "InvalidRequestContent")
    if "sku" in incoming:
        sku = incoming["sku"]
        if not isinstance(sku, dict) or str(sku.get("name", "")).lower() not in ("standard", "premium"):
            raise _bad("sku.name must be 'standard' or 'premium'.")
        props["sku"] = {"family": sku.get("family", "A"), "name": str(sku["name"]).lower()}
    if "accessPolicies" in incoming:
        props["accessPolicies"] = _access_policies(incoming["accessPolicies"])
    if incoming.get("enableSoftDelete") is False:
        raise _bad("Soft delete is always enabled on key vaults and cannot be turned off.")
    retention = incoming.get("softDeleteRetentionInDays")
    if retention is not None:
        if not isinstance(retention, int) or isinstance(retention, bool) or not 7 <= retention <= 90:
            raise _bad("softDeleteRetentionInDays must be an integer between 7 and 90.")
        if existing is not None and retention != existing.get("softDeleteRetentionInDays"):
            raise _bad("softDeleteRetentionInDays cannot be changed once the vault is created.")
    purge = incoming.get("enablePurgeProtection")
    if purge is not None and not isinstance(purge, bool):
        raise _bad("enablePurgeProtection must be a boolean.")
    if purge is False and (existing or {}).get("enablePurgeProtection"):
        raise _bad(
            "The property 'enablePurgeProtection' cannot be set to false: enabling purge protection for a vault "
            "is an irreversible action."
        )
    for name, value in incoming.items():
        if name in ("sku", "accessPolicies", "softDeleteRetentionInDays"):
            continue
        if name == "enablePurgeProtection" and value is False:
            continue  # never enabled: false means "not enabled", which it already is
        props[name] = value
    props["enableSoftDelete"] = True
    props.setdefault("softDeleteRetentionInDays", retention if retention is not None else 90)
    props.setdefault("accessPolicies", [])
    props.setdefault("enableRbacAuthorization", False)
    props["provisioningState"] = "Succeeded"
    return props


@ROUTER.route("PUT", _VAULT)
def put_vault(world: World, req: Request, m: _re.Match[str]) -> Response:
    name = m["name"]
    if not _VAULT_NAME.fullmatch(name) or "--" in name:
        raise _bad(
            f"The vault name '{name}' is invalid: 3-24 characters, letters, digits and hyphens, starting with a "
            "letter and ending with a letter or digit, no consecutive hyphens.",
            "VaultNameNotValid",
        )
    body = _body(req)
    incoming = dict(_props(body))
    location = _location(body, required=True)
    assert location is not None  # noqa: S101 - _location raises when required and missing
    existing = world.vaults.get(name.lower())
    if existing is not None and (
        existing.subscription.lower() != m["sub"].lower()
        or existing.resource_group.lower() != m["rg"].lower()
    ):
        raise SandboxError(409, "VaultAlreadyExists", f"The vault name '{name}' is already in use.")
    props = _vault_properties(incoming, existing.properties if existing else None)
    tags = _tags(body.get("tags"))
    if existing is not None:
        existing.properties = props
        existing.tags = tags
        return json_response(200, vault_json(world, existing))
    vault = Vault(
        name=name,
        subscription=m["sub"],
        resource_group=m["rg"],
        location=location,
        properties=props,
        tags=tags,
    )
    world.vaults[name.lower()] = vault
    return json_response(201, vault_json(world, vault))


@ROUTER.route("GET", _VAULT)
def get_vault(world: World, _req: Request, m: _re.Match[str]) -> Response:
    return json_response(200, vault_json(world, _vault_for(world, m)))


@ROUTER.route("PATCH", _VAULT)
def patch_vault(world: World, req: Request, m: _re.Match[str]) -> Response:
    vault = _vault_for(world, m)
    body = _body(req)
    props = _vault_properties(dict(_props(body)), vault.properties)
    tags = _tags(body["tags"]) if "tags" in body else vault.tags
    vault.properties, vault.tags = props, tags
    return json_response(200, vault_json(world, vault))


@ROUTER.route("DELETE", _VAULT)
def delete_vault(world: World, _req: Request, m: _re.Match[str]) -> Response:
    try:
        vault = _vault_for(world, m)
    except SandboxError:
        return empty_response(204)
    # Plain delete: the vault and its keys go away (deleted-vault recovery is not simulated).
    del world.vaults[vault.name.lower()]
    return empty_response(200)


@ROUTER.route("GET", _RG + r"/providers/Microsoft\.KeyVault/vaults")
def list_vaults_rg(world: World, req: Request, m: _re.Match[str]) -> Response:
    sub, rg = m["sub"].lower(), m["rg"].lower()
    vaults = [
        v for v in world.vaults.values() if v.subscription.lower() == sub and v.resource_group.lower() == rg
    ]
    return _page(req, vaults, lambda v: vault_json(world, v))


@ROUTER.route("GET", _SUB + r"/providers/Microsoft\.KeyVault/vaults")
def list_vaults_sub(world: World, req: Request, m: _re.Match[str]) -> Response:
    sub = m["sub"].lower()
    vaults = [v for v in world.vaults.values() if v.subscription.lower() == sub]
    return _page(req, vaults, lambda v: vault_json(world, v))


def _same_principal(a: JsonObj, b: JsonObj) -> bool:
    return (
        str(a.get("objectId", "")).lower() == str(b.get("objectId", "")).lower()
        and str(a.get("applicationId") or "").lower() == str(b.get("applicationId") or "").lower()
    )


def merge_access_policies(current: list[JsonObj], change: list[JsonObj], kind: str) -> list[JsonObj]:
    """Key Vault's accessPolicies/{add|replace|remove} semantics, per (objectId, applicationId).

    ``add`` unions permissions into an existing entry (or appends a new one); ``replace``
    swaps the matching entry's permissions for the given ones (or appends); ``remove`` takes
    the listed permissions away, dropping an entry left with none (an entry listing no
    permissions at all is removed whole).
    """
    result = copy.deepcopy(current)
    for entry in change:
        match = next((e for e in result if _same_principal(e, entry)), None)
        if kind == "add":
            if match is None:
                result.append(copy.deepcopy(entry))
                continue
            for perm_kind, values in entry["permissions"].items():
                have = match["permissions"].setdefault(perm_kind, [])
                lowered = {v.lower() for v in have}
                have.extend(v for v in values if v.lower() not in lowered and not lowered.add(v.lower()))  # type: ignore[func-returns-value]
        elif kind == "replace":
            if match is None:
                result.append(copy.deepcopy(entry))
            else:
                match["permissions"] = copy.deepcopy(entry["permissions"])
        else:  # remove
            if match is None:
                continue
            listed = {k: {v.lower() for v in vs} for k, vs in entry["permissions"].items()}
            if not any(listed.values()):
                result.remove(match)
                continue
            for perm_kind, gone in listed.items():
                if perm_kind in match["permissions"]:
                    match["permissions"][perm_kind] = [
                        v for v in match["permissions"][perm_kind] if v.lower() not in gone
                    ]
            if not any(match["permissions"].get(k) for k in match["permissions"]):
                result.remove(match)
    return result


@ROUTER.route("PUT", _VAULT + r"/accessPolicies/(?P<kind>[^/]+)")
def update_access_policy(world: World, req: Request, m: _re.Match[str]) -> Response:
    kind = m["kind"].lower()
    if kind not in ("add", "replace", "remove"):
        raise _bad(f"The access policy operation '{m['kind']}' is not one of add, replace, remove.")
    vault = _vault_for(world, m)
    body = _body(req)
    change = _access_policies(_props(body).get("accessPolicies"))
    if not change:
        raise _bad("properties.accessPolicies must list at least one access policy.", "InvalidRequestContent")
    vault.properties["accessPolicies"] = merge_access_policies(
        vault.properties.get("accessPolicies") or [], change, kind
    )
    # The response echoes the request's policies under the vault's accessPolicies/{kind} id.
    return json_response(
        200,
        {
            "id": f"{vault.id}/accessPolicies/{kind}",
            "name": kind,
            "type": f"{KEYVAULT_TYPE}/accessPolicies",
            "location": vault.location,
            "properties": {"accessPolicies": change},
        },
    )


@ROUTER.route("GET", _SUB + r"/resources")
def list_subscription_resources(world: World, req: Request, m: _re.Match[str]) -> Response:
    """Generic resource list (``vaults.list`` sends ``$filter=resourceType eq '...'``)."""
    flt = _query(req, "$filter")
    wanted: str | None = None
    if flt:
        fm = re.fullmatch(r"\s*resourceType\s+eq\s+'([^']+)'\s*", flt, re.IGNORECASE)
        if fm is None:
            raise _bad(
                f"The $filter '{flt}' is not supported here (only resourceType eq '...').", "InvalidFilter"
            )
        wanted = fm.group(1).lower()
    sub = m["sub"].lower()
    items: list[JsonObj] = []
    if wanted in (None, KEYVAULT_TYPE.lower()):
        for v in world.vaults.values():
            if v.subscription.lower() == sub:
                items.append(
                    {
                        "id": v.id,
                        "name": v.name,
                        "type": KEYVAULT_TYPE,
                        "location": v.location,
                        "tags": v.tags,
                    }
                )
    for r in world.resources.values():
        if r.subscription.lower() == sub and (wanted is None or r.type.lower() == wanted):
            items.append({"id": r.id, "name": r.name, "type": r.type, "location": r.location, "tags": r.tags})
    return _page(req, items, dict)


# ---- Kusto clusters -----------------------------------------------------------------------
_CLUSTER = _RG + r"/providers/Microsoft\.Kusto/clusters/(?P<name>[^/]+)"
_KUSTO_READ_ONLY = (
    "state",
    "provisioningState",
    "uri",
    "dataIngestionUri",
    "stateReason",
    "languageExtensions",
    "migrationCluster",
    "privateEndpointConnections",
)


def _kusto_kvp(props: JsonObj) -> JsonObj | None:
    if "keyVaultProperties" not in props:
        return None
    kvp = props["keyVaultProperties"]
    if kvp is None:
        return {}
    if not isinstance(kvp, dict) or not all(v is None or isinstance(v, str) for v in kvp.values()):
        raise _bad("keyVaultProperties must be an object of strings.", "InvalidRequestContent")
    if kvp and (not kvp.get("keyVaultUri") or not kvp.get("keyName")):
        raise _bad("keyVaultProperties needs keyVaultUri and keyName.")
    return dict(kvp)


def _cluster_patch(props: JsonObj) -> JsonObj:
    patch = {k: copy.deepcopy(v) for k, v in props.items() if k not in _KUSTO_READ_ONLY}
    kvp = _kusto_kvp(props)
    if kvp is not None:
        patch["keyVaultProperties"] = kvp or None
    return patch


def _cluster_json_response(status: int, res: ArmResource, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, resource_json(res), {"ETag": res.etag, **(headers or {})})


@ROUTER.route("PUT", _CLUSTER)
def put_cluster(world: World, req: Request, m: _re.Match[str]) -> Response:
    rid = _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"])
    existing = _find(world, rid, KUSTO_TYPE)
    _check_preconditions(req, existing.etag if existing else None)
    body = _body(req)
    if existing is not None:
        return _update_cluster(world, req, existing, body)
    location = _location(body, required=True)
    assert location is not None  # noqa: S101 - _location raises when required and missing
    sku = body.get("sku")
    if not isinstance(sku, dict) or not isinstance(sku.get("name"), str):
        raise _bad("The property 'sku' (with name and tier) is required.", "InvalidRequestContent")
    name = m["name"]
    if not re.fullmatch(r"[a-z][a-z0-9]{3,21}", name):
        raise _bad(
            f"Cluster name '{name}' is invalid: 4-22 lowercase letters and digits, starting with a letter.",
            "InvalidClusterName",
        )
    if _global_name_taken(world, KUSTO_TYPE, name, rid):
        raise SandboxError(409, "ClusterNameAlreadyExists", f"A Kusto cluster named '{name}' already exists.")
    props = _props(body)
    patch = _cluster_patch(props)
    slug = _loc_slug(location)
    res = ArmResource(
        id=rid,
        type=KUSTO_TYPE,
        name=name,
        subscription=m["sub"],
        resource_group=m["rg"],
        location=location,
        properties={
            **{k: v for k, v in patch.items() if k != "keyVaultProperties"},
            "state": "Creating",
            "provisioningState": "Creating",
            "uri": f"https://{name}.{slug}.kusto.windows.net",
            "dataIngestionUri": f"https://ingest-{name}.{slug}.kusto.windows.net",
            "stateReason": None,
            "keyVaultProperties": None,
        },
        tags=_tags(body.get("tags")),
        identity=_identity(world, rid, body.get("identity"), None),
        sku={k: v for k, v in sku.items() if k in ("name", "tier", "capacity")},
    )
    _index_name(world, res)
    world.resources[rid.lower()] = res
    res.sim["creating"] = True
    headers = _start_operation(
        world,
        req,
        res,
        provider="Microsoft.Kusto",
        segment="operationResults",
        kind="ClusterCreate",
        patch={"keyVaultProperties": patch["keyVaultProperties"]} if patch.get("keyVaultProperties") else {},
        can_fail=False,
    )
    return _cluster_json_response(201, res, headers)


def _update_cluster(world: World, req: Request, res: ArmResource, body: JsonObj) -> Response:
    if res.sim.get("pendingOperation"):
        raise SandboxError(
            409,
            "Conflict",
            f"Cluster '{res.name}' is in state '{res.properties.get('state')}' with an operation in progress; "
            "retry when it completes.",
        )
    props = _props(body)
    patch = _cluster_patch(props)
    if "tags" in body:
        res.tags = _tags(body["tags"])
    if isinstance(body.get("sku"), dict):
        res.sku = {k: v for k, v in body["sku"].items() if k in ("name", "tier", "capacity")}
    if "identity" in body:
        before = res.identity
        res.identity = _identity(world, res.id, body["identity"], res.identity)
        if res.identity != before:
            patch["_identityChanged"] = True
    res.sim["stateBefore"] = res.properties.get("state") or "Running"
    res.properties["state"] = "Updating"
    # Kusto's ProvisioningState enum has no "Updating": a running operation shows as "Running".
    res.properties["provisioningState"] = "Running"
    headers = _start_operation(
        world,
        req,
        res,
        provider="Microsoft.Kusto",
        segment="operationResults",
        kind="ServiceConfigurationAlter",
        patch=patch,
        can_fail=True,
    )
    res.new_etag()
    return _cluster_json_response(202, res, headers)


@ROUTER.route("PATCH", _CLUSTER)
def patch_cluster(world: World, req: Request, m: _re.Match[str]) -> Response:
    res = _find(world, _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"]), KUSTO_TYPE)
    if res is None:
        raise _not_found(KUSTO_TYPE, m["name"], m["rg"])
    _check_preconditions(req, res.etag)
    return _update_cluster(world, req, res, _body(req))


@ROUTER.route("GET", _CLUSTER)
def get_cluster(world: World, _req: Request, m: _re.Match[str]) -> Response:
    res = _find(world, _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"]), KUSTO_TYPE)
    if res is None:
        raise _not_found(KUSTO_TYPE, m["name"], m["rg"])
    return _cluster_json_response(200, res)


@ROUTER.route("GET", _RG + r"/providers/Microsoft\.Kusto/clusters")
def list_clusters_rg(world: World, req: Request, m: _re.Match[str]) -> Response:
    return _page(req, _resources_of(world, KUSTO_TYPE, m["sub"], m["rg"]), resource_json)


@ROUTER.route("GET", _SUB + r"/providers/Microsoft\.Kusto/clusters")
def list_clusters_sub(world: World, req: Request, m: _re.Match[str]) -> Response:
    return _page(req, _resources_of(world, KUSTO_TYPE, m["sub"]), resource_json)


# ---- Kusto databases ---------------------------------------------------------------------
# specification/azure-kusto/resource-manager/Microsoft.Kusto/stable/2024-04-13/kusto.json:
# Databases_CreateOrUpdate (PUT, 200/201/202 LRO), Databases_Update (PATCH, 200/201/202 LRO),
# Databases_Get, Databases_ListByCluster, Databases_Delete; ReadWriteDatabase (kind "ReadWrite")
# with ReadWriteDatabaseProperties {softDeletePeriod, hotCachePeriod, keyVaultProperties, and the
# read-only provisioningState, statistics, isFollowed, suspensionDetails}. Example
# KustoDatabasesCreateOrUpdate.json: name "cluster/database", type "Microsoft.Kusto/Clusters/Databases".
# Followers (kind ReadOnlyFollowing) are made by attaching, not by PUT; the sandbox refuses them.
KUSTO_DB_TYPE = "Microsoft.Kusto/Clusters/Databases"
_DATABASE = _CLUSTER + r"/databases/(?P<db>[^/]+)"
_DB_READ_ONLY = ("provisioningState", "statistics", "isFollowed", "suspensionDetails")


def _db_rid(m: _re.Match[str]) -> str:
    return _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"]) + f"/databases/{m['db']}"


def _cluster_of(world: World, m: _re.Match[str]) -> ArmResource:
    cluster = _find(world, _rid(m["sub"], m["rg"], KUSTO_TYPE, m["name"]), KUSTO_TYPE)
    if cluster is None:
        raise SandboxError(
            404, "ParentResourceNotFound",
            f"Can not perform requested operation on nested resource. Parent resource '{m['name']}' not found.",
        )
    return cluster


def _database(world: World, m: _re.Match[str]) -> ArmResource:
    _cluster_of(world, m)
    res = _find(world, _db_rid(m), KUSTO_DB_TYPE)
    if res is None:
        raise _not_found(KUSTO_DB_TYPE, f"{m['name']}/{m['db']}", m["rg"])
    return res


def _db_kind(body: JsonObj, existing: ArmResource | None) -> str:
    # Database.kind is the schema's required discriminator, on PUT and PATCH alike.
    kind = body.get("kind")
    if not isinstance(kind, str) or kind.lower() not in ("readwrite", "readonlyfollowing"):
        raise _bad("The property 'kind' must be ReadWrite or ReadOnlyFollowing.", "InvalidRequestContent")
    if kind.lower() != "readwrite":
        raise _bad("A ReadOnlyFollowing database is created by attaching a follower, not by PUT.")
    if existing is not None and (existing.kind or "").lower() != kind.lower():
        raise _bad(f"The kind of database '{existing.name}' cannot be changed.")
    return "ReadWrite"


def _db_patch(props: JsonObj) -> JsonObj:
    patch = {k: copy.deepcopy(v) for k, v in props.items() if k not in _DB_READ_ONLY}
    kvp = _kusto_kvp(props)
    if kvp is not None:
        patch["keyVaultProperties"] = kvp or None
    return patch


@ROUTER.route("PUT", _DATABASE)
def put_database(world: World, req: Request, m: _re.Match[str]) -> Response:
    cluster = _cluster_of(world, m)
    rid = _db_rid(m)
    existing = _find(world, rid, KUSTO_DB_TYPE)
    body = _body(req)
    _db_kind(body, existing)
    if existing is not None:
        return _update_database(world, req, existing, body)
    patch = _db_patch(_props(body))
    res = ArmResource(
        id=rid,
        type=KUSTO_DB_TYPE,
        name=f"{cluster.name}/{m['db']}",
        subscription=m["sub"],
        resource_group=m["rg"],
        location=_location(body, required=False) or cluster.location,
        properties={**{k: v for k, v in patch.items() if k != "keyVaultProperties"},
                    "provisioningState": "Creating", "isFollowed": False},
        kind="ReadWrite",
    )
    res.sim["cluster"] = cluster.id
    world.resources[rid.lower()] = res
    res.sim["creating"] = True
    headers = _start_operation(
        world, req, res, provider="Microsoft.Kusto", segment="operationResults", kind="DatabaseCreate",
        patch={"keyVaultProperties": patch["keyVaultProperties"]} if patch.get("keyVaultProperties") else {},
        can_fail=False,
    )
    return json_response(201, resource_json(res), headers)


def _update_database(world: World, req: Request, res: ArmResource, body: JsonObj) -> Response:
    if res.sim.get("pendingOperation"):
        raise SandboxError(409, "Conflict", f"Database '{res.name}' has an operation in progress; retry later.")
    patch = _db_patch(_props(body))
    if "location" in body and isinstance(body["location"], str) and body["location"].strip():
        res.location = body["location"]
    # Kusto ProvisioningState has no "Updating": a running operation shows as "Running".
    res.properties["provisioningState"] = "Running"
    headers = _start_operation(
        world, req, res, provider="Microsoft.Kusto", segment="operationResults", kind="DatabaseUpdate",
        patch=patch, can_fail=True,
    )
    return json_response(202, resource_json(res), headers)


@ROUTER.route("PATCH", _DATABASE)
def patch_database(world: World, req: Request, m: _re.Match[str]) -> Response:
    res = _database(world, m)
    body = _body(req)
    _db_kind(body, res)
    return _update_database(world, req, res, body)


@ROUTER.route("GET", _DATABASE)
def get_database(world: World, _req: Request, m: _re.Match[str]) -> Response:
    return json_response(200, resource_json(_database(world, m)))


@ROUTER.route("DELETE", _DATABASE)
def delete_database(world: World, _req: Request, m: _re.Match[str]) -> Response:
    _cluster_of(world, m)
    return _delete_tracked(world, _db_rid(m), KUSTO_DB_TYPE, gone_status=204, done_status=200)


def databases_of(world: World, cluster_id: str) -> list[ArmResource]:
    cid = cluster_id.lower()
    return [
        r for r in world.resources.values()
        if r.type == KUSTO_DB_TYPE and str(r.sim.get("cluster", "")).lower() == cid
    ]


@ROUTER.route("GET", _CLUSTER + r"/databases")
def list_databases(world: World, req: Request, m: _re.Match[str]) -> Response:
    cluster = _cluster_of(world, m)
    return _page(req, databases_of(world, cluster.id), resource_json)


# Kusto cluster and Cosmos account names are global (they become DNS names). A per-world index
# keeps the check O(1), so creating the 10,000th cluster does not scan the other 9,999; entries
# left behind by deletes or world.reset() are recognised as stale and ignored.
_NAMES = weakref.WeakKeyDictionary["World", dict[tuple[str, str], str]]()


def _global_name_taken(world: World, rtype: str, name: str, rid: str) -> bool:
    index = _NAMES.setdefault(world, {})
    owner = index.get((rtype.lower(), name.lower()))
    if owner is None or owner == rid.lower():
        return False
    res = world.resources.get(owner)
    return res is not None and res.name.lower() == name.lower() and res.type.lower() == rtype.lower()


def _index_name(world: World, res: ArmResource) -> None:
    _NAMES.setdefault(world, {})[(res.type.lower(), res.name.lower())] = res.id.lower()


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
COSMOS_DEFAULT_PERIODIC = {"backupIntervalInMinutes": 240, "backupRetentionIntervalInHours": 8,
                           "backupStorageRedundancy": "Geo"}
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
        return copy.deepcopy(existing) if existing else {"type": "Periodic",
                                                         "periodicModeProperties": dict(COSMOS_DEFAULT_PERIODIC)}
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
    tier = props.get("tier") or (((existing or {}).get("continuousModeProperties") or {}).get("tier")
                                 if (existing or {}).get("type") == "Continuous" else None)
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
            raise _bad(
                "defaultIdentity SystemAssignedIdentity needs a system-assigned identity on the account."
            )
        return
    if low.startswith("userassignedidentity="):
        if services.uai_principal(world, identity, default.split("=", 1)[1]) is None:
            raise _bad(
                f"The user-assigned identity in defaultIdentity '{default}' is not assigned to the account."
            )
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
    identity = (
        _identity(world, res.id, body.get("identity"), res.identity) if "identity" in body else res.identity
    )
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


def _delete_tracked(world: World, rid: str, rtype: str, *, gone_status: int, done_status: int) -> Response:
    res = _find(world, rid, rtype)
    if res is None:
        return empty_response(gone_status)
    del world.resources[rid.lower()]
    if rtype.lower() == UAI_TYPE.lower():
        world.identities.pop(rid.lower(), None)
    return empty_response(done_status)


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


# ---- operation status -----------------------------------------------------------------------
@ROUTER.route(
    "GET",
    _SUB
    + r"/providers/(?P<ns>[^/]+)/locations/(?P<loc>[^/]+)/(?P<seg>operationResults|operationsStatus)/(?P<op>[^/]+)",
)
def get_operation(world: World, req: Request, m: _re.Match[str]) -> Response:
    op = world.operations.get(m["op"].lower()) or world.operations.get(m["op"])
    if op is None or op.subscription.lower() != m["sub"].lower() or op.provider.lower() != m["ns"].lower():
        raise SandboxError(404, "OperationNotFound", f"The operation '{m['op']}' was not found.")
    now = world.clock.now()
    remaining = max(0.0, (op.due - now).total_seconds())
    headers = {"Retry-After": str(math.ceil(remaining))} if op.status == "InProgress" else {}
    if (_query(req, "operationResultResponseType") or "").lower() == "location":
        if op.status == "InProgress":
            return empty_response(202, {**headers, "Location": f"https://{req.host}{req.path}?{_qs(req)}"})
        res = world.resources.get(op.resource_id.lower())
        return json_response(200, resource_json(res)) if res is not None else empty_response(204)
    total = (op.due - op.started).total_seconds()
    done = op.status != "InProgress"
    body: JsonObj = {
        "id": f"/subscriptions/{op.subscription}/providers/{op.provider}/locations/{op.location}/{m['seg']}/{op.id}",
        "name": op.id,
        "status": _status_text(op),
        "startTime": isoformat(op.started),
        "percentComplete": 100.0 if done or total <= 0 else round(100.0 * (1 - remaining / total), 1),
        "properties": {"operationKind": op.kind},
    }
    if done:
        body["endTime"] = isoformat(op.due)
    if op.error is not None:
        body["error"] = op.error
    return json_response(200, body, headers)


# The status an operation shows while it runs. Kusto: OperationResult.status is the Status enum
# Succeeded | Canceled | Failed | Running (kusto.json 2024-04-13, azure-mgmt-kusto 4.0.0 models.Status).
# Other providers: ARM's async-operation guidance's "InProgress" (no provider spec here names one).
_RUNNING_TEXT = {"microsoft.kusto": "Running"}


def _status_text(op: Operation) -> str:
    if op.status == "InProgress":
        return _RUNNING_TEXT.get(op.provider.lower(), "InProgress")
    return op.status


def _qs(req: Request) -> str:
    return urlencode(req.query, quote_via=quote)


# ---- generic tracked resources ---------------------------------------------------------------
_GENERIC = _RG + r"/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)"
_GENERIC_LIST_RG = _RG + r"/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)"
_GENERIC_LIST_SUB = _SUB + r"/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)"


def _generic_type(m: _re.Match[str]) -> str:
    rtype = GENERIC_TYPES.get(f"{m['ns']}/{m['type']}".lower())
    if rtype is None:
        raise SandboxError(
            404,
            "InvalidResourceType",
            f"The resource type '{m['type']}' could not be found in the namespace '{m['ns']}'.",
        )
    return rtype


# Cosmos DB for PostgreSQL: specification/postgresqlhsc/resource-manager/Microsoft.DBforPostgreSQL/
# PostgresqlHsc/preview/2023-03-02-preview/postgresqlhsc.json, ClusterProperties.dataEncryption
# {primaryKeyUri, primaryUserAssignedIdentityId, type: AzureKeyVault | SystemAssigned}. Only that
# api-version has dataEncryption (and identity); stable 2022-11-08 has neither, so the sandbox leaves
# both out of answers at other api-versions and refuses them in requests (a sandbox choice: real ARM
# may ignore unknown properties instead).
PG_CMK_API_VERSIONS = frozenset({"2023-03-02-preview"})
PG_ENCRYPTION_TYPES = ("AzureKeyVault", "SystemAssigned")
# Data Manager for Energy: specification/oep/resource-manager/Microsoft.OpenEnergyPlatform/stable/
# 2024-05-21/oep.json (same shape in preview/2022-12-01-preview and stable/2023-11-12):
# EnergyServiceProperties.encryption {keySource: Microsoft.Keyvault, keyVaultProperties: {keyName,
# keyVersion, keyVaultUri, userIdentity}}, keyName and keyVaultUri required. 2024-05-21's
# EnergyServiceUpdateProperties carries encryption, so a PATCH at 2024-05-21 or later may change the
# key; a PUT on an existing instance, or a PATCH at an older api-version, may not (the product
# document: "You cannot edit CMK settings once the ... instance is created").
ENERGY_CMK_PATCH_FROM = "2024-05-21"
ENERGY_KEY_SOURCES = ("Microsoft.Keyvault",)


def _cmk_of(rtype: str, props: JsonObj) -> Any:
    if rtype == POSTGRES_TYPE:
        return props.get("dataEncryption")
    if rtype == ENERGY_TYPE:
        return props.get("encryption")
    return None


def _cmk_field(rtype: str) -> str | None:
    return {POSTGRES_TYPE: "dataEncryption", ENERGY_TYPE: "encryption"}.get(rtype)


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.lower(): _norm(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, str):
        return value.strip().rstrip("/").lower()
    return value


def _validate_generic_cmk(world: World, rtype: str, props: JsonObj, identity: JsonObj | None, api: str) -> None:
    if rtype == POSTGRES_TYPE:
        if "dataencryption" in {k.lower() for k in props} and "dataEncryption" not in props:
            raise _bad(
                "Unknown property 'dataencryption': the 2023-03-02-preview schema names it 'dataEncryption'.",
                "InvalidRequestContent",
            )
        enc = props.get("dataEncryption")
        if enc is None:
            return
        if api not in PG_CMK_API_VERSIONS:
            raise _bad(
                f"dataEncryption is not part of api-version '{api}'; use 2023-03-02-preview.",
                "InvalidRequestContent",
            )
        if not isinstance(enc, dict):
            raise _bad("dataEncryption must be an object.", "InvalidRequestContent")
        kind = enc.get("type", "SystemAssigned")
        if kind not in PG_ENCRYPTION_TYPES:
            raise _bad(f"dataEncryption.type must be one of {', '.join(PG_ENCRYPTION_TYPES)}; got {kind!r}.")
        if kind == "SystemAssigned":
            return
        uri, uai = enc.get("primaryKeyUri"), enc.get("primaryUserAssignedIdentityId")
        parsed = services.parse_key_uri(world, uri) if isinstance(uri, str) else None
        if parsed is None:
            raise _bad("dataEncryption.primaryKeyUri must be a Key Vault key URI.")
        # Guess (no spec text): the service validates the key when the cluster is created and
        # refuses a key it cannot find; the code and wording are the sandbox's own.
        vault = world.vaults.get((parsed[0] or "").lower())
        if vault is None or parsed[1].lower() not in vault.keys:
            raise _bad(f"dataEncryption.primaryKeyUri: the key '{uri}' was not found.", "KeyNotFound")
        if not isinstance(uai, str) or services.uai_principal(world, identity, uai) is None:
            raise _bad(
                "dataEncryption.primaryUserAssignedIdentityId must name a user-assigned identity assigned to the "
                "cluster (customer-managed keys need a user-assigned identity)."
            )
    elif rtype == ENERGY_TYPE:
        enc = props.get("encryption")
        if enc is None:
            return
        if not isinstance(enc, dict):
            raise _bad("encryption must be an object.", "InvalidRequestContent")
        source = enc.get("keySource", "Microsoft.Keyvault")
        if not isinstance(source, str) or source.lower() not in {s.lower() for s in ENERGY_KEY_SOURCES}:
            raise _bad(f"encryption.keySource must be Microsoft.Keyvault; got {source!r}.")
        kvp = enc.get("keyVaultProperties")
        if not isinstance(kvp, dict) or not all(v is None or isinstance(v, str) for v in kvp.values()):
            raise _bad("encryption.keyVaultProperties must be an object of strings.", "InvalidRequestContent")
        if not kvp.get("keyName") or not kvp.get("keyVaultUri"):
            raise _bad("encryption.keyVaultProperties needs keyName and keyVaultUri.")
        if services.parse_key_uri(world, f"{str(kvp['keyVaultUri']).rstrip('/')}/keys/{kvp['keyName']}") is None:
            raise _bad("encryption.keyVaultProperties.keyVaultUri must be a Key Vault URI.")
        uai = kvp.get("userIdentity")
        if uai and services.uai_principal(world, identity, str(uai)) is None:
            raise _bad("encryption.keyVaultProperties.userIdentity is not assigned to the resource.")


def _api_at_least(api: str, floor: str) -> bool:
    # ARM api-versions compare by their date part (YYYY-MM-DD[-preview]).
    return api[:10] >= floor[:10]


def _generic_props(
    world: World, rtype: str, rid: str, incoming: JsonObj, existing: ArmResource | None, *, key_change_ok: bool = False
) -> JsonObj:
    if rtype == UAI_TYPE:
        if existing is not None:
            return existing.properties
        return {
            "tenantId": world.tenant_id,
            "principalId": principal_id_for(rid),
            "clientId": principal_id_for(rid + "/clientid"),
        }
    props = {**(existing.properties if existing else {}), **copy.deepcopy(incoming)}
    if existing is not None and not key_change_ok:
        before, after = _cmk_of(rtype, existing.properties), _cmk_of(rtype, props)
        if _cmk_field(rtype) not in incoming:
            after = before
        if _norm(before) != _norm(after):
            what = (
                "Cosmos DB for PostgreSQL cluster"
                if rtype == POSTGRES_TYPE
                else "Data Manager for Energy resource"
            )
            raise _bad(
                f"The customer-managed key settings of a {what} cannot be changed after creation.",
                "CustomerManagedKeyUpdateNotSupported",
            )
    props["provisioningState"] = "Succeeded"
    if rtype == POSTGRES_TYPE:
        props.setdefault("state", "Ready")
    if rtype == ENERGY_TYPE:
        props.setdefault("dnsName", f"{rid.rsplit('/', 1)[-1].lower()}.energy.azure.com")
    return props


# Write-only properties: ``x-ms-secret: true`` with mutability create/update and no read, so ARM
# never returns them (postgresqlhsc.json 2023-03-02-preview, ClusterProperties.administratorLoginPassword).
_SECRET_PROPERTIES = {POSTGRES_TYPE: ("administratorLoginPassword",)}


def _forget_secrets(rtype: str, props: JsonObj) -> JsonObj:
    """Drops the properties Azure accepts but never answers with (the sandbox needs none of them)."""
    for name in _SECRET_PROPERTIES.get(rtype, ()):
        props.pop(name, None)
    return props


def _generic_view(req: Request, res: ArmResource) -> JsonObj:
    """The resource as the request's api-version shows it (PostgreSQL: no dataEncryption/identity
    outside :data:`PG_CMK_API_VERSIONS`)."""
    out = resource_json(res)
    if res.type == POSTGRES_TYPE and (_query(req, "api-version") or "") not in PG_CMK_API_VERSIONS:
        out["properties"].pop("dataEncryption", None)
        out.pop("identity", None)
    return out


@ROUTER.route("PUT", _GENERIC)
def put_generic(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    rid = _rid(m["sub"], m["rg"], rtype, m["name"])
    existing = _find(world, rid, rtype)
    body = _body(req)
    api = _query(req, "api-version") or ""
    location = _location(body, required=existing is None) or (existing.location if existing else "")
    identity = _identity(world, rid, body.get("identity"), existing.identity if existing else None)
    incoming = _props(body)
    if rtype != UAI_TYPE:
        _validate_generic_cmk(world, rtype, incoming, identity, api)
    props = _forget_secrets(rtype, _generic_props(world, rtype, rid, incoming, existing))
    if existing is not None:
        existing.properties, existing.identity = props, identity
        if "tags" in body:
            existing.tags = _tags(body["tags"])
        return json_response(200, _generic_view(req, existing))
    res = ArmResource(
        id=rid,
        type=rtype,
        name=m["name"],
        subscription=m["sub"],
        resource_group=m["rg"],
        location=location,
        properties=props,
        tags=_tags(body.get("tags")),
        identity=identity,
        sku=body.get("sku") if isinstance(body.get("sku"), dict) else None,
    )
    world.resources[rid.lower()] = res
    if rtype == UAI_TYPE:
        world.identities[rid.lower()] = {"principalId": props["principalId"], "clientId": props["clientId"]}
    return json_response(201, _generic_view(req, res))


@ROUTER.route("PATCH", _GENERIC)
def patch_generic(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    rid = _rid(m["sub"], m["rg"], rtype, m["name"])
    res = _find(world, rid, rtype)
    if res is None:
        raise _not_found(rtype, m["name"], m["rg"])
    body = _body(req)
    api = _query(req, "api-version") or ""
    identity = _identity(world, rid, body.get("identity"), res.identity)
    incoming = _props(body)
    if rtype != UAI_TYPE:
        _validate_generic_cmk(world, rtype, incoming, identity, api)
    # oep 2024-05-21: EnergyServiceUpdateProperties.encryption, so a PATCH may change the key.
    key_change_ok = rtype == ENERGY_TYPE and _api_at_least(api, ENERGY_CMK_PATCH_FROM)
    props = _forget_secrets(rtype, _generic_props(world, rtype, rid, incoming, res, key_change_ok=key_change_ok))
    res.properties, res.identity = props, identity
    if "tags" in body:
        res.tags = _tags(body["tags"])
    return json_response(200, _generic_view(req, res))


@ROUTER.route("GET", _GENERIC)
def get_generic(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    res = _find(world, _rid(m["sub"], m["rg"], rtype, m["name"]), rtype)
    if res is None:
        raise _not_found(rtype, m["name"], m["rg"])
    return json_response(200, _generic_view(req, res))


@ROUTER.route("DELETE", _GENERIC)
def delete_generic(world: World, _req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    return _delete_tracked(
        world, _rid(m["sub"], m["rg"], rtype, m["name"]), rtype, gone_status=204, done_status=200
    )


@ROUTER.route("GET", _GENERIC_LIST_RG)
def list_generic_rg(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    return _page(req, _resources_of(world, rtype, m["sub"], m["rg"]), lambda r: _generic_view(req, r))


@ROUTER.route("GET", _GENERIC_LIST_SUB)
def list_generic_sub(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    return _page(req, _resources_of(world, rtype, m["sub"]), lambda r: _generic_view(req, r))


# ---- Resource Graph ---------------------------------------------------------------------------
GRAPH_COLUMNS = (
    "id",
    "name",
    "type",
    "tenantId",
    "kind",
    "location",
    "resourceGroup",
    "subscriptionId",
    "managedBy",
    "sku",
    "plan",
    "properties",
    "tags",
    "identity",
    "zones",
    "extendedLocation",
)
_COLUMN_BY_LOWER = {c.lower(): c for c in GRAPH_COLUMNS}
_FILTER_COLUMNS = (
    "id", "name", "type", "kind", "location", "resourceGroup", "subscriptionId", "tenantId",
    "properties", "tags", "identity", "sku",
)


class _QueryError(Exception):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<op>!in~|in~|=~|!~|==|!=|\(|\)|,)"
    r"|(?P<word>!?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"
)

Predicate = Callable[[JsonObj], bool]
Getter = Callable[[JsonObj], Any]
_FUNCTIONS: dict[str, Callable[[str], str]] = {"tostring": str, "tolower": str.lower, "toupper": str.upper}
_DYNAMIC_COLUMNS = ("properties", "tags", "identity", "sku")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _QueryError(f"unexpected text at '{text[pos : pos + 20]}'")
        pos = m.end()
        if m["str"] is not None:
            raw = m["str"][1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif m["op"] is not None:
            out.append(("op", m["op"]))
        else:
            out.append(("word", m["word"]))
    return out


class _WhereParser:
    """``expr := and ('or' and)*``, ``and := atom ('and' atom)*``,
    ``atom := '(' expr ')' | column op 'value' | column [!]in[~] ('v', ...)``."""

    _OPS = ("==", "!=", "=~", "!~")
    _IN_OPS = ("in", "!in", "in~", "!in~")

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def parse(self) -> Predicate:
        pred = self._or()
        if self.i != len(self.toks):
            raise _QueryError(f"unexpected '{self.toks[self.i][1]}' in where clause")
        return pred

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise _QueryError("the where clause ends too early")
        self.i += 1
        return tok

    def _is_word(self, word: str) -> bool:
        tok = self._peek()
        return tok is not None and tok[0] == "word" and tok[1].lower() == word

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._is_word("or"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def _and(self) -> Predicate:
        parts = [self._atom()]
        while self._is_word("and"):
            self.i += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def _operand(self, tok: tuple[str, str]) -> Getter:
        """A column, a dotted path into a dynamic column (``properties.a.b``), or ``tostring(x)``
        / ``tolower(x)`` / ``toupper(x)`` of one (learn.microsoft.com/kusto/query/
        tostring-function, tolower-function)."""
        if tok[0] == "word" and tok[1].lower() in _FUNCTIONS and self._peek() == ("op", "("):
            self.i += 1
            inner = self._operand(self._take())
            if self._take() != ("op", ")"):
                raise _QueryError(f"missing ')' after {tok[1]}(")
            fn = _FUNCTIONS[tok[1].lower()]
            return lambda row: fn(_kql_string(inner(row)))
        head, _, rest = tok[1].partition(".")
        if tok[0] != "word" or head.lower() not in {c.lower() for c in _FILTER_COLUMNS} or (
            rest and _COLUMN_BY_LOWER[head.lower()] not in _DYNAMIC_COLUMNS
        ):
            raise _QueryError(
                f"'{tok[1]}' is not a supported column for where (supported: {', '.join(_FILTER_COLUMNS)}, "
                f"and paths into {', '.join(_DYNAMIC_COLUMNS)})"
            )
        column = _COLUMN_BY_LOWER[head.lower()]
        path = rest.split(".") if rest else []

        def get(row: JsonObj) -> Any:
            value: Any = row.get(column)
            for part in path:  # property names in dynamic values are case-sensitive in KQL
                value = value.get(part) if isinstance(value, dict) else None
            return value

        return get

    def _atom(self) -> Predicate:
        tok = self._take()
        if tok == ("op", "("):
            inner = self._or()
            if self._take() != ("op", ")"):
                raise _QueryError("missing ')'")
            return inner
        column = self._operand(tok)
        op = self._take()
        if op[0] == "word" and op[1].lower() in ("has", "!has"):
            value = self._take()
            if value[0] != "str":
                raise _QueryError(f"expected a quoted string after {op[1]}")
            return _has(column, value[1], negate=op[1].startswith("!"))
        if op[1] in self._OPS and op[0] == "op":
            value = self._take()
            if value[0] != "str":
                raise _QueryError(f"expected a quoted string after {op[1]}")
            return _compare(column, op[1], [value[1]])
        if op[1].lower() in self._IN_OPS:
            if self._take() != ("op", "("):
                raise _QueryError(f"expected '(' after {op[1]}")
            values: list[str] = []
            while True:
                value = self._take()
                if value[0] != "str":
                    raise _QueryError(f"expected a quoted string in the {op[1]} list")
                values.append(value[1])
                sep = self._take()
                if sep == ("op", ")"):
                    break
                if sep != ("op", ","):
                    raise _QueryError(f"expected ',' or ')' in the {op[1]} list")
            return _compare(column, op[1].lower(), values)
        raise _QueryError(
            f"unsupported operator '{op[1]}' (supported: ==, !=, =~, !~, in, !in, in~, !in~, has, !has)"
        )


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda row: any(p(row) for p in parts)


def _all_of(parts: list[Predicate]) -> Predicate:
    return lambda row: all(p(row) for p in parts)


def _kql_string(value: Any) -> str:
    """``tostring()`` of a cell: a dynamic value as compact JSON, a boolean as ``true``/``false``,
    null as the empty string (learn.microsoft.com/kusto/query/tostring-function)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _compare(column: Getter, op: str, values: list[str]) -> Predicate:
    # ==, != and in are case-sensitive; =~, !~ and in~ are not (learn.microsoft.com/kusto/query/
    # datatypes-string-operators).
    insensitive = op in ("=~", "!~", "in~", "!in~")
    negate = op.startswith("!")
    wanted = {v.lower() for v in values} if insensitive else set(values)

    def pred(row: JsonObj) -> bool:
        cell = _kql_string(column(row))
        hit = (cell.lower() if insensitive else cell) in wanted
        return hit != negate

    return pred


def _has(column: Getter, term: str, *, negate: bool) -> Predicate:
    """``has``: case-insensitive, the right side is a whole term (or a run of terms) of the left
    side. Terms are maximal runs of ASCII letters and digits (learn.microsoft.com/kusto/query/
    datatypes-string-operators, "What is a term?"), so a match must not extend into a letter or
    digit on either side. A right side with inner punctuation (``kv.vault.azure.net``) matches
    as that exact run, bounded the same way; this phrase reading is the sandbox's (the docs
    describe only single terms)."""
    needle = term.lower()
    pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(needle) + r"(?![A-Za-z0-9])")

    def pred(row: JsonObj) -> bool:
        hit = bool(needle) and pattern.search(_kql_string(column(row)).lower()) is not None
        return hit != negate

    return pred


def _split_pipes(query: str) -> list[str]:
    parts, buf, quote_char = [], [], ""
    for ch in query:
        if quote_char:
            buf.append(ch)
            if ch == quote_char:
                quote_char = ""
        elif ch in "'\"":
            quote_char = ch
            buf.append(ch)
        elif ch == "|":
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote_char:
        raise _QueryError("unterminated string literal")
    parts.append("".join(buf).strip())
    return parts


def _parse_query(query: str) -> tuple[list[Predicate], list[str] | None, int | None]:
    """The supported KQL subset: ``Resources`` then any of ``| where <expr>``,
    ``| project col, ...`` (top-level columns), ``| limit N`` / ``| take N``.

    Raises :class:`_QueryError` for anything else.
    """
    stages = _split_pipes(query)
    if stages[0].lower() != "resources":
        raise _QueryError("the query must start with the 'Resources' table")
    preds: list[Predicate] = []
    project: list[str] | None = None
    limit: int | None = None
    for stage in stages[1:]:
        head, _, rest = stage.partition(" ")
        head = head.lower()
        if head == "where":
            preds.append(_WhereParser(_tokens(rest)).parse())
        elif head == "project":
            cols = [c.strip() for c in rest.split(",") if c.strip()]
            unknown = [c for c in cols if c.lower() not in _COLUMN_BY_LOWER]
            if not cols or unknown:
                raise _QueryError(
                    f"project supports top-level columns only ({', '.join(GRAPH_COLUMNS)}); got {', '.join(unknown)}"
                )
            project = [_COLUMN_BY_LOWER[c.lower()] for c in cols]
        elif head in ("limit", "take"):
            if not rest.strip().isdigit():
                raise _QueryError(f"{head} needs a non-negative integer")
            limit = int(rest.strip())
        else:
            raise _QueryError(
                f"the operator '{head or stage}' is not supported (supported: where, project, limit, take)"
            )
    return preds, project, limit


def _graph_rows(world: World, subscriptions: set[str]) -> list[JsonObj]:
    rows: list[JsonObj] = []
    for v in world.vaults.values():
        if v.subscription.lower() in subscriptions:
            row = _graph_row(
                world,
                rid=v.id,
                name=v.name,
                rtype=KEYVAULT_TYPE,
                loc=v.location,
                sub=v.subscription,
                rg=v.resource_group,
            )
            row.update(tags=dict(v.tags), properties=vault_json(world, v)["properties"])
            rows.append(row)
    for r in world.resources.values():
        if r.subscription.lower() in subscriptions:
            row = _graph_row(
                world,
                rid=r.id,
                name=r.name,
                rtype=r.type,
                loc=r.location,
                sub=r.subscription,
                rg=r.resource_group,
            )
            view = resource_json(r)
            row.update(
                tags=view["tags"],
                properties=view["properties"],
                identity=view.get("identity"),
                sku=view.get("sku"),
                kind=view.get("kind", ""),
            )
            rows.append(row)
    rows.sort(key=lambda row: str(row["id"]).lower())
    return rows


def _graph_row(world: World, *, rid: str, name: str, rtype: str, loc: str, sub: str, rg: str) -> JsonObj:
    # Resource Graph reports type and resource group lower-cased, locations without spaces.
    return {
        "id": rid,
        "name": name,
        "type": rtype.lower(),
        "tenantId": world.tenant_id,
        "kind": "",
        "location": _loc_slug(loc),
        "resourceGroup": rg.lower(),
        "subscriptionId": sub,
        "managedBy": "",
        "sku": None,
        "plan": None,
        "properties": {},
        "tags": {},
        "identity": None,
        "zones": None,
        "extendedLocation": None,
    }


def _graph_error(message: str) -> Response:
    return json_response(
        400,
        {
            "error": {
                "code": "BadRequest",
                "message": "Please provide below info when asking for support: the query is invalid.",
                "details": [{"code": "InvalidQuery", "message": message}],
            }
        },
    )


@ROUTER.route("POST", r"/providers/Microsoft\.ResourceGraph/resources")
def graph_query(world: World, req: Request, _m: _re.Match[str]) -> Response:
    body = _body(req)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        return _graph_error("The 'query' property is required.")
    subs_raw = body.get("subscriptions")
    if subs_raw is not None and (
        not isinstance(subs_raw, list) or not all(isinstance(s, str) for s in subs_raw)
    ):
        return _graph_error("subscriptions must be an array of subscription ids.")
    subscriptions = {s.lower() for s in (subs_raw or world.subscriptions)} & set(world.subscriptions)
    options = body.get("options") or {}
    if not isinstance(options, dict):
        return _graph_error("options must be an object.")
    if str(options.get("resultFormat") or "objectArray").lower() != "objectarray":
        return _graph_error("Only resultFormat 'objectArray' is supported by the sandbox.")
    try:
        preds, project, limit = _parse_query(query)
    except _QueryError as err:
        return _graph_error(f"Query is invalid: {err}.")
    top = options.get("$top", GRAPH_DEFAULT_TOP)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= GRAPH_MAX_TOP:
        return _graph_error(f"$top must be an integer between 1 and {GRAPH_MAX_TOP}.")
    offset = options.get("$skip") or 0
    token = options.get("$skipToken")
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(str(token).encode()).decode())
        except (ValueError, binascii.Error):
            return _graph_error("The $skipToken is not valid.")
    if not isinstance(offset, int) or offset < 0:
        return _graph_error("$skip must be a non-negative integer.")
    rows = [row for row in _graph_rows(world, subscriptions) if all(p(row) for p in preds)]
    if limit is not None:
        rows = rows[:limit]
    page = rows[offset : offset + top]
    if project is not None:
        page = [{c: row.get(c) for c in project} for row in page]
    out: JsonObj = {
        "totalRecords": len(rows),
        "count": len(page),
        "resultTruncated": "false",
        "data": page,
        "facets": [],
    }
    if offset + top < len(rows):
        out["$skipToken"] = base64.urlsafe_b64encode(str(offset + top).encode()).decode()
    return json_response(200, out)
