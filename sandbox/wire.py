"""HTTP primitives shared by every way into the sandbox.

A request arrives either through the in-process transport (``sandbox.transport``) or through
the loopback HTTPS server (``sandbox.server``); both turn it into a :class:`Request`, hand it
to :meth:`sandbox.world.World.handle`, and write the :class:`Response` back. Handlers never
see sockets or ``requests`` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from sandbox.world import World

JsonObj = dict[str, Any]


class Service:
    """Which front door a request came through (decides routing and throttling)."""

    ARM = "arm"
    VAULT = "vault"
    ADMIN = "admin"
    TOPIC = "topic"  # an Event Grid custom topic's publish endpoint
    LOGS = "logs"  # the Log Analytics query API (sandbox/logs/)


@dataclass
class Request:
    """One HTTP request, as the sandbox sees it."""

    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    service: str
    vault: str | None = None  # vault name for Service.VAULT requests, topic name for Service.TOPIC

    @staticmethod
    def build(
        *,
        method: str,
        host: str,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
        service: str,
        vault: str | None = None,
    ) -> Request:
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        return Request(
            method=method.upper(),
            host=host,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            service=service,
            vault=vault,
        )

    def json(self) -> Any:
        """The body parsed as JSON; raises :class:`BadBody` when it is not JSON."""
        if not self.body:
            raise BadBody("The request body is empty.")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as err:
            raise BadBody(f"The request body is not valid JSON: {err}") from err

    def json_object(self) -> JsonObj:
        """The body as a JSON object; raises :class:`BadBody` otherwise."""
        value = self.json()
        if not isinstance(value, dict):
            raise BadBody("The request body must be a JSON object.")
        return value


@dataclass
class Response:
    """One HTTP response. ``drop`` means: close the connection without answering."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    # Seconds of real latency to add before answering (fault injection); applied outside locks.
    delay_s: float = 0.0


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    out = {"Content-Type": "application/json; charset=utf-8"}
    if headers:
        out.update(headers)
    return Response(status=status, body=json.dumps(payload).encode(), headers=out)


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status=status, headers=dict(headers or {}))


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Key Vault and ARM share this error shape: ``{"error": {"code", "message"}}``."""
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


class SandboxError(Exception):
    """Raised by a handler to answer with an Azure-shaped error; never leaks a traceback."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message)


class BadBody(SandboxError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "BadParameter", message)


Handler = Callable[["World", Request, "re.Match[str]"], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    """Routes by method and a full-match path regex. ARM paths are case-insensitive."""

    def __init__(self, *, case_insensitive: bool) -> None:
        self._routes: list[Route] = []
        self._flags = re.IGNORECASE if case_insensitive else 0

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append(Route(method.upper(), re.compile(pattern, self._flags), handler))

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(method, pattern, fn)
            return fn

        return deco

    def dispatch(self, world: World, req: Request, *, not_found: Callable[[Request], Response]) -> Response:
        path = req.path.rstrip("/") or "/"
        allowed = False
        for route in self._routes:
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            if route.method != req.method:
                allowed = True
                continue
            return route.handler(world, req, match)
        if allowed:
            return error_response(405, "MethodNotAllowed", f"The method {req.method} is not allowed on {path}.")
        return not_found(req)
