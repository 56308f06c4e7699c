"""A recording webhook for Event Grid delivery tests: answers both validation handshakes the
way the Functions Event Grid trigger does, records every notification, and can be told to
fail. Used as an in-process endpoint (``EventGridBus.register_local_endpoint``) or behind a
plain HTTP server (``serve_http``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Webhook:
    """``statuses`` is consumed one per notification (then 200); ``validate`` False refuses validation."""

    validate: bool = True
    allowed_origin: str | None = "eventgrid.azure.net"
    statuses: list[int] = field(default_factory=list)
    on_notification: Callable[[list[Any]], None] | None = None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        lower = {k.lower(): v for k, v in headers.items()}
        parsed = json.loads(body) if body else None
        with self.lock:
            self.received.append(Received(method, path, lower, parsed))
        if method == "OPTIONS":
            if not self.validate or self.allowed_origin is None:
                return 200, {}, b""
            return 200, {"WebHook-Allowed-Origin": self.allowed_origin}, b""
        if lower.get("aeg-event-type") == "SubscriptionValidation":
            if not self.validate:
                return 403, {}, b""
            code = parsed[0]["data"]["validationCode"]
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"validationResponse": code}).encode(),
            )
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
        if status == 200 and self.on_notification is not None:
            self.on_notification(parsed)
        return status, {}, b""

    @property
    def notifications(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.headers.get("aeg-event-type") == "Notification"]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.notifications for e in r.body]

    @property
    def handshakes(self) -> list[Received]:
        with self.lock:
            return [
                r
                for r in self.received
                if r.method == "OPTIONS" or r.headers.get("aeg-event-type") == "SubscriptionValidation"
            ]


@contextmanager
def serve_http(hook: Webhook) -> Iterator[str]:
    """Serves ``hook`` over plain HTTP on a free loopback port; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, out = hook(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_POST = do_OPTIONS = _any  # http.server dispatches on these names

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
