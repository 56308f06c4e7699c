"""The sandbox over loopback HTTPS: real sockets, real TLS, the same world behind them.

One listener answers ARM (``arm_url``), one the admin API (``admin_url``), and each vault gets
its own listener (``https://127.0.0.1:PORT``), started on demand: the server replaces
``world.vault_url_for`` so a vault created later through ARM reports its loopback URL in
``properties.vaultUri``. TLS uses a throwaway CA made with ``trustme`` (certificate valid for
127.0.0.1 and localhost); its PEM is written next to the connection file as ``ca_bundle``.

Each connection is handled in its own thread (TLS handshake included). A handler turns the
HTTP request into :class:`sandbox.wire.Request`, calls ``world.handle``, sleeps the response's
fault latency outside every lock, and honours ``drop`` by closing the socket unanswered.
In clock mode ``real`` a background thread ticks the world every 200 ms so expiry events and
webhook retries flow without requests arriving.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trustme

from sandbox import audit, cloud
from sandbox.clock import REAL
from sandbox.wire import Request, Response, Service
from sandbox.world import World

LOOPBACK = "127.0.0.1"
ARM_SCOPE = "https://management.azure.com/.default"
VAULT_SCOPE = "https://vault.azure.net/.default"
TICK_INTERVAL_S = 0.2
_MAX_BODY = 32 * 1024 * 1024  # Key Vault and ARM bodies are small; refuse anything absurd


class _TLSServer(ThreadingHTTPServer):
    """Threading HTTP server whose TLS handshake happens in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        context: ssl.SSLContext,
        owner: SandboxServer,
        service: str,
        vault: str | None,
    ) -> None:
        self.context = context
        self.owner = owner
        self.service = service
        self.vault = vault
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that gives up during the handshake is not the server's problem
        try:
            # The handler only needs a BaseServer; typeshed types the argument as Self.
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - base signature
        # Clients closing keep-alive connections mid-read are routine; stay quiet.
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle on, keep-alive clients wait ~40 ms
    # for a delayed ACK on every response.
    disable_nagle_algorithm = True
    server: _TLSServer

    def _serve(self) -> None:
        srv = self.server
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        host = self.headers.get("Host") or f"{LOOPBACK}:{srv.server_address[1]}"
        req = Request.build(
            method=self.command,
            host=host,
            path=url.path or "/",
            query_string=url.query,
            headers=dict(self.headers.items()),
            body=body,
            service=srv.service,
            vault=srv.vault,
        )
        resp = self._tenant_level(req) or srv.owner.world.handle(req)
        if resp.delay_s > 0:
            time.sleep(resp.delay_s)
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    def _tenant_level(self, req: Request) -> Response | None:
        """Cloud metadata, subscriptions and tenants (sandbox.cloud) for general-purpose clients."""
        if self.server.service != Service.ARM:
            return None
        return cloud.handle(self.server.owner.world, req, arm_url=self.server.owner.arm_url)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ARG002 - base signature
        return None  # the world keeps its own request log


class SandboxServer:
    """Loopback HTTPS front doors for one world. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        world: World,
        *,
        arm_port: int = 0,
        admin_port: int = 0,
        workdir: str | Path | None = None,
        connection_file: str | Path | None = None,
    ) -> None:
        self.world = world
        self._arm_port = arm_port
        self._admin_port = admin_port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="keysteward-sandbox-"))
        self.connection_file = Path(connection_file) if connection_file is not None else None
        self._lock = threading.Lock()
        self._file_lock = threading.Lock()
        self._servers: list[tuple[_TLSServer, threading.Thread]] = []
        self._vaults: dict[str, str] = {}  # lower-cased vault name -> URL
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._context: ssl.SSLContext | None = None
        self.arm_url = ""
        self.admin_url = ""
        self.logs_url = ""
        self.ca_bundle = ""
        self._previous_vault_url_for = world.vault_url_for

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        ca = trustme.CA()
        cert = ca.issue_cert(LOOPBACK, "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._context = context
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca_path = self.workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        self.ca_bundle = str(ca_path)
        self.arm_url = self._listen(self._arm_port, Service.ARM, None)
        self.admin_url = self._listen(self._admin_port, Service.ADMIN, None)
        # Log Analytics' query API; LogsQueryClient takes this as its endpoint (it appends /v1 itself
        # and also accepts an endpoint that ends in /v1).
        self.logs_url = self._listen(0, Service.LOGS, None) + "/v1"
        self.world.eventgrid.admin_base_url = self.admin_url
        self.world.eventgrid.ca_bundle = self.ca_bundle
        self.world.vault_url_for = self.vault_url
        for name in list(self.world.vaults):
            self.vault_url(name)
        self._ticker = threading.Thread(target=self._tick_loop, name="sandbox-ticker", daemon=True)
        self._ticker.start()
        self.write_connection_file()
        return self

    def stop(self) -> None:
        """Stops every listener and the ticker; removes the connection file it wrote."""
        self._stop.set()
        with self._lock:
            servers, self._servers = self._servers, []
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.world.vault_url_for = self._previous_vault_url_for
        if self.connection_file is not None:
            self.connection_file.unlink(missing_ok=True)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- listeners --------------------------------------------------------------------------
    def _listen(self, port: int, service: str, vault: str | None) -> str:
        assert self._context is not None  # noqa: S101 - start() builds the context first
        server = _TLSServer((LOOPBACK, port), _Handler, context=self._context, owner=self, service=service, vault=vault)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{service}-{vault or ''}",
            daemon=True,
        )
        thread.start()
        with self._lock:
            self._servers.append((server, thread))
        return f"https://{LOOPBACK}:{server.server_address[1]}"

    def vault_url(self, name: str) -> str:
        """The vault's loopback URL, starting its listener the first time it is asked for."""
        key = name.lower()
        with self._lock:
            url = self._vaults.get(key)
        if url is not None:
            return url
        url = self._listen(0, Service.VAULT, key)
        with self._lock:
            # Two threads may race for the same vault; the first URL wins (the loser listens idle).
            url = self._vaults.setdefault(key, url)
        self.write_connection_file()
        return url

    @property
    def vault_urls(self) -> dict[str, str]:
        with self._lock:
            return dict(self._vaults)

    # ---- the connection file ----------------------------------------------------------------
    def connection_info(self) -> dict[str, Any]:
        """The connection file's content (its keys are a contract, see sandbox.connection)."""
        return {
            "arm_url": self.arm_url,
            "admin_url": self.admin_url,
            "ca_bundle": self.ca_bundle,
            "tenant_id": self.world.tenant_id,
            "subscriptions": list(self.world.subscriptions),
            "vaults": self.vault_urls,
            "credential_scopes": [ARM_SCOPE],
            "vault_credential_scopes": [VAULT_SCOPE],
            "clock_mode": self.world.clock.mode,
            "pid": os.getpid(),
            "logs_url": self.logs_url,
            "audit_workspace_id": audit.log_for(self.world).workspace_id,
        }

    def write_connection_file(self) -> None:
        """Writes the file atomically (a watcher never sees half of it)."""
        if self.connection_file is None or not self.arm_url:
            return
        self.connection_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.connection_file.with_name(f".{self.connection_file.name}.{os.getpid()}.tmp")
        text = json.dumps(self.connection_info(), indent=2) + "\n"
        with self._file_lock:
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.connection_file)

    # ---- time ---------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_INTERVAL_S):
            if self.world.clock.mode != REAL:
                continue
            try:
                self.world.tick(self.world.clock.now())
            except Exception as err:  # noqa: BLE001 - a failing tick must not end the ticker; it is reported
                print(f"sandbox: tick failed: {type(err).__name__}: {err}", file=sys.stderr)


def free_port() -> int:
    """A port free right now on the loopback interface (for tests that need a fixed number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])
