"""The HTTP front end of the development host: the server and the request dispatcher."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest

from sandbox.host.loading import (
    EventGridTriggerSpec,
    FunctionSpec,
    HttpTriggerSpec,
    QueueTriggerSpec,
    TimerTriggerSpec,
    call_user_function,
)
from sandbox.host.queues import QueuePoller
from sandbox.host.routing import HostKeys, RouteTemplate
from sandbox.host.settings import EVENTGRID_WEBHOOK_PATH, MAX_REQUEST_BODY, HostConfig
from sandbox.host.timers import invoke_guarded, parse_datetime

LOG = logging.getLogger("sandbox.host")  # one logger for the whole host (the same object as settings.LOG)

# ---------------------------------------------------------------------------------------------
# The HTTP front end
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers, body."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


def _text(status: int, text: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, (("Content-Type", "text/plain; charset=utf-8"), *headers), text.encode())


def _json(status: int, doc: object) -> Answer:
    return Answer(status, (("Content-Type", "application/json; charset=utf-8"),), json.dumps(doc).encode())


@dataclass(frozen=True)
class Incoming:
    """A request as the front end hands it to the dispatcher."""

    method: str
    url: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def key(self) -> str | None:
        return self.query.get("code") or self.headers.get("x-functions-key")


class Dispatcher:
    """Routes requests to HTTP functions, the Event Grid webhook and the admin endpoints."""

    def __init__(
        self, functions: Sequence[FunctionSpec], *, keys: HostKeys, config: HostConfig, stop: threading.Event
    ) -> None:
        self.keys = keys
        self.config = config
        self._stop = stop
        self.functions = {f.name.lower(): f for f in functions}
        prefix = f"/{config.route_prefix}" if config.route_prefix else ""
        self.prefix = prefix
        routes = [(RouteTemplate(f.trigger.route), f) for f in functions if isinstance(f.trigger, HttpTriggerSpec)]
        # ASP.NET route precedence: literal segments before parameters before catch-alls.
        self.routes = sorted(routes, key=lambda pair: pair[0].rank)
        self.queue_pollers: dict[str, QueuePoller] = {}

    def dispatch(self, request: Incoming) -> Answer:
        path = request.path
        lowered = path.lower().rstrip("/")
        if lowered == EVENTGRID_WEBHOOK_PATH:
            return self._eventgrid(request)
        if lowered.startswith("/admin/"):
            return self._admin(request, lowered)
        if self.prefix:
            if lowered != self.prefix and not lowered.startswith(self.prefix + "/"):
                return _text(404, "Not Found")
            path = path[len(self.prefix) :]
        return self._http(request, path)

    # -- HTTP triggers -------------------------------------------------------------------------

    def _http(self, request: Incoming, path: str) -> Answer:
        allowed: set[str] = set()
        for template, spec in self.routes:
            params = template.match(path or "/")
            if params is None:
                continue
            trigger = spec.trigger
            if not isinstance(trigger, HttpTriggerSpec):
                continue
            if trigger.methods is not None and request.method not in trigger.methods:
                allowed |= trigger.methods
                continue
            if not self.keys.allows(trigger.auth_level, request.key()):
                return _text(401, "Unauthorized")
            return self._invoke_http(spec, request, params)
        if allowed:
            return _text(405, "Method Not Allowed", ("Allow", ", ".join(sorted(allowed))))
        return _text(404, "Not Found")

    def _invoke_http(self, spec: FunctionSpec, request: Incoming, params: Mapping[str, str]) -> Answer:
        req = func.HttpRequest(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=dict(params),
            body=request.body,
        )
        invocation = uuid.uuid4()
        try:
            result = call_user_function(spec, req)
            return _http_answer(result)
        except Exception:
            LOG.exception("function %s failed (invocation %s)", spec.name, invocation)
            return _text(500, f"Internal Server Error (invocation {invocation})")

    # -- Event Grid ----------------------------------------------------------------------------

    def _eventgrid(self, request: Incoming) -> Answer:
        if not self.keys.allows("system", request.key()):
            return _text(401, "Unauthorized")
        name = request.query.get("functionName", "")
        spec = self.functions.get(name.lower())
        if spec is None or not isinstance(spec.trigger, EventGridTriggerSpec):
            available = ", ".join(
                f.name for f in self.functions.values() if isinstance(f.trigger, EventGridTriggerSpec)
            )
            LOG.info("cannot find function: %r, available function names: [%s]", name, available)
            return _text(404, f"cannot find function: '{name}'")
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin")
            if not origin:
                return _text(400, "WebHook-Request-Origin header is required")
            LOG.info("CloudEvents validation handshake for function %s (origin %s)", spec.name, origin)
            return Answer(
                200,
                (
                    ("WebHook-Allowed-Origin", origin),
                    ("WebHook-Allowed-Rate", "*"),
                    ("Allow", "POST, OPTIONS"),
                ),
            )
        if request.method != "POST":
            return _text(405, "Method Not Allowed", ("Allow", "POST, OPTIONS"))
        kind = request.headers.get("aeg-event-type", "").lower()
        if kind not in ("subscriptionvalidation", "notification", "unsubscribe"):
            return _text(400, "aeg-event-type header must be SubscriptionValidation, Notification or Unsubscribe")
        if kind == "unsubscribe":
            return Answer(202)
        try:
            doc = json.loads(request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _text(400, "the body is not JSON")
        if kind == "subscriptionvalidation":
            code = _validation_code(doc)
            if code is None:
                return _text(400, "no validationCode in the subscription validation event")
            LOG.info("Event Grid validation handshake for function %s", spec.name)
            return _json(200, {"validationResponse": code})
        events = [doc] if isinstance(doc, dict) else doc
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return _text(400, "the body must be a JSON array of events")
        try:
            parsed = [to_event_grid_event(e) for e in events]
        except ValueError as err:
            return _text(400, f"invalid event: {err}")
        failed = [event.id for event in parsed if not invoke_guarded(spec, _constant(event), stop=self._stop)]
        if failed:
            return _text(500, f"function {spec.name} failed for event(s) {', '.join(failed)}")
        return Answer(202)

    # -- admin ---------------------------------------------------------------------------------

    def _admin(self, request: Incoming, lowered: str) -> Answer:
        if lowered == "/admin/host/ping":
            return Answer(200)
        if not self.keys.allows("admin", request.key()):
            return _text(401, "Unauthorized")
        if lowered == "/admin/host/status":
            return _json(200, {"state": "Running", "host": "keysteward development host"})
        if lowered.startswith("/admin/functions/") and request.method == "POST":
            spec = self.functions.get(lowered.removeprefix("/admin/functions/"))
            if spec is None:
                return _text(404, "Not Found")
            return self._run_on_demand(spec, request.body)
        return _text(404, "Not Found")

    def _run_on_demand(self, spec: FunctionSpec, body: bytes) -> Answer:
        try:
            doc = json.loads(body or b"{}")
            given = doc.get("input", "") if isinstance(doc, dict) else ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _text(400, 'the body must be JSON like {"input": "..."}')
        value: Callable[[], object]
        if isinstance(spec.trigger, TimerTriggerSpec):

            def value() -> object:
                return TimerRequest(past_due=False)
        elif isinstance(spec.trigger, QueueTriggerSpec):
            text = given if isinstance(given, str) else json.dumps(given)

            def value() -> object:
                return FuncQueueMessage(  # type: ignore[no-untyped-call]  # the library leaves __init__ unannotated
                    id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1
                )
        else:
            return _text(400, f"function {spec.name} cannot be run from the admin API; call its trigger")
        worker = threading.Thread(
            target=invoke_guarded,
            args=(spec, value),
            kwargs={"stop": self._stop},
            name=f"devhost-admin-{spec.name}",
            daemon=True,
        )
        worker.start()
        return Answer(202)


def _constant(value: object) -> Callable[[], object]:
    def make() -> object:
        return value

    return make


def _validation_code(doc: object) -> str | None:
    event = doc[0] if isinstance(doc, list) and doc else doc
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    if isinstance(data, str):  # CloudEvents validation events may carry their data encoded as JSON text
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(data)
    code = data.get("validationCode") if isinstance(data, dict) else None
    return str(code) if code is not None else None


def to_event_grid_event(event: Mapping[str, Any]) -> func.EventGridEvent:
    """Builds the ``func.EventGridEvent`` a function receives from one delivered event.

    Event Grid schema fields map one to one; a CloudEvents 1.0 event (it has ``specversion``)
    maps ``source``->topic, ``type``->event_type, ``time``->event_time and
    ``dataschema`` (or else ``specversion``)->data_version; ``data_base64`` is decoded.
    Raises ``ValueError`` when ``id`` or the event type is missing or the time is unreadable.
    """
    cloud = "specversion" in event
    event_id = event.get("id")
    event_type = event.get("type" if cloud else "eventType")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("an event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event {event_id} has no {'type' if cloud else 'eventType'}")
    time_raw = event.get("time" if cloud else "eventTime")
    event_time = parse_datetime(time_raw) if isinstance(time_raw, str) and time_raw else None
    data: Any = event.get("data")
    if cloud and data is None and isinstance(event.get("data_base64"), str):
        raw = base64.b64decode(event["data_base64"])
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = raw
    if cloud:
        topic = event.get("source")
        version = event.get("dataschema") or event.get("specversion")
    else:
        topic = event.get("topic")
        version = event.get("dataVersion")
    return func.EventGridEvent(
        id=event_id,
        data=data,
        topic=str(topic) if topic is not None else "",
        subject=str(event.get("subject") or ""),
        event_type=event_type,
        event_time=event_time,
        data_version=str(version) if version is not None else "",
    )


def _http_answer(result: object) -> Answer:
    """Turns what an HTTP function returned into the HTTP answer (as the Python worker does)."""
    if isinstance(result, func.HttpResponse):
        headers = [
            (k, v)
            for k, v in result.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
        return Answer(int(result.status_code), tuple(headers), result.get_body())
    if isinstance(result, str | bytes):
        body = result.encode() if isinstance(result, str) else result
        return Answer(200, (("Content-Type", "text/plain; charset=utf-8"),), body)
    raise TypeError(f"an HTTP function must return func.HttpResponse, str or bytes, not {type(result).__name__}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keysteward-devhost"
    server: _Server

    def _handle(self) -> None:
        started = time.monotonic()
        try:
            body = self._read_body()
        except ValueError as err:
            self._send(Answer(413 if "too large" in str(err) else 400, (), str(err).encode()))
            return
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query: dict[str, str] = {}
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = Incoming(
            method=self.command.upper(),
            url=f"http://{host}{self.path}",
            path=split.path or "/",
            query=query,
            headers=headers,
            body=body,
        )
        answer = self.server.dispatcher.dispatch(request)
        self._send(answer)
        LOG.info(
            "%s %s -> %d (%.0f ms)",
            self.command,
            split.path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD" and answer.body:
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug(format, *args)
