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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox import audit
from sandbox.wire import Request, Response, Router, SandboxError, json_response

if TYPE_CHECKING:
    from sandbox.world import World

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


# ---- tokens and expressions ---------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<dt>datetime\(\s*[^)]*\))|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<span>\d+(?:\.\d+)?(?:ms|d|h|m|s)\b)|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<op>\.\.|==|!=|=~|!~|<=|>=|[()\[\],.=<>])|(?P<id>[A-Za-z_][A-Za-z0-9_~]*))",
)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str


def tokenize(text: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"unexpected text at {text[pos:pos + 20]!r}", "SyntaxError")
        kind = m.lastgroup or ""
        out.append(Tok(kind, m.group(kind)))
        pos = m.end()
    return out


# ("lit", v) | ("col", name) | ("get", e, key) | ("idx", e, n) | ("call", f, args) | ("bin", op, a, b) ...
Expr = tuple[Any, ...]


class _Parser:
    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self, offset: int = 0) -> Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def at(self, *texts: str) -> bool:
        t = self.peek()
        return t is not None and t.kind in ("op", "id") and t.text.lower() in texts

    def take(self, text: str | None = None) -> Tok:
        t = self.peek()
        if t is None or (text is not None and t.text.lower() != text):
            want = text or "more input"
            raise QueryError(f"expected {want!r} but found {t.text if t else 'end of query'!r}", "SyntaxError")
        self.i += 1
        return t

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def ident(self) -> str:
        t = self.take()
        if t.kind != "id":
            raise QueryError(f"expected a name, found {t.text!r}", "SyntaxError")
        return t.text

    # expression grammar
    def expr(self) -> Expr:
        left = self.conj()
        while self.at("or"):
            self.take()
            left = ("or", left, self.conj())
        return left

    def conj(self) -> Expr:
        left = self.cmp()
        while self.at("and"):
            self.take()
            left = ("and", left, self.cmp())
        return left

    def cmp(self) -> Expr:
        left = self.postfix()
        if self.at("==", "!=", "=~", "!~", "<", "<=", ">", ">="):
            op = self.take().text
            return ("bin", op, left, self.postfix())
        if self.at("in", "in~", "!in", "!in~"):
            op = self.take().text.lower()
            self.take("(")
            items = [self.postfix()]
            while self.at(","):
                self.take()
                items.append(self.postfix())
            self.take(")")
            return ("in", op, left, items)
        if self.at("startswith", "has", "contains", "endswith", "startswith_cs"):
            op = self.take().text.lower()
            return ("str", op, left, self.postfix())
        if self.at("between"):
            self.take()
            self.take("(")
            low = self.postfix()
            self.take("..")
            high = self.postfix()
            self.take(")")
            return ("between", left, low, high)
        return left

    def postfix(self) -> Expr:
        e = self.primary()
        while True:
            if self.at("."):
                self.take()
                e = ("get", e, self.ident())
            elif self.at("["):
                self.take()
                t = self.take()
                if t.kind == "num":
                    key: Any = int(t.text)
                elif t.kind == "str":
                    key = _unquote(t.text)
                else:
                    raise QueryError(f"unsupported index {t.text!r}", "SyntaxError")
                self.take("]")
                e = ("idx", e, key)
            else:
                return e

    def primary(self) -> Expr:
        t = self.take()
        if t.kind == "str":
            return ("lit", _unquote(t.text))
        if t.kind == "num":
            return ("lit", float(t.text) if "." in t.text else int(t.text))
        if t.kind == "dt":
            return ("lit", _parse_dt(t.text[t.text.index("(") + 1 : -1]))
        if t.kind == "span":
            m = _TIMESPAN_LIT.fullmatch(t.text)
            assert m is not None  # noqa: S101 - the token regex guarantees the shape
            unit = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}[m["u"].lower()]
            return ("lit", float(m["n"]) * unit)
        if t.kind == "op" and t.text == "(":
            e = self.expr()
            self.take(")")
            return e
        if t.kind == "id":
            low = t.text.lower()
            if low in ("true", "false"):
                return ("lit", low == "true")
            if self.at("("):
                self.take("(")
                args: list[Expr] = []
                if not self.at(")"):
                    args.append(self.expr())
                    while self.at(","):
                        self.take()
                        args.append(self.expr())
                self.take(")")
                return ("call", low, args)
            return ("col", t.text)
        raise QueryError(f"unexpected {t.text!r}", "SyntaxError")


def _unquote(text: str) -> str:
    return str(json.loads('"' + text[1:-1].replace('\\\'', "'").replace('"', '\\"') + '"')) if text[0] == "'" else str(
        json.loads(text))


AGGREGATES = {"count", "countif", "min", "max", "minif", "maxif", "sum", "dcount", "make_set"}


class _Env:
    def __init__(self, now: float) -> None:
        self.now = now


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, Dt):
        return v.iso()
    if isinstance(v, dict | list):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _cmp_key(v: Any) -> Any:
    return v.ts if isinstance(v, Dt) else v


def ev(e: Expr, row: dict[str, Any], env: _Env) -> Any:
    kind = e[0]
    if kind == "lit":
        return e[1]
    if kind == "col":
        if e[1] not in row:
            raise QueryError(f"'{e[1]}' is not a column of the input", "SemanticError")
        return row[e[1]]
    if kind == "get":
        base = ev(e[1], row, env)
        return base.get(e[2]) if isinstance(base, dict) else None
    if kind == "idx":
        base = ev(e[1], row, env)
        if isinstance(base, list) and isinstance(e[2], int):
            return base[e[2]] if -len(base) <= e[2] < len(base) else None
        return base.get(e[2]) if isinstance(base, dict) else None
    if kind == "and":
        return bool(ev(e[1], row, env)) and bool(ev(e[2], row, env))
    if kind == "or":
        return bool(ev(e[1], row, env)) or bool(ev(e[2], row, env))
    if kind == "bin":
        a, b = ev(e[2], row, env), ev(e[3], row, env)
        op = e[1]
        if op == "==":
            return _cmp_key(a) == _cmp_key(b)
        if op == "!=":
            return _cmp_key(a) != _cmp_key(b)
        if op == "=~":
            return _text(a).lower() == _text(b).lower()
        if op == "!~":
            return _text(a).lower() != _text(b).lower()
        if a is None or b is None:
            return False
        ka, kb = _cmp_key(a), _cmp_key(b)
        return {"<": ka < kb, "<=": ka <= kb, ">": ka > kb, ">=": ka >= kb}[op]
    if kind == "in":
        value = ev(e[2], row, env)
        items = [ev(i, row, env) for i in e[3]]
        if e[1].endswith("~"):
            found = _text(value).lower() in {_text(i).lower() for i in items}
        else:
            found = _cmp_key(value) in {_cmp_key(i) for i in items}
        return found if not e[1].startswith("!") else not found
    if kind == "str":
        a, b = _text(ev(e[2], row, env)), _text(ev(e[3], row, env))
        if e[1] == "startswith_cs":
            return a.startswith(b)
        a, b = a.lower(), b.lower()
        if e[1] == "startswith":
            return a.startswith(b)
        if e[1] == "endswith":
            return a.endswith(b)
        return b in a  # has / contains (has is term-based in KQL; the sandbox's use is whole GUIDs)
    if kind == "between":
        v, low, high = (_cmp_key(ev(x, row, env)) for x in (e[1], e[2], e[3]))
        return v is not None and low <= v <= high
    if kind == "call":
        return _call(e[1], e[2], row, env)
    raise QueryError(f"unsupported expression {kind}")


def _call(name: str, args: list[Expr], row: dict[str, Any], env: _Env) -> Any:
    if name in AGGREGATES:
        raise QueryError(f"{name}() is an aggregation: use it in summarize", "SemanticError")
    vals = [ev(a, row, env) for a in args]
    if name == "tostring":
        return _text(vals[0])
    if name == "tolower":
        return _text(vals[0]).lower()
    if name == "split":
        return _text(vals[0]).split(_text(vals[1]))
    if name == "coalesce":
        return next((v for v in vals if v not in (None, "")), None)
    if name == "iff":
        return vals[1] if vals[0] else vals[2]
    if name == "not":
        return not vals[0]
    if name == "isnotempty":
        return vals[0] not in (None, "")
    if name == "isempty":
        return vals[0] in (None, "")
    if name == "now":
        return Dt(env.now)
    if name == "ago":
        return Dt(env.now - float(vals[0]))
    if name == "todatetime":
        return vals[0] if isinstance(vals[0], Dt) else _parse_dt(_text(vals[0]))
    raise QueryError(f"the sandbox does not evaluate function {name}()", "SemanticError")


def _type_of(e: Expr, schema: dict[str, str]) -> str:
    kind = e[0]
    if kind == "lit":
        v = e[1]
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, Dt):
            return "datetime"
        if isinstance(v, int):
            return "long"
        if isinstance(v, float):
            return "real"
        return "string"
    if kind == "col":
        return schema.get(e[1], "string")
    if kind in ("get", "idx"):
        return "dynamic"
    if kind in ("and", "or", "bin", "in", "str", "between"):
        return "bool"
    name, args = e[1], e[2]
    if name in ("count", "countif", "dcount"):
        return "long"
    if name in ("min", "max", "minif", "maxif", "sum", "coalesce"):
        return _type_of(args[0], schema) if args else "long"
    if name == "iff":
        return _type_of(args[1], schema)
    if name in ("make_set", "split"):
        return "dynamic"
    if name in ("now", "ago", "todatetime"):
        return "datetime"
    if name in ("isnotempty", "isempty", "not"):
        return "bool"
    return "string"


def _check(e: Any, types: dict[str, str]) -> None:
    """Semantic check before any row is seen (as the service does): every column must exist."""
    if isinstance(e, tuple) and e:
        if e[0] == "col":
            if e[1] not in types:
                raise QueryError(f"'{e[1]}' is not a column of the input", "SemanticError")
            return
        for part in e[1:]:
            _check(part, types)
    elif isinstance(e, list):
        for part in e:
            _check(part, types)


# ---- operators -------------------------------------------------------------------------------------
@dataclass
class Frame:
    columns: list[str]
    types: dict[str, str]
    rows: list[dict[str, Any]]


def _split_pipes(query: str) -> list[str]:
    parts, depth, quote, cur = [], 0, "", []
    for ch in query:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _assignments(p: _Parser) -> list[tuple[str, Expr]]:
    out: list[tuple[str, Expr]] = []
    while True:
        if p.peek(1) is not None and p.peek(1).text == "=" and p.peek() is not None and p.peek().kind == "id":  # type: ignore[union-attr]
            name = p.ident()
            p.take("=")
            out.append((name, p.expr()))
        else:
            e = p.expr()
            out.append((e[1] if e[0] == "col" else f"Column{len(out) + 1}", e))
        if not p.at(","):
            return out
        p.take()


def _aggregate(name: str, args: list[Expr], rows: list[dict[str, Any]], env: _Env) -> Any:
    if name == "count":
        return len(rows)
    if name == "countif":
        return sum(1 for r in rows if ev(args[0], r, env))
    if name in ("min", "max", "minif", "maxif"):
        selected = rows if name in ("min", "max") else [r for r in rows if ev(args[1], r, env)]
        values = [v for v in (ev(args[0], r, env) for r in selected) if v is not None]
        if not values:
            return None
        return (min if name.startswith("min") else max)(values, key=_cmp_key)
    if name == "sum":
        return sum(float(ev(args[0], r, env) or 0) for r in rows)
    if name == "dcount":
        return len({_text(ev(args[0], r, env)) for r in rows})
    if name == "make_set":
        limit = int(ev(args[1], {}, env)) if len(args) > 1 else 1_048_576
        seen: list[Any] = []
        for r in rows:
            v = ev(args[0], r, env)
            if v not in seen:
                seen.append(v)
            if len(seen) >= limit:
                break
        return seen
    raise QueryError(f"unknown aggregation {name}()")


def _summarize(frame: Frame, body: str, env: _Env) -> Frame:
    head, _, by_text = _split_by(body)
    p = _Parser(tokenize(head))
    aggs = _assignments(p)
    if not p.done():
        raise QueryError(f"unexpected {p.peek().text!r} in summarize", "SyntaxError")  # type: ignore[union-attr]
    for name, e in aggs:
        if e[0] != "call" or e[1] not in AGGREGATES:
            raise QueryError(f"summarize needs aggregations; {name} is not one", "SemanticError")
    keys: list[tuple[str, Expr]] = []
    if by_text:
        bp = _Parser(tokenize(by_text))
        keys = _assignments(bp)
    _check([e for _, e in aggs + keys], frame.types)
    groups: dict[tuple[str, ...], tuple[list[Any], list[dict[str, Any]]]] = {}
    for row in frame.rows:
        vals = [ev(e, row, env) for _, e in keys]
        gk = tuple(_text(v) for v in vals)
        groups.setdefault(gk, (vals, []))[1].append(row)
    if not keys and not groups:
        groups[()] = ([], [])
    out_rows = []
    for vals, rows in groups.values():
        out = {name: v for (name, _), v in zip(keys, vals, strict=True)}
        for name, e in aggs:
            out[name] = _aggregate(e[1], e[2], rows, env)
        out_rows.append(out)
    columns = [n for n, _ in keys] + [n for n, _ in aggs]
    types = {n: _type_of(e, frame.types) for n, e in keys + aggs}
    return Frame(columns, types, out_rows)


def _split_by(body: str) -> tuple[str, str, str]:
    m = re.search(r"\bby\b", body)
    # the word "by" outside quotes and parentheses separates aggregations from keys
    depth, quote = 0, ""
    for i, ch in enumerate(body):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and body[i:i + 2].lower() == "by" and (i == 0 or not body[i - 1].isalnum()) and (
            i + 2 >= len(body) or not (body[i + 2].isalnum() or body[i + 2] == "_")
        ):
            return body[:i], "by", body[i + 2:]
    del m
    return body, "", ""


def _order(frame: Frame, body: str) -> Frame:
    keys = []
    for part in body.split(","):
        words = part.split()
        if not words:
            raise QueryError("order by needs a column", "SyntaxError")
        col = words[0]
        if col not in frame.types:
            raise QueryError(f"'{col}' is not a column of the input", "SemanticError")
        desc = not (len(words) > 1 and words[1].lower() == "asc")
        keys.append((col, desc))
    rows = list(frame.rows)
    for col, desc in reversed(keys):
        present = [r for r in rows if r.get(col) is not None]
        missing = [r for r in rows if r.get(col) is None]
        present.sort(key=lambda r, c=col: _cmp_key(r[c]), reverse=desc)  # type: ignore[misc]
        rows = present + missing
    return Frame(frame.columns, frame.types, rows)


def _count_arg(text: str) -> int:
    try:
        n = int(text.strip())
    except ValueError as err:
        raise QueryError(f"expected a row count, found {text.strip()!r}", "SyntaxError") from err
    if n < 0:
        raise QueryError("a row count cannot be negative", "SemanticError")
    return n


def evaluate(query: str, records: Iterable[audit.AuditRecord], *, now: float,
             span: tuple[float, float] | None) -> Frame:
    """Runs ``query`` over ``records`` (already ingested) within the request's ``span``."""
    stages = _split_pipes(query)
    table = stages[0].strip()
    if table not in _SCHEMAS:
        raise QueryError(f"'{table}' is not a table of this workspace (AZKVAuditLogs, AzureDiagnostics)",
                         "SemanticError")
    to_row = _ROWS[table]
    rows = []
    for rec in records:
        if span is not None and not (span[0] <= rec.at <= span[1]):
            continue
        row = to_row(rec)
        row["TimeGenerated"] = Dt(rec.at)
        rows.append(row)
    schema = dict(_SCHEMAS[table])
    frame = Frame(list(schema), schema, rows)
    env = _Env(now)
    for stage in stages[1:]:
        word, _, body = stage.partition(" ")
        op = word.lower()
        if op == "where":
            p = _Parser(tokenize(body))
            cond = p.expr()
            _check(cond, frame.types)
            if not p.done():
                raise QueryError(f"unexpected {p.peek().text!r} in where", "SyntaxError")  # type: ignore[union-attr]
            frame = Frame(frame.columns, frame.types, [r for r in frame.rows if ev(cond, r, env)])
        elif op in ("extend", "project"):
            p = _Parser(tokenize(body))
            items = _assignments(p)
            if not p.done():
                raise QueryError(f"unexpected {p.peek().text!r} in {op}", "SyntaxError")  # type: ignore[union-attr]
            _check([e for _, e in items], frame.types)
            new_rows = []
            for r in frame.rows:
                values = {n: ev(e, r, env) for n, e in items}
                new_rows.append({**r, **values} if op == "extend" else values)
            types = {n: _type_of(e, frame.types) for n, e in items}
            if op == "extend":
                frame = Frame(frame.columns + [n for n, _ in items if n not in frame.types],
                              {**frame.types, **types}, new_rows)
            else:
                frame = Frame([n for n, _ in items], types, new_rows)
        elif op == "summarize":
            frame = _summarize(frame, body, env)
        elif op in ("order", "sort"):
            rest = body.strip()
            if not rest.lower().startswith("by "):
                raise QueryError(f"expected 'by' after {op}", "SyntaxError")
            frame = _order(frame, rest[3:])
        elif op in ("take", "limit"):
            frame = Frame(frame.columns, frame.types, frame.rows[: _count_arg(body)])
        elif op == "top":
            count, _, by = body.partition(" by ")
            frame = _order(frame, by)
            frame = Frame(frame.columns, frame.types, frame.rows[: _count_arg(count)])
        else:
            raise QueryError(f"the sandbox does not evaluate the '{word}' operator", "SemanticError")
    return frame


def _cell(value: Any, col_type: str) -> Any:
    if value is None:
        return None
    if isinstance(value, Dt):
        return value.iso()
    if col_type == "dynamic":
        return json.dumps(value)
    if col_type in ("long", "int") and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if col_type == "real" and isinstance(value, int | float):
        return float(value)
    if col_type in ("string", "guid") and not isinstance(value, str):
        return _text(value)
    return value


def render(frame: Frame) -> dict[str, Any]:
    """The v1 response body: one ``PrimaryResult`` table with typed columns."""
    return {"tables": [{
        "name": "PrimaryResult",
        "columns": [{"name": c, "type": frame.types.get(c, "string")} for c in frame.columns],
        "rows": [[_cell(r.get(c), frame.types.get(c, "string")) for c in frame.columns] for r in frame.rows],
    }]}


# ---- the HTTP front door ------------------------------------------------------------------------------
def _error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}})


def _answer(world: World, workspace: str, query: Any, timespan: Any) -> Response:
    log = audit.log_for(world)
    if workspace.lower() != log.workspace_id:
        return _error(404, "WorkspaceNotFoundError", f"Workspace {workspace} not found.")
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is required", "SyntaxError")
    now = world.clock.timestamp()
    span = parse_timespan(timespan if isinstance(timespan, str) else None, now)
    frame = evaluate(query, log.visible(now), now=now, span=span)
    body = render(frame)
    if log.settings.partial:
        body["error"] = {"code": "PartialError", "message": "There were some errors when processing your query.",
                         "details": [{"code": "EngineError", "message": "Query result set exceeded a service limit "
                                      "(sandbox: partial answers are switched on)."}]}
    return json_response(200, body)


@ROUTER.route("POST", r"/v1/workspaces/(?P<ws>[^/]+)/query")
def _post_query(world: World, req: Request, m: re.Match[str]) -> Response:
    body = req.json_object()
    return _answer(world, m["ws"], body.get("query"), body.get("timespan"))


@ROUTER.route("GET", r"/v1/workspaces/(?P<ws>[^/]+)/query")
def _get_query(world: World, req: Request, m: re.Match[str]) -> Response:
    return _answer(world, m["ws"], req.query.get("query"), req.query.get("timespan"))


def handle(world: World, req: Request) -> Response:
    """Answers one Log Analytics request; a request without a bearer token is 401."""
    auth = req.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "AuthorizationRequiredError", "Valid authentication was not provided.")
    try:
        return ROUTER.dispatch(world, req, not_found=_not_found)
    except QueryError as err:
        return err.response()


def _not_found(req: Request) -> Response:
    return _error(404, "PathNotFoundError", f"The requested path does not exist: {req.path}")
