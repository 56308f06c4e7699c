"""The sandbox's Log Analytics workspace: KQL tokens, the expression parser, expression evaluation
and type checking against a table's schema."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandbox.logs.common import _TIMESPAN_LIT, Dt, QueryError, _parse_dt

if TYPE_CHECKING:
    pass

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


