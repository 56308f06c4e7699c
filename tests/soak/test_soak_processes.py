"""The process-level soak: the real local stack as subprocesses (the sandbox over loopback
HTTPS, Azurite, the development Functions host running function_app.py, the keysteward CLI),
with the host and the CLI killed (SIGKILL) at random points and Azurite restarted (in memory:
its queues and tables are lost), then recovery and the invariant checks I2-I6 (I1 is checked
step by step by the in-process soak, which sees every state change).

A few seeds run in CI (``KEYSTEWARD_SOAK_PROCESS_SEEDS``, default 2); ``make soak`` runs them
with the rest. Each seed takes ~30-60 s of wall time: the host polls queues and timers in real
time.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox.transport import StaticTokenCredential
from scripts.stack import KEY_EVENTS, azurite_argv
from shared.app import build
from shared.config import load_settings
from shared.journal import from_connection_string
from shared.keyuri import parse_key_uri
from tests.azurite import Azurite, _free_port, _wait_port, azurite_binary
from tests.soak import invariants as inv
from tests.soak.conftest import process_default, soak_seeds
from tests.soak.harness import jwk_of, key_pool

ROOT = Path(__file__).resolve().parents[2]
SUBS = ("00000000-0000-0000-0000-00000000a001", "00000000-0000-0000-0000-00000000b002")
PERMS = ["get", "wrapKey", "unwrapKey"]

pytestmark = [pytest.mark.soak, pytest.mark.azurite, pytest.mark.loopback]


def _seed_doc(rng: random.Random) -> dict[str, Any]:
    ids = [{"name": f"uai{i}", "subscription": "a", "resource_group": "rg-id", "location": "westeurope"}
           for i in range(2)]
    clusters = [{"name": f"adxp{i}", "subscription": rng.choice("ab"), "resource_group": "rg-data",
                 "location": "westeurope", "identity": "uai0", "key": "kv-proc/cmk", "version": "v1"}
                for i in range(rng.randint(1, 3))]
    # Cosmos DB takes only a versionless key URI: the account follows the key itself.
    accounts = [{"name": "cosmosp0", "subscription": rng.choice("ab"), "resource_group": "rg-data",
                 "location": "westeurope", "identity": "uai1", "key": "kv-proc/cmk", "version": None}]
    return {
        "subscriptions": [{"id": SUBS[0], "name": "a"}, {"id": SUBS[1], "name": "b"}],
        "identities": ids,
        "vaults": [{"name": "kv-proc", "subscription": "a", "resource_group": "rg-sec", "location": "westeurope",
                    "purge_protection": True,
                    "access_policies": [{"identity": "uai0", "keys": PERMS}, {"identity": "uai1", "keys": PERMS}],
                    "keys": [{"name": "cmk", "versions": [{"label": "v1", "age": "P2D"}]}]}],
        "kusto_clusters": clusters,
        "cosmos_accounts": accounts,
    }


class Proc:
    """One subprocess in its own session (killed by process group, never by name)."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = (logdir / f"{name}.log").open("ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        self.log.close()


class Stack:
    def __init__(self, tmp: Path, seed: int) -> None:
        self.tmp = tmp
        self.seed = seed
        self.rng = random.Random(seed)
        self.ports = Azurite(_free_port(), _free_port(), _free_port())
        self.host_port = _free_port()
        self.procs: dict[str, Proc] = {}
        self.conn: dict[str, Any] = {}
        self.keys = {"function": "soak-fn-key", "master": "soak-master-key", "eventgrid": "soak-eg-key"}

    # ---- processes --------------------------------------------------------------------------------
    def start_azurite(self) -> None:
        binary = azurite_binary()
        if binary is None:
            pytest.skip("Azurite is not installed (npm install)")
        p = self.ports
        self.procs["azurite"] = Proc("azurite", azurite_argv(binary, (p.blob_port, p.queue_port, p.table_port)),
            self.tmp)
        deadline = time.monotonic() + 30
        for port in (p.queue_port, p.table_port):
            _wait_port(port, deadline)

    def start_sandbox(self) -> None:
        seed_file = self.tmp / "seed.json"
        seed_file.write_text(json.dumps(_seed_doc(self.rng)))
        conn_file = self.tmp / "sandbox.json"
        self.procs["sandbox"] = Proc("sandbox", [
            sys.executable, "-m", "sandbox", "serve", "--seed", str(seed_file), "--connection-file", str(conn_file),
            "--clock", "manual", "--seed-random", str(self.seed), "--workdir", str(self.tmp / "sandbox")], self.tmp)
        deadline = time.monotonic() + 60
        while not conn_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the sandbox did not start")
            time.sleep(0.1)
        self.conn = json.loads(conn_file.read_text())
        self.admin("POST", "/sandbox/lro", {"duration_s": 20.0, "fail_rate": 0.0})

    def write_settings(self) -> None:
        values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.ports.connection_string,
            "KEYSTEWARD_SANDBOX": str(self.tmp / "sandbox.json"),
            "KEYSTEWARD_SUBSCRIPTIONS": ",".join(SUBS),
            "KEYSTEWARD_VAULTS": self.vault_url,
            "KEYSTEWARD_WORK_QUEUE": "keysteward-work",
            "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *",
            "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */5 * * * *",
            "KEYSTEWARD_CONFIRM_DELAY_SECONDS": "1",
            "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "5",
            "KEYSTEWARD_TABLE_PREFIX": f"soak{self.seed}",
            "KEYSTEWARD_LOCAL_FUNCTION_KEY": self.keys["function"],
            "KEYSTEWARD_LOCAL_MASTER_KEY": self.keys["master"],
            "KEYSTEWARD_LOCAL_EVENTGRID_KEY": self.keys["eventgrid"],
        }
        (self.tmp / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    def start_host(self) -> None:
        self.procs["host"] = Proc("host", [sys.executable, "-m", "sandbox.host", "--port", str(self.host_port),
                                           "--settings", str(self.tmp / "local.settings.json")], self.tmp)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.host_port}/admin/host/ping", timeout=2).ok:
                    return
            if time.monotonic() > deadline or self.procs["host"].proc.poll() is not None:
                raise RuntimeError(f"the host did not start (see {self.tmp / 'host.log'})")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.kill(signal.SIGTERM)

    # ---- helpers ------------------------------------------------------------------------------
    @property
    def vault_url(self) -> str:
        return str(self.conn["vaults"]["kv-proc"]).rstrip("/")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.request(method, self.conn["admin_url"].rstrip("/") + path, json=body,
                             verify=self.conn["ca_bundle"], timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def subscribe(self) -> None:
        hook = (f"http://127.0.0.1:{self.host_port}/runtime/webhooks/eventgrid?functionName=on_key_vault_event"
                f"&code={self.keys['eventgrid']}")
        self.admin("POST", "/sandbox/event-subscriptions", {
            "endpoint": hook, "schema": "EventGridSchema", "event_types": KEY_EVENTS,
            "duplicate_rate": self.rng.choice([0.0, 0.5, 1.0]), "shuffle": self.rng.random() < 0.5})

    def observer(self) -> Any:
        env = json.loads((self.tmp / "local.settings.json").read_text())["Values"]
        return build(load_settings({k: v for k, v in env.items() if k != "AzureWebJobsStorage"}))

    def cli(self, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTEWARD_")}
        return subprocess.Popen([sys.executable, "-m", "shared.cli", "--settings", str(self.tmp / "local.settings.json"),
                                 *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def advance(self, minutes: int) -> None:
        self.admin("POST", "/sandbox/clock", {"advance": f"PT{minutes}M"})

    def requests_log(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/sandbox/requests")["value"])


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(tmp_path, int(request.node.callspec.params["seed"]))
    try:
        s.start_azurite()
        s.start_sandbox()
        s.write_settings()
        s.start_host()
        s.subscribe()
        yield s
    finally:
        s.stop()


def _kill_soon(proc: Proc | subprocess.Popen[bytes], delay: float) -> None:
    time.sleep(delay)
    if isinstance(proc, Proc):
        proc.kill()
    elif proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _converge(stack: Stack, observer: Any, *, rounds: int = 30) -> list[str]:
    """Timer passes (sandbox time) until I2 holds; the problems of the last look otherwise."""
    key = parse_key_uri(f"{stack.vault_url}/keys/cmk", allowed_vaults=None)
    problems: list[str] = ["not looked yet"]
    for _ in range(rounds):
        stack.advance(6)
        time.sleep(1.5)
        versions = observer.keys.versions(key)
        snap = inv.Snapshot(observer.clock.now(), {key.key_id: versions}, observer.all_bindings())
        problems = inv.check_i2(snap, vaults=[stack.vault_url])
        if not problems:
            return []
    return problems


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in soak_seeds(
    "KEYSTEWARD_SOAK_PROCESS_SEEDS", process_default())])
def test_process_soak(stack: Stack, seed: int) -> None:
    rng = stack.rng
    kc = _key_client(stack)
    observer = stack.observer()
    seq0 = 0
    try:
        # 1. a new version; the host is killed at a random point after the event, then restarted.
        kc.import_key("cmk", jwk_of(key_pool()[rng.randrange(len(key_pool()))]))
        stack.advance(0 if rng.random() < 0.5 else 1)
        _kill_soon(stack.procs["host"], rng.uniform(0.0, 2.0))
        # 2. Azurite restarts (in memory: work items and journal rows are gone) on one seed in two.
        if rng.random() < 0.5:
            stack.procs["azurite"].kill()
            stack.start_azurite()
        stack.start_host()
        problems = _converge(stack, observer)
        assert problems == [], f"soak process seed {seed}: I2 after a host kill: {problems}"
        # 3. a revocation from the CLI, killed at a random point, resumed by the CLI.
        cli = stack.cli("revoke", "--key", f"{stack.vault_url}/keys/cmk", "--mode", "disable",
                        "--reason", "soak", "--ticket", f"SOAK-P{seed}", "--no-wait")
        _kill_soon(cli, rng.uniform(0.5, 4.0))
        stack.advance(6)  # past the lease and step claim staleness (5 min)
        for _ in range(3):
            stack.cli("resume", "--no-wait").wait(timeout=120)
            stack.advance(6)
        journal = from_connection_string(stack.ports.connection_string, clock=observer.clock,
                                         table_prefix=f"soak{seed}")
        runs = journal.list_runs(limit=100)
        assert inv.check_i3(runs) == [], f"soak process seed {seed}: {inv.check_i3(runs)}"
        # 4. I4: once quiet, one more timer pass and the queue write nothing.
        time.sleep(3)
        stack.advance(6)
        time.sleep(3)
        seq = stack.requests_log()[-1]["seq"]
        stack.advance(6)
        time.sleep(4)
        repeated = [r for r in stack.requests_log() if r["seq"] > seq]
        log = stack.requests_log()
        extra = [stack.conn["admin_url"]]  # the sandbox clock, read over the admin API in sandbox mode
        problems = (inv.check_i4(repeated) + inv.check_i5(log[seq0:])
                    + inv.check_i6(log, vaults=[stack.vault_url], arm_hosts=[inv.ARM_HOST, stack.conn["arm_url"]],
                                   extra_hosts=extra))
        assert problems == [], f"soak process seed {seed} failed: {problems} (replay: KEYSTEWARD_SOAK_SEED={seed} " \
                               "python -m pytest tests/soak/test_soak_processes.py)"
    finally:
        with contextlib.suppress(Exception):
            kc.close()


def _key_client(stack: Stack) -> Any:
    from azure.keyvault.keys import KeyClient

    return KeyClient(stack.vault_url, StaticTokenCredential(), verify_challenge_resource=False,
                     connection_verify=stack.conn["ca_bundle"])


__all__ = ["Stack", "timedelta"]
