"""The sandbox's Log Analytics workspace: the HTTP front door (``POST``/``GET
/v1/workspaces/{workspaceId}/query``) and :func:`handle`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sandbox import audit
from sandbox.logs.common import ROUTER, QueryError, parse_timespan
from sandbox.logs.operators import evaluate, render
from sandbox.wire import Request, Response, json_response

if TYPE_CHECKING:
    from sandbox.world import World


# ---- the HTTP front door ------------------------------------------------------------------------------
def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


def _answer(world: World, workspace: str, query: Any, timespan: Any) -> Response:
    log = audit.log_for(world)
    if workspace.lower() != log.workspace_id:
        return _error(404, "WorkspaceNotFoundError", f"Workspace {workspace} not found.")
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is required", "SyntaxError")
    now = world.clock.timestamp()
    span = parse_timespan(timespan if isinstance(timespan, str) else None, now)
    frame = evaluate(query, log.visible(now), now=now, span=span)
    body = render(frame)
    if log.settings.partial:
        body["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                         "details": [{"code": "EngineError", "message": "Query result set exceeded a service limit "
                                      "(sandbox: partial answers are switched on)."}]}
    return json_response(200, body)


@ROUTER.route("POST", r"/v1/workspaces/(?P<ws>[^/]+)/query")
def _post_query(world: World, req: Request, m: re.Match[str]) -> Response:
    body = req.json_object()
    return _answer(world, m["ws"], body.get("query"), body.get("timespan"))


@ROUTER.route("GET", r"/v1/workspaces/(?P<ws>[^/]+)/query")
def _get_query(world: World, req: Request, m: re.Match[str]) -> Response:
    return _answer(world, m["ws"], req.query.get("query"), req.query.get("timespan"))


def handle(world: World, req: Request) -> Response:
    """Answers one Log Analytics request; a request without a bearer token is 401."""
    auth = req.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "AuthorizationRequiredError", "Valid authentication was not provided.")
    try:
        return ROUTER.dispatch(world, req, not_found=_not_found)
    except QueryError as err:
        return err.response()


def _not_found(req: Request) -> Response:
    return _error(404, "PathNotFoundError", f"The requested path does not exist: {req.path}")
