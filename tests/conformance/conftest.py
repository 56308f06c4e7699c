"""The sandbox estate the spec examples are replayed against.

A replay changes only what must point at this sandbox's estate: the subscription id, vault URLs,
key versions the sandbox generated, identities' principal ids, and names the sandbox's naming
rules refuse (noted at each case). Bodies are otherwise sent as the spec's examples give them.
Requests are raw HTTP (no SDK in between), through both front doors: the in-process transport
(real host names) and the loopback HTTPS server (``loopback`` marker; vaults on their own ports).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.server import SandboxServer
from sandbox.state import principal_id_for
from sandbox.transport import sandbox_session
from sandbox.world import ARM_HOST, VAULT_SUFFIX, World

# Key Vault data plane: the api-version azure-keyvault-keys 4.11.3 sends by default.
KV_API = "2025-07-01"
CMK_PERMS = {"keys": ["get", "wrapKey", "unwrapKey"]}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class Estate:
    """A fresh world and raw HTTP calls into it."""

    world: World
    session: requests.Session
    sub: str
    arm_base: str
    vault_url: Callable[[str], str]  # vault name -> its data-plane base URL on this front door
    verify: str | bool = True  # the loopback CA bundle (passed per request: REQUESTS_CA_BUNDLE would win otherwise)
    substitutions: dict[str, str] = field(default_factory=dict)

    # ---- raw calls -----------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        hdrs = {"Authorization": "Bearer conformance", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        resp = self.session.request(method, url, data=data, headers=hdrs, verify=self.verify)
        try:
            parsed = resp.json() if resp.content else None
        except ValueError:
            parsed = resp.text
        return Reply(resp.status_code, dict(resp.headers), parsed)

    def arm(self, method: str, path: str, api_version: str, body: Any = None, **headers: str) -> Reply:
        sep = "&" if "?" in path else "?"
        return self._send(method, f"{self.arm_base}{path}{sep}api-version={api_version}", body, headers)

    def arm_url(self, method: str, url: str, body: Any = None) -> Reply:
        return self._send(method, url, body)

    def vault(self, method: str, vault: str, path: str, body: Any = None, api_version: str = KV_API) -> Reply:
        sep = "&" if "?" in path else "?"
        return self._send(method, f"{self.vault_url(vault)}{path}{sep}api-version={api_version}", body)

    def settle(self) -> None:
        """Lets every pending long-running operation finish (sandbox time moves, not wall time)."""
        self.world.clock.sleep(max(1.0, self.world.lro.duration_s + 1.0))
        self.world.tick(self.world.clock.now())

    # ---- adapting example ids to this estate ---------------------------------------------------
    def adapt(self, value: Any) -> Any:
        """Replaces the example's ids (subscription, vault URLs, ...) by this estate's, everywhere."""
        text = json.dumps(value)
        for old, new in self.substitutions.items():
            text = text.replace(old, new)
        return json.loads(text)

    # ---- estate building blocks -----------------------------------------------------------------
    def identity(self, rg: str, name: str, location: str = "westus") -> str:
        """A user-assigned identity; returns its resource id (the sandbox's own shape: not replayed)."""
        rid = f"/subscriptions/{self.sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        got = self.arm("PUT", rid, "2023-01-31", {"location": location})
        assert got.status in (200, 201), got.body
        return rid

    def cmk_vault(self, rg: str, name: str, *, grant: list[str], location: str = "westus") -> str:
        """A vault with purge protection granting get/wrapKey/unwrapKey to ``grant`` identities' principals."""
        body = {
            "location": location,
            "properties": {
                "tenantId": self.world.tenant_id,
                "sku": {"family": "A", "name": "standard"},
                "enableSoftDelete": True,
                "enablePurgeProtection": True,
                "accessPolicies": [
                    {"tenantId": self.world.tenant_id, "objectId": principal_id_for(rid), "permissions": CMK_PERMS}
                    for rid in grant
                ],
            },
        }
        got = self.arm("PUT", f"/subscriptions/{self.sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}",
                       "2026-05-15", body)
        assert got.status in (200, 201), got.body
        return self.vault_url(name)

    def key(self, vault: str, name: str) -> str:
        """Creates a new RSA version of ``name``; returns the version id."""
        got = self.vault("POST", vault, f"/keys/{name}/create", {"kty": "RSA", "key_size": 2048})
        assert got.status == 200, got.body
        return str(got.body["key"]["kid"]).rsplit("/", 1)[-1]


def _in_process() -> Iterator[Estate]:
    world = World(seed=13)
    world.throttle.configure(enabled=False)
    session = sandbox_session(world)
    try:
        yield Estate(world=world, session=session, sub=world.subscriptions[0], arm_base=f"https://{ARM_HOST}",
                     vault_url=lambda name: f"https://{name}{VAULT_SUFFIX}")
    finally:
        session.close()


def _loopback(workdir: Path) -> Iterator[Estate]:
    world = World(seed=13)
    world.throttle.configure(enabled=False)
    with SandboxServer(world, workdir=workdir) as server, requests.Session() as session:
        yield Estate(world=world, session=session, sub=world.subscriptions[0], arm_base=server.arm_url,
                     vault_url=server.vault_url, verify=server.ca_bundle)


@pytest.fixture(params=["in-process", pytest.param("loopback", marks=pytest.mark.loopback)])
def estate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Estate]:
    """A fresh estate behind one front door (each test runs through both)."""
    yield from (_in_process() if request.param == "in-process" else _loopback(tmp_path))


@pytest.fixture
def in_process_estate() -> Iterator[Estate]:
    """For what only the in-process transport serves (Event Grid custom topics)."""
    yield from _in_process()
