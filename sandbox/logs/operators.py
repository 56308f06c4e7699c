"""The sandbox's Log Analytics workspace: the tabular operators of a query (``where``, ``extend``,
``project``, ``summarize``, ``order by``, ``take``, ``top``), :func:`evaluate` and the v1 result shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox import audit
from sandbox.logs.common import _ROWS, _SCHEMAS, Dt, QueryError
from sandbox.logs.kql import AGGREGATES, Expr, _check, _cmp_key, _Env, _Parser, _text, _type_of, ev, tokenize

if TYPE_CHECKING:
    pass


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


