"""Key Vault audit records in the sandbox: what every vault's AuditEvent diagnostic log would hold.

Every key operation a sandbox vault serves is recorded here (:func:`record_request`, called by
``keyvault.handle``), and so is every key use by a simulated service (:func:`record_use`,
called by ``services.use_key``) and by an "unknown consumer" (:class:`Consumer`, added over
the admin API, ``POST /sandbox/consumers``). The sandbox's Log Analytics workspace
(:mod:`sandbox.logs`) answers queries over these records.

Record shape. The columns are those of the resource-specific table ``AZKVAuditLogs``
(Azure Monitor table reference, MicrosoftDocs/azure-reference-other
``azure-monitor-ref/tables/includes/azkvauditlogs-include.md``): ``TimeGenerated`` (datetime),
``OperationName``, ``OperationVersion``, ``ResultType``, ``ResultSignature``,
``ResultDescription``, ``HttpStatusCode`` (int), ``Id`` (the key id), ``Identity`` (dynamic:
the token's claims), ``CallerIpAddress``, ``CorrelationId``, ``RequestUri``, ``_ResourceId``.
The legacy ``AzureDiagnostics`` view of the same record (flattened ``identity_claim_oid_g``,
``id_s``, ``httpStatusCode_d`` ...) is built by :func:`azure_diagnostics_row`.

Operation names are those of Key Vault's logging reference ("Keys" table of
learn.microsoft.com/azure/key-vault/general/logging): ``KeyWrap``, ``KeyUnwrap``,
``KeyEncrypt``, ``KeyDecrypt``, ``KeyGet``, ``KeyCreate``, ``KeyUpdate``, ``KeyList``,
``KeyListVersions``, ``KeyDelete``, ``KeyImport``, ``KeyRecover``, ``KeyPurge``,
``KeyGetDeleted``, ``KeyListDeleted``. GUESS (not in that table): ``KeyRotate``,
``KeyRotationPolicyGet``, ``KeyRotationPolicySet``.

Identity. The caller's object id comes from the bearer token: a JWT's ``oid`` claim (and
``appid``/``azp``); the sandbox does not check signatures, so :func:`token_for` makes an
unsigned one and :class:`IdentityCredential` hands it out. An opaque token (the SDK tests'
``sandbox-token``) is the sandbox's default caller, :data:`DEFAULT_CALLER`. GUESS: the shape
of the ``Identity`` column, ``{"claim": {"oid": ..., "appid": ...}}``; the logging reference
shows the claims under ``identity.claim`` (objectidentifier URI form in its 2016 example,
``oid`` in the flattened ``identity_claim_oid_g`` legacy column).

Ingestion delay. A record becomes visible to queries ``ingestion_delay_s`` (sandbox time)
after the operation (Key Vault's docs: logs are available "10 minutes (at most)" after the
operation). The default is 0 so that tests see their own calls at once; set it with
``POST /sandbox/audit {"ingestion_delay_s": 600}``.
"""

from __future__ import annotations

import base64
import collections
import json
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken

if TYPE_CHECKING:
    from sandbox.state import AccessResult
    from sandbox.wire import Request, Response
    from sandbox.world import World

# The object id of a caller whose token is not a JWT (the sandbox accepts any bearer token).
DEFAULT_CALLER = "5a4d0c2e-0000-4000-8000-5a4db0c0ffee"
# The sandbox's Log Analytics workspace receives every vault's AuditEvent records.
DEFAULT_WORKSPACE = "8d1e5c7a-3f0b-4a61-9c2e-5a4db0c0a0d1"
# Records kept per world; the oldest go first (a soak or a benchmark must not grow without bound).
MAX_RECORDS = 500_000
# A consumer whose schedule fell far behind (a clock jump) replays at most this many calls per tick.
MAX_CATCH_UP = 10_000

# Crypto operations: the ones a service performs when it *uses* a key (wrap/unwrap for CMK).
CRYPTO_OPERATIONS = ("KeyWrap", "KeyUnwrap", "KeyEncrypt", "KeyDecrypt", "KeySign", "KeyVerify")

_STATUS_TEXT = {200: "OK", 201: "Created", 204: "NoContent", 400: "BadRequest", 401: "Unauthorized",
                403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
                500: "InternalServerError"}

# Key Vault data-plane routes -> operation names (one dictionary lookup per request: the hook
# runs on every vault request, so no regex scan).
_KEY_ROUTES = {"GET": "KeyGet", "PATCH": "KeyUpdate", "PUT": "KeyImport", "DELETE": "KeyDelete"}
_KEY_SUB_ROUTES = {("POST", "create"): "KeyCreate", ("POST", "rotate"): "KeyRotate",
                   ("GET", "rotationpolicy"): "KeyRotationPolicyGet", ("PUT", "rotationpolicy"): "KeyRotationPolicySet",
                   ("GET", "versions"): "KeyListVersions"}
_VERSION_ROUTES = {"GET": "KeyGet", "PATCH": "KeyUpdate"}
_CRYPTO_ROUTES = {"wrapkey": "KeyWrap", "unwrapkey": "KeyUnwrap", "encrypt": "KeyEncrypt", "decrypt": "KeyDecrypt",
                  "sign": "KeySign", "verify": "KeyVerify"}
_DELETED_ROUTES = {("GET", 2): "KeyGetDeleted", ("DELETE", 2): "KeyPurge"}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One AuditEvent record (the fields both tables are built from)."""

    at: float  # unix seconds, sandbox time
    vault: str  # lower-cased vault name
    vault_id: str  # the vault's ARM resource id
    operation: str
    key_id: str  # https://{vault}.vault.azure.net/keys/{name}[/{version}]
    object_id: str
    app_id: str
    status: int
    description: str = ""
    api_version: str = ""
    request_uri: str = ""
    correlation_id: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def version(self) -> str:
        parts = self.key_id.split("/")
        return parts[5] if len(parts) > 5 else ""


@dataclass
class Consumer:
    """An identity nobody inventories that unwraps with one key version every ``every_s``."""

    principal_id: str
    vault: str
    key: str
    version: str
    every_s: float
    next_at: float
    app_id: str = ""

    def as_dict(self, world: World) -> dict[str, Any]:
        url_for: Callable[[str], str] = world.vault_url_for
        key = f"{url_for(self.vault).rstrip('/')}/keys/{self.key}/{self.version}"
        return {"principal_id": self.principal_id, "key": key,
                "every_s": self.every_s, "next_at": _iso(self.next_at)}


@dataclass
class AuditSettings:
    ingestion_delay_s: float = 0.0  # sandbox seconds before a record is visible to queries
    partial: bool = False  # answer queries as partial results (rows and an error), as on a service limit


@dataclass
class AuditLog:
    records: collections.deque[AuditRecord] = field(default_factory=lambda: collections.deque(maxlen=MAX_RECORDS))
    consumers: list[Consumer] = field(default_factory=list)
    settings: AuditSettings = field(default_factory=AuditSettings)
    workspace_id: str = DEFAULT_WORKSPACE

    def visible(self, now: float) -> list[AuditRecord]:
        """Records already ingested at ``now`` (sandbox time)."""
        cutoff = now - self.settings.ingestion_delay_s
        return [r for r in self.records if r.at <= cutoff]


_LOGS = weakref.WeakKeyDictionary["World", AuditLog]()


# The last world asked for and its log: the hook runs on every vault request, and a
# WeakKeyDictionary lookup costs more than everything else it does.
_last: tuple[weakref.ref[World], AuditLog] | None = None


def log_for(world: World) -> AuditLog:
    global _last  # noqa: PLW0603 - a one-entry cache in front of _LOGS
    last = _last
    if last is not None and last[0]() is world:
        return last[1]
    log = _LOGS.get(world)
    if log is None:
        log = _LOGS[world] = AuditLog()
    _last = (weakref.ref(world), log)
    return log


def reset(world: World) -> None:
    """Forgets every record and consumer (the admin API's reset)."""
    global _last  # noqa: PLW0603 - see log_for
    _LOGS.pop(world, None)
    _last = None


# ---- identities from tokens -------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_for(principal_id: str, *, app_id: str | None = None, tenant_id: str | None = None) -> str:
    """An unsigned JWT naming ``principal_id`` (``oid``); the sandbox reads claims, never signatures."""
    header = {"alg": "none", "typ": "JWT"}
    claims = {"oid": principal_id, "appid": app_id or principal_id, "idtyp": "app",
              **({"tid": tenant_id} if tenant_id else {})}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."


_CALLERS: dict[str, tuple[str, str]] = {}
_MAX_CALLERS = 4096  # distinct tokens remembered (decoding a token on every request is the hook's main cost)


def caller_of(authorization: str) -> tuple[str, str]:
    """(object id, app id) from an ``Authorization`` header; an opaque token is :data:`DEFAULT_CALLER`."""
    found = _CALLERS.get(authorization)
    if found is None:
        found = _decode_caller(authorization)
        if len(_CALLERS) >= _MAX_CALLERS:
            _CALLERS.clear()
        _CALLERS[authorization] = found
    return found


def _decode_caller(authorization: str) -> tuple[str, str]:
    _, _, token = authorization.partition(" ")
    parts = token.strip().split(".")
    if len(parts) == 3:
        try:
            payload = parts[1] + "=" * (-len(parts[1]) % 4)
            claims = json.loads(base64.urlsafe_b64decode(payload))
        except (ValueError, TypeError):
            claims = None
        if isinstance(claims, dict) and claims.get("oid"):
            oid = str(claims["oid"]).lower()
            return oid, str(claims.get("appid") or claims.get("azp") or oid).lower()
    return DEFAULT_CALLER, DEFAULT_CALLER


class IdentityCredential:
    """A TokenCredential whose tokens name one principal: a sandbox caller with an identity."""

    def __init__(self, principal_id: str, *, app_id: str | None = None) -> None:
        self.principal_id = principal_id.lower()
        self._token = token_for(self.principal_id, app_id=app_id)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ARG002 - any scope passes
        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        return None


# ---- recording -----------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _key_id(vault: str, key: str, version: str | None) -> str:
    # Audit records name the key by its public identifier (https://{vault}.vault.azure.net/...),
    # whatever URL the caller used (a loopback port in the sandbox's server).
    base = f"https://{vault.lower()}.vault.azure.net/keys/{key}"
    return f"{base}/{version}" if version else base


def _append(world: World, rec: AuditRecord) -> None:
    log_for(world).records.append(rec)


def operation_of(method: str, path: str) -> tuple[str, str | None, str | None] | None:
    """(operation name, key name, version) of a data-plane request; ``None`` for non-key routes."""
    segs = [p for p in path.split("/") if p]
    m = method.upper()
    if not segs:
        return None
    head, n = segs[0].lower(), len(segs)
    if head == "keys":
        if n == 1:
            return ("KeyList", None, None) if m == "GET" else None
        name = segs[1]
        if n == 2:
            op = _KEY_ROUTES.get(m)
            return (op, name, None) if op else None
        sub = segs[2].lower()
        if n == 3:
            op = _KEY_SUB_ROUTES.get((m, sub))
            if op:
                return op, name, None
            op = _VERSION_ROUTES.get(m)
            return (op, name, segs[2]) if op else None
        if n == 4 and m == "POST":
            op = _CRYPTO_ROUTES.get(segs[3].lower())
            return (op, name, segs[2]) if op else None
        return None
    if head == "deletedkeys":
        if n == 1:
            return ("KeyListDeleted", None, None) if m == "GET" else None
        if n == 2:
            op = _DELETED_ROUTES.get((m, n))
            return (op, segs[1], None) if op else None
        if n == 3 and m == "POST" and segs[2].lower() == "recover":
            return "KeyRecover", segs[1], None
    return None


def record_request(world: World, req: Request, resp: Response) -> None:
    """Records one key operation a vault answered (called by ``keyvault.handle``; challenges and
    requests that never reach a key route are not recorded, as Key Vault logs authenticated calls)."""
    found = operation_of(req.method, req.path)
    vault = world.vaults.get((req.vault or "").lower())
    if found is None or vault is None:
        return
    op, name, version = found
    caller, app = caller_of(req.headers.get("authorization", ""))
    description = ""
    if resp.status >= 400:
        try:
            description = str(json.loads(resp.body or b"{}").get("error", {}).get("message", ""))
        except (ValueError, AttributeError):
            description = ""
    _append(world, AuditRecord(
        at=world.clock.timestamp(), vault=vault.name.lower(), vault_id=vault.id, operation=op,
        key_id=_key_id(vault.name, name or "", version) if name else f"https://{vault.name.lower()}.vault.azure.net",
        object_id=caller, app_id=app, status=resp.status, description=description,
        api_version=req.query.get("api-version", ""), request_uri=f"https://{req.host}{req.path}",
        correlation_id=req.headers.get("x-ms-client-request-id", ""),
    ))


# key_access cause -> HTTP status Key Vault would have answered the service's call with.
_CAUSE_STATUS = {"KeyDisabled": 403, "AccessDenied": 403, "KeyExpired": 403, "KeyNotYetValid": 403,
                 "KeyNotFound": 404, "KeyDeleted": 404, "VersionNotFound": 404}


def record_use(world: World, *, vault: str | None, key: str, principal: str | None, result: AccessResult,
               at: float) -> None:
    """Records a simulated service's key use (an unwrap with the version it uses) as its vault would.

    Nothing is recorded when no vault answers or the service has no identity: no request would
    have reached a vault's log.
    """
    target = world.vaults.get((vault or "").lower())
    if target is None or principal is None or result.code in ("VaultNotFound", "NoIdentity"):
        return
    status = 200 if result.ok else _CAUSE_STATUS.get(result.code, 403)
    _append(world, AuditRecord(
        at=at, vault=target.name.lower(), vault_id=target.id, operation="KeyUnwrap",
        key_id=_key_id(target.name, key, result.version), object_id=principal.lower(),
        app_id=principal.lower(), status=status, description=result.reason, api_version="7.4",
    ))


# ---- unknown consumers ----------------------------------------------------------------------------
def _consumer_result(world: World, c: Consumer) -> tuple[int, str]:
    vault = world.vaults.get(c.vault)
    key = vault.keys.get(c.key.lower()) if vault else None
    if vault is None or key is None:
        return 404, f"Key {c.key} was not found."
    kv = key.versions.get(c.version)
    if kv is None:
        return 404, f"Key version {c.version} was not found."
    if not kv.enabled:
        return 403, "Operation unwrapKey is not allowed on a disabled key."
    # Unwrap is the private half: Key Vault allows it outside nbf/exp (see keyvault.crypto._OPS).
    return 200, ""


def add_consumer(world: World, *, principal_id: str, vault: str, key: str, version: str, every_s: float) -> Consumer:
    """Adds a consumer whose first call is now (the next tick records it)."""
    consumer = Consumer(principal_id=principal_id.lower(), vault=vault.lower(), key=key, version=version,
                        every_s=every_s, next_at=world.clock.timestamp())
    log_for(world).consumers.append(consumer)
    return consumer


def tick(world: World, now: datetime) -> None:
    """Every consumer makes each call its schedule holds up to ``now`` (at most MAX_CATCH_UP per tick).

    A consumer is treated as holding an RBAC role assignment on the vault (the sandbox does not
    model role assignments), so vault access policies do not apply to it; a disabled or missing
    version makes its calls fail (403 / 404) and they are recorded as failures.
    """
    log = _LOGS.get(world)
    if log is None or not log.consumers:
        return
    ts = now.timestamp()
    for c in log.consumers:
        steps = 0
        while c.next_at <= ts and steps < MAX_CATCH_UP:
            vault = world.vaults.get(c.vault)
            status, reason = _consumer_result(world, c)
            if vault is not None:
                log.records.append(AuditRecord(
                    at=c.next_at, vault=c.vault, vault_id=vault.id, operation="KeyUnwrap",
                    key_id=_key_id(c.vault, c.key, c.version), object_id=c.principal_id,
                    app_id=c.app_id or c.principal_id, status=status, description=reason, api_version="7.4",
                ))
            c.next_at += c.every_s
            steps += 1
        if c.next_at <= ts:  # still behind after the cap: skip ahead rather than stall every request
            c.next_at = ts + c.every_s


# ---- table views ------------------------------------------------------------------------------------
def result_type(rec: AuditRecord) -> str:
    # GUESS: "Success" for 2xx (the logging reference's example); other results are reported here
    # as "Failure" (Key Vault's exact failure strings are not documented in the table reference).
    return "Success" if rec.ok else "Failure"


def azkv_row(rec: AuditRecord) -> dict[str, Any]:
    """The record as an ``AZKVAuditLogs`` row (column names from the table reference)."""
    return {
        "TimeGenerated": rec.at,
        "OperationName": rec.operation,
        "OperationVersion": rec.api_version,
        "ResultType": result_type(rec),
        "ResultSignature": _STATUS_TEXT.get(rec.status, str(rec.status)),
        "ResultDescription": rec.description,
        "HttpStatusCode": rec.status,
        "Id": rec.key_id,
        "Identity": {"claim": {"oid": rec.object_id, "appid": rec.app_id}},
        "CallerIpAddress": "127.0.0.1",
        "CorrelationId": rec.correlation_id,
        "RequestUri": rec.request_uri,
        "_ResourceId": rec.vault_id.lower(),
        "Type": "AZKVAuditLogs",
    }


def azure_diagnostics_row(rec: AuditRecord) -> dict[str, Any]:
    """The record as a legacy ``AzureDiagnostics`` row (flattened ``*_s``/``*_g``/``*_d`` columns)."""
    return {
        "TimeGenerated": rec.at,
        "ResourceProvider": "MICROSOFT.KEYVAULT",
        "ResourceType": "VAULTS",
        "Category": "AuditEvent",
        "Resource": rec.vault.upper(),
        "ResourceId": rec.vault_id.upper(),
        "OperationName": rec.operation,
        "OperationVersion": rec.api_version,
        "ResultType": result_type(rec),
        "ResultSignature": _STATUS_TEXT.get(rec.status, str(rec.status)),
        "ResultDescription": rec.description,
        "httpStatusCode_d": float(rec.status),
        "id_s": rec.key_id,
        "identity_claim_oid_g": rec.object_id,
        "identity_claim_appid_g": rec.app_id,
        "requestUri_s": rec.request_uri,
        "CallerIPAddress": "127.0.0.1",
        "CorrelationId": rec.correlation_id,
        "Type": "AzureDiagnostics",
    }


def new_correlation() -> str:
    return str(uuid.uuid4())
