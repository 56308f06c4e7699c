"""Generic tracked resources (identities, Cosmos DB for PostgreSQL, Data Manager for Energy) in the sandbox's ARM."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from sandbox import services
from sandbox.arm.common import (
    _RG,
    _SUB,
    ENERGY_TYPE,
    GENERIC_TYPES,
    POSTGRES_TYPE,
    ROUTER,
    UAI_TYPE,
    JsonObj,
    _bad,
    _body,
    _delete_tracked,
    _find,
    _identity,
    _location,
    _not_found,
    _page,
    _props,
    _query,
    _resources_of,
    _rid,
    _tags,
    resource_json,
)
from sandbox.state import ArmResource, principal_id_for
from sandbox.wire import (
    Request,
    Response,
    SandboxError,
    json_response,
)

if TYPE_CHECKING:
    import re as _re

    from sandbox.world import World

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
            what = "Cosmos DB for PostgreSQL cluster" if rtype == POSTGRES_TYPE else "Data Manager for Energy resource"
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
    return _delete_tracked(world, _rid(m["sub"], m["rg"], rtype, m["name"]), rtype, gone_status=204, done_status=200)


@ROUTER.route("GET", _GENERIC_LIST_RG)
def list_generic_rg(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    return _page(req, _resources_of(world, rtype, m["sub"], m["rg"]), lambda r: _generic_view(req, r))


@ROUTER.route("GET", _GENERIC_LIST_SUB)
def list_generic_sub(world: World, req: Request, m: _re.Match[str]) -> Response:
    rtype = _generic_type(m)
    return _page(req, _resources_of(world, rtype, m["sub"]), lambda r: _generic_view(req, r))
