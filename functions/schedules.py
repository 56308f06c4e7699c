"""Timers: scheduled rotation, and the full reconcile that heals lost events.

Schedules are app settings (NCRONTAB, 6 fields): ``KEYSTEWARD_ROTATION_SCHEDULE`` and
``KEYSTEWARD_RECONCILE_SCHEDULE``.
"""

from __future__ import annotations

import azure.functions as func
import structlog

from functions._root import get_app
from shared.errors import PermanentError, TransientError
from shared.retention import maintenance_pass
from shared.runbooks import ResumeReport, resume_unfinished

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
log = structlog.get_logger("keysteward.timers")


@bp.function_name("rotation_schedule")
@bp.timer_trigger(arg_name="timer", schedule="%KEYSTEWARD_ROTATION_SCHEDULE%", use_monitor=True)
def rotation_schedule(timer: func.TimerRequest) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(timer="rotation", past_due=timer.past_due)
    results = get_app().rotation_sweep()
    log.info("rotation-pass", keys=len(results), rotated=sum(1 for r in results if r.rotated))


@bp.function_name("reconcile_schedule")
@bp.timer_trigger(arg_name="timer", schedule="%KEYSTEWARD_RECONCILE_SCHEDULE%", use_monitor=True)
def reconcile_schedule(timer: func.TimerRequest) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(timer="reconcile", past_due=timer.past_due)
    app = get_app()
    # The hold first: any version enabled (or access re-added) under a revocation in force goes
    # dark again before anything else looks at the key. A failure is reported with the others below.
    hold_errors: list[str] = []
    try:
        held = app.hold()
    except (TransientError, PermanentError) as err:
        held, hold_errors = [], [f"hold: {err}"]
    if held:
        log.warning("hold-pass", revocations=len(held))
    results = app.reconcile_all()
    log.info("reconcile-pass", keys=len(results), started=sum(len(r.started) for r in results),
             failed=sum(len(r.failed) for r in results))
    # Retention: recover keys deleted while in use, repair drift, retire eligible old versions.
    sweep = maintenance_pass(app)
    log.info("retention-pass", run=sweep.run, retired=len(sweep.retired), repaired=len(sweep.repaired),
             recovered=len(sweep.recovered), errors=len(sweep.errors))
    # Runbooks interrupted, or waiting on verification, go on from where their journal says.
    # (A Functions app always has AzureWebJobsStorage; an app without it has no runs to resume.)
    report = resume_unfinished(app) if app.has_journal else ResumeReport()
    log.info("runbooks-resumed", runs=len(report.views), errors=len(report.errors))
    problems = [*hold_errors, *sweep.errors, *report.errors]
    if problems:
        # Fail the invocation so the platform records it; the next pass tries again.
        raise TransientError(f"timer pass finished with {len(problems)} error(s): {problems[0]}")
