"""Reading the loopback sandbox's connection file and building SDK client arguments from it.

The file is written by ``python -m sandbox serve --connection-file PATH``; its keys are a
contract: ``arm_url``, ``admin_url``, ``ca_bundle``, ``tenant_id``, ``subscriptions``,
``vaults`` (name -> URL), ``credential_scopes``; also ``vault_credential_scopes``,
``clock_mode``, ``pid``, ``logs_url`` (the endpoint to give ``LogsQueryClient``) and
``audit_workspace_id`` (the Log Analytics workspace that receives every vault's audit records).

Key Vault clients need ``verify_challenge_resource=False`` (the challenge names
vault.azure.net while the URL is 127.0.0.1) and ``connection_verify=ca_bundle``; management
clients need ``base_url=arm_url``, ``credential_scopes`` and ``connection_verify=ca_bundle``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED = ("arm_url", "admin_url", "ca_bundle", "tenant_id", "subscriptions", "vaults", "credential_scopes")


@dataclass(frozen=True)
class Connection:
    arm_url: str
    admin_url: str
    ca_bundle: str
    tenant_id: str
    subscriptions: list[str]
    vaults: dict[str, str]
    credential_scopes: list[str]
    pid: int | None = None
    clock_mode: str | None = None
    logs_url: str | None = None
    audit_workspace_id: str | None = None

    def vault_url(self, name: str) -> str:
        """The URL of vault ``name``; raises KeyError for a vault the file does not list."""
        return self.vaults[name.lower()]

    def key_client_kwargs(self) -> dict[str, Any]:
        return {"verify_challenge_resource": False, "connection_verify": self.ca_bundle}

    def logs_client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``LogsQueryClient`` (raises KeyError when the sandbox predates ``logs_url``)."""
        if not self.logs_url:
            raise KeyError("logs_url")
        return {"endpoint": self.logs_url, "connection_verify": self.ca_bundle}

    def mgmt_client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.arm_url,
            "credential_scopes": list(self.credential_scopes),
            "connection_verify": self.ca_bundle,
        }


def parse(data: Any) -> Connection:
    """Builds a :class:`Connection` from the file's JSON; raises ValueError naming a missing key."""
    if not isinstance(data, dict):
        raise ValueError("the connection file must hold a JSON object")  # noqa: TRY004 - a bad file, not a bad call
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"the connection file lacks {', '.join(missing)}")
    return Connection(
        arm_url=str(data["arm_url"]),
        admin_url=str(data["admin_url"]),
        ca_bundle=str(data["ca_bundle"]),
        tenant_id=str(data["tenant_id"]),
        subscriptions=[str(s) for s in data["subscriptions"]],
        vaults={str(k).lower(): str(v) for k, v in dict(data["vaults"]).items()},
        credential_scopes=[str(s) for s in data["credential_scopes"]],
        pid=int(data["pid"]) if data.get("pid") is not None else None,
        clock_mode=str(data["clock_mode"]) if data.get("clock_mode") else None,
        logs_url=str(data["logs_url"]) if data.get("logs_url") else None,
        audit_workspace_id=str(data["audit_workspace_id"]) if data.get("audit_workspace_id") else None,
    )


def load(path: str | Path) -> Connection:
    """Reads the connection file (the vault list reflects the moment it was last written)."""
    return parse(json.loads(Path(path).read_text(encoding="utf-8")))


def wait_for(path: str | Path, *, timeout_s: float = 30.0) -> Connection:
    """Waits for a starting sandbox to write its connection file; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    target = Path(path)
    while True:
        if target.exists():
            try:
                return load(target)
            except (OSError, ValueError):
                pass  # written atomically, so this is a stale or foreign file: keep waiting
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sandbox connection file at {target} after {timeout_s:.0f}s")
        time.sleep(0.05)
