"""The sandbox's Log Analytics workspace: the host, the router, the two tables' column types, the
query error, and values (datetimes, timespans)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox import audit
from sandbox.wire import Response, Router, SandboxError, json_response

if TYPE_CHECKING:
    pass



LOGS_HOST = "api.loganalytics.io"
ROUTER = Router(case_insensitive=True)

# Column types of the two tables, from the Azure Monitor table references (AZKVAuditLogs) and the
# AzureDiagnostics suffix convention (_s string, _g guid, _d real, _b bool).
_SCHEMAS: dict[str, dict[str, str]] = {
    "AZKVAuditLogs": {
        "TimeGenerated": "datetime", "OperationName": "string", "OperationVersion": "string",
        "ResultType": "string", "ResultSignature": "string", "ResultDescription": "string",
        "HttpStatusCode": "int", "Id": "string", "Identity": "dynamic", "CallerIpAddress": "string",
        "CorrelationId": "string", "RequestUri": "string", "_ResourceId": "string", "Type": "string",
    },
    "AzureDiagnostics": {
        "TimeGenerated": "datetime", "ResourceProvider": "string", "ResourceType": "string", "Category": "string",
        "Resource": "string", "ResourceId": "string", "OperationName": "string", "OperationVersion": "string",
        "ResultType": "string", "ResultSignature": "string", "ResultDescription": "string",
        "httpStatusCode_d": "real", "id_s": "string", "identity_claim_oid_g": "guid",
        "identity_claim_appid_g": "guid", "requestUri_s": "string", "CallerIPAddress": "string",
        "CorrelationId": "string", "Type": "string",
    },
}
_ROWS: dict[str, Callable[[audit.AuditRecord], dict[str, Any]]] = {
    "AZKVAuditLogs": audit.azkv_row,
    "AzureDiagnostics": audit.azure_diagnostics_row,
}


class QueryError(SandboxError):
    """400 BadArgumentError with the inner SyntaxError/SemanticError the service reports."""

    def __init__(self, message: str, inner: str = "SemanticError") -> None:
        super().__init__(400, "BadArgumentError", message)
        self.inner = inner

    def response(self) -> Response:
        return json_response(400, {"error": {
            "code": "BadArgumentError", "message": "The request had some invalid properties",
            "innererror": {"code": self.inner, "message": self.message}}})


# ---- values ----------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Dt:
    """A KQL datetime (unix seconds), kept apart from numbers so columns get their type."""

    ts: float

    def iso(self) -> str:
        return datetime.fromtimestamp(self.ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_dt(text: str) -> Dt:
    raw = text.strip().strip('"').strip("'")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as err:
        raise QueryError(f"cannot parse datetime({raw})", "SyntaxError") from err
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return Dt(value.timestamp())


_DURATION = re.compile(r"P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                       r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?", re.IGNORECASE)
_TIMESPAN_LIT = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<u>d|h|m|s|ms)", re.IGNORECASE)


def _iso_duration(text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if not m or text.strip().upper() in ("P", "PT"):
        raise QueryError(f"the timespan {text!r} is not an ISO 8601 duration", "SyntaxError")
    return (float(m["d"] or 0) * 86400 + float(m["h"] or 0) * 3600 + float(m["m"] or 0) * 60 + float(m["s"] or 0))


def parse_timespan(text: str | None, now: float) -> tuple[float, float] | None:
    """``start/end``, ``start/duration``, ``duration/end`` or ``duration`` (ending now); None: unbounded."""
    if not text:
        return None
    if "/" not in text:
        return now - _iso_duration(text), now
    left, right = text.split("/", 1)
    if left.upper().startswith("P"):
        end = _parse_dt(right).ts
        return end - _iso_duration(left), end
    start = _parse_dt(left).ts
    if right.upper().startswith("P"):
        return start, start + _iso_duration(right)
    return start, _parse_dt(right).ts


