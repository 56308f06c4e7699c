"""The journal's contract: its record types, the :class:`Journal` Protocol, its limits and statuses.

Both implementations (:class:`~shared.journal.TableJournal` and the in-memory test double) honour
what is written here; the package docstring (:mod:`shared.journal`) explains the guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from shared.errors import TransientError

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
