"""``make demo``: the local stack driven through the whole story, printed as a timeline.

rotate -> a pinned cluster is moved by keysteward, the (versionless) Cosmos DB accounts follow
by themselves -> early disable refused -> 25 h later the sweep keeps the old version for the
continuous-backup account's restore points -> 31 days later it retires it -> revoke (dry run,
then real) -> services confirmed dark -> restore -> services healthy. Only public interfaces:
SDK calls to the sandbox, HTTP to the host, the CLI. Exits 0 when every step held, 1 otherwise.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient
from azure.mgmt.cosmosdb import CosmosDBManagementClient
from azure.mgmt.kusto import KustoManagementClient

from scripts.demo_usage import run_usage_demo
from scripts.stack import RUN, Stack, principal_header

SUB_PROD = "00000000-0000-0000-0000-00000000a001"
T0 = time.monotonic()


class _Token:
    def get_token(self, *_scopes: str, **_kw: Any) -> AccessToken:
        return AccessToken("demo", int(time.time()) + 3600)


def check(condition: object, detail: object) -> None:
    """A step's expectation; the demo stops with the detail when it does not hold."""
    if not condition:
        raise RuntimeError(f"expectation failed: {detail}")


def step(title: str, detail: str = "") -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {title}" + (f"\n           {detail}" if detail else ""), flush=True)


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


class Demo:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        conn = stack.conn
        self.vault = stack.vault_url("kv-contoso-prod-weu")
        self.key_uri = f"{self.vault}/keys/cmk-cosmos"
        self.keys = KeyClient(self.vault, _Token(), verify_challenge_resource=False,
                              connection_verify=conn["ca_bundle"])
        self.cosmos = CosmosDBManagementClient(
            _Token(), SUB_PROD, base_url=conn["arm_url"], credential_scopes=conn["credential_scopes"],
            connection_verify=conn["ca_bundle"])
        self.kusto = KustoManagementClient(
            _Token(), SUB_PROD, base_url=conn["arm_url"], credential_scopes=conn["credential_scopes"],
            connection_verify=conn["ca_bundle"])
        self.principal = principal_header("oncall@contoso.example", "11111111-2222-3333-4444-555555555555",
                                          ["KeySteward.Read", "KeySteward.Revoke", "KeySteward.Restore"])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.request(method, f"{self.stack.host_url}/api/{path}", json=body, timeout=240,
                                params={"code": self.stack.keys["function"]},
                                headers={"X-MS-CLIENT-PRINCIPAL": self.principal})

    def account(self, name: str) -> Any:
        return self.cosmos.database_accounts.get("rg-apps", name)

    def run(self) -> None:
        before = self.keys.get_key("cmk-cosmos").properties.version
        orders = self.account("cosmos-contoso-orders")
        step("estate", f"cosmos-contoso-orders and -billing on {orders.key_vault_key_uri} (versionless, as Cosmos DB "
                       f"requires), using {str(orders.key_vault_key_uri_version).rsplit('/', 1)[-1]}; "
                       "adxcontosoprod1 pinned to a version of cmk-adx")

        new = self.keys.rotate_key("cmk-cosmos").properties.version
        new_adx = self.keys.rotate_key("cmk-adx").properties.version
        step("1. rotate", f"KeyClient.rotate_key created {new} (cmk-cosmos) and {new_adx} (cmk-adx); Key Vault "
                          "emits KeyNewVersionCreated")
        wait_for("the pinned cluster to follow", lambda: (self.kusto.clusters.get(
            "rg-analytics", "adxcontosoprod1").key_vault_properties.key_version or "") == new_adx)
        step("2. pinned services follow", f"adxcontosoprod1 now pinned to {new_adx} (updated by keysteward)")
        for name in ("cosmos-contoso-orders", "cosmos-contoso-billing"):
            wait_for(f"{name} to move", lambda n=name: (self.account(n).key_vault_key_uri_version or "").endswith(new))
            check(self.account(name).key_vault_key_uri == self.key_uri, "Cosmos key URI stays versionless")
        step("   Cosmos DB accounts moved by themselves",
             f"both report keyVaultKeyUriVersion .../{new}; keysteward wrote nothing to them")

        done = self.stack.cli("disable", "--key", f"{self.key_uri}/{before}", "--reason", "cleanup",
                              "--ticket", "SEC-201", "--json", check=False)
        refused = json.loads(done.stdout)
        check(done.returncode == 1 and refused.get("refused"), done.stdout)
        step("3. early disable refused", "; ".join(b["message"] for b in refused["blockers"]))

        self.keys.update_key_properties("cmk-cosmos", new, tags={"keysteward-retire": "true"})
        self.stack.admin("POST", "/sandbox/clock", {"advance": "PT25H"})
        step("4. 25 h later", "sandbox clock advanced by PT25H; key tagged keysteward-retire=true")
        sweep = json.loads(self.stack.cli("retire", "--json").stdout)
        kept = sweep["kept"].get(f"{self.key_uri}/{before}", [])
        check(any("continuous 30-day restore points" in r for r in kept), sweep)
        step("   the sweep keeps the old version for backups", "; ".join(kept))
        self.stack.admin("POST", "/sandbox/clock", {"advance": "P31D"})
        sweep = json.loads(self.stack.cli("retire", "--json").stdout)
        states = {p.version: p for p in self.keys.list_properties_of_key_versions("cmk-cosmos")}
        retired = [v for v, p in states.items() if not p.enabled and "keysteward-retired-by" in (p.tags or {})]
        check(before in retired, (sweep, {v: (p.enabled, p.tags) for v, p in states.items()}))
        step("   31 days later the sweep retires it", ", ".join(sorted(retired)) + f" (run {sweep['run']})")

        dry = self.api("POST", "revoke", {"key": self.key_uri, "mode": "disable", "reason": "key compromise drill",
                                          "ticket": "SEC-202", "dryRun": True})
        check(dry.status_code == 200, dry.text)
        radius = dry.json()
        bindings = radius.get("bindings") or radius.get("blastRadius", {}).get("bindings") or []
        step("5. revoke dry run", f"{len(bindings)} binding(s) would go dark: "
             + ", ".join(sorted({str(b.get('resourceId', b.get('name', '?'))).rsplit('/', 1)[-1] for b in bindings})))

        started = self.api("POST", "revoke", {"key": self.key_uri, "mode": "disable", "reason": "key compromise drill",
                                              "ticket": "SEC-202", "dryRun": False})
        check(started.status_code == 202, started.text)
        run_id = started.json()["run"]
        step("6. revoke", f"202 accepted, run {run_id}")
        run = wait_for("the revocation to finish", lambda: self._finished(run_id), timeout=180)
        check(run["status"] == "succeeded", json.dumps(run, indent=1)[:2000])
        status = self.account("cosmos-contoso-billing").customer_managed_key_status
        step("   services confirmed dark", f"run {run['status']}; cosmos-contoso-billing: {status}")

        restored = self.api("POST", "restore", {"run": run_id, "reason": "drill over", "ticket": "SEC-202"})
        check(restored.status_code == 202, restored.text)
        restore_id = restored.json()["run"]
        step("7. restore", f"202 accepted, run {restore_id}")
        run = wait_for("the restore to finish", lambda: self._finished(restore_id), timeout=240)
        check(run["status"] == "succeeded", json.dumps(run, indent=1)[:2000])
        status = self.account("cosmos-contoso-billing").customer_managed_key_status
        step("8. services healthy", f"run {run['status']}; cosmos-contoso-billing: {status}")

    def _finished(self, run_id: str) -> dict[str, Any] | None:
        # HTTP never holds a request open for verification: the timer resumes runs; an operator
        # (here, the demo) can do it at once with `keysteward resume RUN`.
        self.stack.cli("resume", run_id, "--json", check=False)
        resp = self.api("GET", f"runs/{run_id}")
        if resp.status_code != 200:
            return None
        doc: dict[str, Any] = resp.json()
        return doc if doc.get("status") not in ("running", "pending-approval") else None


def main(argv: list[str]) -> int:
    """``python -m scripts.demo [--free-ports]``: the story on the well-known ports (7071 and
    Azurite's), or with ``--free-ports`` on ports the OS reports free (tests run beside it)."""
    if "--free-ports" in argv:
        # Its own folder too, so that a `make run` beside it keeps its .run/.
        stack = Stack.on_free_ports(run_dir=Path(tempfile.mkdtemp(prefix="keysteward-demo-")))
    else:
        stack = Stack()
    try:
        step("starting Azurite, the sandbox (demo estate) and the Functions host")
        stack.start()
        Demo(stack).run()
        # Usage evidence: an identity nobody inventories blocks a retirement and shows in status.
        run_usage_demo(stack, step=step, check=check)
        step("demo complete: every step held")
        return 0
    except (AssertionError, RuntimeError, requests.RequestException) as err:
        step("DEMO FAILED", f"{type(err).__name__}: {err}")
        for name in ("host", "sandbox"):
            log = stack.settings_file.parent / f"{name}.log"
            if log.exists():
                print(f"--- last lines of {log} ---\n" + "\n".join(log.read_text().splitlines()[-30:]))
        return 1
    finally:
        stack.stop()
        if stack.run_dir != RUN:
            shutil.rmtree(stack.run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
