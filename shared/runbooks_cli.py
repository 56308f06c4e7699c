"""The runbook commands of the ``keysteward`` CLI: ``revoke``, ``restore``, ``runs``, ``resume``.

They call the same core as the HTTP triggers (:mod:`shared.runbooks`), with the operator's
own Azure credential; the caller recorded in the journal is ``cli:<user>``. Unlike the HTTP
triggers, the CLI waits for verification by default (up to the verify deadline);
``--no-wait`` returns once the acting steps are done, like the API. The two-person rule
applies here too: its approval is given through ``POST /api/runs/{id}/approve``.

Exit codes: 0 succeeded (or still verifying with ``--no-wait``), 1 failed or
partially-succeeded, 2 bad usage (handled by :mod:`shared.cli`).
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Protocol

from rich.console import RenderableType

from shared.app import Keysteward
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal
from shared.clirender import duration, record_text, short_id, subscription_of, table, when
from shared.keyuri import parse_key_uri
from shared.runbooks import MODES, RestoreRequest, RevokeRequest, RunView, resume_unfinished

EXIT_OK, EXIT_PROBLEM = 0, 1
# Beyond the verify deadline itself: time for the acting steps and the last poll.
_WAIT_MARGIN = timedelta(minutes=2)
# How long each resume call may poll before the progress display is refreshed: the runbooks'
# verify interval (30 s), so that showing progress never makes the services polled more often.
_POLL_SLICE = timedelta(seconds=30)

_VAULT = "https://kv-contoso-prod-weu.vault.azure.net"
EXAMPLES: dict[str, str] = {
    "revoke": f"keysteward revoke --key {_VAULT}/keys/cmk-cosmos --mode disable --reason 'key compromise' "
              "--ticket SEC-202 --dry-run",
    "restore": "keysteward restore --run RUN_ID --reason 'drill over' --ticket SEC-202   "
               "(RUN_ID: see `keysteward runs`)",
    "runs": f"keysteward runs --key {_VAULT}/keys/cmk-cosmos",
    "resume": "keysteward resume          (every unfinished run; or `keysteward resume RUN_ID`)",
}


class Out(Protocol):
    as_json: bool
    clock_name: str
    interactive: bool  # a person at a terminal: show progress

    def emit(self, doc: Any, render: Callable[[], Sequence[RenderableType]]) -> None: ...

    def progress(self, text: str, *, total: float | None) -> AbstractContextManager[Callable[..., None]]: ...


def cli_principal() -> Principal:
    """The operator at the terminal; Azure RBAC on their credential is what gates the CLI."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (container without passwd entry)
        user = "unknown"
    return Principal(object_id=f"cli:{user}", name=user, roles=frozenset({ROLE_READ, ROLE_REVOKE, ROLE_RESTORE}))


def _budget(app: Keysteward, args: argparse.Namespace) -> timedelta:
    return timedelta(0) if args.no_wait else app.settings.verify_deadline + _WAIT_MARGIN


def _result_text(result: Any) -> str:
    """A step's or run's result as ``name: value`` pairs, records counted, never a Python repr."""
    return record_text(result) if result not in (None, "", {}) else ""


def view_lines(view: RunView, clock: str = "UTC wall clock") -> list[RenderableType]:
    """A run: who, why, its status, then its steps as a table (times in ``clock``)."""
    run = view.run
    head = f"run {run.run_id}: {run.kind} {run.key}: {run.status}"
    if view.waiting:
        head += f" (waiting: {view.waiting})"
    if view.duplicate:
        head += " (already restored by this run)"
    lines: list[RenderableType] = [
        head, f"  by {run.caller_name} ({run.caller_oid}); reason: {run.reason}; ticket: {run.ticket}"]
    steps = table("#", "step", "status", "attempt", "finished", "took", "result")
    for step in view.steps:
        took = duration(step.finished - step.started) if step.finished else "-"
        steps.add_row(str(step.index + 1), step.name, step.status, str(step.attempt), when(step.finished), took,
                      (f"error: {step.error}" if step.error else _result_text(step.result)))
    if view.steps:
        lines.append(steps)
    if run.result:
        lines.append(f"  result: {_result_text(run.result)}")
    lines.append(f"times: {clock}")
    return lines


def _exit(view: RunView) -> int:
    return EXIT_PROBLEM if view.run.status in ("failed", "partially-succeeded") else EXIT_OK


def blast_radius_lines(plan: dict[str, Any]) -> list[RenderableType]:
    """The dry run as people read it: every binding grouped by service and subscription, with
    the version it uses and whether the revocation reaches it; counts; then what would change."""
    summary = plan["summary"]
    rows = [*plan["bindings"], *[{**b, "affected": "collateral"} for b in plan["collateral"]]]
    reached = {"yes": "yes", "maybe": "maybe (versionless, version unknown)", "no": "no",
               "collateral": "yes (same identity, other key)"}
    lines: list[RenderableType] = [
        f"dry run: revoke ({plan['mode']}) {plan['key']}: {summary['affected']} of {len(plan['bindings'])} "
        f"binding(s) reached" + (f", {len(plan['collateral'])} collateral" if plan["collateral"] else "")]
    grid = table("service", "subscription", "resource", "version", "reached?")
    ordered = sorted(rows, key=lambda b: (str(b["service"]), str(b.get("subscription") or ""), str(b["resourceId"])))
    def group(b: dict[str, Any]) -> tuple[str, str]:
        return str(b["service"]), str(b.get("subscription") or subscription_of(str(b["resourceId"])))

    for i, b in enumerate(ordered):
        first = i == 0 or group(ordered[i - 1]) != group(b)
        last = i + 1 == len(ordered) or group(ordered[i + 1]) != group(b)
        service, subscription = group(b) if first else ("", "")
        grid.add_row(service, subscription, short_id(str(b["resourceId"])), str(b.get("version") or "versionless"),
                     reached.get(str(b["affected"]), str(b["affected"])), end_section=last)
    if ordered:
        lines.append(grid)
    counts = table("count by", "", "reached")
    for label, key in (("service", "byService"), ("subscription", "bySubscription"), ("version", "byVersion")):
        for name, n in sorted(summary.get(key, {}).items()):
            counts.add_row(label, str(name), str(n))
    if summary.get("byService"):
        lines.append(counts)
    changes = plan["changes"]
    if "disable" in changes:
        lines.append(f"would disable: {', '.join(changes['disable']) or 'nothing'}; "
                     f"already disabled: {', '.join(changes['alreadyDisabled']) or 'none'}")
    else:
        entries = changes.get("removeAccess") or []
        lines.append(f"would remove {len(entries)} access polic(y/ies) from {changes.get('vault')}")
        for e in entries:
            lines.append(f"  - {record_text(e)}")
    unknown = plan.get("unknownIdentities") or []
    if unknown:
        callers = table("unknown identity (audit log, no inventory)", "succeeded", "failed", "last call")
        for u in unknown:
            callers.add_row(str(u["objectId"]), str(u["succeeded"]), str(u["failed"]), str(u["lastCall"]))
        lines.append(callers)
    evidence = plan.get("usageEvidence") or {}
    if evidence and evidence.get("state") != "available":
        lines.append(f"usage evidence: {evidence.get('state')}: {evidence.get('reason')}")
    lines.extend(str(note) for note in plan.get("restorePoints") or [])
    if plan.get("needsApproval"):
        lines.append("needs a second approver (two-person rule) unless --emergency")
    lines.append("nothing was changed (dry run)")
    return lines


def _drive(app: Keysteward, view: RunView, args: argparse.Namespace, out: Out) -> RunView:
    """Waits for verification of a started run, with progress: the run is resumed in short
    slices until it leaves ``running`` or the verify deadline (plus margin) passes."""
    if args.no_wait or view.run.status != "running":
        return view
    books = app.runbooks
    if not out.interactive:
        # No one watches: one call that waits the whole budget (fewest journal round trips).
        return books.resume(view.run.run_id, budget=_budget(app, args))
    # The budget is of the app's clock, as the runbooks count it (the sandbox's, in sandbox mode).
    end = app.clock.now() + _budget(app, args)
    total = max(len(view.steps), 1)
    label = f"{view.run.kind} {view.run.run_id}: verifying (deadline {duration(app.settings.verify_deadline)})"
    with out.progress(label, total=total) as update:
        while view.run.status == "running" and (left := end - app.clock.now()) > timedelta(0):
            done = sum(1 for s in view.steps if s.finished)
            update(completed=done, total=max(len(view.steps), total))
            view = books.resume(view.run.run_id, budget=min(_POLL_SLICE, left))
        update(completed=len(view.steps), total=max(len(view.steps), 1))
    return view


def cmd_revoke(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    key = parse_key_uri(args.key, allowed_vaults=app.settings.vaults)
    books = app.runbooks
    if args.dry_run:
        plan = books.plan(key, args.mode)
        out.emit(plan, lambda: blast_radius_lines(plan))
        return EXIT_OK
    request = RevokeRequest(key=key, mode=args.mode, reason=args.reason, ticket=args.ticket, emergency=args.emergency)
    view = _drive(app, books.revoke(request, cli_principal(), budget=timedelta(0)), args, out)
    out.emit(view.as_dict(), lambda: view_lines(view, out.clock_name))
    return _exit(view)


def cmd_restore(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    request = RestoreRequest(run_id=args.run, reason=args.reason, ticket=args.ticket)
    view = _drive(app, app.runbooks.restore(request, cli_principal(), budget=timedelta(0)), args, out)
    out.emit(view.as_dict(), lambda: view_lines(view, out.clock_name))
    return _exit(view)


def cmd_runs(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    books = app.runbooks
    if args.run:
        view = books.get(args.run)
        out.emit(view.as_dict(), lambda: view_lines(view, out.clock_name))
        return EXIT_OK
    key = parse_key_uri(args.key, allowed_vaults=app.settings.vaults) if args.key else None
    runs = books.runs(key, limit=args.limit)
    doc = {"runs": [{"run": r.run_id, "kind": r.kind, "key": r.key, "status": r.status,
                     "caller": r.caller_name, "ticket": r.ticket, "created": r.created.isoformat()} for r in runs]}

    def render() -> list[RenderableType]:
        if not runs:
            return ["no runs"]
        rows = table("run", "kind", "status", "key", "ticket", "by", "created")
        for r in runs:
            rows.add_row(r.run_id, r.kind, r.status, r.key, r.ticket, r.caller_name, when(r.created))
        return [rows, f"times: {out.clock_name}; `keysteward runs --run RUN` shows one with its steps"]

    out.emit(doc, render)
    return EXIT_OK


def cmd_resume(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    if args.run:
        view = app.runbooks.resume(args.run, budget=timedelta(0))
        view = _drive(app, view, args, out)
        out.emit(view.as_dict(), lambda: view_lines(view, out.clock_name))
        return _exit(view)
    report = resume_unfinished(app.runbooks, budget=_budget(app, args))
    doc = {"runs": [v.as_dict() for v in report.views], "errors": report.errors}
    out.emit(doc, lambda: [*(ln for v in report.views for ln in view_lines(v, out.clock_name)),
                           *(f"error: {rid}: {e}" for rid, e in report.errors.items())]
             or ["no unfinished runs"])
    return EXIT_PROBLEM if report.errors or any(_exit(v) for v in report.views) else EXIT_OK


def add_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Registers the runbook commands with the CLI's ``add(name, help)`` (which adds ``--json``)."""
    sp = add("revoke", "revoke a key (or one version): disable it, or remove the bound identities' access")
    sp.add_argument("--key", required=True, help="key URI: versionless = the whole key, versioned = that version")
    sp.add_argument("--mode", required=True, choices=MODES, help="disable the versions, or remove vault access")
    sp.add_argument("--reason", required=True, help="why (recorded in the journal and the outcome event)")
    sp.add_argument("--ticket", required=True, help="change or incident ticket")
    sp.add_argument("--dry-run", action="store_true", help="show the blast radius; change nothing")
    sp.add_argument("--emergency", action="store_true", help="skip the two-person rule (recorded)")
    sp.add_argument("--no-wait", action="store_true", help="return once revoked; verification continues on resume")
    sp = add("restore", "undo a finished revocation: re-enable what it disabled, re-add the access it removed")
    sp.add_argument("--run", required=True, help="the revocation's run id")
    sp.add_argument("--reason", required=True, help="why")
    sp.add_argument("--ticket", required=True, help="change or incident ticket")
    sp.add_argument("--no-wait", action="store_true", help="return once restored; verification continues on resume")
    sp = add("runs", "list revoke/restore runs (newest first), or show one with its steps")
    sp.add_argument("--key", help="only runs of this key URI")
    sp.add_argument("--run", help="show this run with its steps")
    sp.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    sp = add("resume", "continue an interrupted run (or every unfinished run without RUN)")
    sp.add_argument("run", nargs="?", help="run id (default: every unfinished run)")
    sp.add_argument("--no-wait", action="store_true", help="do not wait for verification")


HANDLERS: dict[str, Callable[[Keysteward, argparse.Namespace, Any], int]] = {
    "revoke": cmd_revoke,
    "restore": cmd_restore,
    "runs": cmd_runs,
    "resume": cmd_resume,
}

__all__ = ["EXAMPLES", "HANDLERS", "add_commands", "blast_radius_lines", "cli_principal", "view_lines"]
