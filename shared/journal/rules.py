"""Behaviour shared by both journal implementations: key and run-id forms, JSON limits, checks,
and how a run or step changes (create, update, claim, complete) before either backend stores it.

:class:`~shared.journal.TableJournal` and the in-memory test double both call these, so the two
apply the same rules by construction, not by keeping two copies in step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from shared.clock import Clock
from shared.errors import ConfigError, PermanentError, ValidationError
from shared.journal.model import (
    COMPLETE_STEP_STATUSES,
    FINAL_STEP_STATUSES,
    JSON_MAX_CHARS,
    PROPERTY_MAX_CHARS,
    RUN_KINDS,
    RUN_STATUSES,
    STEP_RESULT_MAX_CHARS,
    TRUNCATED_PREVIEW_CHARS,
    JsonDict,
    Run,
    Step,
)

# Inverting milliseconds against this (year 2286) makes RowKeys sort newest first.
_MS_CEILING: Final = 9_999_999_999_999
_RUN_ID_TIME_FORMAT: Final = "%Y%m%dT%H%M%S"
_RUN_ID_TIME_LEN: Final = 19  # "20240501T120000123Z": seconds, milliseconds, "Z"


def normalise_key(key: str) -> str:
    """The form in which a key URI identifies a lease and a key's runs: trimmed, without a
    trailing ``/``, lower-case (Key Vault names are case-insensitive)."""
    return key.strip().rstrip("/").lower()


def key_hash(key: str) -> str:
    """A Table-safe partition/row key for a key URI: sha256 hex of its normalised form."""
    return hashlib.sha256(normalise_key(key).encode("utf-8")).hexdigest()


def new_run_id(now: datetime) -> str:
    """A run id that sorts by creation time: ``20240501T120000123Z-<10 hex chars>``.

    URL-safe and a valid Table key; the random suffix keeps ids created in the same
    millisecond (by any instance) distinct.
    """
    now = now.astimezone(UTC)
    return f"{now:{_RUN_ID_TIME_FORMAT}}{now.microsecond // 1000:03d}Z-{secrets.token_hex(5)}"


def run_row_key(run_id: str) -> str | None:
    """The RowKey ordering ``run_id`` newest first; ``None`` if ``run_id`` is not one of ours
    (malformed ids cannot name a stored run)."""
    stamp, sep, suffix = run_id.partition("-")
    if not sep or len(stamp) != _RUN_ID_TIME_LEN or not stamp.endswith("Z") or not suffix.isalnum():
        return None
    try:
        seconds = datetime.strptime(stamp[:15], _RUN_ID_TIME_FORMAT).replace(tzinfo=UTC)
        millis = int(stamp[15:18])
    except ValueError:
        return None
    ms = int(seconds.timestamp()) * 1000 + millis
    return f"{_MS_CEILING - ms:013d}-{run_id}"


def dump_json(value: Mapping[str, Any], *, what: str, limit: int = JSON_MAX_CHARS) -> str:
    """``value`` as ASCII JSON of at most ``limit`` characters (a larger value becomes a
    truncation marker holding a preview). Raises ValidationError if ``value`` is not
    JSON-serialisable."""
    try:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValidationError(f"{what} is not JSON-serialisable: {err}", field=what) from err
    if len(text) <= limit:
        return text
    marker = {"truncated": True, "originalChars": len(text), "preview": text[:TRUNCATED_PREVIEW_CHARS]}
    return json.dumps(marker, ensure_ascii=True, separators=(",", ":"))


def load_json(text: str | None) -> JsonDict:
    """The dict stored as ``text`` (``None`` or empty: an empty dict)."""
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise PermanentError(f"journal holds non-object JSON: {text[:80]!r}")
    return value


def _clip(text: str) -> str:
    """``text`` cut to fit one Table string property, saying so."""
    if len(text) <= PROPERTY_MAX_CHARS:
        return text
    tail = " ...[truncated]"
    return text[: PROPERTY_MAX_CHARS - len(tail)] + tail


def _require_text(value: str, *, what: str) -> str:
    if len(value) > PROPERTY_MAX_CHARS:
        raise ValidationError(f"{what} is longer than {PROPERTY_MAX_CHARS} characters", field=what)
    return value


def _check(value: str, allowed: frozenset[str], *, what: str) -> str:
    if value not in allowed:
        raise ValidationError(f"{what} {value!r} is not one of {sorted(allowed)}", field=what)
    return value


def _check_index(index: int) -> int:
    if not 0 <= index <= 9999:  # the RowKey is 4 digits wide
        raise ValidationError(f"step index {index} is outside 0..9999", field="index")
    return index


def _utc(value: datetime) -> datetime:
    """A plain aware-UTC datetime (the SDK returns a subclass carrying the wire text)."""
    value = value.astimezone(UTC)
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second,
        value.microsecond, tzinfo=UTC,
    )


def _now(clock: Clock) -> datetime:
    now = clock.now()
    if now.tzinfo is None:
        raise ConfigError("the clock returned a naive datetime; the journal needs aware UTC")
    return _utc(now)


def _copy_json(value: JsonDict) -> JsonDict:
    copied: JsonDict = json.loads(json.dumps(value))
    return copied


def _new_run(
    now: datetime,
    *,
    kind: str,
    key: str,
    caller_oid: str,
    caller_name: str,
    reason: str,
    ticket: str,
    params: Mapping[str, Any],
    status: str,
) -> Run:
    if not key.strip():
        raise ValidationError("a run needs a key URI", field="key")
    return Run(
        run_id=new_run_id(now),
        kind=_check(kind, RUN_KINDS, what="kind"),
        key=_require_text(key, what="key"),
        status=_check(status, RUN_STATUSES, what="status"),
        caller_oid=_require_text(caller_oid, what="caller_oid"),
        caller_name=_require_text(caller_name, what="caller_name"),
        reason=_require_text(reason, what="reason"),
        ticket=_require_text(ticket, what="ticket"),
        params=load_json(dump_json(params, what="params")),
        result={},
        created=now,
        updated=now,
        etag="",
    )


def _updated_run(
    run: Run,
    clock: Clock,
    *,
    status: str | None,
    result: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None,
) -> Run:
    return dataclasses.replace(
        run,
        status=run.status if status is None else _check(status, RUN_STATUSES, what="status"),
        result=run.result if result is None else load_json(dump_json(result, what="result")),
        params=run.params if params is None else load_json(dump_json(params, what="params")),
        updated=_now(clock),
    )


def _claim(
    current: Step | None,
    run_id: str,
    index: int,
    name: str,
    *,
    owner: str,
    stale_after: timedelta,
    now: datetime,
) -> Step | None:
    """The step as ``owner`` would claim it, or ``None`` if it must not be claimed."""
    if current is None:
        return Step(
            run_id=run_id, index=index, name=name, status="running", attempt=1, owner=owner,
            started=now, finished=None, result={}, error=None, etag="",
        )
    if current.name != name:
        raise PermanentError(
            f"step {index} of run {run_id} is recorded as {current.name!r}, not {name!r}",
            code="StepMismatch",
        )
    if current.status in FINAL_STEP_STATUSES:
        return None
    if current.status == "running" and current.owner != owner and now - current.started < stale_after:
        return None
    return dataclasses.replace(
        current, status="running", attempt=current.attempt + 1, owner=owner, started=now,
        finished=None, error=None,
    )


def _completed(
    step: Step, clock: Clock, *, status: str, result: Mapping[str, Any], error: str | None
) -> Step:
    if step.status != "running":
        raise PermanentError(
            f"step {step.index} of run {step.run_id} is {step.status}, not claimed: nothing to complete",
            code="StepNotClaimed",
        )
    return dataclasses.replace(
        step,
        status=_check(status, COMPLETE_STEP_STATUSES, what="status"),
        result=load_json(dump_json(result, what="result", limit=STEP_RESULT_MAX_CHARS)),
        error=None if error is None else _clip(error),
        finished=_now(clock),
    )
