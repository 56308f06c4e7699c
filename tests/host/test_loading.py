"""Start-up: local settings, host.json, reading the app's functions, refusing what cannot be served."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import azure.functions as func
import pytest
import requests

from sandbox.host import (
    DEVELOPMENT_STORAGE_CONNECTION_STRING,
    DevHost,
    EventGridTriggerSpec,
    HostConfigError,
    HttpTriggerSpec,
    QueueTriggerSpec,
    RouteTemplate,
    TimerTriggerSpec,
    load_functions,
    load_host_json,
    load_local_settings,
    resolve_keys,
    storage_connection_string,
)
from tests.host import fixture_app
from tests.host.conftest import KEYS, MASTER_KEY, ManualClock, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_local_settings_fill_the_environment_without_overriding(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"A": "from-file", "B": "b", "FLAG": True},
                "Host": {"LocalHttpPort": 7999},
            }
        )
    )
    env = {"A": "already-set"}
    local = load_local_settings(path, env)
    assert env == {"A": "already-set", "B": "b", "FLAG": "true"}
    assert local.local_http_port == 7999
    assert load_local_settings(tmp_path / "missing.json", env).found is False
    path.write_text("{not json")
    with pytest.raises(HostConfigError):
        load_local_settings(path, env)


def test_the_example_settings_and_project_host_json_are_valid() -> None:
    env: dict[str, str] = {}
    local = load_local_settings(ROOT / "local.settings.example.json", env)
    assert env["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert local.values["KEYSTEWARD_RECONCILE_SCHEDULE"] == "0 */15 * * * *"
    config = load_host_json(ROOT / "host.json")
    assert config.queues.max_dequeue_count == 5
    assert load_host_json(ROOT / "host.json", env).queues.visibility_timeout == timedelta(seconds=2)
    assert config.function_timeout == timedelta(minutes=10)
    assert config.route_prefix == "api"


def test_host_json_queue_options(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text(
        json.dumps(
            {
                "version": "2.0",
                "functionTimeout": "00:05:00",
                "extensions": {
                    "http": {"routePrefix": ""},
                    "queues": {
                        "maxDequeueCount": 3,
                        "visibilityTimeout": "00:00:02",
                        "batchSize": 8,
                        "messageEncoding": "none",
                        "maxPollingInterval": "00:00:01",
                    },
                },
                "retry": {"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:05"},
            }
        )
    )
    config = load_host_json(path)
    assert config.route_prefix == ""
    assert config.function_timeout == timedelta(minutes=5)
    assert (config.queues.max_dequeue_count, config.queues.batch_size) == (3, 8)
    assert config.queues.visibility_timeout == timedelta(seconds=2)
    assert config.queues.message_encoding == "none"
    assert config.retry is not None
    assert config.retry.max_retry_count == 2
    overridden = load_host_json(
        path,
        {
            "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "7",
            "AzureFunctionsJobHost__Extensions__Http__RoutePrefix": "x",
        },
    )
    assert overridden.queues.max_dequeue_count == 7
    assert overridden.route_prefix == "x"
    assert overridden.queues.batch_size == 8
    path.write_text(json.dumps({"extensions": {"queues": {"messageEncoding": "utf-16"}}}))
    with pytest.raises(HostConfigError):
        load_host_json(path)


def test_functions_are_read_with_settings_expanded() -> None:
    env = {
        "FIXTURE_SCHEDULE": "0 */15 * * * *",
        "FIXTURE_QUEUE": "work-items",
        "FixtureStorage": "UseDevelopmentStorage=true",
    }
    specs = {s.name: s for s in load_functions(fixture_app.build_app(), environ=env)}
    get_key = specs["get_key"].trigger
    assert isinstance(get_key, HttpTriggerSpec)
    assert (get_key.route, get_key.methods, get_key.auth_level) == (
        "keys/{name}/{version?}",
        frozenset({"GET", "POST"}),
        "function",
    )
    assert isinstance(specs["on_event"].trigger, EventGridTriggerSpec)
    tick = specs["tick"].trigger
    assert isinstance(tick, TimerTriggerSpec)
    assert tick.schedule.expression == "0 */15 * * * *"
    work = specs["work"].trigger
    assert isinstance(work, QueueTriggerSpec)
    assert work.queue_name == "work-items"
    assert work.connection_string == DEVELOPMENT_STORAGE_CONNECTION_STRING


def test_a_missing_binding_setting_stops_the_host() -> None:
    with pytest.raises(HostConfigError, match="FIXTURE_SCHEDULE"):
        load_functions(fixture_app.build_app(with_queue=False), environ={})


def test_an_unsupported_binding_stops_the_host() -> None:
    app = func.FunctionApp()

    @app.function_name("on_blob")
    @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass

    @app.function_name("with_output")
    @app.route(route="x")
    @app.queue_output(arg_name="out", queue_name="q", connection="AzureWebJobsStorage")
    def with_output(req: func.HttpRequest, out: func.Out[str]) -> str:
        return "x"

    with pytest.raises(HostConfigError) as err:
        load_functions(app, environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert "blobTrigger" in str(err.value)
    assert "'queue'" in str(err.value)


def test_bad_schedule_queue_name_and_connection_stop_the_host() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="*/5 * * * *")
    def five_fields(timer: func.TimerRequest) -> None:
        pass

    @app.queue_trigger(arg_name="msg", queue_name="Bad_Name", connection="Missing")
    def bad_queue(msg: func.QueueMessage) -> None:
        pass

    with pytest.raises(HostConfigError) as err:
        load_functions(app, environ={})
    text = str(err.value)
    assert "6" in text
    assert "five_fields" in text
    assert "Bad_Name" in text


def test_route_templates() -> None:
    template = RouteTemplate("keys/{name}/{version?}")
    assert template.match("/keys/a") == {"name": "a"}
    assert template.match("/KEYS/a/b/") == {"name": "a", "version": "b"}
    assert template.match("/keys") is None
    assert template.match("/keys/a/b/c") is None
    typed = RouteTemplate("runs/{id:int}/steps/{step=all}")
    assert typed.match("/runs/12/steps") == {"id": "12", "step": "all"}
    assert typed.match("/runs/x/steps") is None
    complex_segment = RouteTemplate("files/{name}.{ext}")
    assert complex_segment.match("/files/report.tar.gz") == {"name": "report", "ext": "tar.gz"}
    assert RouteTemplate("").match("/") == {}
    with pytest.raises(HostConfigError):
        RouteTemplate("x/{id:regex(^a$)}")
    with pytest.raises(HostConfigError):
        RouteTemplate("{*rest}/x")


def test_keys_come_from_settings_or_are_generated() -> None:
    keys = resolve_keys({"KEYSTEWARD_LOCAL_FUNCTION_KEY": "f"})
    assert keys.function == "f"
    assert keys.generated == {"master", "eventgrid"}
    assert len(keys.master) > 20
    assert keys.master != keys.eventgrid
    assert keys.allows("function", keys.master)
    assert not keys.allows("admin", "f")
    assert keys.allows("system", keys.eventgrid)
    assert not keys.allows("system", "f")


def test_storage_connection_strings() -> None:
    assert storage_connection_string("UseDevelopmentStorage=true") == DEVELOPMENT_STORAGE_CONNECTION_STRING
    assert "127.0.0.1:10001" in storage_connection_string("UseDevelopmentStorage=true;")
    other = "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"
    assert storage_connection_string(other) == other


def test_admin_api_runs_a_timer_on_demand(web_host: DevHost) -> None:
    url = f"{web_host.url}/admin/functions/tick"
    assert requests.post(url, json={"input": ""}, timeout=5).status_code == 401
    assert requests.post(url, json={"input": ""}, params={"code": MASTER_KEY}, timeout=5).status_code == 202
    wait_for(lambda: len(fixture_app.calls("tick")) == 1)
    assert fixture_app.calls("tick")[0].past_due is False


def test_banner_lists_routes_webhooks_timers_and_keys() -> None:
    functions = load_functions(fixture_app.build_app(with_queue=False), environ={"FIXTURE_SCHEDULE": "0 0 3 * * *"})
    with DevHost(functions, keys=KEYS, clock=ManualClock(), port=0) as host:
        text = "\n".join(host.describe())
    assert "development" in text
    assert "/api/keys/{name}/{version?}" in text
    assert "/runtime/webhooks/eventgrid?functionName=on_event&code=eventgrid-key-for-tests" in text
    assert "next 2026-01-06T03:00:00Z" in text
    assert "master: master-key-for-tests" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_command_line_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"FIXTURE_SCHEDULE": "0 0 3 * * *", "KEYSTEWARD_LOCAL_FUNCTION_KEY": "cli-key"},
            }
        )
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "FIXTURE_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.host",
            "--app",
            "tests.host.fixture_app:app_without_queue",
            "--settings",
            str(settings),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/admin/host/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        resp = requests.get(f"http://127.0.0.1:{port}/api/keys/k1", params={"code": "cli-key"}, timeout=5)
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "development host" in out
    assert "function: cli-key" in out
    assert "stopped" in out


def test_command_line_refuses_an_app_it_cannot_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "FIXTURE_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox.host",
            "--app",
            "tests.host.fixture_app:app_without_queue",
            "--settings",
            str(tmp_path / "none.json"),
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "FIXTURE_SCHEDULE" in proc.stderr
