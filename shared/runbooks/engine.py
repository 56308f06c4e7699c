"""The step engine: drives a run through its named steps, each claimed in the journal before
it acts and completed after, under one lease per key; pauses (``hold``), finishes or fails the
run. It knows nothing of what the steps do: they are given as a table per run kind.

A step body returns a typed :class:`~shared.runbooks.results.StepResult`; the engine records
its ``to_journal()`` form and hands later steps the recorded forms (``Ctx.results``), which
they read back with the result types' ``from_journal``. Running a step and persisting its
progress are kept apart (kopf's split between ``execution`` and ``progression``).
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from shared.clock import Clock
from shared.errors import PermanentError, TransientError
from shared.journal import STEP_RESULT_MAX_CHARS, ConflictError, Journal, Lease, Run, Step, dump_json
from shared.keyuri import parse_key_uri
from shared.notify import Notifier, Outcome
from shared.runbooks.model import (
    ACTING_STEPS,
    CONFLICT_ATTEMPTS,
    LEASE_TTL,
    STEP_STALE_AFTER,
    JsonDict,
    RunKind,
    RunStatus,
    RunView,
    StepHook,
    StepName,
    StepStatus,
    Waiting,
    sampled,
)
from shared.runbooks.results import Acted, StepResult, Verified

T = TypeVar("T")


def retry_on_conflict(attempt: Callable[[], T], *, what: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """``attempt()`` (which re-reads what it changes), repeated while it raises
    :class:`ConflictError` (the record changed between its read and its ETag-guarded write).
    Raises TransientError naming ``what`` when it keeps conflicting."""
    for _ in range(attempts):
        try:
            return attempt()
        except ConflictError:
            continue
    raise TransientError(f"{what} keeps changing; retry later")


@dataclass
class Ctx:
    """One drive of one run: its lease, the recorded results of the steps done so far."""

    run: Run
    lease: Lease
    owner: str
    budget_end: datetime
    results: dict[str, JsonDict] = field(default_factory=dict)
    finished: dict[str, datetime] = field(default_factory=dict)
    hold_until: datetime | None = None

    def acted(self) -> Acted:
        return Acted.from_journal(self.results.get(StepName.ACT, {}))

    def verified(self) -> Verified | None:
        raw = self.results.get(StepName.VERIFY)
        return Verified.from_journal(raw) if raw else None


class HandBack(Exception):
    """A step stops early (budget spent) with its progress; the run continues on resume."""

    def __init__(self, progress: StepResult) -> None:
        super().__init__("step handed back")
        self.progress = progress


class _Stop(Exception):
    """The drive stops without finishing the run (busy, lease lost, handed back)."""

    def __init__(self, waiting: Waiting | StepName) -> None:
        super().__init__(str(waiting))
        self.waiting = waiting


class _StepFailed(Exception):
    def __init__(self, step: str, error: str) -> None:
        super().__init__(f"step {step} failed: {error}")
        self.step = step
        self.error = error


StepBody = Callable[[Ctx], StepResult]


def final_status(acted: Acted, verified: Verified | None) -> RunStatus:
    failed = len(acted.failed) + len(acted.untagged or ())
    if failed and not acted.done:
        return RunStatus.FAILED
    if failed or (verified is not None and verified.unconfirmed) or acted.held:
        return RunStatus.PARTIAL
    return RunStatus.SUCCEEDED


def lease_key(run: Run) -> str:
    """Runs on one key (any version of it) share the versionless key's lease."""
    return parse_key_uri(run.key, allowed_vaults=None).versionless().uri


class Engine:
    """Drives runs through the steps of their kind; see the module docstring."""

    def __init__(self, *, journal: Journal, clock: Clock, notifier: Notifier,
                 steps: Mapping[RunKind, Mapping[StepName, StepBody]], hook: StepHook | None = None,
                 on_finished: Callable[[Run], None] | None = None) -> None:
        self._journal = journal
        self._clock = clock
        self._notifier = notifier
        self._steps = steps
        self._hook = hook
        self._on_finished = on_finished
        self._instance = secrets.token_hex(4)
        self._drives = 0
        self._lock = threading.Lock()
        self._log = structlog.get_logger("keysteward.runbooks")

    def _new_owner(self, run: Run) -> str:
        with self._lock:
            self._drives += 1
            return f"{self._instance}-{self._drives}:{run.run_id}"

    def drive(self, run: Run, budget: timedelta) -> RunView:
        """Runs ``run`` from its first unfinished step, within ``budget`` for waits; returns its
        view (finished, or paused with the reason)."""
        structlog.contextvars.bind_contextvars(run=run.run_id)
        lease = self._journal.acquire_lease(lease_key(run), owner=run.run_id, ttl=LEASE_TTL)
        if lease is None:
            self._log.info("run-waiting", run=run.run_id, reason="another run holds the key's lease")
            return RunView(run, self._journal.steps(run.run_id), waiting=Waiting.LEASE)
        ctx = Ctx(run=run, lease=lease, owner=self._new_owner(run), budget_end=self._clock.now() + budget)
        steps = self._steps[RunKind(run.kind)]
        try:
            for index, name in enumerate(StepName):
                self._step(ctx, index, name, steps[name])
                try:
                    ctx.lease = self._journal.renew_lease(ctx.lease, LEASE_TTL)
                except ConflictError as err:
                    raise _Stop(Waiting.LEASE) from err  # lost to another run: stop before the next step
            run = self._finish(ctx)
        except _Stop as stop:
            # The lease is kept: no other run on the key may act before this one finishes.
            self._hold(ctx, stop.waiting)
            self._log.info("run-paused", run=run.run_id, waiting=str(stop.waiting))
            current = self._journal.get_run(run.run_id)
            return RunView(current, self._journal.steps(run.run_id), waiting=stop.waiting)
        except _StepFailed as failed:
            run = self._fail(ctx, failed)
        self._journal.release_lease(ctx.lease)
        return RunView(run, self._journal.steps(run.run_id))

    def _hold(self, ctx: Ctx, waiting: Waiting | StepName) -> None:
        """Keeps the key's lease for a paused run: while verification is pending, until its
        deadline (plus one lease period for the last poll); otherwise as it is (it expires
        after LEASE_TTL if nobody resumes the run)."""
        if waiting != StepName.VERIFY or ctx.hold_until is None:
            return
        ttl = max(ctx.hold_until - self._clock.now(), timedelta(0)) + LEASE_TTL
        try:
            ctx.lease = self._journal.renew_lease(ctx.lease, ttl)
        except ConflictError:
            # Lost meanwhile (expired and taken): the next resume queues behind the new holder.
            self._log.warning("lease-lost", run=ctx.run.run_id)

    def _call_hook(self, run_id: str, step: str, phase: str) -> None:
        if self._hook is not None:
            self._hook(run_id, step, phase)

    def _step(self, ctx: Ctx, index: int, name: StepName, body: StepBody) -> None:
        run_id = ctx.run.run_id
        claimed = self._journal.claim_step(run_id, index, name, owner=ctx.owner, stale_after=STEP_STALE_AFTER)
        if claimed is None:
            recorded = next((s for s in self._journal.steps(run_id) if s.index == index), None)
            if recorded is None or recorded.status == StepStatus.RUNNING:
                raise _Stop(Waiting.BUSY)  # another live instance runs this step now
            if recorded.status == StepStatus.FAILED:
                raise _StepFailed(name, recorded.error or "failed")
            ctx.results[name] = recorded.result
            if recorded.finished is not None:
                ctx.finished[name] = recorded.finished
            return
        self._call_hook(run_id, name, "claimed")
        try:
            result = _fits(name, body(ctx).to_journal())
        except HandBack as back:
            self._complete(claimed, status=StepStatus.PENDING, result=back.progress.to_journal())
            raise _Stop(name) from None
        except TransientError as err:
            self._log.warning("step-retry-later", run=run_id, step=name, error=str(err))
            self._complete(claimed, status=StepStatus.PENDING, result={}, error=str(err))
            raise _Stop(name) from err
        except PermanentError as err:
            self._log.error("step-failed", run=run_id, step=name, error=str(err))
            self._complete(claimed, status=StepStatus.FAILED, result={}, error=str(err))
            raise _StepFailed(name, str(err)) from err
        self._call_hook(run_id, name, "acted")
        done = self._complete(claimed, status=StepStatus.SUCCEEDED, result=result)
        self._log.info("step-succeeded", run=run_id, step=name, attempt=claimed.attempt)
        ctx.results[name] = done.result
        if done.finished is not None:
            ctx.finished[name] = done.finished
        self._call_hook(run_id, name, "recorded")

    def _complete(self, step: Step, *, status: StepStatus, result: JsonDict, error: str | None = None) -> Step:
        try:
            return self._journal.complete_step(step, status=status, result=result, error=error)
        except ConflictError as err:
            # Our claim was deemed stale and another instance took the step over: its outcome counts.
            self._log.warning("step-taken-over", run=step.run_id, step=step.name)
            raise _Stop(Waiting.BUSY) from err

    def update_run(self, run_id: str, *, status: RunStatus, result: Mapping[str, Any]) -> Run:
        """Merges ``result`` into the run's result and sets ``status`` (ETag-guarded, retried)."""
        def attempt() -> Run:
            run = self._journal.get_run(run_id)
            return self._journal.update_run(run, status=status, result={**run.result, **result})

        return retry_on_conflict(attempt, what=f"run {run_id}")

    def _finish(self, ctx: Ctx) -> Run:
        acted, verified = ctx.acted(), ctx.verified()
        published = ctx.results.get(StepName.PUBLISH, {}).get("status")
        status = RunStatus(published) if published else final_status(acted, verified)
        summary = {
            "done": len(acted.done),
            **sampled("failed", acted.failed),
            "confirmed": len(verified.confirmed) if verified else 0,
            **sampled("unconfirmed", list(verified.unconfirmed) if verified else []),
            **sampled("unverifiable", verified.unverifiable if verified else ()),
            **sampled("held", acted.held or {}),
        }
        run = self.update_run(ctx.run.run_id, status=status, result=summary)
        self._log.info("run-finished", run=run.run_id, kind=run.kind, status=str(status), **{
            k: v for k, v in summary.items() if k in ("done", "confirmed")})
        if self._on_finished is not None:
            self._on_finished(run)
        return run

    def _fail(self, ctx: Ctx, failed: _StepFailed) -> Run:
        run = self.update_run(ctx.run.run_id, status=RunStatus.FAILED,
                              result={"failedStep": failed.step, "error": failed.error})
        kind = "RevocationFailed" if run.kind == RunKind.REVOKE else "RestoreFailed"
        self._notifier.publish([Outcome(kind, run.key, {
            "run": run.run_id, "key": run.key, "step": failed.step, "error": failed.error,
            "reason": run.reason, "ticket": run.ticket, "caller": run.caller_oid}, "incident",
            event_id=f"{run.run_id}.{kind}")])
        self._log.error("run-failed", run=run.run_id, step=failed.step, error=failed.error)
        return run


def _fits(step: str, result: JsonDict) -> JsonDict:
    """``result`` if it fits one journal record untruncated; the records of resolve, snapshot
    and act drive later steps (and a restore), so a truncated one must never be written."""
    text = dump_json(result, what=f"{step} result", limit=sys.maxsize)  # never the truncation marker
    if len(text) > STEP_RESULT_MAX_CHARS and step in ACTING_STEPS:
        raise PermanentError(f"the {step} result is too large for one journal record ({len(text)} characters)",
                             code="ResultTooLarge")
    return result


__all__ = ["Ctx", "Engine", "HandBack", "StepBody", "final_status", "lease_key", "retry_on_conflict"]
