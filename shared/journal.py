"""The runbook journal: runs, their steps, and one lease per key, in Azure Table storage.

A *run* is one revoke or restore runbook invocation; its *steps* are recorded before and
after they act, so an interrupted run can be resumed (by ``resume`` or by the timer's sweep)
and finishes with the same result as an uninterrupted one. A *lease* per key keeps two
runbooks on one key from interleaving.

Every write that changes a record is guarded by the record's ETag (optimistic concurrency):

- :meth:`Journal.update_run`, :meth:`Journal.complete_step` and :meth:`Journal.renew_lease`
  raise :class:`ConflictError` when the record changed since it was read;
- :meth:`Journal.claim_step` and :meth:`Journal.acquire_lease` use insert-if-absent or an
  ETag-guarded replace, so two instances racing for the same step or lease never both win:
  the loser gets ``None``.

Two implementations share one behaviour (and one test suite): :class:`TableJournal` over
``azure-data-tables`` (Azurite locally and in CI, the Functions storage account in Azure),
and a test double in memory (``tests/memory_journal.py``) for fast tests of the runbook logic at
this Protocol boundary. Runbooks never fall back to memory: a revocation journaled where no
other instance sees it, and gone when the process exits, could never be restored.

Storage layout (:class:`TableJournal`), three tables named ``{prefix}runs``,
``{prefix}steps`` and ``{prefix}leases``:

``{prefix}runs``
    One *run entity* per run in partition ``run``, RowKey ``<inverted ms>-<run id>`` so a
    partition query returns the newest first (the RowKey is derived from the run id, so
    :meth:`~Journal.get_run` is a point read). One *key index entity* per run in partition
    ``key-<sha256 of the normalised key URI>`` with the same RowKey: listing a key's runs
    reads that small partition, then fetches the runs by RowKey, never scanning the table.
    The index entity is written first; a crash before the run entity is written leaves a
    dangling index entry, which listings skip.
``{prefix}steps``
    PartitionKey = run id, RowKey = the step index zero-padded to 4 digits, so a partition
    query returns a run's steps in order.
``{prefix}leases``
    PartitionKey = sha256 of the normalised key URI (Table keys forbid ``/ \\ # ?``), RowKey
    ``lease``.
``{prefix}revocations``
    The revocations in force: PartitionKey = sha256 of the normalised versionless key URI,
    RowKey = the revocation's run id. A key's partition answers "is it revoked, by which run,
    in which mode" in one read, however many runs the journal holds.

Dict columns (``params``, ``result``) are stored as JSON text. A Table string property holds
at most 64 KiB (32 K UTF-16 code units), so the JSON is written ASCII-only and split over
``Name``, ``Name1``, ``Name2`` ... properties of 32,000 characters; at most
:data:`JSON_MAX_CHARS` characters are kept per run column (an entity holds at most 1 MiB).

A step result may be far larger (the blast radius of a key bound to thousands of services):
up to :data:`STEP_RESULT_MAX_CHARS` characters. One larger than :data:`JSON_MAX_CHARS` goes to
*page rows* in the step's partition, RowKey ``<index>.<token>.<page>``, each holding
:data:`PAGE_MAX_CHARS` characters; the step entity names the token (the SHA-256 of the JSON
text, so a reader checks what it reassembles) and the page count. Pages are written
(idempotently: same text, same rows) before the ETag-guarded write of the step entity that
refers to them, so a reader never sees a step whose pages are missing; pages left behind by a
writer that lost the race are never referenced (and never read).

(Size: one module of about 1,100 lines because the Protocol, the record types, the Table
layout and the helpers both backends share are one contract; :class:`TableJournal` is the only
class above 250 lines, one method per Protocol call plus the paging. Splitting the Table backend
into its own module is the next step when this file grows.)

A value larger than its limit is replaced by ``{"truncated": true, "originalChars": n,
"preview": "..."}`` rather than refused, because a step result is written after the step has
acted and must not be lost. Both implementations apply the same rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.clock import Clock
from shared.errors import (
    ConfigError,
    NotFoundError,
    PermanentError,
    TransientError,
    ValidationError,
    translate,
)

JsonDict = dict[str, Any]

RUN_KINDS: Final = frozenset({"revoke", "restore"})
RUN_STATUSES: Final = frozenset(
    {"running", "succeeded", "failed", "partially-succeeded", "pending-approval", "canceled"}
)
FINISHED_RUN_STATUSES: Final = frozenset({"succeeded", "failed", "partially-succeeded", "canceled"})
STEP_STATUSES: Final = frozenset({"pending", "running", "succeeded", "failed", "skipped"})
# Final step outcomes: a claim returns None for them, so a resumed run never repeats a step
# that already acted, nor turns a recorded failure into a different result.
FINAL_STEP_STATUSES: Final = frozenset({"succeeded", "failed", "skipped"})
# What complete_step may record: a final outcome, or "pending" to hand the step back
# (e.g. after a transient error) so the next claim need not wait for stale_after.
COMPLETE_STEP_STATUSES: Final = FINAL_STEP_STATUSES | {"pending"}

# A Table string property holds 64 KiB of UTF-16, i.e. 32,768 code units; JSON is written
# ASCII-only, so one character is one code unit and 32,000 leaves room to spare.
PROPERTY_MAX_CHARS: Final = 32_000
# Six chunks per JSON column (~384 KB as UTF-16) keep a run with two large columns under
# the 1 MiB entity limit.
JSON_MAX_PARTS: Final = 6
JSON_MAX_CHARS: Final = PROPERTY_MAX_CHARS * JSON_MAX_PARTS
# A step result beyond JSON_MAX_CHARS is paged: 12 properties (384,000 characters, 768 KB as
# UTF-16) per page row keeps each row under the 1 MiB entity limit.
PAGE_PARTS: Final = 12
PAGE_MAX_CHARS: Final = PROPERTY_MAX_CHARS * PAGE_PARTS
# About 30,000 bindings of a blast radius; 21 page rows.
STEP_RESULT_MAX_CHARS: Final = 8_000_000
# How much of an oversized JSON value is kept, as a string, for a human to read.
TRUNCATED_PREVIEW_CHARS: Final = 4_000
# Azure Table queries accept at most 15 discrete comparisons in one filter.
_FILTER_MAX_TERMS: Final = 15
_MAX_QUERY_PAGE: Final = 1000  # the service returns at most 1,000 entities per page
# Inverting milliseconds against this (year 2286) makes RowKeys sort newest first.
_MS_CEILING: Final = 9_999_999_999_999
_RUN_PARTITION: Final = "run"
_LEASE_ROW: Final = "lease"
_RUN_ID_TIME_FORMAT: Final = "%Y%m%dT%H%M%S"
_RUN_ID_TIME_LEN: Final = 19  # "20240501T120000123Z": seconds, milliseconds, "Z"
# Bounded retries when a racing writer changes a lease between our read and our write.
_LEASE_ATTEMPTS: Final = 3


class ConflictError(TransientError):
    """The record changed (or vanished) since it was read: its ETag no longer matches.

    Transient in the sense that re-reading the record and deciding again may succeed. For a
    step it means another owner took the step over (ours was deemed stale); for a lease, that
    the lease was lost (expired and taken, or released).
    """


@dataclass(frozen=True)
class Run:
    """One revoke or restore runbook invocation.

    ``params`` holds the runbook's inputs (mode, dryRun, emergency, the revoke run a restore
    refers to ...) and ``result`` its outcome; both are JSON-serialisable dicts. ``etag``
    identifies this version of the record for :meth:`Journal.update_run`.
    """

    run_id: str
    kind: str
    key: str
    status: str
    caller_oid: str
    caller_name: str
    reason: str
    ticket: str
    params: JsonDict
    result: JsonDict
    created: datetime
    updated: datetime
    etag: str

    @property
    def finished(self) -> bool:
        """True once the run reached a final status (succeeded, failed, partially-succeeded,
        canceled); ``running`` and ``pending-approval`` are not finished."""
        return self.status in FINISHED_RUN_STATUSES


@dataclass(frozen=True)
class Step:
    """One named step of a run, as last recorded.

    ``owner`` is whoever claimed it last; ``attempt`` counts claims (1 for the first);
    ``started`` is when the current attempt was claimed; ``finished`` is set by
    :meth:`Journal.complete_step` (``None`` while running). ``error`` is ``None`` unless the
    step recorded one.
    """

    run_id: str
    index: int
    name: str
    status: str
    attempt: int
    owner: str
    started: datetime
    finished: datetime | None
    result: JsonDict
    error: str | None
    etag: str


@dataclass(frozen=True)
class Lease:
    """The exclusive right of ``owner`` to run a runbook on ``key`` until ``expires``."""

    key: str
    owner: str
    expires: datetime
    etag: str


@dataclass(frozen=True)
class Revocation:
    """A revocation in force on a key: written as the first act of a revoke, removed only by a
    successful restore of that run. ``key`` is the versionless key URI; ``restoring`` names the
    restore run under way, if any (the hold stands aside for it)."""

    key: str
    run_id: str
    mode: str
    created: datetime
    restoring: str | None
    etag: str


class Journal(Protocol):
    """Where runbooks record runs and steps, take per-key leases, and keep the revocations in force."""

    def create_run(
        self,
        *,
        kind: str,
        key: str,
        caller_oid: str,
        caller_name: str,
        reason: str,
        ticket: str,
        params: Mapping[str, Any],
        status: str = "running",
    ) -> Run:
        """Records a new run with a fresh sortable, URL-safe id.

        Raises :class:`~shared.errors.ValidationError` for an unknown kind or status, or a
        text field longer than :data:`PROPERTY_MAX_CHARS`.
        """
        ...

    def get_run(self, run_id: str) -> Run:
        """The run ``run_id``; raises :class:`~shared.errors.NotFoundError` if there is none."""
        ...

    def list_runs(
        self, *, key: str | None = None, statuses: set[str] | None = None, limit: int = 100
    ) -> list[Run]:
        """Up to ``limit`` runs, newest first: of ``key`` only when given (the key URI is
        compared normalised: trimmed, no trailing ``/``, lower-case), and only with a status in
        ``statuses`` when given. Runs created in the same millisecond are ordered by id."""
        ...

    def update_run(
        self,
        run: Run,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        """Replaces the given fields (``None``: keep) if the run is unchanged since ``run`` was
        read, and returns the new version. ``result`` and ``params`` replace, not merge.

        Raises :class:`ConflictError` if the run changed since, NotFoundError if it is gone,
        ValidationError for an unknown status.
        """
        ...

    def steps(self, run_id: str) -> list[Step]:
        """The recorded steps of ``run_id`` ordered by index (empty for an unknown run)."""
        ...

    def claim_step(
        self, run_id: str, index: int, name: str, *, owner: str, stale_after: timedelta
    ) -> Step | None:
        """Atomically marks step ``index`` running for ``owner`` and returns it.

        The step is created if absent, or taken over (``attempt`` + 1) if it is pending,
        running for ``owner`` itself, or running for another owner but stale (claimed more
        than ``stale_after`` ago: that owner is presumed dead; ``stale_after`` must exceed the
        step's longest run time). ``None`` means: do not run it, either because it is final
        (succeeded, failed, skipped: read :meth:`steps` for the outcome) or because another
        live owner holds it, or won a race for it just now.

        Raises :class:`~shared.errors.PermanentError` if the recorded step at ``index`` has a
        different name (the runbook's definition changed under a running run).
        """
        ...

    def complete_step(
        self, step: Step, *, status: str, result: Mapping[str, Any], error: str | None = None
    ) -> Step:
        """Records the outcome of a step claimed as ``step`` (succeeded, failed, skipped, or
        pending to hand it back), if it is unchanged since the claim.

        Raises :class:`ConflictError` if another owner took the step over meanwhile (its
        outcome, not ours, then counts), ValidationError for another status, PermanentError
        if ``step`` is not a running (claimed) step, NotFoundError if the step is gone.
        """
        ...

    def acquire_lease(self, key: str, *, owner: str, ttl: timedelta) -> Lease | None:
        """Takes the lease on ``key`` for ``owner`` until now + ``ttl``.

        Succeeds when there is no lease, when it has expired, or when ``owner`` already holds
        it (then it is extended). ``None`` means another owner holds an unexpired lease, or won
        a race for it just now.
        """
        ...

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease:
        """Extends ``lease`` to now + ``ttl``; raises :class:`ConflictError` if it was lost
        (taken over after expiry, or released) since ``lease`` was obtained."""
        ...

    def release_lease(self, lease: Lease) -> None:
        """Gives the lease back if it is still as obtained; a lease already lost is left alone."""
        ...

    def list_unfinished(self, older_than: datetime | None = None) -> list[Run]:
        """Runs with status ``running`` last updated before ``older_than`` (``None``: all of
        them), oldest first: the timer's resume sweep. ``pending-approval`` runs are excluded:
        they wait for a person, not for a resume."""
        ...

    def put_revocation(self, *, key: str, run_id: str, mode: str) -> Revocation:
        """Records that revocation ``run_id`` is in force on ``key``; idempotent (an existing
        record of that run is returned as it is)."""
        ...

    def revocations(self, key: str | None = None) -> list[Revocation]:
        """The revocations in force on ``key`` (every key when ``None``), oldest first. One
        partition read per key, however many runs the journal holds."""
        ...

    def update_revocation(self, revocation: Revocation, *, restoring: str | None) -> Revocation:
        """Sets ``restoring``; raises :class:`ConflictError` if the record changed or is gone."""
        ...

    def end_revocation(self, *, key: str, run_id: str) -> None:
        """Removes the record of ``run_id`` on ``key`` (no error when it is already gone)."""
        ...


# --------------------------------------------------------------------------------------
# Helpers shared by both implementations


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


# --------------------------------------------------------------------------------------
# Azure Table storage


def _split(name: str, text: str) -> dict[str, str]:
    parts = [text[i : i + PROPERTY_MAX_CHARS] for i in range(0, len(text), PROPERTY_MAX_CHARS)] or [""]
    return {(name if n == 0 else f"{name}{n}"): part for n, part in enumerate(parts)}


def _join(entity: Mapping[str, Any], name: str, max_parts: int = JSON_MAX_PARTS) -> str:
    parts = [str(entity.get(name) or "")]
    for n in range(1, max_parts):
        part = entity.get(f"{name}{n}")
        if part is None:
            break
        parts.append(str(part))
    return "".join(parts)


def _token(text: str) -> str:
    """What names a paged result and checks it when read back: a SHA-256 prefix of its text."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _page_prefix(index: int, token: str) -> str:
    return f"{index:04d}.{token}."


def _page_row(index: int, token: str, number: int) -> str:
    return f"{_page_prefix(index, token)}{number:04d}"


def _join_pages(pages: Mapping[str, Mapping[str, Any]], index: int, token: str, count: int, *, what: str) -> str:
    """The text stored over ``count`` page rows, checked against its token (a SHA-256 prefix).

    Raises TransientError when a page is missing or the text does not match: a page row is
    written before the step entity naming it, so this only happens when storage lost or
    changed a row; a retry re-reads."""
    parts: list[str] = []
    for number in range(count):
        page = pages.get(_page_row(index, token, number))
        if page is None:
            raise TransientError(f"result page {number} of {count} of {what} is missing")
        parts.append(_join(page, "Data", PAGE_PARTS))
    text = "".join(parts)
    if _token(text) != token:
        raise TransientError(f"the result pages of {what} do not match their checksum")
    return text


def _etag(metadata: Mapping[str, Any]) -> str:
    etag = metadata.get("etag")
    if not isinstance(etag, str) or not etag:
        raise TransientError("Table storage returned no ETag")
    return etag


def _entity_etag(entity: Any) -> str:
    return _etag(entity.metadata)


class TableJournal:
    """:class:`Journal` over Azure Table storage; see the module docstring for the layout.

    The three tables are created, if missing, at construction (raises TransientError or
    PermanentError if that fails). Thread-safe to the extent the SDK client is; the record
    guards (ETags, insert-if-absent) also hold across processes and instances.
    """

    def __init__(
        self, service: TableServiceClient, *, clock: Clock, table_prefix: str = "keysteward"
    ) -> None:
        self._clock = clock
        self._runs = self._table(service, f"{table_prefix}runs")
        self._steps = self._table(service, f"{table_prefix}steps")
        self._leases = self._table(service, f"{table_prefix}leases")
        self._revocations = self._table(service, f"{table_prefix}revocations")

    @staticmethod
    def _table(service: TableServiceClient, name: str) -> TableClient:
        try:
            return service.create_table_if_not_exists(name)
        except AzureError as err:
            raise translate(err, what=f"create table {name}") from err

    # runs -------------------------------------------------------------------------------

    def _run_entity(self, run: Run) -> dict[str, Any]:
        row = run_row_key(run.run_id)
        if row is None:  # only ids from new_run_id reach here
            raise ValidationError(f"malformed run id {run.run_id!r}", field="run_id")
        return {
            "PartitionKey": _RUN_PARTITION,
            "RowKey": row,
            "RunId": run.run_id,
            "Kind": run.kind,
            "Key": run.key,
            "Status": run.status,
            "CallerOid": run.caller_oid,
            "CallerName": run.caller_name,
            "Reason": run.reason,
            "Ticket": run.ticket,
            **_split("Params", dump_json(run.params, what="params")),
            **_split("Result", dump_json(run.result, what="result")),
            "Created": run.created,
            "Updated": run.updated,
        }

    @staticmethod
    def _to_run(entity: Mapping[str, Any], etag: str) -> Run:
        return Run(
            run_id=str(entity["RunId"]),
            kind=str(entity["Kind"]),
            key=str(entity["Key"]),
            status=str(entity["Status"]),
            caller_oid=str(entity.get("CallerOid") or ""),
            caller_name=str(entity.get("CallerName") or ""),
            reason=str(entity.get("Reason") or ""),
            ticket=str(entity.get("Ticket") or ""),
            params=load_json(_join(entity, "Params")),
            result=load_json(_join(entity, "Result")),
            created=_utc(entity["Created"]),
            updated=_utc(entity["Updated"]),
            etag=etag,
        )

    def create_run(
        self,
        *,
        kind: str,
        key: str,
        caller_oid: str,
        caller_name: str,
        reason: str,
        ticket: str,
        params: Mapping[str, Any],
        status: str = "running",
    ) -> Run:
        now = _now(self._clock)
        run = _new_run(
            now, kind=kind, key=key, caller_oid=caller_oid, caller_name=caller_name,
            reason=reason, ticket=ticket, params=params, status=status,
        )
        entity = self._run_entity(run)
        index = {
            "PartitionKey": f"key-{key_hash(key)}",
            "RowKey": entity["RowKey"],
            "RunId": run.run_id,
            "Key": run.key,
        }
        what = f"create run {run.run_id}"
        try:
            # Index first: a crash in between leaves a dangling index entry (skipped when
            # listing) rather than a run its key's listing cannot find.
            self._runs.create_entity(index)
            metadata = self._runs.create_entity(entity)
        except AzureError as err:
            raise translate(err, what=what) from err
        return dataclasses.replace(run, etag=_etag(metadata))

    def get_run(self, run_id: str) -> Run:
        row = run_row_key(run_id)
        if row is None:
            raise NotFoundError(f"no run {run_id!r}", code="RunNotFound", status=404)
        try:
            entity = self._runs.get_entity(_RUN_PARTITION, row)
        except AzureError as err:
            raise translate(err, what=f"read run {run_id}") from err
        return self._to_run(entity, _entity_etag(entity))

    def _query(self, table: TableClient, query: str, parameters: dict[str, Any], *, what: str,
               page: int = _MAX_QUERY_PAGE) -> Iterator[Any]:
        """Entities matching ``query`` in RowKey order, translating errors once."""
        try:
            yield from table.query_entities(query, parameters=parameters, results_per_page=page)
        except AzureError as err:
            raise translate(err, what=what) from err

    def list_runs(
        self, *, key: str | None = None, statuses: set[str] | None = None, limit: int = 100
    ) -> list[Run]:
        if limit <= 0:
            return []
        page = min(limit, _MAX_QUERY_PAGE)
        if key is None:
            query, parameters = "PartitionKey eq @pk", {"pk": _RUN_PARTITION}
            if statuses:
                query += " and " + _status_filter(statuses, parameters)
            entities = self._query(self._runs, query, parameters, what="list runs", page=page)
            return [self._to_run(e, _entity_etag(e)) for e in itertools.islice(entities, limit)]
        index = self._query(
            self._runs, "PartitionKey eq @pk", {"pk": f"key-{key_hash(key)}"},
            what="list runs of a key", page=page,
        )
        found: list[Run] = []
        for rows in _batched((str(e["RowKey"]) for e in index), _FILTER_MAX_TERMS):
            for run in self._runs_by_row(rows):
                if statuses is None or run.status in statuses:
                    found.append(run)
                    if len(found) >= limit:
                        return found
        return found

    def _runs_by_row(self, rows: list[str]) -> list[Run]:
        """The runs stored under ``rows`` (missing ones skipped), in RowKey order."""
        parameters: dict[str, Any] = {"pk": _RUN_PARTITION}
        terms = []
        for n, row in enumerate(rows):
            parameters[f"r{n}"] = row
            terms.append(f"RowKey eq @r{n}")
        # The SDK substitutes @names in space-separated words only, hence "( ... )".
        query = f"PartitionKey eq @pk and ( {' or '.join(terms)} )"
        entities = self._query(self._runs, query, parameters, what="read runs")
        return [self._to_run(e, _entity_etag(e)) for e in entities]

    def update_run(
        self,
        run: Run,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        updated = _updated_run(run, self._clock, status=status, result=result, params=params)
        try:
            metadata = self._runs.update_entity(
                self._run_entity(updated), mode=UpdateMode.REPLACE,
                etag=run.etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as err:
            raise ConflictError(f"run {run.run_id} changed since it was read") from err
        except AzureError as err:
            raise translate(err, what=f"update run {run.run_id}") from err
        return dataclasses.replace(updated, etag=_etag(metadata))

    def list_unfinished(self, older_than: datetime | None = None) -> list[Run]:
        query = "PartitionKey eq @pk and Status eq @status"
        parameters: dict[str, Any] = {"pk": _RUN_PARTITION, "status": "running"}
        if older_than is not None:
            query += " and Updated lt @before"
            parameters["before"] = _utc(older_than)
        entities = self._query(self._runs, query, parameters, what="list unfinished runs")
        return [self._to_run(e, _entity_etag(e)) for e in entities][::-1]

    # steps ------------------------------------------------------------------------------

    def _step_entity(self, step: Step) -> dict[str, Any]:
        """The step's entity; a result too large for it is written to page rows first."""
        entity: dict[str, Any] = {
            "PartitionKey": step.run_id,
            "RowKey": f"{step.index:04d}",
            "Name": step.name,
            "Status": step.status,
            "Attempt": step.attempt,
            "Owner": step.owner,
            "Started": step.started,
            **self._result_columns(step, dump_json(step.result, what="result", limit=STEP_RESULT_MAX_CHARS)),
        }
        if step.finished is not None:
            entity["Finished"] = step.finished
        if step.error is not None:
            entity["Error"] = step.error
        return entity

    def _result_columns(self, step: Step, text: str) -> dict[str, Any]:
        if len(text) <= JSON_MAX_CHARS:
            return _split("Result", text)
        token = _token(text)
        pages = [text[i : i + PAGE_MAX_CHARS] for i in range(0, len(text), PAGE_MAX_CHARS)]
        what = f"write result pages of step {step.index} ({step.name}) of run {step.run_id}"
        for number, page in enumerate(pages):
            row = {"PartitionKey": step.run_id, "RowKey": _page_row(step.index, token, number),
                   **_split("Data", page)}
            try:
                self._steps.upsert_entity(row, mode=UpdateMode.REPLACE)
            except AzureError as err:
                raise translate(err, what=what) from err
        return {"Result": "", "ResultToken": token, "ResultPages": len(pages)}

    def _to_step(self, entity: Mapping[str, Any], pages: Mapping[str, Mapping[str, Any]] | None = None) -> Step:
        """The step in ``entity``; its result pages are taken from ``pages`` (RowKey -> page
        row) when given, else read."""
        finished = entity.get("Finished")
        error = entity.get("Error")
        run_id, index = str(entity["PartitionKey"]), int(entity["RowKey"])
        token, count = entity.get("ResultToken"), entity.get("ResultPages")
        if token and count:
            if pages is None:
                prefix = _page_prefix(index, str(token))  # ends in ".", and "/" sorts right after it
                pages = {str(p["RowKey"]): p for p in self._query(
                    self._steps, "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    {"pk": run_id, "lo": prefix, "hi": prefix[:-1] + "/"},
                    what=f"read result pages of step {index} of run {run_id}")}
            text = _join_pages(pages, index, str(token), int(count), what=f"step {index} of run {run_id}")
        else:
            text = _join(entity, "Result")
        return Step(
            run_id=run_id,
            index=index,
            name=str(entity["Name"]),
            status=str(entity["Status"]),
            attempt=int(entity["Attempt"]),
            owner=str(entity.get("Owner") or ""),
            started=_utc(entity["Started"]),
            finished=None if finished is None else _utc(finished),
            result=load_json(text),
            error=None if error is None else str(error),
            etag=_entity_etag(entity),
        )

    def steps(self, run_id: str) -> list[Step]:
        entities = list(self._query(
            self._steps, "PartitionKey eq @pk", {"pk": run_id}, what=f"list steps of run {run_id}"
        ))
        pages = {str(e["RowKey"]): e for e in entities if len(str(e["RowKey"])) > 4}
        return [self._to_step(e, pages) for e in entities if len(str(e["RowKey"])) == 4]

    def _get_step(self, run_id: str, index: int) -> Step | None:
        try:
            entity = self._steps.get_entity(run_id, f"{index:04d}")
        except AzureError as err:
            error = translate(err, what=f"read step {index} of run {run_id}")
            if isinstance(error, NotFoundError):
                return None
            raise error from err
        return self._to_step(entity)

    def claim_step(
        self, run_id: str, index: int, name: str, *, owner: str, stale_after: timedelta
    ) -> Step | None:
        _check_index(index)
        now = _now(self._clock)
        current = self._get_step(run_id, index)
        claimed = _claim(current, run_id, index, name, owner=owner, stale_after=stale_after, now=now)
        if claimed is None:
            return None
        what = f"claim step {index} ({name}) of run {run_id}"
        try:
            if current is None:
                metadata = self._steps.create_entity(self._step_entity(claimed))
            else:
                metadata = self._steps.update_entity(
                    self._step_entity(claimed), mode=UpdateMode.REPLACE,
                    etag=current.etag, match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None  # another instance claimed (or completed) it between our read and write
        except AzureError as err:
            raise translate(err, what=what) from err
        return dataclasses.replace(claimed, etag=_etag(metadata))

    def complete_step(
        self, step: Step, *, status: str, result: Mapping[str, Any], error: str | None = None
    ) -> Step:
        done = _completed(step, self._clock, status=status, result=result, error=error)
        what = f"complete step {step.index} ({step.name}) of run {step.run_id}"
        try:
            metadata = self._steps.update_entity(
                self._step_entity(done), mode=UpdateMode.REPLACE,
                etag=step.etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as err:
            raise ConflictError(f"{what}: another owner took the step over") from err
        except AzureError as err:
            raise translate(err, what=what) from err
        return dataclasses.replace(done, etag=_etag(metadata))

    # leases -----------------------------------------------------------------------------

    @staticmethod
    def _lease_entity(lease: Lease) -> dict[str, Any]:
        return {
            "PartitionKey": key_hash(lease.key),
            "RowKey": _LEASE_ROW,
            "Key": lease.key,
            "Owner": lease.owner,
            "Expires": lease.expires,
        }

    def acquire_lease(self, key: str, *, owner: str, ttl: timedelta) -> Lease | None:
        what = f"acquire lease on {key}"
        for _ in range(_LEASE_ATTEMPTS):
            now = _now(self._clock)
            wanted = Lease(key=key, owner=owner, expires=now + ttl, etag="")
            try:
                entity = self._leases.get_entity(key_hash(key), _LEASE_ROW)
            except AzureError as err:
                error = translate(err, what=what)
                if not isinstance(error, NotFoundError):
                    raise error from err
                try:
                    metadata = self._leases.create_entity(self._lease_entity(wanted))
                except ResourceExistsError:
                    continue  # someone created it first: look again (it may even be ours)
                except AzureError as create_err:
                    raise translate(create_err, what=what) from create_err
                return dataclasses.replace(wanted, etag=_etag(metadata))
            if entity["Owner"] != owner and _utc(entity["Expires"]) > now:
                return None
            try:
                metadata = self._leases.update_entity(
                    self._lease_entity(wanted), mode=UpdateMode.REPLACE,
                    etag=_entity_etag(entity), match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                continue
            except AzureError as err:
                raise translate(err, what=what) from err
            return dataclasses.replace(wanted, etag=_etag(metadata))
        return None  # the lease kept changing under us: someone else is actively taking it

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease:
        renewed = dataclasses.replace(lease, expires=_now(self._clock) + ttl)
        what = f"renew lease on {lease.key}"
        try:
            metadata = self._leases.update_entity(
                self._lease_entity(renewed), mode=UpdateMode.REPLACE,
                etag=lease.etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError as err:
            raise ConflictError(f"{what}: the lease was lost") from err
        except AzureError as err:
            error = translate(err, what=what)
            if isinstance(error, NotFoundError):
                raise ConflictError(f"{what}: the lease was released") from err
            raise error from err
        return dataclasses.replace(renewed, etag=_etag(metadata))

    def release_lease(self, lease: Lease) -> None:
        try:
            # A missing entity is not an error here: the SDK ignores 404 on delete.
            self._leases.delete_entity(
                key_hash(lease.key), _LEASE_ROW,
                etag=lease.etag, match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            return  # no longer ours: leave the new owner's lease alone
        except AzureError as err:
            raise translate(err, what=f"release lease on {lease.key}") from err


    # revocations in force ----------------------------------------------------------------
    # PartitionKey = key_hash(versionless key URI), RowKey = run id: one partition per key.

    @staticmethod
    def _to_revocation(entity: Mapping[str, Any]) -> Revocation:
        return Revocation(key=str(entity["Key"]), run_id=str(entity["RowKey"]), mode=str(entity["Mode"]),
                          created=_utc(entity["Created"]), restoring=str(entity.get("Restoring") or "") or None,
                          etag=_entity_etag(entity))

    def put_revocation(self, *, key: str, run_id: str, mode: str) -> Revocation:
        what = f"record revocation {run_id}"
        created = _now(self._clock)
        entity = {"PartitionKey": key_hash(key), "RowKey": run_id, "Key": key, "Mode": mode,
                  "Created": created, "Restoring": ""}
        try:
            metadata = self._revocations.create_entity(entity)
        except ResourceExistsError:
            try:
                return self._to_revocation(self._revocations.get_entity(key_hash(key), run_id))
            except AzureError as err:
                raise translate(err, what=what) from err
        except AzureError as err:
            raise translate(err, what=what) from err
        return Revocation(key=key, run_id=run_id, mode=mode, created=created, restoring=None,
                          etag=_etag(metadata))

    def revocations(self, key: str | None = None) -> list[Revocation]:
        what = "read revocations in force"
        try:
            if key is None:
                entities = list(self._revocations.list_entities())
            else:
                entities = list(self._revocations.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": key_hash(key)}))
        except AzureError as err:
            raise translate(err, what=what) from err
        return sorted((self._to_revocation(e) for e in entities), key=lambda r: (r.created, r.run_id))

    def update_revocation(self, revocation: Revocation, *, restoring: str | None) -> Revocation:
        what = f"update revocation {revocation.run_id}"
        entity = {"PartitionKey": key_hash(revocation.key), "RowKey": revocation.run_id, "Key": revocation.key,
                  "Mode": revocation.mode, "Created": revocation.created, "Restoring": restoring or ""}
        try:
            metadata = self._revocations.update_entity(entity, mode=UpdateMode.REPLACE, etag=revocation.etag,
                                                       match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as err:
            raise ConflictError(f"{what}: it changed since it was read") from err
        except AzureError as err:
            error = translate(err, what=what)
            if isinstance(error, NotFoundError):
                raise ConflictError(f"{what}: it was ended") from err
            raise error from err
        return dataclasses.replace(revocation, restoring=restoring, etag=_etag(metadata))

    def end_revocation(self, *, key: str, run_id: str) -> None:
        try:
            self._revocations.delete_entity(key_hash(key), run_id)  # the SDK ignores 404 on delete
        except AzureError as err:
            raise translate(err, what=f"end revocation {run_id}") from err


def _status_filter(statuses: Iterable[str], parameters: dict[str, Any]) -> str:
    terms = []
    for n, status in enumerate(sorted(statuses)):
        parameters[f"s{n}"] = status
        terms.append(f"Status eq @s{n}")
    return "( " + " or ".join(terms) + " )"  # spaced: the SDK substitutes @names per word


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def table_service(conn: str) -> TableServiceClient:
    """A ``TableServiceClient`` for a Storage connection string (no I/O).

    ``UseDevelopmentStorage=true`` (any case, optional trailing ``;``) means Azurite at its
    default address (``http://127.0.0.1:10002``, account ``devstoreaccount1``).
    Raises :class:`~shared.errors.ConfigError` for an empty or malformed connection string.
    """
    text = conn.strip().rstrip(";").strip()
    if text.replace(" ", "").lower() == "usedevelopmentstorage=true":
        text = "UseDevelopmentStorage=true"  # the SDK expands exactly this form to Azurite's defaults
    if not text:
        raise ConfigError("the journal's storage connection string is empty")
    try:
        return TableServiceClient.from_connection_string(text)
    except ValueError as err:
        raise ConfigError(f"the journal's storage connection string is malformed: {err}") from err


def from_connection_string(conn: str, *, clock: Clock, table_prefix: str = "keysteward") -> TableJournal:
    """A :class:`TableJournal` for a Storage connection string (see :func:`table_service`);
    creates the tables if missing, so it raises TransientError/PermanentError when Storage
    cannot be reached, and ConfigError for a malformed connection string.

    An identity-based account (no connection string): :func:`from_identity`.
    """
    return TableJournal(table_service(conn), clock=clock, table_prefix=table_prefix)


def from_identity(table_service_uri: str, credential: TokenCredential, *, clock: Clock,
                  table_prefix: str = "keysteward") -> TableJournal:
    """A :class:`TableJournal` for an identity-based account: its table service URI
    (``https://{account}.table.core.windows.net``) and a token credential; creates the tables
    if missing, raising as :func:`from_connection_string` does."""
    return TableJournal(TableServiceClient(endpoint=table_service_uri, credential=credential), clock=clock,
                        table_prefix=table_prefix)


# --------------------------------------------------------------------------------------
# Behaviour shared by both implementations


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
