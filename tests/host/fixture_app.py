"""A small Functions app (v2 model) that exercises every trigger the development host serves.

Each function records what it received in ``INVOCATIONS`` (name, trigger value), so tests can
check what reached it. ``build_app()`` returns a fresh app: ``app.get_functions()`` may only
be called once per app, and each test host needs its own. Settings the bindings read:
``FIXTURE_SCHEDULE`` (timer), ``FIXTURE_QUEUE`` and ``FixtureStorage`` (queue).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import azure.functions as func

INVOCATIONS: list[tuple[str, Any]] = []
_LOCK = threading.Lock()


def record(name: str, value: object) -> None:
    with _LOCK:
        INVOCATIONS.append((name, value))


def calls(name: str) -> list[Any]:
    """What function ``name`` has received so far, oldest first."""
    with _LOCK:
        return [value for fn, value in INVOCATIONS if fn == name]


def reset() -> None:
    with _LOCK:
        INVOCATIONS.clear()


def build_blueprint(*, with_queue: bool = True) -> func.Blueprint:
    bp = func.Blueprint()

    @bp.function_name("get_key")
    @bp.route(route="keys/{name}/{version?}", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
    def get_key(req: func.HttpRequest) -> func.HttpResponse:
        record("get_key", req)
        doc = {
            "method": req.method,
            "route": dict(req.route_params),
            "params": dict(req.params),
            "body": req.get_body().decode(),
            "header": req.headers.get("x-test"),
        }
        return func.HttpResponse(json.dumps(doc), mimetype="application/json", headers={"X-Fixture": "1"})

    @bp.function_name("ping")
    @bp.route(route="ping", auth_level=func.AuthLevel.ANONYMOUS)
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        record("ping", req)
        return func.HttpResponse("pong", status_code=200)

    @bp.function_name("keys_literal")
    @bp.route(route="keys/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def keys_literal(req: func.HttpRequest) -> str:
        return "literal wins"

    @bp.function_name("files")
    @bp.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def files(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params.get("path", "<none>"))

    @bp.function_name("admin_only")
    @bp.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin ok")

    @bp.function_name("boom")
    @bp.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret internal detail")

    @bp.function_name("on_event")
    @bp.event_grid_trigger(arg_name="event")
    def on_event(event: func.EventGridEvent) -> None:
        record("on_event", event)
        if event.subject == "fail":
            raise RuntimeError("event handler failed")

    @bp.function_name("tick")
    @bp.timer_trigger(arg_name="timer", schedule="%FIXTURE_SCHEDULE%", use_monitor=True)
    def tick(timer: func.TimerRequest) -> None:
        record("tick", timer)

    if with_queue:

        @bp.function_name("work")
        @bp.queue_trigger(arg_name="msg", queue_name="%FIXTURE_QUEUE%", connection="FixtureStorage")
        def work(msg: func.QueueMessage) -> None:
            record("work", msg)
            if msg.get_body() == b"fail":
                raise RuntimeError("work item failed")

    return bp


def build_app(*, with_queue: bool = True) -> func.FunctionApp:
    """A fresh app registering the fixture blueprint (queue trigger optional: it needs Azurite)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(build_blueprint(with_queue=with_queue))
    return app


app = build_app()
# Served by the command-line tests, which have no storage emulator.
app_without_queue = build_app(with_queue=False)
