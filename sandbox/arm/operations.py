"""Asynchronous operation status (``operationResults`` / ``operationsStatus``) in the sandbox's ARM."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from sandbox.arm.common import _SUB, ROUTER, JsonObj, _query, resource_json
from sandbox.clock import isoformat
from sandbox.state import Operation
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
