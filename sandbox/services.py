"""Simulated services over sandbox time. STUB: to be implemented."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.world import World


def tick(world: World, now: datetime) -> None:
    return None
