"""The demo's usage-evidence chapter: an identity nobody inventories blocks a retirement.

Called by ``scripts/demo.py`` after the main story (``run_usage_demo(stack, step=step,
check=check)``), against the same local stack: the sandbox served over loopback HTTPS and the
keysteward CLI. It creates a key no service in the inventory uses, rotates it, lets an
unknown identity unwrap with the old version on a schedule (the sandbox's admin API), moves
the clock past the 24-hour rule and asks the CLI to disable the old version:

- without usage evidence the inventory sees no user at all (``status`` says the evidence is
  not configured);
- with ``KEYSTEWARD_AUDIT_WORKSPACE`` set to the sandbox's workspace, ``disable`` exits 1 and
  names the unknown caller's object id, and ``status`` lists it per version with its calls
  and last call: the part of the blast radius the inventory cannot see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient

ROOT = Path(__file__).resolve().parents[1]
VAULT = "kv-contoso-prod-weu"
KEY = "cmk-shared-reports"
# The unknown consumer: an application in a subscription nobody told keysteward about.
STRANGER = "7e57c0de-5eed-4bad-9a11-0000000c0ffe"


class StackLike(Protocol):
    """What the chapter needs of ``scripts.stack.Stack``."""

    conn: dict[str, Any]

    @property
    def settings_file(self) -> Path: ...

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any: ...

    def vault_url(self, name: str) -> str: ...


class _Token:
    def get_token(self, *_scopes: str, **_kw: Any) -> AccessToken:
        return AccessToken("demo", int(time.time()) + 3600)


def _settings_with_evidence(stack: StackLike) -> Path:
    """A copy of the stack's settings with KEYSTEWARD_AUDIT_WORKSPACE set to the sandbox's workspace."""
    doc = json.loads(stack.settings_file.read_text(encoding="utf-8"))
    workspace = stack.conn.get("audit_workspace_id")
    if not workspace:
        raise RuntimeError("the sandbox's connection file has no audit_workspace_id")
    doc.setdefault("Values", {})["KEYSTEWARD_AUDIT_WORKSPACE"] = workspace
    path = stack.settings_file.with_name("settings-usage.json")
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def _cli(settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "shared.cli", "--settings", str(settings), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,  # noqa: S603 - our own CLI
                          env={k: v for k, v in os.environ.items() if not k.startswith("KEYSTEWARD_")})


def run_usage_demo(stack: StackLike, *, step: Callable[..., None], check: Callable[[object, object], None]) -> None:
    """The chapter; raises RuntimeError (through ``check``) when an expectation does not hold."""
    vault = stack.vault_url(VAULT)
    keys = KeyClient(vault, _Token(), verify_challenge_resource=False, connection_verify=stack.conn["ca_bundle"])
    old = str(keys.create_rsa_key(KEY, size=3072).properties.version)
    new = str(keys.rotate_key(KEY).properties.version)
    key_uri = f"{vault}/keys/{KEY}"
    stack.admin("POST", "/sandbox/consumers", {"principal_id": STRANGER, "key": f"{key_uri}/{old}", "every_s": 3600})
    stack.admin("POST", "/sandbox/clock", {"advance": "PT25H"})
    step("9. an unknown consumer", f"{KEY}: {old} replaced by {new} 25 h ago; identity {STRANGER} (in no "
         "inventory) unwraps with the old version every hour")

    plain = stack.settings_file
    status = json.loads(_cli(plain, "status", "--key", key_uri, "--json").stdout)
    check(status.get("usageEvidence", {}).get("state") == "not-configured", status)
    step("   without usage evidence", f"status: {status['usageEvidence']['reason']}; the inventory sees no user")

    evidence = _settings_with_evidence(stack)
    done = _cli(evidence, "disable", "--key", f"{key_uri}/{old}", "--reason", "cleanup", "--ticket", "SEC-301",
                "--json")
    check(done.returncode == 1 and STRANGER in done.stdout, done.stdout + done.stderr)
    refused = json.loads(done.stdout)
    step("10. retirement refused", "; ".join(b["message"] for b in refused.get("blockers", [])))

    status = json.loads(_cli(evidence, "status", "--key", key_uri, "--json").stdout)
    entry = next(v for v in status["versions"] if v["version"] == old)
    callers = entry["unknownCallers"]
    check([c["objectId"] for c in callers] == [STRANGER], entry)
    step("11. blast radius beyond the inventory",
         f"{old}: unknown caller {STRANGER}, {callers[0]['succeeded']} successful calls, last {entry['lastCall']}; "
         f"known users: {len(entry['knownUsers'])}")
    dry = _cli(evidence, "revoke", "--key", key_uri, "--mode", "disable", "--reason", "drill", "--ticket", "SEC-302",
               "--dry-run", "--json")
    check(dry.returncode == 0, dry.stdout + dry.stderr)
    plan = json.loads(dry.stdout)
    unknown = plan.get("unknownIdentities") or []
    check([u["objectId"] for u in unknown] == [STRANGER], plan)
    step("12. revoke dry run", f"{plan['summary']['affected']} inventoried binding(s) reached, and beside them the "
         f"unknown identity {STRANGER} ({unknown[0]['succeeded']} successful calls, last {unknown[0]['lastCall']})")
    stack.admin("DELETE", "/sandbox/consumers")
