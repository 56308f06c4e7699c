"""Key Vault data plane: keys and their versions (list, create, import, get, update, rotate, delete)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.keyvault.common import (
    _N,
    _V,
    DAY,
    DEFAULT_KEY_OPS,
    ROUTER,
    RSA_KTYS,
    RSA_SIZES,
    _attr_patch,
    _b64_int,
    _bad,
    _bundle,
    _check_name,
    _deleted_conflict,
    _deleted_fields,
    _forbidden,
    _item,
    _live_key,
    _ops,
    _page,
    _retention_days,
    _soft_delete,
    _tags,
    _vault,
    _version,
)
from sandbox.keyvault.lifecycle import _count, _new_version, _rotate, track
from sandbox.state import Key
from sandbox.wire import JsonObj, Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.world import World


@ROUTER.route("GET", r"/keys")
def _list_keys(world: World, req: Request, _m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    names = sorted(lname for lname, key in vault.keys.items() if key.versions)

    def render(lname: str) -> JsonObj:
        key = vault.keys[lname]
        return _item(world, vault, key, key.current, versioned=False)

    return _page(world, vault, req, path="/keys", markers=names, render=render, sorted_markers=True)


@ROUTER.route("POST", rf"/keys/{_N}/create")
def _create(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    body = req.json_object()
    kty = body.get("kty")
    if kty not in RSA_KTYS:
        raise _bad(f"The key type {kty} is not supported by this sandbox vault; use RSA or RSA-HSM.")
    size = body.get("key_size", 2048)
    if size is None:
        size = 2048
    if isinstance(size, bool) or not isinstance(size, int) or size not in RSA_SIZES:
        raise _bad(f"The key size {size} is not supported for {kty} keys; use 2048, 3072 or 4096.")
    exponent = body.get("public_exponent")
    if exponent is not None and exponent != 65537:
        raise _bad("Only the public exponent 65537 is supported.")
    if body.get("crv") is not None:
        raise _bad("Property crv applies to EC keys only.")
    ops = _ops(body["key_ops"]) if body.get("key_ops") is not None else list(DEFAULT_KEY_OPS)
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body.get("tags"))
    if name.lower() in vault.deleted_keys:
        raise _deleted_conflict(name)
    key, kv = _new_version(
        world,
        vault,
        name,
        kty=str(kty),
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=size),
        key_ops=ops,
        enabled=True if attrs.enabled is None else attrs.enabled,
        nbf=attrs.nbf,
        exp=attrs.exp,
        tags=tags,
        at=world.now_ts(),
    )
    return json_response(200, _bundle(world, vault, key, kv))


def _jwk_private_key(jwk: JsonObj) -> rsa.RSAPrivateKey:
    if jwk.get("key_hsm") is not None:
        raise _bad("Importing HSM-protected key material (BYOK) is not supported by the sandbox.")
    n = _b64_int(jwk.get("n"), "key.n")
    e = _b64_int(jwk.get("e"), "key.e")
    if jwk.get("d") is None:
        raise _bad("The key to import must contain its private part (key.d).")
    d = _b64_int(jwk.get("d"), "key.d")
    if jwk.get("p") is not None and jwk.get("q") is not None:
        p, q = _b64_int(jwk["p"], "key.p"), _b64_int(jwk["q"], "key.q")
    else:
        try:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        except ValueError as err:
            raise _bad("The RSA key parameters are not consistent.") from err
    dmp1 = _b64_int(jwk["dp"], "key.dp") if jwk.get("dp") is not None else rsa.rsa_crt_dmp1(d, p)
    dmq1 = _b64_int(jwk["dq"], "key.dq") if jwk.get("dq") is not None else rsa.rsa_crt_dmq1(d, q)
    iqmp = _b64_int(jwk["qi"], "key.qi") if jwk.get("qi") is not None else rsa.rsa_crt_iqmp(p, q)
    try:
        numbers = rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n))
        return numbers.private_key()
    except (ValueError, TypeError) as err:
        raise _bad(f"The RSA key parameters are not valid: {err}") from err


@ROUTER.route("PUT", rf"/keys/{_N}")
def _import(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    body = req.json_object()
    jwk = body.get("key")
    if not isinstance(jwk, dict):
        raise _bad("Property key is required and must be a JSON Web Key.")
    kty = jwk.get("kty")
    if kty not in RSA_KTYS:
        raise _bad(f"The key type {kty} is not supported by this sandbox vault; use RSA or RSA-HSM.")
    hsm = body.get("Hsm")
    if hsm is not None and not isinstance(hsm, bool):
        raise _bad("Property Hsm must be a boolean.")
    private_key = _jwk_private_key(jwk)
    if private_key.key_size not in RSA_SIZES:
        raise _bad(f"The key size {private_key.key_size} is not supported; use 2048, 3072 or 4096.")
    ops = _ops(jwk["key_ops"]) if jwk.get("key_ops") is not None else list(DEFAULT_KEY_OPS)
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body.get("tags"))
    key, kv = _new_version(
        world,
        vault,
        name,
        kty="RSA-HSM" if hsm or kty == "RSA-HSM" else "RSA",
        private_key=private_key,
        key_ops=ops,
        enabled=True if attrs.enabled is None else attrs.enabled,
        nbf=attrs.nbf,
        exp=attrs.exp,
        tags=tags,
        at=world.now_ts(),
    )
    return json_response(200, _bundle(world, vault, key, kv))


def _get(world: World, req: Request, name: str, version: str) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, name)
    kv = _version(key, version, name)
    if not kv.enabled:
        raise _forbidden("Operation get is not allowed on a disabled key.", "KeyDisabled")
    return json_response(200, _bundle(world, vault, key, kv))


@ROUTER.route("GET", rf"/keys/{_N}/versions")
def _list_versions(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    _check_name(m["name"])
    # Key Vault answers an empty list (not 404) for a key that does not exist.
    key = vault.keys.get(m["name"].lower()) or Key(name=m["name"])

    def render(version: str) -> JsonObj:
        return _item(world, vault, key, key.versions[version], versioned=True)

    path = f"/keys/{m['name']}/versions"
    return _page(world, vault, req, path=path, markers=list(key.versions), render=render, sorted_markers=False)


@ROUTER.route("POST", rf"/keys/{_N}/rotate")
def _rotate_route(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    name = m["name"]
    _check_name(name)
    if name.lower() in vault.deleted_keys and name.lower() not in vault.keys:
        raise _deleted_conflict(name)
    key = _live_key(vault, name)
    kv = _rotate(world, vault, key, at=world.now_ts())
    return json_response(200, _bundle(world, vault, key, kv))


@ROUTER.route("GET", rf"/keys/{_N}/{_V}")
def _get_version(world: World, req: Request, m: re.Match[str]) -> Response:
    return _get(world, req, m["name"], m["version"])


@ROUTER.route("GET", rf"/keys/{_N}")
def _get_latest(world: World, req: Request, m: re.Match[str]) -> Response:
    return _get(world, req, m["name"], "")


def _update(world: World, req: Request, name: str, version: str) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, name)
    kv = _version(key, version, name)
    body = req.json_object() if req.body else {}
    # Validate everything before touching state, so a bad field changes nothing.
    ops = _ops(body["key_ops"]) if body.get("key_ops") is not None else None
    attrs = _attr_patch(body.get("attributes"))
    tags = _tags(body["tags"]) if "tags" in body and body["tags"] is not None else None
    if ops is not None:
        kv.key_ops = ops
    if attrs.enabled is not None:
        kv.enabled = attrs.enabled
    if attrs.nbf is not None:
        kv.nbf = attrs.nbf
    if attrs.exp is not None:
        kv.exp = attrs.exp
    if tags is not None:
        kv.tags = tags
    kv.updated = world.now_ts()
    track(world, vault.name, key.name)
    return json_response(200, _bundle(world, vault, key, kv))


@ROUTER.route("PATCH", rf"/keys/{_N}/{_V}")
def _update_version(world: World, req: Request, m: re.Match[str]) -> Response:
    return _update(world, req, m["name"], m["version"])


@ROUTER.route("PATCH", rf"/keys/{_N}")
def _update_latest(world: World, req: Request, m: re.Match[str]) -> Response:
    return _update(world, req, m["name"], "")


@ROUTER.route("DELETE", rf"/keys/{_N}")
def _delete(world: World, req: Request, m: re.Match[str]) -> Response:
    vault = _vault(world, req)
    key = _live_key(vault, m["name"])
    lname = key.name.lower()
    body = _bundle(world, vault, key, key.current)
    del vault.keys[lname]
    if _soft_delete(vault):
        now = world.now_ts()
        key.deleted_date = now
        key.scheduled_purge_date = now + _retention_days(vault) * DAY
        vault.deleted_keys[lname] = key
        body.update(_deleted_fields(world, vault, key))
    else:
        _count(world, -1)
    track(world, vault.name, lname)
    return json_response(200, body)


