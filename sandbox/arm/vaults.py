"""``Microsoft.KeyVault/vaults`` in the sandbox's ARM."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from sandbox.arm.common import (
    _RG,
    _SUB,
    KEYVAULT_TYPE,
    ROUTER,
    JsonObj,
    _bad,
    _body,
    _location,
    _not_found,
    _page,
    _props,
    _query,
    _tags,
    vault_json,
)
from sandbox.state import Vault
from sandbox.wire import (
    Request,
    Response,
    SandboxError,
    empty_response,
    json_response,
)

if TYPE_CHECKING:
    import re as _re

    from sandbox.world import World

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
        existing.subscription.lower() != m["sub"].lower() or existing.resource_group.lower() != m["rg"].lower()
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
    vaults = [v for v in world.vaults.values() if v.subscription.lower() == sub and v.resource_group.lower() == rg]
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
            raise _bad(f"The $filter '{flt}' is not supported here (only resourceType eq '...').", "InvalidFilter")
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
