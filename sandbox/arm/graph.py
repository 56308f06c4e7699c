"""Resource Graph (``POST /providers/Microsoft.ResourceGraph/resources``) in the sandbox's ARM."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.arm.common import (
    GRAPH_DEFAULT_TOP,
    GRAPH_MAX_TOP,
    KEYVAULT_TYPE,
    ROUTER,
    JsonObj,
    _body,
    _loc_slug,
    resource_json,
    vault_json,
)
from sandbox.wire import (
    Request,
    Response,
    json_response,
)

if TYPE_CHECKING:
    import re as _re

    from sandbox.world import World

# ---- Resource Graph ---------------------------------------------------------------------------
GRAPH_COLUMNS = (
    "id",
    "name",
    "type",
    "tenantId",
    "kind",
    "location",
    "resourceGroup",
    "subscriptionId",
    "managedBy",
    "sku",
    "plan",
    "properties",
    "tags",
    "identity",
    "zones",
    "extendedLocation",
)
_COLUMN_BY_LOWER = {c.lower(): c for c in GRAPH_COLUMNS}
_FILTER_COLUMNS = (
    "id",
    "name",
    "type",
    "kind",
    "location",
    "resourceGroup",
    "subscriptionId",
    "tenantId",
    "properties",
    "tags",
    "identity",
    "sku",
)


class _QueryError(Exception):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<op>!in~|in~|=~|!~|==|!=|\(|\)|,)"
    r"|(?P<word>!?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))"
)

Predicate = Callable[[JsonObj], bool]
Getter = Callable[[JsonObj], Any]
_FUNCTIONS: dict[str, Callable[[str], str]] = {"tostring": str, "tolower": str.lower, "toupper": str.upper}
_DYNAMIC_COLUMNS = ("properties", "tags", "identity", "sku")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _QueryError(f"unexpected text at '{text[pos : pos + 20]}'")
        pos = m.end()
        if m["str"] is not None:
            raw = m["str"][1:-1]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif m["op"] is not None:
            out.append(("op", m["op"]))
        else:
            out.append(("word", m["word"]))
    return out


class _WhereParser:
    """``expr := and ('or' and)*``, ``and := atom ('and' atom)*``,
    ``atom := '(' expr ')' | column op 'value' | column [!]in[~] ('v', ...)``."""

    _OPS = ("==", "!=", "=~", "!~")
    _IN_OPS = ("in", "!in", "in~", "!in~")

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.toks = tokens
        self.i = 0

    def parse(self) -> Predicate:
        pred = self._or()
        if self.i != len(self.toks):
            raise _QueryError(f"unexpected '{self.toks[self.i][1]}' in where clause")
        return pred

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self) -> tuple[str, str]:
        tok = self._peek()
        if tok is None:
            raise _QueryError("the where clause ends too early")
        self.i += 1
        return tok

    def _is_word(self, word: str) -> bool:
        tok = self._peek()
        return tok is not None and tok[0] == "word" and tok[1].lower() == word

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._is_word("or"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def _and(self) -> Predicate:
        parts = [self._atom()]
        while self._is_word("and"):
            self.i += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def _operand(self, tok: tuple[str, str]) -> Getter:
        """A column, a dotted path into a dynamic column (``properties.a.b``), or ``tostring(x)``
        / ``tolower(x)`` / ``toupper(x)`` of one (learn.microsoft.com/kusto/query/
        tostring-function, tolower-function)."""
        if tok[0] == "word" and tok[1].lower() in _FUNCTIONS and self._peek() == ("op", "("):
            self.i += 1
            inner = self._operand(self._take())
            if self._take() != ("op", ")"):
                raise _QueryError(f"missing ')' after {tok[1]}(")
            fn = _FUNCTIONS[tok[1].lower()]
            return lambda row: fn(_kql_string(inner(row)))
        head, _, rest = tok[1].partition(".")
        if (
            tok[0] != "word"
            or head.lower() not in {c.lower() for c in _FILTER_COLUMNS}
            or (rest and _COLUMN_BY_LOWER[head.lower()] not in _DYNAMIC_COLUMNS)
        ):
            raise _QueryError(
                f"'{tok[1]}' is not a supported column for where (supported: {', '.join(_FILTER_COLUMNS)}, "
                f"and paths into {', '.join(_DYNAMIC_COLUMNS)})"
            )
        column = _COLUMN_BY_LOWER[head.lower()]
        path = rest.split(".") if rest else []

        def get(row: JsonObj) -> Any:
            value: Any = row.get(column)
            for part in path:  # property names in dynamic values are case-sensitive in KQL
                value = value.get(part) if isinstance(value, dict) else None
            return value

        return get

    def _atom(self) -> Predicate:
        tok = self._take()
        if tok == ("op", "("):
            inner = self._or()
            if self._take() != ("op", ")"):
                raise _QueryError("missing ')'")
            return inner
        column = self._operand(tok)
        op = self._take()
        if op[0] == "word" and op[1].lower() in ("has", "!has"):
            value = self._take()
            if value[0] != "str":
                raise _QueryError(f"expected a quoted string after {op[1]}")
            return _has(column, value[1], negate=op[1].startswith("!"))
        if op[1] in self._OPS and op[0] == "op":
            value = self._take()
            if value[0] != "str":
                raise _QueryError(f"expected a quoted string after {op[1]}")
            return _compare(column, op[1], [value[1]])
        if op[1].lower() in self._IN_OPS:
            if self._take() != ("op", "("):
                raise _QueryError(f"expected '(' after {op[1]}")
            values: list[str] = []
            while True:
                value = self._take()
                if value[0] != "str":
                    raise _QueryError(f"expected a quoted string in the {op[1]} list")
                values.append(value[1])
                sep = self._take()
                if sep == ("op", ")"):
                    break
                if sep != ("op", ","):
                    raise _QueryError(f"expected ',' or ')' in the {op[1]} list")
            return _compare(column, op[1].lower(), values)
        raise _QueryError(f"unsupported operator '{op[1]}' (supported: ==, !=, =~, !~, in, !in, in~, !in~, has, !has)")


def _any_of(parts: list[Predicate]) -> Predicate:
    return lambda row: any(p(row) for p in parts)


def _all_of(parts: list[Predicate]) -> Predicate:
    return lambda row: all(p(row) for p in parts)


def _kql_string(value: Any) -> str:
    """``tostring()`` of a cell: a dynamic value as compact JSON, a boolean as ``true``/``false``,
    null as the empty string (learn.microsoft.com/kusto/query/tostring-function)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _compare(column: Getter, op: str, values: list[str]) -> Predicate:
    # ==, != and in are case-sensitive; =~, !~ and in~ are not (learn.microsoft.com/kusto/query/
    # datatypes-string-operators).
    insensitive = op in ("=~", "!~", "in~", "!in~")
    negate = op.startswith("!")
    wanted = {v.lower() for v in values} if insensitive else set(values)

    def pred(row: JsonObj) -> bool:
        cell = _kql_string(column(row))
        hit = (cell.lower() if insensitive else cell) in wanted
        return hit != negate

    return pred


def _has(column: Getter, term: str, *, negate: bool) -> Predicate:
    """``has``: case-insensitive, the right side is a whole term (or a run of terms) of the left
    side. Terms are maximal runs of ASCII letters and digits (learn.microsoft.com/kusto/query/
    datatypes-string-operators, "What is a term?"), so a match must not extend into a letter or
    digit on either side. A right side with inner punctuation (``kv.vault.azure.net``) matches
    as that exact run, bounded the same way; this phrase reading is the sandbox's (the docs
    describe only single terms)."""
    needle = term.lower()
    pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(needle) + r"(?![A-Za-z0-9])")

    def pred(row: JsonObj) -> bool:
        hit = bool(needle) and pattern.search(_kql_string(column(row)).lower()) is not None
        return hit != negate

    return pred


def _split_pipes(query: str) -> list[str]:
    parts, buf, quote_char = [], [], ""
    for ch in query:
        if quote_char:
            buf.append(ch)
            if ch == quote_char:
                quote_char = ""
        elif ch in "'\"":
            quote_char = ch
            buf.append(ch)
        elif ch == "|":
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    if quote_char:
        raise _QueryError("unterminated string literal")
    parts.append("".join(buf).strip())
    return parts


def _parse_query(query: str) -> tuple[list[Predicate], list[str] | None, int | None]:
    """The supported KQL subset: ``Resources`` then any of ``| where <expr>``,
    ``| project col, ...`` (top-level columns), ``| limit N`` / ``| take N``.

    Raises :class:`_QueryError` for anything else.
    """
    stages = _split_pipes(query)
    if stages[0].lower() != "resources":
        raise _QueryError("the query must start with the 'Resources' table")
    preds: list[Predicate] = []
    project: list[str] | None = None
    limit: int | None = None
    for stage in stages[1:]:
        head, _, rest = stage.partition(" ")
        head = head.lower()
        if head == "where":
            preds.append(_WhereParser(_tokens(rest)).parse())
        elif head == "project":
            cols = [c.strip() for c in rest.split(",") if c.strip()]
            unknown = [c for c in cols if c.lower() not in _COLUMN_BY_LOWER]
            if not cols or unknown:
                raise _QueryError(
                    f"project supports top-level columns only ({', '.join(GRAPH_COLUMNS)}); got {', '.join(unknown)}"
                )
            project = [_COLUMN_BY_LOWER[c.lower()] for c in cols]
        elif head in ("limit", "take"):
            if not rest.strip().isdigit():
                raise _QueryError(f"{head} needs a non-negative integer")
            limit = int(rest.strip())
        else:
            raise _QueryError(
                f"the operator '{head or stage}' is not supported (supported: where, project, limit, take)"
            )
    return preds, project, limit


def _graph_rows(world: World, subscriptions: set[str]) -> list[JsonObj]:
    rows: list[JsonObj] = []
    for v in world.vaults.values():
        if v.subscription.lower() in subscriptions:
            row = _graph_row(
                world,
                rid=v.id,
                name=v.name,
                rtype=KEYVAULT_TYPE,
                loc=v.location,
                sub=v.subscription,
                rg=v.resource_group,
            )
            row.update(tags=dict(v.tags), properties=vault_json(world, v)["properties"])
            rows.append(row)
    for r in world.resources.values():
        if r.subscription.lower() in subscriptions:
            row = _graph_row(
                world,
                rid=r.id,
                name=r.name,
                rtype=r.type,
                loc=r.location,
                sub=r.subscription,
                rg=r.resource_group,
            )
            view = resource_json(r)
            row.update(
                tags=view["tags"],
                properties=view["properties"],
                identity=view.get("identity"),
                sku=view.get("sku"),
                kind=view.get("kind", ""),
            )
            rows.append(row)
    rows.sort(key=lambda row: str(row["id"]).lower())
    return rows


def _graph_row(world: World, *, rid: str, name: str, rtype: str, loc: str, sub: str, rg: str) -> JsonObj:
    # Resource Graph reports type and resource group lower-cased, locations without spaces.
    return {
        "id": rid,
        "name": name,
        "type": rtype.lower(),
        "tenantId": world.tenant_id,
        "kind": "",
        "location": _loc_slug(loc),
        "resourceGroup": rg.lower(),
        "subscriptionId": sub,
        "managedBy": "",
        "sku": None,
        "plan": None,
        "properties": {},
        "tags": {},
        "identity": None,
        "zones": None,
        "extendedLocation": None,
    }


def _graph_error(message: str) -> Response:
    return json_response(
        400,
        {
            "error": {
                "code": "BadRequest",
                "message": "Please provide below info when asking for support: the query is invalid.",
                "details": [{"code": "InvalidQuery", "message": message}],
            }
        },
    )


@ROUTER.route("POST", r"/providers/Microsoft\.ResourceGraph/resources")
def graph_query(world: World, req: Request, _m: _re.Match[str]) -> Response:
    body = _body(req)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        return _graph_error("The 'query' property is required.")
    subs_raw = body.get("subscriptions")
    if subs_raw is not None and (not isinstance(subs_raw, list) or not all(isinstance(s, str) for s in subs_raw)):
        return _graph_error("subscriptions must be an array of subscription ids.")
    subscriptions = {s.lower() for s in (subs_raw or world.subscriptions)} & set(world.subscriptions)
    options = body.get("options") or {}
    if not isinstance(options, dict):
        return _graph_error("options must be an object.")
    if str(options.get("resultFormat") or "objectArray").lower() != "objectarray":
        return _graph_error("Only resultFormat 'objectArray' is supported by the sandbox.")
    try:
        preds, project, limit = _parse_query(query)
    except _QueryError as err:
        return _graph_error(f"Query is invalid: {err}.")
    top = options.get("$top", GRAPH_DEFAULT_TOP)
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= GRAPH_MAX_TOP:
        return _graph_error(f"$top must be an integer between 1 and {GRAPH_MAX_TOP}.")
    offset = options.get("$skip") or 0
    token = options.get("$skipToken")
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(str(token).encode()).decode())
        except (ValueError, binascii.Error):
            return _graph_error("The $skipToken is not valid.")
    if not isinstance(offset, int) or offset < 0:
        return _graph_error("$skip must be a non-negative integer.")
    rows = [row for row in _graph_rows(world, subscriptions) if all(p(row) for p in preds)]
    if limit is not None:
        rows = rows[:limit]
    page = rows[offset : offset + top]
    if project is not None:
        page = [{c: row.get(c) for c in project} for row in page]
    out: JsonObj = {
        "totalRecords": len(rows),
        "count": len(page),
        "resultTruncated": "false",
        "data": page,
        "facets": [],
    }
    if offset + top < len(rows):
        out["$skipToken"] = base64.urlsafe_b64encode(str(offset + top).encode()).decode()
    return json_response(200, out)
