"""Azure Resource Manager (management plane). STUB: to be implemented."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.wire import Request, Response, error_response

if TYPE_CHECKING:
    from sandbox.world import World


def handle(world: World, req: Request) -> Response:
    return error_response(404, "NotImplemented", "ARM is not implemented yet.")
