"""The sandbox over real loopback HTTPS: the official clients with the generated CA, the
connection file, vault listeners started on demand, faults on the socket, the real-time
ticker, and ``python -m sandbox serve`` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.keyvault.keys import KeyClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultCreateOrUpdateParameters,
    VaultProperties,
)
from azure.mgmt.kusto import KustoManagementClient
from azure.mgmt.kusto.models import ClusterUpdate, KeyVaultProperties

from sandbox import connection
from sandbox.server import SandboxServer
from sandbox.transport import StaticTokenCredential
from tests.sandbox.webhook import Webhook, serve_http

pytestmark = pytest.mark.loopback

PROD = "00000000-0000-0000-0000-00000000a001"
ROOT = Path(__file__).resolve().parents[2]


def conn_of(server: SandboxServer) -> connection.Connection:
    assert server.connection_file is not None
    return connection.load(server.connection_file)


def key_client(conn: connection.Connection, vault_url: str) -> KeyClient:
    return KeyClient(vault_url, StaticTokenCredential(), **conn.key_client_kwargs())


def mgmt(conn: connection.Connection, cls: Any) -> Any:
    return cls(StaticTokenCredential(), PROD, polling_interval=0, **conn.mgmt_client_kwargs())


def test_connection_file_contents(loopback_server: SandboxServer) -> None:
    assert loopback_server.connection_file is not None
    raw = json.loads(loopback_server.connection_file.read_text())
    assert {"arm_url", "admin_url", "ca_bundle", "tenant_id", "subscriptions", "vaults", "credential_scopes"} <= set(
        raw
    )
    assert raw["credential_scopes"] == ["https://management.azure.com/.default"]
    assert raw["tenant_id"] == loopback_server.world.tenant_id
    assert PROD in raw["subscriptions"]
    assert raw["pid"] == os.getpid()
    assert Path(raw["ca_bundle"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert set(raw["vaults"]) == {"kv-contoso-prod-weu", "kv-contoso-prod-neu", "kv-contoso-dev-weu"}
    for url in [raw["arm_url"], raw["admin_url"], *raw["vaults"].values()]:
        parts = urlsplit(url)
        assert parts.scheme == "https"
        assert parts.hostname == "127.0.0.1"
        assert parts.port
    assert len({urlsplit(u).port for u in raw["vaults"].values()}) == 3, "one port per vault"


def test_key_client_over_https(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    kv = key_client(conn, conn.vault_url("kv-contoso-prod-weu"))
    key = kv.get_key("cmk-adx")
    assert key.id.startswith(conn.vault_url("kv-contoso-prod-weu") + "/keys/cmk-adx/")
    assert len(list(kv.list_properties_of_key_versions("cmk-adx"))) == 2
    rotated = kv.rotate_key("cmk-adx")
    assert rotated.properties.version != key.properties.version


def test_untrusted_clients_are_refused(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{conn.admin_url}/sandbox/clock", timeout=5)
    assert requests.get(f"{conn.admin_url}/sandbox/clock", verify=conn.ca_bundle, timeout=5).status_code == 200


def test_kusto_update_over_https(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    kv = key_client(conn, conn.vault_url("kv-contoso-prod-weu"))
    newest = kv.get_key("cmk-adx").properties.version
    kusto = mgmt(conn, KustoManagementClient)
    before = kusto.clusters.get("rg-analytics", "adxcontosoprod1")
    props = before.key_vault_properties
    poller = kusto.clusters.begin_update(
        "rg-analytics",
        "adxcontosoprod1",
        ClusterUpdate(
            key_vault_properties=KeyVaultProperties(
                key_name=props.key_name,
                key_version=newest,
                key_vault_uri=props.key_vault_uri,
                user_identity=props.user_identity,
            )
        ),
    )
    # The LRO completes on sandbox time: move the manual clock while the poller waits.
    requests.post(f"{conn.admin_url}/sandbox/clock", json={"advance": "PT1M"}, verify=conn.ca_bundle, timeout=5)
    after = poller.result()
    assert after.key_vault_properties.key_version == newest


def test_a_vault_created_through_arm_gets_its_own_listener(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    client = mgmt(conn, KeyVaultManagementClient)
    policy = AccessPolicyEntry(
        tenant_id=conn.tenant_id,
        object_id="5b1c3a6e-8f0d-4c39-9a51-2f4e7d6c8b90",
        permissions=Permissions(keys_property=["get", "create", "list"]),
    )
    vault = client.vaults.begin_create_or_update(
        "rg-late",
        "kv-created-late",
        VaultCreateOrUpdateParameters(
            location="westeurope",
            properties=VaultProperties(
                tenant_id=conn.tenant_id,
                sku=Sku(family="A", name="standard"),
                access_policies=[policy],
                enable_purge_protection=True,
            ),
        ),
    ).result()
    url = vault.properties.vault_uri.rstrip("/")
    assert urlsplit(url).hostname == "127.0.0.1"
    kv = key_client(conn, url)
    created = kv.create_rsa_key("late-key", size=2048)
    assert created.id.startswith(url)
    assert conn_of(loopback_server).vault_url("kv-created-late") == url, "the connection file was rewritten"


def test_faults_reach_the_socket(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    admin = f"{conn.admin_url}/sandbox/faults"
    rules = {"rules": [{"path": "/keys/cmk-pg/?$", "drop": True, "times": 1}]}
    requests.post(admin, json=rules, verify=conn.ca_bundle, timeout=5)
    kv = KeyClient(
        conn.vault_url("kv-contoso-prod-neu"), StaticTokenCredential(), retry_total=0, **conn.key_client_kwargs()
    )
    try:
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            kv.get_key("cmk-pg")
        assert kv.get_key("cmk-pg").name == "cmk-pg", "times=1: the next call goes through"
        slow = {"rules": [{"path": "/keys/cmk-pg/?$", "latency_ms": 300, "times": 1}]}
        requests.post(admin, json=slow, verify=conn.ca_bundle, timeout=5)
        started = time.perf_counter()
        kv.get_key("cmk-pg")
        assert time.perf_counter() - started >= 0.3
    finally:
        requests.delete(admin, verify=conn.ca_bundle, timeout=5)


def test_real_clock_delivers_without_requests(loopback_server: SandboxServer) -> None:
    conn = conn_of(loopback_server)
    world = loopback_server.world
    hook = Webhook()
    with serve_http(hook) as base:
        requests.post(
            f"{conn.admin_url}/sandbox/event-subscriptions",
            json={"endpoint": f"{base}/api/events"},
            verify=conn.ca_bundle,
            timeout=5,
        )
        requests.post(f"{conn.admin_url}/sandbox/clock", json={"mode": "real"}, verify=conn.ca_bundle, timeout=5)
        try:
            # Published with no request in flight: only the background ticker can deliver it.
            world.eventgrid.publish([{"id": "tick-1", "topic": "/t", "subject": "k", "eventType": "T", "data": {}}])
            deadline = time.monotonic() + 5
            while not hook.events and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            requests.post(f"{conn.admin_url}/sandbox/clock", json={"mode": "manual"}, verify=conn.ca_bundle, timeout=5)
            requests.post(f"{conn.admin_url}/sandbox/reset", verify=conn.ca_bundle, timeout=5)
    assert [e["id"] for e in hook.events] == ["tick-1"]


def test_serve_command_runs_and_stops_cleanly(tmp_path: Path) -> None:
    conn_file = tmp_path / "sandbox.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--seed",
            "demo",
            "--connection-file",
            str(conn_file),
            "--workdir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        conn = connection.wait_for(conn_file, timeout_s=60)
        assert conn.pid == proc.pid
        assert set(conn.vaults) == {"kv-contoso-prod-weu", "kv-contoso-prod-neu", "kv-contoso-dev-weu"}
        state = requests.get(f"{conn.admin_url}/sandbox/state", verify=conn.ca_bundle, timeout=5).json()
        assert state["vaults"] == 3
        kv = key_client(conn, conn.vault_url("kv-contoso-dev-weu"))
        assert kv.get_key("cmk-dev").name == "cmk-dev"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert not conn_file.exists(), "the connection file is removed on shutdown"


def test_serve_command_refuses_a_bad_seed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vaults": [{"name": "kv", "subscription": "nope"}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "serve", "--seed", str(bad), "--connection-file", str(tmp_path / "c.json")],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert b"vaults[0].subscription" in proc.stderr
    assert not (tmp_path / "c.json").exists()
