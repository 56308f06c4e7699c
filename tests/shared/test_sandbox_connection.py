"""The sandbox connection file has one parser: the settings, the sandbox's own readers and the
local host's clock read it alike, and the settings read it once, failing at load when it is broken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox import connection
from sandbox.host import SandboxTimeSource, TimeSourceError
from shared.config import Settings, load_settings
from shared.errors import ConfigError

SUB = "00000000-0000-0000-0000-0000000000a1"


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "arm_url": "https://127.0.0.1:9/",
        "admin_url": "https://127.0.0.1:9/",  # port 9 (discard): nothing answers there
        "ca_bundle": "/nowhere/ca.pem",
        "tenant_id": "tenant",
        "subscriptions": [SUB],
        "vaults": {"KV-Mixed-Case": "https://127.0.0.1:10"},
        "credential_scopes": ["https://management.azure.com/.default"],
        "vault_credential_scopes": ["https://vault.azure.net/.default"],
        "clock_mode": "manual",
        "pid": 4242,
        "logs_url": "https://127.0.0.1:11/",
        "audit_workspace_id": "ws",
    }
    doc.update(overrides)
    return doc


def _write(tmp_path: Path, doc: dict[str, Any] | str) -> Path:
    path = tmp_path / "sandbox.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def test_the_three_readers_agree_on_one_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    settings = load_settings({"KEYSTEWARD_SANDBOX": str(path), "KEYSTEWARD_VAULTS": "kv-mixed-case"})
    from_sandbox = connection.load(path)
    assert settings.sandbox_connection == from_sandbox
    assert from_sandbox.admin_url == "https://127.0.0.1:9" and from_sandbox.arm_url == "https://127.0.0.1:9"
    assert from_sandbox.logs_url == "https://127.0.0.1:11"
    assert from_sandbox.vaults == {"kv-mixed-case": "https://127.0.0.1:10"}
    assert from_sandbox.subscriptions == (SUB,) and from_sandbox.pid == 4242 and from_sandbox.clock_mode == "manual"
    assert from_sandbox.vault_url("KV-MIXED-CASE") == "https://127.0.0.1:10"
    assert settings.vaults == ("https://127.0.0.1:10",) and settings.subscriptions == (SUB,)
    # The host's clock reads the same admin URL (its error names the URL it tried).
    with pytest.raises(TimeSourceError, match=r"at https://127\.0\.0\.1:9/sandbox/clock:"):
        SandboxTimeSource(path, timeout=0.5).now()


@pytest.mark.parametrize(("content", "reason"), [
    (None, "No such file"),
    ("{not json", "Expecting property name"),
    (json.dumps(["a list"]), "must hold a JSON object"),
    (json.dumps({k: v for k, v in _doc().items() if k != "ca_bundle"}), "lacks ca_bundle"),
    (json.dumps(_doc(subscriptions=7)), "malformed value"),
    (json.dumps(_doc(pid="not a pid")), "malformed value"),
])
def test_a_broken_or_missing_file_fails_at_settings_load(tmp_path: Path, content: str | None, reason: str) -> None:
    path = tmp_path / "sandbox.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^KEYSTEWARD_SANDBOX: .*{reason}"):
        load_settings({"KEYSTEWARD_SANDBOX": str(path)})
    with pytest.raises(ConfigError, match=r"^KEYSTEWARD_SANDBOX: "):
        Settings(subscriptions=(SUB,), vaults=("https://kv.vault.azure.net",), sandbox=str(path))
    with pytest.raises(TimeSourceError, match="cannot read the sandbox connection file"):
        SandboxTimeSource(path, timeout=0.5).now()


def test_the_settings_read_the_file_once(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    settings = load_settings({"KEYSTEWARD_SANDBOX": str(path)})
    first = settings.sandbox_connection
    _write(tmp_path, _doc(admin_url="https://127.0.0.1:12"))
    assert settings.sandbox_connection is first
    path.unlink()
    assert settings.sandbox_connection is first and first is not None and first.admin_url == "https://127.0.0.1:9"


def test_settings_built_directly_parse_the_file_and_compare_without_it(tmp_path: Path) -> None:
    path = _write(tmp_path, _doc())
    built = Settings(subscriptions=(SUB,), vaults=("https://127.0.0.1:10",), sandbox=str(path))
    assert built.sandbox_connection == connection.load(path)
    assert Settings(subscriptions=(SUB,), vaults=("https://kv.vault.azure.net",)).sandbox_connection is None
    assert built == load_settings({"KEYSTEWARD_SANDBOX": str(path)})


def test_wait_for_skips_a_foreign_file_until_the_sandbox_writes_its_own(tmp_path: Path) -> None:
    path = _write(tmp_path, json.dumps({"admin_url": "x"}))
    with pytest.raises(TimeoutError):
        connection.wait_for(path, timeout_s=0.1)
    _write(tmp_path, _doc())
    assert connection.wait_for(path, timeout_s=1).pid == 4242
