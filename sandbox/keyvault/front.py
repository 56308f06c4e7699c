"""Key Vault data plane: the front door (vault lookup, the bearer challenge, api-version, throttling,
the audit record) in front of the routes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sandbox import audit
from sandbox.keyvault.common import _API_VERSION, _LATEST_API, ROUTER
from sandbox.wire import Request, Response, SandboxError, error_response

if TYPE_CHECKING:
    from sandbox.world import World

# ---- the front door -------------------------------------------------------------------------

_CREATES = re.compile(r"/keys/[^/]+/(?:create|rotate)/?", re.IGNORECASE)
_IMPORT = re.compile(r"/keys/[^/]+/?", re.IGNORECASE)


def _is_create(req: Request) -> bool:
    """Creates, imports and rotations share Key Vault's smaller 'create' throttling budget."""
    if req.method == "POST":
        return _CREATES.fullmatch(req.path) is not None
    return req.method == "PUT" and _IMPORT.fullmatch(req.path) is not None


def _challenge(world: World) -> Response:
    return error_response(
        401,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
        {
            "WWW-Authenticate": (
                f'Bearer authorization="https://login.microsoftonline.com/{world.tenant_id}", '
                'resource="https://vault.azure.net"'
            )
        },
    )


def handle(world: World, req: Request) -> Response:
    """Answers one data-plane request for the vault named by ``req.vault``.

    An unknown vault behaves like a DNS failure (the connection is dropped). A request without
    a bearer token gets Key Vault's 401 challenge; any bearer token is accepted.
    """
    if (req.vault or "").lower() not in world.vaults:
        return Response(status=0, drop=True)
    auth = req.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() not in ("bearer", "pop") or not token.strip():
        return _challenge(world)
    api = req.query.get("api-version")
    if not api:
        return error_response(400, "BadParameter", "The api-version query parameter is missing.")
    if not _API_VERSION.fullmatch(api):
        return error_response(
            400,
            "BadParameter",
            f"The specified version ({api}) is not recognized. Consider using the latest supported version "
            f"({_LATEST_API}).",
        )
    granted, retry_after = world.throttle.vault(
        req.vault or "", create=_is_create(req), now=world.clock.timestamp()
    )
    if not granted:
        return error_response(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. "
            f"Retry after {retry_after} seconds.",
            {"Retry-After": str(retry_after)},
        )
    try:
        resp = ROUTER.dispatch(world, req, not_found=_no_route)
    except SandboxError as err:
        resp = err.response()  # what World._dispatch would answer; refused calls are logged too
    audit.record_request(world, req, resp)  # the vault's AuditEvent log (sandbox/audit.py)
    return resp


def _no_route(req: Request) -> Response:
    return error_response(400, "BadParameter", f"The request URI {req.path} is not a Key Vault operation.")
