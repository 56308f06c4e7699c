"""The loopback sandbox's connection file, for the sandbox's own users (tests, scripts, the host).

The file is written by ``python -m sandbox serve --connection-file PATH``; its keys are a
contract: ``arm_url``, ``admin_url``, ``ca_bundle``, ``tenant_id``, ``subscriptions``,
``vaults`` (name -> URL), ``credential_scopes``; also ``vault_credential_scopes``,
``clock_mode``, ``pid``, ``logs_url`` (the endpoint to give ``LogsQueryClient``) and
``audit_workspace_id`` (the Log Analytics workspace that receives every vault's audit records).

There is one parser of the file, :class:`shared.config.SandboxConnection` (the app reads the
file through ``KEYSTEWARD_SANDBOX``, and ``shared`` never imports the sandbox); this module
names it for the sandbox's side and adds :func:`wait_for`. ``load`` raises
:class:`shared.errors.ConfigError` (missing, unreadable or malformed file); ``parse`` raises
ValueError naming a missing key.
"""

from __future__ import annotations

import time
from pathlib import Path

from shared.config import SANDBOX_REQUIRED, SandboxConnection
from shared.errors import ConfigError

Connection = SandboxConnection
REQUIRED = SANDBOX_REQUIRED
parse = SandboxConnection.parse
load = SandboxConnection.load

__all__ = ["REQUIRED", "Connection", "load", "parse", "wait_for"]


def wait_for(path: str | Path, *, timeout_s: float = 30.0) -> Connection:
    """Waits for a starting sandbox to write its connection file; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    target = Path(path)
    while True:
        if target.exists():
            try:
                return load(target)
            except ConfigError:
                pass  # written atomically, so this is a stale or foreign file: keep waiting
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sandbox connection file at {target} after {timeout_s:.0f}s")
        time.sleep(0.05)
