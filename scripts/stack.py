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
# Azurite's default ports (blob, queue, table), used by `make run` when they are free. The stack
# always hands the host an explicit connection string, so any free ports work as well (tests).
AZURITE_PORTS = (10000, 10001, 10002)
# Azurite's own flags, everywhere it is started (the stack, tests/azurite.py, the soak test):
# in memory, loopback only, and no telemetry: Azurite otherwise reports usage to an Application
# Insights endpoint, and the local stack must never depend on, or talk to, the network.
AZURITE_FLAGS = ("--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry")
LOOPBACK = "127.0.0.1"
# Azurite's well-known development account and key (public, documented); not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_argv(binary: str, ports: tuple[int, int, int], *extra: str) -> list[str]:
    """The command line that starts Azurite on loopback ``ports`` (blob, queue, table)."""
    blob, queue, table = ports
    return [binary, *AZURITE_FLAGS,
            "--blobHost", LOOPBACK, "--blobPort", str(blob), "--queueHost", LOOPBACK, "--queuePort", str(queue),
            "--tableHost", LOOPBACK, "--tablePort", str(table), *extra]


def azurite_connection_string(ports: tuple[int, int, int]) -> str:
    blob, queue, table = ports
    base = f"http://{LOOPBACK}"
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={base}:{blob}/{AZURITE_ACCOUNT};QueueEndpoint={base}:{queue}/{AZURITE_ACCOUNT};"
            f"TableEndpoint={base}:{table}/{AZURITE_ACCOUNT};")


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


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
            s.bind((LOOPBACK, port))
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
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s (logs in {RUN} or the stack's run_dir)")


def say(text: str) -> None:
    """What the stack is doing, while it does it (stderr, so that stdout stays the banner)."""
    print(f"==> {text}", file=sys.stderr, flush=True)


@dataclass
class Stack:
    """The local stack. ``port`` is the host's; ``azurite_ports`` (blob, queue, table) default
    to Azurite's well-known ports. Tests pass free ports for both (:meth:`on_free_ports`)."""

    port: int = 7071
    clock: str = "real"
    azurite_ports: tuple[int, int, int] = AZURITE_PORTS
    quiet: bool = False
    run_dir: Path = RUN  # logs, the connection and settings files, the sandbox's CA
    with_host: bool = True  # False: Azurite and the sandbox only (the CLI needs no host)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    conn: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    # ---- lifecycle ----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.run_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append((name, proc))

    @classmethod
    def on_free_ports(cls, **kwargs: Any) -> Stack:
        """A stack whose every listener (host, Azurite) takes a port the OS reports free."""
        return cls(port=free_port(), azurite_ports=(free_port(), free_port(), free_port()), **kwargs)

    def rel(self, path: Path) -> str:
        """``path`` as typed from the project folder (relative under it, absolute elsewhere)."""
        return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)

    def _say(self, text: str) -> None:
        if not self.quiet:
            say(text)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        busy = [p for p in (*self.azurite_ports, self.port) if not _port_free(p)]
        if busy:
            raise RuntimeError(f"ports in use: {busy} (is another stack running? `make clean` does not stop it)")
        azurite = ROOT / "node_modules" / ".bin" / "azurite"
        if not azurite.exists():
            raise RuntimeError("Azurite is missing: run `npm install` (or `make run`, which installs it)")
        blob, queue, table = self.azurite_ports
        self._say(f"starting Azurite (in memory, no telemetry) on {LOOPBACK}:{blob}/{queue}/{table}")
        self._spawn("azurite", azurite_argv(str(azurite), self.azurite_ports))
        conn_file = self.run_dir / "sandbox.json"
        conn_file.unlink(missing_ok=True)
        self._say("starting the sandbox (a local Azure) with the demo estate: generating its CA and keys")
        self._spawn("sandbox", [sys.executable, "-m", "sandbox", "serve", "--seed", "sandbox/seeds/demo.json",
                                "--connection-file", str(conn_file), "--clock", self.clock,
                                "--workdir", str(self.run_dir / "sandbox")])
        _wait("the sandbox", conn_file.exists)
        self.conn = json.loads(conn_file.read_text())
        _wait("Azurite", lambda: not _port_free(queue))
        # Simulated services react in seconds so the story can be watched live.
        self.admin("POST", "/sandbox/services", {"usage_interval_s": 3, "versionless_lag_s": 10,
                                                  "cosmos_recovery_s": 15})
        self.admin("POST", "/sandbox/lro", {"duration_s": 3.0, "fail_rate": 0.0})
        self._write_settings()
        if not self.with_host:
            return
        self._say(f"starting the Functions host on {self.host_url} (function_app.py)")
        self._spawn("host", [sys.executable, "-m", "sandbox.host", "--port", str(self.port),
                             "--settings", str(self.settings_file)])
        _wait("the Functions host", lambda: requests.get(f"{self.host_url}/admin/host/ping", timeout=2).ok)
        webhook = (f"{self.host_url}/runtime/webhooks/eventgrid?functionName=on_key_vault_event"
                   f"&code={self.keys['eventgrid']}")
        self._say("subscribing the host's Event Grid webhook to the sandbox's key events")
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
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def settings_file(self) -> Path:
        return self.run_dir / "local.settings.json"

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
            "AzureWebJobsStorage": azurite_connection_string(self.azurite_ports),
            "KEYSTEWARD_SANDBOX": str(self.run_dir / "sandbox.json"),
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


def current_version(stack: Stack, vault: str, key: str) -> str:
    """The key's current version id, read from the sandbox's Key Vault data plane (REST
    ``GET {vault}/keys/{name}``, api-version as the SDK sends it)."""
    from azure.core.credentials import AccessToken  # noqa: PLC0415 - the banner only
    from azure.keyvault.keys import KeyClient  # noqa: PLC0415

    class _Token:
        def get_token(self, *_scopes: str, **_kw: Any) -> AccessToken:
            return AccessToken("local-stack", int(time.time()) + 3600)

    client = KeyClient(stack.vault_url(vault), _Token(), verify_challenge_resource=False,
                       connection_verify=stack.conn["ca_bundle"])
    return str(client.get_key(key).properties.version)


def banner(stack: Stack) -> str:
    """What runs, and commands that paste and run as they are (every id filled in or captured)."""
    ca = stack.rel(Path(stack.conn["ca_bundle"]))
    admin = stack.conn["admin_url"].rstrip("/")
    adx_key = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-adx"
    cosmos_key = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-cosmos"
    adx_now = current_version(stack, "kv-contoso-prod-weu", "cmk-adx")
    sandbox_now = str(stack.admin("GET", "/sandbox/clock")["now"])[:19].replace("T", " ") + " UTC"
    hdr = principal_header("oncall@contoso.example", "11111111-2222-3333-4444-555555555555",
                           ["KeySteward.Read", "KeySteward.Revoke", "KeySteward.Restore"])
    # The console script installed beside this interpreter (.venv/bin/keysteward under `make run`).
    script = Path(sys.executable).parent / "keysteward"
    exe = os.path.relpath(script, ROOT) if script.exists() else f"{sys.executable} -m shared.cli"
    ks = f"{exe} --settings {stack.rel(stack.settings_file)}"
    api = f"{stack.host_url}/api"
    code = stack.keys["function"]
    blob, queue, table = stack.azurite_ports
    # The run id comes back in the 202 answer: the shell keeps it, so the later lines need no editing.
    run_of = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"run\"])'"
    revoke_body = f'{{"key": "{cosmos_key}", "mode": "disable", "reason": "drill", "ticket": "T-2"'
    return f"""
keysteward local stack is running (development only; Ctrl-C stops everything). Run the commands
below from this folder ({ROOT}).
  Functions host   {stack.host_url}   (logs: {stack.rel(stack.run_dir / 'host.log')})
  on-call page     http://127.0.0.1:7072/api/ui?code={stack.keys['function']}
                   (first start the sign-in stand-in: python -m scripts.easyauth --target {stack.host_url})
  sandbox ARM      {stack.conn['arm_url']}   admin: {admin}   CA: {ca}
  Azurite          blobs {LOOPBACK}:{blob}, queues {LOOPBACK}:{queue}, tables {LOOPBACK}:{table} (no telemetry)
  settings         {stack.rel(stack.settings_file)}

Clock: the sandbox has its own clock, set by the demo estate and running at wall-clock speed
(now {sandbox_now}). The host's timers, the CLI and every time keysteward prints use it;
log lines in {stack.rel(stack.run_dir)}/*.log carry wall-clock (UTC) times. Move the sandbox clock with
  curl -s --cacert {ca} -X POST {admin}/sandbox/clock -H 'Content-Type: application/json' -d '{{"advance": "PT25H"}}'

Try:
  # every version of a key, who uses it, and whether it may be disabled (version ids are here)
  {ks} status --key {adx_key}
  # rotate: the sandbox emits KeyNewVersionCreated and the host moves the pinned clusters
  {ks} rotate --key {adx_key}
  {ks} plan
  {ks} check
  # disabling the version that was current before that rotate is refused (24-hour rule)
  {ks} disable --key {adx_key}/{adx_now} --reason cleanup --ticket T-1
  # 25 hours later (the curl above) it is allowed: run the disable again
  # revoke: the blast radius first, then for real; restore; the runbook's journal
  {ks} revoke --key {cosmos_key} --mode disable --reason drill --ticket T-2 --dry-run
  {ks} runs
  # the same over HTTP, as on-call tooling calls it
  export P={hdr}
  curl -s -X POST '{api}/revoke?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{revoke_body}, "dryRun": true}}'
  RUN=$(curl -s -X POST '{api}/revoke?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{revoke_body}, "dryRun": false}}' | {run_of})
  curl -s "{api}/runs/$RUN?code={code}" -H "X-MS-CLIENT-PRINCIPAL: $P"
  {ks} resume "$RUN"
  curl -s -X POST '{api}/restore?code={code}' -H "X-MS-CLIENT-PRINCIPAL: $P" \\
       -d '{{"run": "'"$RUN"'", "reason": "drill over", "ticket": "T-2"}}'
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "run":
        print("usage: python -m scripts.stack run", file=sys.stderr)
        return 2
    stack = Stack()
    busy = [p for p in (stack.port, *stack.azurite_ports) if not _port_free(p)]
    if busy:
        # Another stack (or anything else) holds the usual ports: the banner carries the real ones.
        stack = Stack.on_free_ports()
        say(f"ports {', '.join(map(str, busy))} are in use: the host takes {stack.port}, Azurite "
            f"{'/'.join(map(str, stack.azurite_ports))}")
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        say("ready")
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
