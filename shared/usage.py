"""Who really uses a key: usage evidence from Key Vault's audit logs in Log Analytics.

Key Vault records every key operation (wrap, unwrap, get ...) with the key version and the
caller's identity in its ``AuditEvent`` diagnostic log. Sent to a Log Analytics workspace, it
lands in the resource-specific table ``AZKVAuditLogs`` (Azure Monitor table reference,
MicrosoftDocs/azure-reference-other ``azure-monitor-ref/tables/includes/azkvauditlogs-include.md``:
``TimeGenerated``, ``OperationName``, ``ResultType``, ``HttpStatusCode``, ``Id`` = the key id,
``Identity`` = the token's claims) or, for diagnostic settings in the legacy mode, in
``AzureDiagnostics`` (``id_s``, ``identity_claim_oid_g``, ``identity_claim_appid_g``,
``ResultType``, ``ResourceProvider == "MICROSOFT.KEYVAULT"``, ``Category == "AuditEvent"``).
``KEYSTEWARD_AUDIT_TABLE`` chooses the table. Operation names are Key Vault's logging
reference's (learn.microsoft.com/azure/key-vault/general/logging, "Keys"): a service *uses*
a key with ``KeyWrap``/``KeyUnwrap`` (and ``KeyEncrypt``/``KeyDecrypt``/``KeySign``/
``KeyVerify``); reads such as ``KeyGet`` are not use (keysteward's own reads would count).

GUESS: where ``AZKVAuditLogs.Identity`` keeps the object id. The logging reference shows the
claims under ``identity.claim``; the legacy columns are ``identity_claim_oid_g`` and
``identity_claim_appid_g``, so the query reads ``Identity.claim.oid`` and falls back to the
``objectidentifier`` claim URI.

The query goes through ``azure-monitor-query``'s ``LogsQueryClient`` (REST: Azure/azure-rest-api-specs
``specification/operationalinsights/data-plane/Microsoft.OperationalInsights/stable/v1/OperationalInsights.json``,
``POST /v1/workspaces/{workspaceId}/query``; response ``tables[{name, columns[{name, type}], rows}]``;
a partial failure is a 200 with ``error`` beside the tables). One KQL query answers one
question (a key, a key version, or a vault): per key version and identity, the calls, the
operations, success and failure counts, first and last seen. Answers are bounded
(``KEYSTEWARD_AUDIT_TOP`` rows, newest success first) and say when they were cut.

Evidence that cannot be had is never "unused": an unset workspace is :attr:`UsageState.NOT_CONFIGURED`
(no evidence, said so); throttling, a partial result, an unknown or unreachable workspace, a
refused token are :attr:`UsageState.UNAVAILABLE` with the reason, and the retention guard then
refuses to retire (fail closed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from shared.keyuri import norm_vault_url
from shared.model import Binding, KeyRef

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.clock import Clock
    from shared.config import Settings

# Operations by which a service uses a key (Key Vault logging reference, "Keys" table).
USE_OPERATIONS = ("KeyWrap", "KeyUnwrap", "KeyEncrypt", "KeyDecrypt", "KeySign", "KeyVerify")
# Blocker kinds this module adds to the retention verdict.
IN_USE = "audit-in-use"
EVIDENCE_UNAVAILABLE = "audit-unavailable"


class UsageState(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"  # configured, but no complete answer now: the guard fails closed
    NOT_CONFIGURED = "not-configured"  # KEYSTEWARD_AUDIT_WORKSPACE unset: no evidence, no blocker


@dataclass(frozen=True)
class CallerUsage:
    """One identity's calls with one key version within the lookback."""

    key_name: str
    version: str
    object_id: str
    app_id: str
    calls: int
    succeeded: int
    failed: int
    first_seen: datetime | None
    last_seen: datetime | None
    last_success: datetime | None
    operations: tuple[str, ...]
    last_failure: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key_name, "version": self.version, "objectId": self.object_id, "appId": self.app_id,
            "calls": self.calls, "succeeded": self.succeeded, "failed": self.failed,
            "firstSeen": _iso(self.first_seen), "lastSeen": _iso(self.last_seen),
            "lastSuccess": _iso(self.last_success), "lastFailure": _iso(self.last_failure),
            "operations": list(self.operations),
        }


@dataclass(frozen=True)
class Usage:
    """The answer to one usage question. ``callers`` is empty unless ``state`` is AVAILABLE."""

    subject: str  # the key, version or vault asked about
    state: UsageState
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None
    callers: tuple[CallerUsage, ...] = ()
    truncated: bool = False  # more rows than KEYSTEWARD_AUDIT_TOP matched; the oldest were cut
    table: str = ""

    @property
    def available(self) -> bool:
        return self.state is UsageState.AVAILABLE

    def for_version(self, version: str) -> list[CallerUsage]:
        return [c for c in self.callers if c.version == version]

    def evidence(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "table": self.table or None,
                "since": _iso(self.since), "until": _iso(self.until), "truncated": self.truncated}


class UsageSource(Protocol):
    """Where usage evidence comes from (Log Analytics in Azure; nothing when not configured)."""

    def key_usage(self, key: KeyRef) -> Usage:
        """Every version of ``key`` (``key.version`` set: that version only)."""
        ...

    def vault_usage(self, vault_url: str) -> Usage:
        """Every key of the vault (for a remove-access revocation's blast radius)."""
        ...


class NoUsageEvidence:
    """The source when KEYSTEWARD_AUDIT_WORKSPACE is unset: every answer says so."""

    REASON = "KEYSTEWARD_AUDIT_WORKSPACE is not set: no usage evidence from Key Vault audit logs"

    def key_usage(self, key: KeyRef) -> Usage:
        return Usage(key.uri, UsageState.NOT_CONFIGURED, self.REASON)

    def vault_usage(self, vault_url: str) -> Usage:
        return Usage(vault_url, UsageState.NOT_CONFIGURED, self.REASON)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _kql_string(text: str) -> str:
    """A KQL string literal (double quotes, backslash escapes)."""
    return json.dumps(text)


def _kql_datetime(value: datetime) -> str:
    # KQL's documented literal form: ISO 8601 in UTC with a Z (no numeric offset).
    return f"datetime({value.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')})"


# The columns each table keeps the facts in (see the module docstring for the sources).
_TABLE_SHAPES = {
    "AZKVAuditLogs": {
        "filter": "",
        "id": "Id",
        "oid": 'tostring(coalesce(Identity.claim.oid, Identity.claim["http://schemas.microsoft.com/identity/claims/'
               'objectidentifier"]))',
        "appid": "tostring(Identity.claim.appid)",
    },
    "AzureDiagnostics": {
        "filter": '| where ResourceProvider == "MICROSOFT.KEYVAULT" and Category == "AuditEvent"\n',
        "id": "id_s",
        "oid": "tostring(identity_claim_oid_g)",
        "appid": "tostring(identity_claim_appid_g)",
    },
}


def build_query(table: str, *, id_prefix: str, version: str | None, since: datetime, until: datetime,
                top: int) -> str:
    """The one KQL query for a usage question: calls per (key, version, identity), newest success first.

    ``id_prefix`` is ``https://{vault}.vault.azure.net/keys/`` (a vault) or ``.../keys/{name}/``
    (a key); ``version`` narrows to one version. ``top + 1`` rows are asked for, so that a cut
    answer is recognisable.
    """
    shape = _TABLE_SHAPES[table]
    ops = ", ".join(_kql_string(o) for o in USE_OPERATIONS)
    version_filter = f"| where Version == {_kql_string(version)}\n" if version else ""
    return (
        f"{table}\n"
        f"| where TimeGenerated between ({_kql_datetime(since)} .. {_kql_datetime(until)})\n"
        f"{shape['filter']}"
        f"| where OperationName in ({ops})\n"
        f"| where {shape['id']} startswith {_kql_string(id_prefix)}\n"
        f"| extend KeyName = tostring(split({shape['id']}, \"/\")[4]),"
        f" Version = tostring(split({shape['id']}, \"/\")[5]), ObjectId = {shape['oid']}, AppId = {shape['appid']}\n"
        f"{version_filter}"
        "| summarize Calls = count(), Succeeded = countif(ResultType == \"Success\"),"
        " Failed = countif(ResultType != \"Success\"), FirstSeen = min(TimeGenerated), LastSeen = max(TimeGenerated),"
        " LastSuccess = maxif(TimeGenerated, ResultType == \"Success\"),"
        " LastFailure = maxif(TimeGenerated, ResultType != \"Success\"), Operations = make_set(OperationName, 16)"
        " by KeyName, Version, ObjectId, AppId\n"
        "| order by LastSuccess desc, LastSeen desc\n"
        f"| take {top + 1}"
    )


_COLUMNS = ("KeyName", "Version", "ObjectId", "AppId", "Calls", "Succeeded", "Failed", "FirstSeen", "LastSeen",
            "LastSuccess", "LastFailure", "Operations")


class BadAnswer(ValueError):
    """The workspace answered in a shape the query does not produce."""


def _when(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as err:
        raise BadAnswer(f"a time column holds {value!r}") from err


def _ops(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError as err:
            raise BadAnswer(f"Operations holds {value[:40]!r}") from err
    if not isinstance(value, list):
        raise BadAnswer("Operations is not a list")
    return tuple(sorted(str(v) for v in value))


def parse_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[CallerUsage]:
    """Typed callers from the query's rows; raises :class:`BadAnswer` on a shape it did not ask for."""
    missing = [c for c in _COLUMNS if c not in columns]
    if missing:
        raise BadAnswer(f"the answer lacks columns {', '.join(missing)}")
    at = {c: list(columns).index(c) for c in _COLUMNS}
    out = []
    for row in rows:
        try:
            out.append(CallerUsage(
                key_name=str(row[at["KeyName"]] or ""), version=str(row[at["Version"]] or ""),
                object_id=str(row[at["ObjectId"]] or "").lower(), app_id=str(row[at["AppId"]] or "").lower(),
                calls=int(row[at["Calls"]]), succeeded=int(row[at["Succeeded"]]), failed=int(row[at["Failed"]]),
                first_seen=_when(row[at["FirstSeen"]]), last_seen=_when(row[at["LastSeen"]]),
                last_success=_when(row[at["LastSuccess"]]), operations=_ops(row[at["Operations"]]),
                last_failure=_when(row[at["LastFailure"]]),
            ))
        except (TypeError, ValueError, IndexError) as err:
            raise BadAnswer(f"a row does not have the expected types: {err}") from err
    return out


class LogAnalyticsUsage:
    """Usage evidence from a Log Analytics workspace through ``LogsQueryClient`` (managed identity).

    ``vault_name`` maps a vault URL to the vault's name, which the audit records' key ids use
    (``https://{name}.vault.azure.net/keys/...``); the default takes the host's first label.
    Never raises for an Azure failure: the answer's state says what went wrong.
    """

    def __init__(
        self,
        *,
        workspace_id: str,
        credential: TokenCredential,
        clock: Clock,
        table: str = "AZKVAuditLogs",
        lookback: timedelta = timedelta(days=7),
        top: int = 50,
        endpoint: str = "https://api.loganalytics.io",
        client_kwargs: dict[str, Any] | None = None,
        vault_name: Callable[[str], str] | None = None,
        server_timeout_s: int = 60,
    ) -> None:
        if table not in _TABLE_SHAPES:
            raise ValueError(f"unknown audit table {table!r}")
        self.workspace_id = workspace_id
        self.table = table
        self.lookback = lookback
        self.top = top
        self.clock = clock
        self.server_timeout_s = server_timeout_s
        self._credential = credential
        self._endpoint = endpoint
        self._client_kwargs = dict(client_kwargs or {})
        self._vault_name = vault_name or (lambda url: KeyRef(url, "x").vault_name)
        self._client: Any = None
        self.log = structlog.get_logger("keysteward.usage")

    def _logs_client(self) -> Any:
        if self._client is None:
            # Imported here, not at module level: the Functions host's cold start does not pay for
            # azure.monitor.query unless usage evidence is configured and asked for.
            from azure.monitor.query import LogsQueryClient  # noqa: PLC0415

            self._client = LogsQueryClient(self._credential, endpoint=self._endpoint, **self._client_kwargs)
        return self._client

    def _prefix(self, vault_url: str) -> str:
        return f"https://{self._vault_name(vault_url).lower()}.vault.azure.net/keys/"

    def key_usage(self, key: KeyRef) -> Usage:
        prefix = f"{self._prefix(key.vault_url)}{key.name}/"
        return self._ask(key.uri, id_prefix=prefix, version=key.version)

    def vault_usage(self, vault_url: str) -> Usage:
        return self._ask(vault_url, id_prefix=self._prefix(vault_url), version=None)

    def _ask(self, subject: str, *, id_prefix: str, version: str | None) -> Usage:
        until = self.clock.now()
        since = until - self.lookback
        query = build_query(self.table, id_prefix=id_prefix, version=version, since=since, until=until, top=self.top)

        def unavailable(reason: str) -> Usage:
            self.log.warning("usage-evidence-unavailable", subject=subject, workspace=self.workspace_id, reason=reason)
            return Usage(subject, UsageState.UNAVAILABLE, reason, since, until, table=self.table)

        try:
            result = self._run(query, since, until)
        except _Unavailable as err:
            return unavailable(str(err))
        error = getattr(result, "partial_error", None)  # LogsQueryPartialResult
        if error is not None:
            detail = getattr(error, "message", None) or "the workspace returned part of the answer"
            return unavailable(f"Log Analytics answered in part ({detail}); a partial answer cannot prove a "
                               "version unused")
        tables = list(getattr(result, "tables", None) or [])
        if not tables:
            return unavailable("Log Analytics answered without a result table")
        table = tables[0]
        try:
            callers = parse_rows(list(table.columns), [list(r) for r in table.rows])
        except BadAnswer as err:
            return unavailable(f"Log Analytics answered in an unexpected shape: {err}")
        truncated = len(callers) > self.top
        return Usage(subject, UsageState.AVAILABLE, "", since, until, tuple(callers[: self.top]), truncated,
                     self.table)

    def _run(self, query: str, since: datetime, until: datetime) -> Any:
        from azure.core.exceptions import (  # noqa: PLC0415 - see _logs_client
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return self._logs_client().query_workspace(
                self.workspace_id, query, timespan=(since, until), server_timeout=self.server_timeout_s)
        except ClientAuthenticationError as err:
            raise _Unavailable(f"no token for Log Analytics: {_first_line(err)}") from err
        except HttpResponseError as err:
            raise _Unavailable(_http_reason(err, self.workspace_id)) from err
        except (ServiceRequestError, ServiceResponseError) as err:
            reason = f"Log Analytics workspace {self.workspace_id} is unreachable: {_first_line(err)}"
            raise _Unavailable(reason) from err


class _Unavailable(Exception):
    pass


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _http_reason(err: Any, workspace: str) -> str:
    status = getattr(err, "status_code", None)
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    if status == 429:
        after = headers.get("Retry-After")
        return f"Log Analytics throttled the query{f' (retry after {after} s)' if after else ''}"
    if status == 404:
        return f"Log Analytics workspace {workspace} was not found"
    if status in (401, 403):
        return (f"the app's identity may not query workspace {workspace} (it needs the Log Analytics Reader "
                f"role): {_first_line(err)}")
    return f"Log Analytics answered {status}: {_first_line(err)}"


# ---- the composition root's builder ------------------------------------------------------------------
def from_settings(settings: Settings, *, credential: TokenCredential, clock: Clock,
                  transport_factory: Callable[[], Any] | None = None) -> UsageSource:
    """The usage source the settings ask for: none without KEYSTEWARD_AUDIT_WORKSPACE."""
    if settings.audit_workspace is None:
        return NoUsageEvidence()
    kwargs: dict[str, Any] = {}
    endpoint = settings.logs_endpoint
    vault_name: Callable[[str], str] | None = None
    conn = settings.sandbox_connection
    if conn is not None:
        if conn.logs_url:
            endpoint = conn.logs_url
        kwargs["connection_verify"] = conn.ca_bundle
        by_url = {norm_vault_url(url): name for name, url in conn.vaults.items()}

        def vault_name(url: str) -> str:  # sandbox vaults listen on loopback ports; their names are in the file
            return by_url.get(norm_vault_url(url)) or KeyRef(url, "x").vault_name

    if transport_factory is not None:
        kwargs["transport"] = transport_factory()
    return LogAnalyticsUsage(
        workspace_id=settings.audit_workspace, credential=credential, clock=clock, table=settings.audit_table,
        lookback=settings.audit_lookback, top=settings.audit_top, endpoint=endpoint, client_kwargs=kwargs,
        vault_name=vault_name,
    )


# ---- verification --------------------------------------------------------------------------------------
PROOF_RESOURCE = "resource-state"
PROOF_AUDIT = "audit-evidence"
PROOF_BOTH = "both"


def seen(usage: Usage, principal_id: str | None, version: str, *, succeeding: bool) -> CallerUsage | None:
    """The identity's row for ``version`` when it was seen succeeding (or failing) with it."""
    if principal_id is None or not usage.available:
        return None
    for c in usage.for_version(version):
        if c.object_id == principal_id.lower() and (c.succeeded if succeeding else c.failed) > 0:
            return c
    return None


def confirmation_proofs(source: UsageSource, version_ref: KeyRef, confirmed: Sequence[Binding]) -> dict[str, str]:
    """For bindings that resource state shows on ``version_ref``: "both" when the binding's identity
    is also seen unwrapping with that version, else "resource-state" (one query for all of them)."""
    if version_ref.version is None:
        raise ValueError("confirmation needs a versioned key")
    usage = source.key_usage(version_ref)
    return {b.resource_id: PROOF_BOTH if seen(usage, b.principal_id, version_ref.version, succeeding=True)
            else PROOF_RESOURCE for b in confirmed}


def unknown_identities(usage: Usage, known_principals: Iterable[str]) -> list[dict[str, Any]]:
    """Identities seen calling (whatever the result) that no binding accounts for, one entry per
    identity across versions and keys: calls, successes, failures, versions, last call; the
    newest first. Empty unless the evidence is available."""
    known = {p.lower() for p in known_principals if p}
    out: dict[str, dict[str, Any]] = {}
    for c in usage.callers:
        if c.object_id in known:
            continue
        entry = out.setdefault(c.object_id, {"objectId": c.object_id, "appId": c.app_id, "calls": 0,
                                             "succeeded": 0, "failed": 0, "versions": [], "keys": [],
                                             "lastCall": None})
        entry["calls"] += c.calls
        entry["succeeded"] += c.succeeded
        entry["failed"] += c.failed
        for field_name, value in (("versions", c.version), ("keys", c.key_name)):
            if value and value not in entry[field_name]:
                entry[field_name].append(value)
        last = _iso(c.last_seen)
        if last and (entry["lastCall"] is None or last > entry["lastCall"]):
            entry["lastCall"] = last
    return sorted(out.values(), key=lambda e: e["lastCall"] or "", reverse=True)


def blast_radius_evidence(source: UsageSource, key: KeyRef, *, remove_access: bool,
                          known_principals: Iterable[str]) -> dict[str, Any]:
    """What a revocation's dry run adds beside the inventory's bindings: the unknown identities
    (no binding in the inventory has their object id) that used the key (or, for remove-access,
    any key of the vault) in the lookback, with counts and last call."""
    usage = source.vault_usage(key.vault_url) if remove_access else source.key_usage(key)
    return {"usageEvidence": usage.evidence(), "unknownIdentities": unknown_identities(usage, known_principals)}


def runbook_proofs(source: UsageSource, key: KeyRef, principals: dict[str, str | None], *, revoked: bool,
                   since: datetime) -> dict[str, dict[str, Any]]:
    """Per resource id, what the audit log says since ``since`` (the act step): after a revocation,
    the identity seen *failing* with the key; after a restore, seen *succeeding* again.
    ``principals`` maps resource id -> the binding's identity. One query for all of them."""
    usage = source.key_usage(key)
    out: dict[str, dict[str, Any]] = {}
    for rid, principal in principals.items():
        rows = [c for c in usage.callers if principal and c.object_id == principal.lower()]
        moments = [c.last_failure if revoked else c.last_success for c in rows]
        after = [m for m in moments if m is not None and m >= since]
        out[rid] = {"auditEvidence": bool(after), "lastSeen": _iso(max(after)) if after else None,
                    "evidence": usage.state.value}
    return out


def proof_kind(resource_state: bool, audit: bool) -> str:
    """The proof a binding got: "both", "resource-state", "audit-evidence" or "none"."""
    if resource_state and audit:
        return PROOF_BOTH
    if resource_state:
        return PROOF_RESOURCE
    return PROOF_AUDIT if audit else "none"


__all__ = [
    "EVIDENCE_UNAVAILABLE", "IN_USE", "CallerUsage", "LogAnalyticsUsage", "NoUsageEvidence", "Usage",
    "UsageSource", "UsageState", "build_query", "from_settings", "parse_rows",
]
