"""The sandbox world: one state model behind every way in.

``World.handle`` is the whole request pipeline: log -> faults -> challenge/auth -> throttle ->
route -> catch up with time. Route tables live in ``keyvault/`` (data plane), ``arm/``
(management plane) and ``admin.py`` (``/sandbox/...``); time-driven behaviour in
``services/`` (simulated service key use, LRO completion), ``keyvault/lifecycle.py`` (expiry events,
auto-rotation) and ``eventgrid.py`` (webhook delivery).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox import admin, arm, audit, eventgrid, keyvault, logs, services, topics
from sandbox.clock import SandboxClock
from sandbox.faults import FaultSet, Throttle
from sandbox.state import ArmResource, Operation, Vault
from sandbox.wire import Request, Response, SandboxError, Service, empty_response, error_response

ARM_HOST = "management.azure.com"
VAULT_SUFFIX = ".vault.azure.net"
ADMIN_HOST = "sandbox.local"
DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DEFAULT_SUBSCRIPTIONS = ("00000000-0000-0000-0000-00000000a001", "00000000-0000-0000-0000-00000000b002")


@dataclass
class LogEntry:
    seq: int
    time: str
    method: str
    host: str
    path: str
    query: str
    status: int
    service: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "service": self.service,
        }


@dataclass
class LroSettings:
    duration_s: float = 0.0
    fail_rate: float = 0.0


@dataclass
class ServiceSettings:
    """How simulated services behave over sandbox time."""

    usage_interval_s: float = 300.0  # how often a cluster/account uses its key
    versionless_lag_s: float = 3600.0  # how long a versionless binding takes to follow a new version
    cosmos_recovery_s: float = 3600.0  # Cosmos: up to ~1 h to recover once access returns


class World:
    """All sandbox state. Handlers run under ``lock``; latency faults are applied outside it."""

    def __init__(
        self,
        *,
        tenant_id: str = DEFAULT_TENANT,
        subscriptions: tuple[str, ...] | list[str] = DEFAULT_SUBSCRIPTIONS,
        clock: SandboxClock | None = None,
        seed: int | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.tenant_id = tenant_id
        self.subscriptions = [s.lower() for s in subscriptions]
        self.clock = clock or SandboxClock()
        self.seed = seed
        self.faults = FaultSet(seed=seed)
        self.throttle = Throttle()
        self.lro = LroSettings()
        self.service_settings = ServiceSettings()
        self.vaults: dict[str, Vault] = {}  # lower-cased vault name -> vault
        self.resources: dict[str, ArmResource] = {}  # lower-cased resource id -> resource
        self.operations: dict[str, Operation] = {}
        self.identities: dict[str, dict[str, str]] = {}  # lower-cased UAI resource id -> principal/client ids
        self.requests: list[LogEntry] = []
        self._seq = 0
        # How a vault name maps to its data-plane URL (in-process: the real host; loopback: a port).
        self.vault_url_for = lambda name: f"https://{name}{VAULT_SUFFIX}"
        self.eventgrid = eventgrid.EventGridBus(self)
        self.clock.on_advance(self.tick)

    # ---- the request pipeline -------------------------------------------------------------
    def classify(self, host: str) -> tuple[str, str | None]:
        """Front door for a host name: (service, vault name or None)."""
        bare = host.split(":", maxsplit=1)[0].lower()
        if bare == ARM_HOST:
            return Service.ARM, None
        if bare == ADMIN_HOST:
            return Service.ADMIN, None
        if bare.endswith(VAULT_SUFFIX):
            return Service.VAULT, bare[: -len(VAULT_SUFFIX)]
        if bare == logs.LOGS_HOST:
            return Service.LOGS, None
        if bare.endswith(topics.TOPIC_SUFFIX):
            return Service.TOPIC, bare.split(".", 1)[0]
        raise SandboxError(404, "HostNotFound", f"No sandbox service answers for host {host}.")

    def handle(self, req: Request) -> Response:
        """Answers one request; never raises (an unexpected error becomes a 500 without a trace)."""
        faults = self.faults.match(req.method, req.host, req.path)
        if req.service == Service.ADMIN:
            resp = self._dispatch(req)
        elif faults.drop:
            resp = Response(status=0, drop=True)
        elif faults.status is not None:
            headers = {}
            if faults.retry_after is not None:
                headers["Retry-After"] = str(int(faults.retry_after)) if float(faults.retry_after).is_integer() else (
                    str(faults.retry_after)
                )
            code = "TooManyRequests" if faults.status == 429 else "InjectedFault"
            resp = error_response(faults.status, code, f"Injected fault ({faults.status}).", headers)
        else:
            resp = self._dispatch(req)
        resp.delay_s += faults.latency_s
        self._log(req, resp)
        # Events published while answering go out now, outside the lock (see EventGridBus.pump).
        self.eventgrid.pump(self.clock.now())
        return resp

    def _dispatch(self, req: Request) -> Response:
        try:
            with self.lock:
                self.tick(self.clock.now())
                if req.service == Service.ADMIN:
                    return admin.ROUTER.dispatch(self, req, not_found=_not_found)
                if req.service == Service.VAULT:
                    return keyvault.handle(self, req)
                if req.service == Service.ARM:
                    return arm.handle(self, req)
                if req.service == Service.TOPIC:
                    return topics.handle(self, req, req.vault or "")
                if req.service == Service.LOGS:
                    return logs.handle(self, req)
                return error_response(404, "HostNotFound", f"Unknown service {req.service}.")
        except SandboxError as err:
            return err.response()
        except Exception as err:  # noqa: BLE001 - the sandbox answers 500 like Azure, never a traceback
            return error_response(500, "InternalServerError", f"The sandbox failed: {type(err).__name__}.")

    def _log(self, req: Request, resp: Response) -> None:
        with self.lock:
            self._seq += 1
            self.requests.append(
                LogEntry(
                    seq=self._seq,
                    time=self.clock.now().isoformat(),
                    method=req.method,
                    host=req.host,
                    path=req.path,
                    query="&".join(f"{k}={v}" for k, v in req.query.items()),
                    status=resp.status,
                    service=req.service,
                )
            )

    @property
    def last_seq(self) -> int:
        return self._seq

    def requests_since(self, seq: int) -> list[LogEntry]:
        with self.lock:
            return [e for e in self.requests if e.seq > seq]

    # ---- time -------------------------------------------------------------------------------
    def tick(self, now: datetime) -> None:
        """Brings every time-driven behaviour up to ``now``; idempotent for the same ``now``."""
        with self.lock:
            services.tick(self, now)
            keyvault.tick(self, now)
            audit.tick(self, now)
        self.eventgrid.pump(now)

    def now_ts(self) -> int:
        return int(self.clock.now().timestamp())

    # ---- helpers shared by the handlers -------------------------------------------------------
    def new_id(self) -> str:
        return uuid.uuid4().hex

    def reset(self) -> None:
        with self.lock:
            self.vaults.clear()
            self.resources.clear()
            self.operations.clear()
            self.identities.clear()
            self.requests.clear()
            self.faults.clear()
            self.throttle.reset()
            self.lro = LroSettings()
            self.service_settings = ServiceSettings()
            self.eventgrid.reset()
            audit.reset(self)


def _not_found(req: Request) -> Response:
    return error_response(404, "NotFound", f"No route for {req.method} {req.path}.")


__all__ = ["ADMIN_HOST", "ARM_HOST", "VAULT_SUFFIX", "World", "empty_response"]
