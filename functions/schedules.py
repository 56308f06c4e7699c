"""Timers: scheduled rotation, and the full reconcile that heals lost events.

Schedules are app settings (NCRONTAB, 6 fields): ``KEYSTEWARD_ROTATION_SCHEDULE`` and
``KEYSTEWARD_RECONCILE_SCHEDULE``.
"""

from __future__ import annotations

import azure.functions as func
import structlog

from functions._root import get_app
from shared.errors import TransientError

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
    """The hold, the full reconcile, the retention sweep, unfinished runbooks and the gauges:
    one call (:meth:`shared.app.Keysteward.timer_pass`); any error fails the invocation so the
    platform records it, and the next pass tries again."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(timer="reconcile", past_due=timer.past_due)
    report = get_app().timer_pass()
    if report.held:
        log.warning("hold-pass", revocations=len(report.held))
    log.info("reconcile-pass", keys=len(report.passes), started=sum(len(r.started) for r in report.passes),
             failed=sum(len(r.failed) for r in report.passes))
    if report.sweep is not None:
        sweep = report.sweep
        log.info("retention-pass", run=sweep.run, retired=len(sweep.retired), repaired=len(sweep.repaired),
                 recovered=len(sweep.recovered), purged=len(sweep.purged), errors=len(sweep.errors))
    log.info("runbooks-resumed", runs=len(report.resumed.views), errors=len(report.resumed.errors))
    if report.errors:
        raise TransientError(f"timer pass finished with {len(report.errors)} error(s): {report.errors[0]}")
