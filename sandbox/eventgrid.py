"""Event Grid emission and webhook delivery. STUB: to be implemented."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.world import World


class EventGridBus:
    def __init__(self, world: World) -> None:
        self.world = world

    def publish(self, events: list[dict[str, Any]]) -> None:
        return None

    def pump(self, now: datetime) -> None:
        return None

    def reset(self) -> None:
        return None
