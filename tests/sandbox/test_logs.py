"""The sandbox's audit records and Log Analytics query API, driven through azure-monitor-query's client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from sandbox import audit, connection, seeds
from sandbox.server import SandboxServer
from sandbox.transport import SandboxTransport, StaticTokenCredential, admin_url, sandbox_session
from sandbox.world import World
from tests.app.estate import make_estate

WS = audit.DEFAULT_WORKSPACE
WHO = "1a2b3c4d-0000-4000-8000-00000000beef"


@pytest.fixture
def logs_world() -> World:
    return World(seed=5)


def logs_client(world: World) -> LogsQueryClient:
    return LogsQueryClient(StaticTokenCredential(), transport=SandboxTransport(world))


def query(world: World, kql: str, span: timedelta = timedelta(days=1)) -> tuple[list[str], list[str], list[list]]:
    result = logs_client(world).query_workspace(WS, kql, timespan=span)
    assert result.status == LogsQueryStatus.SUCCESS
    [table] = result.tables
    return list(table.columns), list(table.columns_types), [list(r) for r in table.rows]


def test_every_key_operation_is_recorded_with_the_caller_from_the_token(logs_world: World) -> None:
    estate = make_estate(logs_world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    crypto = CryptographyClient(f"{estate.key_uri}/{estate.v1}", audit.IdentityCredential(WHO),
                                transport=SandboxTransport(logs_world))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"x" * 32)
    crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
    estate.keys.update_key_properties(estate.key_name, estate.v1, enabled=False)
    with pytest.raises(HttpResponseError):
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
    cols, types, rows = query(logs_world, 'AZKVAuditLogs | where Identity.claim.oid == "' + WHO + '"'
                              ' | project OperationName, ResultType, HttpStatusCode, Id, TimeGenerated'
                              ' | order by TimeGenerated asc')
    assert cols == ["OperationName", "ResultType", "HttpStatusCode", "Id", "TimeGenerated"]
    assert types == ["string", "string", "int", "string", "datetime"]
    key_id = f"https://kv-estate.vault.azure.net/keys/cmk/{estate.v1}"
    # The SDK reads the key and wraps locally with its public half; unwraps go to the vault.
    assert [r[:4] for r in rows] == [["KeyGet", "Success", 200, key_id], ["KeyUnwrap", "Success", 200, key_id],
                                     ["KeyUnwrap", "Failure", 403, key_id]]
    # The opaque test token is the sandbox's default caller; the key's creation and update are logged too.
    _, _, ops = query(logs_world, f'AZKVAuditLogs | where Identity.claim.oid == "{audit.DEFAULT_CALLER}"'
                      ' | summarize n = count() by OperationName')
    assert {r[0] for r in ops} >= {"KeyCreate", "KeyUpdate"}


def test_summarize_types_and_the_legacy_table(logs_world: World) -> None:
    estate = make_estate(logs_world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    logs_world.clock.advance(timedelta(minutes=10))
    kql = ('{t} | where OperationName in ("KeyWrap", "KeyUnwrap") | extend V = tostring(split({id}, "/")[5])'
           ' | summarize Calls = count(), Ok = countif(ResultType == "Success"), Last = max(TimeGenerated),'
           ' Ops = make_set(OperationName) by V')
    _, types, rows = query(logs_world, kql.format(t="AZKVAuditLogs", id="Id"))
    assert types == ["string", "long", "long", "datetime", "dynamic"]
    assert [r[:3] for r in rows] == [[estate.v1, 2, 2]]  # two clusters, one sweep
    assert rows[0][4] == '["KeyUnwrap"]'  # dynamic values travel as JSON text
    _, _, legacy = query(logs_world, kql.format(t="AzureDiagnostics", id="id_s"))
    assert [r[:3] for r in legacy] == [r[:3] for r in rows]


def test_timespan_and_ingestion_delay_hide_records(logs_world: World) -> None:
    make_estate(logs_world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    count = 'AZKVAuditLogs | where OperationName == "KeyUnwrap" | summarize n = count()'
    logs_world.clock.advance(timedelta(minutes=10))
    assert query(logs_world, count)[2] == [[2]]
    logs_world.clock.advance(timedelta(hours=3))  # one more sweep, now
    assert query(logs_world, count)[2] == [[4]]
    assert query(logs_world, count, span=timedelta(hours=1))[2] == [[2]]
    session = sandbox_session(logs_world)
    assert session.post(f"{admin_url()}/sandbox/audit", json={"ingestion_delay_s": 600}).json()["ingestion_delay_s"] == 600
    logs_world.clock.advance(timedelta(minutes=5))  # a sweep now; the one 5 minutes ago is not ingested either
    assert query(logs_world, count)[2] == [[2]]
    logs_world.clock.advance(timedelta(minutes=6))  # the sweep 11 minutes ago is in; those 6 and 0 minutes ago not
    assert query(logs_world, count)[2] == [[4]]


@pytest.mark.parametrize(("kql", "fragment"), [
    ("Heartbeat | take 1", "'Heartbeat' is not a table"),
    ("AZKVAuditLogs | where Nope == 1", "'Nope' is not a column"),
    ("AZKVAuditLogs | join kind=inner (AzureDiagnostics) on Id", "does not evaluate the 'join' operator"),
    ("AZKVAuditLogs | where OperationName ==", "expected"),
    ("AZKVAuditLogs | summarize percentile(DurationMs, 5)", "needs aggregations"),
])
def test_unknown_kql_is_a_400_naming_what_it_does_not_know(logs_world: World, kql: str, fragment: str) -> None:
    with pytest.raises(HttpResponseError) as err:
        logs_client(logs_world).query_workspace(WS, kql, timespan=timedelta(days=1))
    assert err.value.status_code == 400
    assert fragment in str(err.value)


def test_unknown_workspace_is_404_and_no_token_is_401(logs_world: World) -> None:
    with pytest.raises(HttpResponseError) as err:
        logs_client(logs_world).query_workspace("11111111-2222-4333-8444-555566667777", "AZKVAuditLogs",
                                                timespan=None)
    assert err.value.status_code == 404
    resp = sandbox_session(logs_world).post(f"https://api.loganalytics.io/v1/workspaces/{WS}/query",
                                           json={"query": "AZKVAuditLogs"})
    assert resp.status_code == 401


def test_partial_answers_carry_rows_and_an_error(logs_world: World) -> None:
    make_estate(logs_world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    sandbox_session(logs_world).post(f"{admin_url()}/sandbox/audit", json={"partial": True})
    result = logs_client(logs_world).query_workspace(WS, "AZKVAuditLogs | take 1", timespan=None)
    assert result.status == LogsQueryStatus.PARTIAL
    assert result.partial_error is not None and len(result.partial_data[0].rows) == 1


# ---- admin API: unknown consumers -------------------------------------------------------------------------
def test_consumers_unwrap_on_their_schedule_in_sandbox_time_and_delete_removes_them(logs_world: World) -> None:
    estate = make_estate(logs_world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    session = sandbox_session(logs_world)
    key = f"{estate.key_uri}/{estate.v1}"
    resp = session.post(f"{admin_url()}/sandbox/consumers", json={"principal_id": WHO, "key": key, "every_s": 3600})
    assert resp.status_code == 201 and resp.json()["key"] == key
    assert [c["principal_id"] for c in session.get(f"{admin_url()}/sandbox/consumers").json()["value"]] == [WHO]
    logs_world.clock.advance(timedelta(hours=5, minutes=30))
    count = f'AZKVAuditLogs | where Identity.claim.oid == "{WHO}" | summarize n = count() by OperationName'
    assert query(logs_world, count)[2] == [["KeyUnwrap", 6]]  # at 0 h and each hour to 5 h
    assert session.delete(f"{admin_url()}/sandbox/consumers").json() == {"removed": 1}
    logs_world.clock.advance(timedelta(hours=5))
    assert query(logs_world, count)[2] == [["KeyUnwrap", 6]]


@pytest.mark.parametrize(("body", "target"), [
    ({"principal_id": "not-a-guid", "key": "K", "every_s": 60}, "principal_id"),
    ({"principal_id": WHO, "key": "https://kv-estate.vault.azure.net/keys/cmk", "every_s": 60}, "key"),
    ({"principal_id": WHO, "key": "https://kv-other.vault.azure.net/keys/cmk/abc", "every_s": 60}, "key"),
    ({"principal_id": WHO, "key": "K", "every_s": 0}, "every_s"),
    ({"principal_id": WHO, "key": "K"}, "every_s"),
    ({"principal_id": WHO, "key": "K", "every_s": 60, "extra": 1}, "extra"),
])
def test_a_bad_consumer_is_a_400_naming_the_field_and_changes_nothing(logs_world: World, body: dict,
                                                                      target: str) -> None:
    estate = make_estate(logs_world, clusters_per_sub=0, accounts_per_sub=0, versionless=0)
    body = {k: (f"{estate.key_uri}/{estate.v1}" if v == "K" else v) for k, v in body.items()}
    session = sandbox_session(logs_world)
    resp = session.post(f"{admin_url()}/sandbox/consumers", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["target"] == target
    assert session.get(f"{admin_url()}/sandbox/consumers").json()["value"] == []


def test_reset_forgets_records_and_consumers(logs_world: World) -> None:
    estate = make_estate(logs_world, clusters_per_sub=1, accounts_per_sub=0, versionless=0)
    session = sandbox_session(logs_world)
    session.post(f"{admin_url()}/sandbox/consumers",
                 json={"principal_id": WHO, "key": f"{estate.key_uri}/{estate.v1}", "every_s": 60})
    assert session.get(f"{admin_url()}/sandbox/audit").json()["records"] > 0
    session.post(f"{admin_url()}/sandbox/reset")
    state = session.get(f"{admin_url()}/sandbox/audit").json()
    assert state["records"] == 0 and session.get(f"{admin_url()}/sandbox/consumers").json()["value"] == []


# ---- over loopback HTTPS -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    workdir = tmp_path_factory.mktemp("logs")
    server = SandboxServer(World(seed=9), workdir=workdir, connection_file=workdir / "connection.json")
    server.start()
    try:
        seeds.apply_seed(server.world, seeds.demo_seed())
        yield server
    finally:
        server.stop()


def test_logs_query_client_over_loopback_with_the_connection_file(logs_server: SandboxServer) -> None:
    assert logs_server.connection_file is not None
    conn = connection.load(Path(logs_server.connection_file))
    assert conn.audit_workspace_id == WS and conn.logs_url and conn.logs_url.startswith("https://127.0.0.1:")
    vault_url = conn.vault_url("kv-contoso-prod-weu")
    kc = KeyClient(vault_url, StaticTokenCredential(), **conn.key_client_kwargs())
    version = kc.get_key("cmk-adx").properties.version
    resp = requests.post(f"{conn.admin_url}/sandbox/consumers", verify=conn.ca_bundle, timeout=10, json={
        "principal_id": WHO, "key": f"{vault_url}/keys/cmk-adx/{version}", "every_s": 60})
    assert resp.status_code == 201, resp.text
    client = LogsQueryClient(StaticTokenCredential(), **conn.logs_client_kwargs())
    result = client.query_workspace(
        conn.audit_workspace_id, f'AZKVAuditLogs | where Identity.claim.oid == "{WHO}" | summarize n = count()'
        ' by Id, OperationName', timespan=timedelta(days=1))
    rows = [list(r) for r in result.tables[0].rows]
    # The audit record names the key by its public identifier, whatever URL the caller used.
    assert rows == [[f"https://kv-contoso-prod-weu.vault.azure.net/keys/cmk-adx/{version}", "KeyUnwrap", 1]]


def test_a_seed_adds_unknown_consumers_and_checks_them_first(logs_world: World) -> None:
    doc = seeds.demo_seed()
    vault = doc["vaults"][0]
    key = vault["keys"][0]
    label = key["versions"][0]["label"]
    doc["consumers"] = [{"principal_id": WHO, "key": f"{vault['name']}/{key['name']}", "version": label,
                         "every_s": 600}]
    bad = {**doc, "consumers": [{**doc["consumers"][0], "version": "no-such-label"}]}
    with pytest.raises(seeds.SeedError) as err:
        seeds.compile_seed(bad)
    assert err.value.field == "consumers[0].version"
    result = seeds.apply_seed(logs_world, doc)
    version = result.versions[f"{vault['name']}/{key['name']}/{label}"]
    logs_world.clock.advance(timedelta(hours=1))
    count = f'AZKVAuditLogs | where Identity.claim.oid == "{WHO}" | summarize n = count() by Id'
    assert query(logs_world, count)[2] == [[f"https://{vault['name']}.vault.azure.net/keys/{key['name']}/{version}", 7]]
