"""In-process way into the sandbox: a ``requests`` adapter that answers from the world's state.

Any azure-core client accepts it through ``transport=``; real host names are kept
(``https://{vault}.vault.azure.net``, ``https://management.azure.com``), so TLS, Key Vault's
challenge and host checks need no workaround. No sockets are opened.

The transport's ``sleep()`` (used by azure-core for Retry-After and LRO polling waits) moves
the sandbox clock in manual mode instead of sleeping, so retries and polls cost no wall time.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from sandbox.wire import Request, SandboxError
from sandbox.world import ADMIN_HOST, World

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data if isinstance(data, bytes) else str(data).encode()
    return b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in body)


class SandboxAdapter(requests.adapters.BaseAdapter):
    """Answers every request from the world; an unknown host fails like DNS would."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def send(  # noqa: PLR0917 - the requests adapter signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,  # noqa: ARG002
        timeout: Any = None,  # noqa: ARG002
        verify: Any = True,  # noqa: ARG002
        cert: Any = None,  # noqa: ARG002
        proxies: Mapping[str, str] | None = None,  # noqa: ARG002
    ) -> requests.Response:
        url = urlsplit(request.url or "")
        try:
            service, vault = self.world.classify(url.netloc)
        except SandboxError as err:
            raise requests.ConnectionError(f"Failed to resolve host {url.netloc!r}: {err.message}") from err
        req = Request.build(
            method=request.method or "GET",
            host=url.netloc,
            path=url.path or "/",
            query_string=url.query,
            headers={k: v if isinstance(v, str) else v.decode() for k, v in request.headers.items()},
            body=_body_bytes(request.body),
            service=service,
            vault=vault,
        )
        resp = self.world.handle(req)
        if resp.delay_s > 0:
            time.sleep(resp.delay_s)
        if resp.drop:
            raise requests.ConnectionError("Connection aborted: the remote end closed the connection (sandbox fault).")
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(resp.body),
            headers=resp.headers,
            status=resp.status,
            reason=_REASONS.get(resp.status, ""),
            preload_content=False,
            decode_content=False,
        )
        out = requests.Response()
        out.status_code = resp.status
        out.headers = CaseInsensitiveDict(resp.headers)
        out.raw = raw
        out.reason = raw.reason or ""
        out.url = request.url or ""
        out.request = request
        out.encoding = get_encoding_from_headers(out.headers)
        out.connection = self  # type: ignore[assignment]  # requests types this as HTTPAdapter
        return out

    def close(self) -> None:
        return None


class SandboxTransport(RequestsTransport):  # type: ignore[misc]  # azure-core ships it untyped here
    """A RequestsTransport bound to the world. ``virtual_sleep`` routes waits to the sandbox clock."""

    def __init__(self, world: World, *, session: requests.Session | None = None, virtual_sleep: bool = True) -> None:
        super().__init__(session=session or sandbox_session(world), session_owner=False)
        self._world = world
        self._virtual_sleep = virtual_sleep

    def sleep(self, duration: float) -> None:
        if self._virtual_sleep:
            self._world.clock.sleep(duration)
        else:
            time.sleep(duration)


def sandbox_session(world: World) -> requests.Session:
    session = requests.Session()
    adapter = SandboxAdapter(world)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class StaticTokenCredential:
    """Hands out a fixed bearer token: the sandbox accepts any token, and so do the SDKs' pipelines."""

    def __init__(self, token: str = "sandbox-token") -> None:  # noqa: S107 - not a secret: any token passes
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ARG002 - any scope passes
        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        return None

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def admin_url() -> str:
    return f"https://{ADMIN_HOST}"
