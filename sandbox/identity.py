"""A managed-identity token endpoint on loopback, so real Azure tools sign in offline.

It answers the way Azure App Service / Azure Functions' identity endpoint does (the
``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` pair, api-version ``2019-08-01``; documented in
"How to use managed identities for App Service and Azure Functions", REST endpoint reference,
not in azure-rest-api-specs): ``GET {endpoint}?api-version=2019-08-01&resource=R`` with header
``X-IDENTITY-HEADER: <secret>`` returns ``{"access_token", "expires_on", "resource",
"token_type", "client_id"}`` (``expires_on`` in epoch seconds, as a string).

``az login --identity`` (through MSAL's ManagedIdentityClient) picks this endpoint up from those
two environment variables. The token is a JWT whose claims (``tid``, ``oid``, ``appid``, ``aud``)
are what the Azure CLI reads; it is not signed with a real key: the sandbox accepts any bearer
token, and clients never verify the signature of an access token meant for a resource.

Plain HTTP on 127.0.0.1, like App Service's own endpoint (which is ``http://localhost:PORT``).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2019-08-01"
TOKEN_LIFETIME_S = 3600  # what App Service hands out is shorter than a day; an hour is typical
_LOOPBACK = "127.0.0.1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_token(*, tenant_id: str, principal_id: str, client_id: str, resource: str, now: int) -> str:
    """A JWT with the claims Azure tools read from a managed identity's access token (unsigned)."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "keysteward-sandbox"}
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME_S,
        "tid": tenant_id,
        "oid": principal_id,
        "sub": principal_id,
        "appid": client_id,
        "idtyp": "app",
    }
    parts = [_b64url(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims)]
    # Not a signature: the sandbox checks no token, and a resource token is never verified by its client.
    return ".".join([*parts, _b64url(b"keysteward-sandbox-unsigned")])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: IdentityEndpoint


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path.rstrip("/") != owner.path:
            self._reply(404, {"statusCode": 404, "message": f"No identity endpoint at {url.path}."})
            return
        if not secrets.compare_digest(self.headers.get("X-IDENTITY-HEADER", ""), owner.header):
            self._reply(401, {"statusCode": 401, "message": "The X-IDENTITY-HEADER header is missing or wrong."})
            return
        if query.get("api-version") != API_VERSION:
            self._reply(400, {"statusCode": 400, "message": f"api-version must be {API_VERSION}."})
            return
        resource = query.get("resource", "").strip()
        if not resource:
            self._reply(400, {"statusCode": 400, "message": "The resource parameter is required."})
            return
        now = int(time.time())
        token = mint_token(
            tenant_id=owner.tenant_id,
            principal_id=owner.principal_id,
            client_id=owner.client_id,
            resource=resource,
            now=now,
        )
        owner.count()
        self._reply(
            200,
            {
                "access_token": token,
                "expires_on": str(now + TOKEN_LIFETIME_S),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": owner.client_id,
            },
        )

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - base signature
        return None


class IdentityEndpoint:
    """The managed identity of one caller (``principal_id``/``client_id``) in ``tenant_id``.

    Use as a context manager or start()/stop(). ``env()`` gives the environment variables a
    client needs (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``).
    """

    path = "/msi/token"

    def __init__(self, *, tenant_id: str, principal_id: str, client_id: str, port: int = 0) -> None:
        self.tenant_id = tenant_id
        self.principal_id = principal_id
        self.client_id = client_id
        self.header = secrets.token_urlsafe(24)
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.tokens_issued = 0
        self.url = ""

    def count(self) -> None:
        with self._lock:
            self.tokens_issued += 1

    def start(self) -> IdentityEndpoint:
        server = _Server((_LOOPBACK, self._port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sandbox-identity", daemon=True)
        self._thread.start()
        self.url = f"http://{_LOOPBACK}:{server.server_address[1]}{self.path}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> IdentityEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header}
