"""The local stack: Azurite, the sandbox (seeded with the demo estate) and the development
Functions host running function_app.py, wired together as in Azure.

``python -m scripts.stack run`` starts everything, subscribes the host's Event Grid webhook to
the sandbox, prints what runs and commands to try, and stops everything it started (by
process id) on Ctrl-C. ``scripts/demo.py`` drives the same stack through a scripted story.
Development only: never deployed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
DEMO_VAULTS = ("kv-contoso-prod-weu", "kv-contoso-prod-neu", "kv-contoso-dev-weu")
KEY_EVENTS = [
    "Microsoft.KeyVault.KeyNewVersionCreated",
    "Microsoft.KeyVault.KeyNearExpiry",
    "Microsoft.KeyVault.KeyExpired",
]
# Azurite's default ports: "UseDevelopmentStorage=true" points there.
AZURITE_PORTS = (10000, 10001, 10002)


def principal_header(name: str, oid: str, roles: list[str]) -> str:
    """An X-MS-CLIENT-PRINCIPAL value as App Service Authentication builds it."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "name", "val": name},
        *({"typ": "roles", "val": r} for r in roles),
    ]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Servers bind with SO_REUSEADDR: connections in TIME_WAIT from an earlier run do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait(what: str, probe: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s (logs in {RUN})")


@dataclass
class Stack:
    port: int = 7071
    clock: str = "real"
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    conn: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    # ---- lifecycle ----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (RUN / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append((name, proc))

    def start(self) -> None:
        RUN.mkdir(exist_ok=True)
        busy = [p for p in (*AZURITE_PORTS, self.port) if not _port_free(p)]
        if busy:
            raise RuntimeError(f"ports in use: {busy} (is another stack running? `make clean` does not stop it)")
        azurite = ROOT / "node_modules" / ".bin" / "azurite"
        if not azurite.exists():
            raise RuntimeError("Azurite is missing: run `npm install`")
        self._spawn("azurite", [str(azurite), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck",
                                "--loose", "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
                                "--tableHost", "127.0.0.1"])
        conn_file = RUN / "sandbox.json"
        conn_file.unlink(missing_ok=True)
        self._spawn("sandbox", [sys.executable, "-m", "sandbox", "serve", "--seed", "sandbox/seeds/demo.json",
                                "--connection-file", str(conn_file), "--clock", self.clock,
                                "--workdir", str(RUN / "sandbox")])
        _wait("the sandbox", conn_file.exists)
        self.conn = json.loads(conn_file.read_text())
        _wait("Azurite", lambda: not _port_free(AZURITE_PORTS[1]))
        # Simulated services react in seconds so the story can be watched live.
        self.admin("POST", "/sandbox/services", {"usage_interval_s": 3, "versionless_lag_s": 10,
                                                  "cosmos_recovery_s": 15})
        self.admin("POST", "/sandbox/lro", {"duration_s": 3.0, "fail_rate": 0.0})
        self._write_settings()
        self._spawn("host", [sys.executable, "-m", "sandbox.host", "--port", str(self.port),
                             "--settings", str(RUN / "local.settings.json")])
        _wait("the Functions host", lambda: requests.get(f"{self.host_url}/admin/host/ping", timeout=2).ok)
        webhook = (f"{self.host_url}/runtime/webhooks/eventgrid?functionName=on_key_vault_event"
                   f"&code={self.keys['eventgrid']}")
        self.admin("POST", "/sandbox/event-subscriptions",
                   {"endpoint": webhook, "schema": "EventGridSchema", "event_types": KEY_EVENTS})

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()

    # ---- helpers --------------------------------------------------------------------------------
    @property
    def host_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def settings_file(self) -> Path:
        return RUN / "local.settings.json"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.conn["admin_url"].rstrip("/") + path
        resp = requests.request(method, url, json=body, verify=self.conn["ca_bundle"], timeout=30)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def vault_url(self, name: str) -> str:
        return str(self.conn["vaults"][name]).rstrip("/")

    def _write_settings(self) -> None:
        self.keys = {k: secrets.token_urlsafe(24) for k in ("function", "master", "eventgrid")}
        values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "KEYSTEWARD_SANDBOX": str(RUN / "sandbox.json"),
            "KEYSTEWARD_SUBSCRIPTIONS": ",".join(self.conn["subscriptions"]),
            "KEYSTEWARD_VAULTS": ",".join(DEMO_VAULTS),
            "KEYSTEWARD_WORK_QUEUE": "keysteward-work",
            "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *",
            "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */15 * * * *",
            "KEYSTEWARD_CONFIRM_DELAY_SECONDS": "5",
            "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "5",
            "KEYSTEWARD_TRUST_PRINCIPAL_HEADER": "true",
            "KEYSTEWARD_LOCAL_FUNCTION_KEY": self.keys["function"],
            "KEYSTEWARD_LOCAL_MASTER_KEY": self.keys["master"],
            "KEYSTEWARD_LOCAL_EVENTGRID_KEY": self.keys["eventgrid"],
        }
        self.settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs the keysteward CLI against the stack (same settings as the host)."""
        argv = [sys.executable, "-m", "shared.cli", "--settings", str(self.settings_file), *args]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,  # noqa: S603
                              env={k: v for k, v in os.environ.items() if not k.startswith("KEYSTEWARD_")})
        if check and done.returncode != 0:
            raise RuntimeError(f"keysteward {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done


def banner(stack: Stack) -> str:
    ca = stack.conn["ca_bundle"]
    admin = stack.conn["admin_url"].rstrip("/")
    adx_key = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-adx"
    cosmos_key = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-cosmos"
    hdr = principal_header("oncall@contoso.example", "11111111-2222-3333-4444-555555555555",
                           ["KeySteward.Read", "KeySteward.Revoke", "KeySteward.Restore"])
    # The console script installed beside this interpreter (.venv/bin/keysteward under `make run`).
    script = Path(sys.executable).parent / "keysteward"
    exe = os.path.relpath(script, ROOT) if script.exists() else "keysteward"
    ks = f"{exe} --settings {stack.settings_file.relative_to(ROOT)}"
    api = f"{stack.host_url}/api"
    code = stack.keys["function"]
    return f"""
keysteward local stack is running (development only; Ctrl-C stops everything)
  Functions host   {stack.host_url}   (logs: .run/host.log)
  on-call page     http://127.0.0.1:7072/api/ui?code={stack.keys['function']}   (after: python -m scripts.easyauth)
  sandbox ARM      {stack.conn['arm_url']}   admin: {admin}   CA: {ca}
  Azurite          queues 127.0.0.1:10001, tables 127.0.0.1:10002
  settings         {stack.settings_file.relative_to(ROOT)}

Try:
  # rotate a key: the sandbox emits KeyNewVersionCreated, the host moves the pinned clusters
  {ks} rotate --key {adx_key}
  {ks} status --key {adx_key}
  # a plan of what is out of date, and the preflight check
  {ks} plan
  {ks} check
  # an early disable of the previous version is refused (24 h rule)
  {ks} disable --key {adx_key}/<old-version> --reason cleanup --ticket T-1
  # move the sandbox clock 25 hours
  curl --cacert {ca} -X POST {admin}/sandbox/clock -H 'Content-Type: application/json' -d '{{"advance": "PT25H"}}'
  # revoke (dry run first) and restore over HTTP
  export P={hdr}
  curl -s -X POST '{api}/revoke?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{{"key": "{cosmos_key}", "mode": "disable", "reason": "drill", "ticket": "T-2", "dryRun": true}}'
  curl -s -X POST '{api}/revoke?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{{"key": "{cosmos_key}", "mode": "disable", "reason": "drill", "ticket": "T-2", "dryRun": false}}'
  curl -s '{api}/runs/<run-id>?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P"
  curl -s -X POST '{api}/restore?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{{"run": "<run-id>", "reason": "drill over", "ticket": "T-2"}}'
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "run":
        print("usage: python -m scripts.stack run", file=sys.stderr)
        return 2
    stack = Stack()
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        print(banner(stack), flush=True)
        while not stopping:
            for name, proc in stack.procs:
                if proc.poll() is not None:
                    print(f"{name} exited ({proc.returncode}); see .run/{name}.log", file=sys.stderr)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("stopping...", file=sys.stderr)
        stack.stop()
        shutil.rmtree(RUN / "sandbox", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
