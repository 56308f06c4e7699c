"""The demo's usage chapter against the loopback sandbox and the real CLI (no Functions host needed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import seeds
from sandbox.server import SandboxServer
from sandbox.world import World
from scripts.demo_usage import STRANGER, run_usage_demo
from tests.azurite import Azurite


class _Stack:
    def __init__(self, server: SandboxServer, workdir: Path, storage: str) -> None:
        assert server.connection_file is not None
        self.conn: dict[str, Any] = json.loads(server.connection_file.read_text())
        self._settings = workdir / "local.settings.json"
        self._settings.write_text(json.dumps({"Values": {
            "KEYSTEWARD_SANDBOX": str(server.connection_file),
            "KEYSTEWARD_VAULTS": "kv-contoso-prod-weu",
            "AzureWebJobsStorage": storage,  # the revoke dry run reads the journal (Azurite)
            "KEYSTEWARD_TABLE_PREFIX": f"demo{workdir.name[-6:].replace('_', '').replace('-', '')}",
        }}))

    @property
    def settings_file(self) -> Path:
        return self._settings

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = requests.request(method, self.conn["admin_url"] + path, json=body, verify=self.conn["ca_bundle"],
                                timeout=30)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def vault_url(self, name: str) -> str:
        return str(self.conn["vaults"][name]).rstrip("/")


@pytest.fixture
def stack(tmp_path: Path, azurite: Azurite) -> Iterator[_Stack]:
    server = SandboxServer(World(seed=4), workdir=tmp_path, connection_file=tmp_path / "sandbox.json")
    server.start()
    try:
        seeds.apply_seed(server.world, seeds.demo_seed())
        server.write_connection_file()
        yield _Stack(server, tmp_path, azurite.connection_string)
    finally:
        server.stop()


@pytest.mark.azurite
def test_the_unknown_consumer_blocks_the_retirement_and_shows_in_status(stack: _Stack) -> None:
    lines: list[str] = []

    def check(condition: object, detail: object) -> None:
        if not condition:
            raise RuntimeError(f"expectation failed: {detail}")

    run_usage_demo(stack, step=lambda title, detail="": lines.append(f"{title} {detail}"), check=check)
    print("\n".join(lines))
    text = "\n".join(lines)
    assert "retirement refused" in text and STRANGER in text
    assert "unknown caller" in text and "not set" in text
    assert "revoke dry run" in text  # the stranger appears beside the inventory's blast radius
