"""Constants, the ARM router and the small helpers every section of the sandbox's ARM uses."""

from __future__ import annotations

import copy
import math
import re
import uuid
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from sandbox import services
from sandbox.state import ArmResource, Operation, Vault, principal_id_for
from sandbox.wire import (
    BadBody,
    Request,
    Response,
    Router,
    SandboxError,
    empty_response,
    json_response,
)

if TYPE_CHECKING:
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
    if not kinds or not kinds <= {"none", "systemassigned", "userassigned"} or ("none" in kinds and len(kinds) > 1):
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


def _delete_tracked(world: World, rid: str, rtype: str, *, gone_status: int, done_status: int) -> Response:
    res = _find(world, rid, rtype)
    if res is None:
        return empty_response(gone_status)
    del world.resources[rid.lower()]
    if rtype.lower() == UAI_TYPE.lower():
        world.identities.pop(rid.lower(), None)
    return empty_response(done_status)
