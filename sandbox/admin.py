"""Admin API under /sandbox/. STUB: to be implemented."""

from __future__ import annotations

from sandbox.wire import Router

ROUTER = Router(case_insensitive=False)
