"""Key Vault data plane: soft-deleted keys (list, get, purge, recover)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sandbox.keyvault.common import (
    _N,
    ROUTER,
    KeyVaultError,
    _bundle,
    _deleted_fields,
    _deleted_key,
    _item,
    _page,
    _vault,
)
from sandbox.keyvault.lifecycle import _count, track
from sandbox.wire import JsonObj, Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.world import World

# ---- deleted keys ---------------------------------------------------------------------------


@ROUTER.route("GET", r"/deletedkeys")
def _list_deleted(world: World, req: Request, _m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    names = sorted(lname for lname, key in vault.deleted_keys.items() if key.versions)

    def render(lname: str) -> JsonObj:
        key = vault.deleted_keys[lname]
        out = _item(world, vault, key, key.current, versioned=False)
        out.update(_deleted_fields(world, vault, key))
        return out

    return _page(
        world, vault, req, path="/deletedkeys", markers=names, render=render, sorted_markers=True
    )


@ROUTER.route("GET", rf"/deletedkeys/{_N}")
def _get_deleted(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    body = _bundle(world, vault, key, key.current)
    body.update(_deleted_fields(world, vault, key))
    return json_response(200, body)


@ROUTER.route("DELETE", rf"/deletedkeys/{_N}")
def _purge(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    if vault.purge_protection:
        raise KeyVaultError(
            403,
            "Forbidden",
            'Operation "purge" is not allowed because purge protection is enabled for this vault. '
            "Key Vault service will automatically purge it after the retention period has passed.",
        )
    del vault.deleted_keys[key.name.lower()]
    _count(world, -1)
    track(world, vault.name, key.name)
    return Response(status=204)


@ROUTER.route("POST", rf"/deletedkeys/{_N}/recover")
def _recover(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _deleted_key(vault, m["name"])
    lname = key.name.lower()
    del vault.deleted_keys[lname]
    key.deleted_date = None
    key.scheduled_purge_date = None
    vault.keys[lname] = key
    track(world, vault.name, lname)
    return json_response(200, _bundle(world, vault, key, key.current))


