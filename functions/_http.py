"""Shared helpers of the HTTP triggers: JSON responses, body parsing, error mapping, and the
authentication + audit wrapper every route goes through (:func:`guarded`).

Errors always answer ``{"error": {"code", "message", "field"}}``, never a stack trace:

=============================  ======================================================
ValidationError                400 ``BadRequest`` (``field`` names the input at fault)
AuthError                      401 ``Unauthorized`` / 403 ``Forbidden``
NotFoundError                  404 ``NotFound``
PermanentError                 its status when it is a client error (400, 409, 412,
                               422), else 409, with its code (default ``Conflict``)
TransientError                 503 ``ServiceUnavailable`` with ``Retry-After``
anything else                  500 ``InternalError``, generic message; the exception is
                               logged with a correlation id that the answer repeats
=============================  ======================================================

Every call through :func:`guarded` leaves exactly one ``audit`` log line: caller object id
and name, operation, key, run, HTTP status and outcome.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import azure.functions as func
import structlog

from functions._root import get_app
from shared.app import Keysteward
from shared.auth import AuthError, Principal, header_trusted, principal_from_headers, require_role
from shared.errors import NotFoundError, PermanentError, TransientError, ValidationError

MAX_BODY_BYTES: Final = 16_384
# The function key may come as ``?code=KEY``; the host hands it to the function with the other
# query parameters, so routes that refuse unknown parameters must let it through.
FUNCTION_KEY_PARAM: Final = "code"
# When a transient failure carries no Retry-After of its own.
DEFAULT_RETRY_AFTER_S: Final = 30
_CLIENT_ERROR_STATUSES: Final = frozenset({400, 409, 412, 422})

log = structlog.get_logger("keysteward.http")
audit_log = structlog.get_logger("keysteward.audit")


def json_response(status: int, body: Any, *, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    """``body`` as a JSON response (``application/json``, UTF-8)."""
    return func.HttpResponse(
        body=json.dumps(body, default=str, ensure_ascii=False),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers=dict(headers or {}),
    )


def error_response(status: int, code: str, message: str, field: str | None = None, *,
                   headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    """The error document ``{"error": {"code", "message", "field"}}``."""
    return json_response(status, {"error": {"code": code, "message": message, "field": field}}, headers=headers)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            # Two parsers could keep different copies of a repeated name: refuse the ambiguity.
            raise ValidationError(f"the field {name!r} appears twice", field=name)
        out[name] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValidationError(f"{name} is not valid JSON", field="body")


def read_json_body(req: func.HttpRequest, *, max_bytes: int = MAX_BODY_BYTES,
                   allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises ValidationError (``field="body"``) when it is larger than ``max_bytes``, not UTF-8,
    not JSON, not an object, repeats a name, or is empty (unless ``allow_empty``: then ``{}``).
    """
    raw = req.get_body() or b""
    if len(raw) > max_bytes:
        raise ValidationError(f"the body is larger than {max_bytes} bytes", field="body")
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationError("a JSON object body is required", field="body")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except UnicodeDecodeError as err:
        raise ValidationError("the body is not UTF-8", field="body") from err
    except json.JSONDecodeError as err:
        raise ValidationError(f"the body is not valid JSON (line {err.lineno}, column {err.colno})",
                              field="body") from err
    except (ValueError, RecursionError) as err:
        # An integer longer than Python converts (ValueError), or nesting deeper than the parser recurses.
        raise ValidationError("the body is not valid JSON (a number too long or nesting too deep)",
                              field="body") from err
    if not isinstance(doc, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    return doc


_TYPE_NAMES: Final = {str: "a string", bool: "true or false", int: "an integer", dict: "an object", list: "an array"}


def check_fields(body: Mapping[str, Any], *, required: Mapping[str, type], optional: Mapping[str, type] | None = None,
                 max_text: int = 2000) -> dict[str, Any]:
    """``body`` after checking it has every ``required`` field, no field outside ``required`` and
    ``optional``, and each value of its declared type (``bool`` exactly, never 0/1 or "true";
    strings trimmed, non-empty for required ones, at most ``max_text`` characters).

    Raises ValidationError naming the first field at fault.
    """
    optional = optional or {}
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    out: dict[str, Any] = {}
    for name, kind in [*required.items(), *optional.items()]:
        if name not in body:
            if name in required:
                raise ValidationError(f"the field {name!r} is required", field=name)
            continue
        value = body[name]
        ok = type(value) is kind if kind in (bool, int) else isinstance(value, kind)
        if not ok:
            raise ValidationError(f"the field {name!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}", field=name)
        if isinstance(value, str):
            value = value.strip()
            if name in required and not value:
                raise ValidationError(f"the field {name!r} must not be empty", field=name)
            if len(value) > max_text:
                raise ValidationError(f"the field {name!r} is longer than {max_text} characters", field=name)
        out[name] = value
    return out


@dataclass
class Audit:
    """What a handler tells the audit line about the call (set what applies)."""

    key: str | None = None
    run: str | None = None
    outcome: str | None = None


Handler = Callable[[Principal, Audit], func.HttpResponse]


def _headers(req: func.HttpRequest) -> dict[str, str]:
    return {str(k): str(v) for k, v in req.headers.items()}


def _retry_after(err: TransientError) -> str:
    seconds = err.retry_after if err.retry_after and err.retry_after > 0 else DEFAULT_RETRY_AFTER_S
    return str(max(1, math.ceil(seconds)))


def _map_error(err: Exception, correlation: str) -> func.HttpResponse:
    if isinstance(err, AuthError):
        return error_response(err.status, "Unauthorized" if err.status == 401 else "Forbidden", err.message)
    if isinstance(err, ValidationError):
        return error_response(400, "BadRequest", str(err), err.field)
    if isinstance(err, NotFoundError):
        return error_response(404, "NotFound", str(err))
    if isinstance(err, PermanentError):
        status = err.status if err.status in _CLIENT_ERROR_STATUSES else 409
        code = err.code or ("BadRequest" if status == 400 else "Conflict")
        return error_response(status, code, str(err))
    if isinstance(err, TransientError):
        return error_response(503, "ServiceUnavailable", f"{err}; retry later",
                              headers={"Retry-After": _retry_after(err)})
    return error_response(500, "InternalError", f"internal error (correlation id {correlation}); see the service logs")


def guarded(req: func.HttpRequest, *, role: str | tuple[str, ...], operation: str, handler: Handler,
            app: Keysteward | None = None, environ: Mapping[str, str] | None = None) -> func.HttpResponse:
    """Authenticates the caller, checks ``role`` (any one of them, for a tuple), runs
    ``handler(principal, audit)`` and maps its errors (table in the module docstring); writes the one audit line.

    The principal header is believed only where :func:`shared.auth.header_trusted` says so
    (``environ`` defaults to the process environment, ``app`` to the composition root's).
    Nothing in the request is read before the caller is authenticated and authorised.
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(operation=operation)
    audit = Audit()
    principal: Principal | None = None
    correlation = uuid.uuid4().hex
    try:
        app = app or get_app()
        trusted = header_trusted(app.settings, os.environ if environ is None else environ)
        principal = principal_from_headers(_headers(req), trusted=trusted)
        structlog.contextvars.bind_contextvars(caller_oid=principal.object_id)
        require_role(principal, role)
        response = handler(principal, audit)
    except (AuthError, ValidationError, PermanentError, TransientError) as err:
        response = _map_error(err, correlation)
        if isinstance(err, TransientError | PermanentError) and not isinstance(err, ValidationError | NotFoundError):
            log.warning("request-refused", status=response.status_code, error=str(err))
    except Exception as err:
        log.exception("request-failed", correlation=correlation, error_type=type(err).__name__)
        response = _map_error(err, correlation)
    audit_log.info(
        "audit",
        operation=operation,
        caller_oid=principal.object_id if principal else None,
        caller_name=principal.name if principal else None,
        key=audit.key,
        run=audit.run,
        status=response.status_code,
        outcome=audit.outcome or ("ok" if response.status_code < 400 else "refused"
                                  if response.status_code < 500 else "error"),
    )
    return response


__all__ = [
    "FUNCTION_KEY_PARAM",
    "MAX_BODY_BYTES",
    "Audit",
    "Handler",
    "check_fields",
    "error_response",
    "guarded",
    "json_response",
    "read_json_body",
]
