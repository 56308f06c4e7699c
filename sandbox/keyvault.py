"""Key Vault data plane (keys). STUB: to be implemented."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sandbox.wire import Request, Response, error_response

if TYPE_CHECKING:
    from sandbox.world import World


def handle(world: World, req: Request) -> Response:
    return error_response(404, "NotImplemented", "Key Vault is not implemented yet.")


def tick(world: World, now: datetime) -> None:
    return None
