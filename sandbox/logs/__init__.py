"""The sandbox's Log Analytics workspace: the query API over the vaults' audit records.

Wire shape (Azure/azure-rest-api-specs
``specification/operationalinsights/data-plane/Microsoft.OperationalInsights/stable/v1/OperationalInsights.json``,
api-version ``v1``): ``POST /v1/workspaces/{workspaceId}/query`` with ``{"query", "timespan",
"workspaces"?}``; ``200 {"tables": [{"name": "PrimaryResult", "columns": [{"name", "type"}],
"rows": [[...]]}]}``; a partial failure is a 200 that also carries ``"error"`` (the SDK turns it
into ``LogsQueryPartialResult``); errors are ``{"error": {"code", "message", "innererror"?}}``.
``azure-monitor-query``'s ``LogsQueryClient`` talks to it unmodified (in process through the
sandbox transport at ``https://api.loganalytics.io``, or at the loopback ``logs_url``).

Column types follow the v1 spec's enum (``bool``, ``datetime``, ``dynamic``, ``int``, ``long``,
``real``, ``string``, ``guid``, ``decimal``, ``timespan``); datetimes are ISO 8601 strings in
UTC, dynamic values are JSON text (as the service sends them).

The evaluator (:func:`evaluate`) knows a small subset of KQL, exactly what keysteward's queries
use: a table (``AZKVAuditLogs`` or ``AzureDiagnostics``) piped through ``where``, ``extend``,
``project``, ``summarize ... by``, ``order by`` / ``sort by``, ``take`` / ``limit``, ``top N by``;
expressions with ``== != =~ !~ < <= > >=``, ``in``/``in~``, ``startswith``, ``has``,
``between (a .. b)``, ``and``/``or``/``not()``, ``tostring``, ``tolower``, ``split(s, sep)[i]``,
``coalesce``, ``iff``, ``datetime(...)``, ``ago()``, ``now()``, dotted access into dynamic
values, and the aggregations ``count``, ``countif``, ``min``, ``max``, ``minif``, ``maxif``,
``sum``, ``dcount``, ``make_set``. Anything else is a 400 ``BadArgumentError`` naming the part
it does not know: the sandbox refuses rather than guesses.

Admin-side hooks: a query to a workspace other than the world's is 404; a fault rule on
``api.loganalytics.io`` (``POST /sandbox/faults``) makes it throttle (429) or fail; the
admin API's ``POST /sandbox/audit {"partial": true}`` makes answers partial (the result carries
rows and an error, as when a query hits a service limit).

The package follows the query's path: ``common`` (host, router, schemas, the error, values),
``kql`` (tokens, expressions and their types), ``operators`` (the tabular operators,
:func:`evaluate`, the result shape) and ``api`` (the HTTP front door, :func:`handle`).
"""

from __future__ import annotations

from sandbox.logs.api import handle
from sandbox.logs.common import LOGS_HOST, ROUTER, Dt, QueryError, parse_timespan
from sandbox.logs.kql import AGGREGATES, Expr, Tok, ev, tokenize
from sandbox.logs.operators import Frame, evaluate, render

__all__ = [
    "AGGREGATES",
    "LOGS_HOST",
    "ROUTER",
    "Dt",
    "Expr",
    "Frame",
    "QueryError",
    "Tok",
    "ev",
    "evaluate",
    "handle",
    "parse_timespan",
    "render",
    "tokenize",
]
