"""``Microsoft.Kusto/clusters`` and their databases in the sandbox's ARM."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING

from sandbox.arm.common import (
    _RG,
    _SUB,
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


def _kusto_operation(world: World, req: Request, res: ArmResource, kind: str, patch: JsonObj, *,
                     creating: bool) -> dict[str, str]:
    """Starts a cluster or database operation (Azure-AsyncOperation + Location on
    ``Microsoft.Kusto/locations/{loc}/operationResults``). A create carries only the key vault
    properties to apply at the end and never fails; an update applies the whole patch and may."""
    if creating:
        patch = {"keyVaultProperties": patch["keyVaultProperties"]} if patch.get("keyVaultProperties") else {}
    return _start_operation(world, req, res, provider="Microsoft.Kusto", segment="operationResults", kind=kind,
                            patch=patch, can_fail=not creating)


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
    headers = _kusto_operation(world, req, res, "ClusterCreate", patch, creating=True)
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
    headers = _kusto_operation(world, req, res, "ServiceConfigurationAlter", patch, creating=False)
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
            404,
            "ParentResourceNotFound",
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
        properties={
            **{k: v for k, v in patch.items() if k != "keyVaultProperties"},
            "provisioningState": "Creating",
            "isFollowed": False,
        },
        kind="ReadWrite",
    )
    res.sim["cluster"] = cluster.id
    world.resources[rid.lower()] = res
    res.sim["creating"] = True
    headers = _kusto_operation(world, req, res, "DatabaseCreate", patch, creating=True)
    return json_response(201, resource_json(res), headers)


def _update_database(world: World, req: Request, res: ArmResource, body: JsonObj) -> Response:
    if res.sim.get("pendingOperation"):
        raise SandboxError(409, "Conflict", f"Database '{res.name}' has an operation in progress; retry later.")
    patch = _db_patch(_props(body))
    if "location" in body and isinstance(body["location"], str) and body["location"].strip():
        res.location = body["location"]
    # Kusto ProvisioningState has no "Updating": a running operation shows as "Running".
    res.properties["provisioningState"] = "Running"
    headers = _kusto_operation(world, req, res, "DatabaseUpdate", patch, creating=False)
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
        r for r in world.resources.values() if r.type == KUSTO_DB_TYPE and str(r.sim.get("cluster", "")).lower() == cid
    ]


@ROUTER.route("GET", _CLUSTER + r"/databases")
def list_databases(world: World, req: Request, m: _re.Match[str]) -> Response:
    cluster = _cluster_of(world, m)
    return _page(req, databases_of(world, cluster.id), resource_json)
