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
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from shared.app import Keysteward
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal
from shared.keyuri import parse_key_uri
from shared.runbooks import MODES, RestoreRequest, RevokeRequest, RunView, resume_unfinished, runbooks_for

EXIT_OK, EXIT_PROBLEM = 0, 1
# Beyond the verify deadline itself: time for the acting steps and the last poll.
_WAIT_MARGIN = timedelta(minutes=2)


class Out(Protocol):
    as_json: bool

    def emit(self, doc: Any, lines: Callable[[], list[str]]) -> None: ...


def cli_principal() -> Principal:
    """The operator at the terminal; Azure RBAC on their credential is what gates the CLI."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (container without passwd entry)
        user = "unknown"
    return Principal(object_id=f"cli:{user}", name=user, roles=frozenset({ROLE_READ, ROLE_REVOKE, ROLE_RESTORE}))


def _budget(app: Keysteward, args: argparse.Namespace) -> timedelta:
    return timedelta(0) if args.no_wait else app.settings.verify_deadline + _WAIT_MARGIN


def view_lines(view: RunView) -> list[str]:
    run = view.run
    head = f"{run.run_id}  {run.kind} {run.key}  {run.status}"
    if view.waiting:
        head += f" (waiting: {view.waiting})"
    if view.duplicate:
        head += " (already restored by this run)"
    lines = [head, f"  by {run.caller_name} ({run.caller_oid}); reason: {run.reason}; ticket: {run.ticket}"]
    for step in view.steps:
        when = step.finished.isoformat() if step.finished else "-"
        lines.append(f"  {step.index + 1}. {step.name:<9} {step.status:<10} attempt {step.attempt}  {when}"
                     + (f"  error: {step.error}" if step.error else ""))
    if run.result:
        lines.append(f"  result: {run.result}")
    return lines


def _exit(view: RunView) -> int:
    return EXIT_PROBLEM if view.run.status in ("failed", "partially-succeeded") else EXIT_OK


def cmd_revoke(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    key = parse_key_uri(args.key, allowed_vaults=app.settings.vaults)
    books = runbooks_for(app)
    if args.dry_run:
        plan = books.plan(key, args.mode)

        def plan_lines() -> list[str]:
            lines = [f"dry run: {args.mode} {key}: {plan['summary']['affected']} binding(s) affected"]
            lines += [f"  {b['affected']:<10} {b['service']:<7} {b['version'] or 'versionless'}  {b['resourceId']}"
                      for b in plan["bindings"]]
            lines += [f"  collateral {b['service']:<7} {b['key']}  {b['resourceId']}" for b in plan["collateral"]]
            lines += [f"  UNKNOWN    {u['objectId']}  {u['succeeded']} ok, {u['failed']} failed, last {u['lastCall']}"
                      " (in the audit log, in no inventory)" for u in plan.get("unknownIdentities") or []]
            evidence = plan.get("usageEvidence") or {}
            if evidence and evidence.get("state") != "available":
                lines.append(f"  usage evidence: {evidence.get('state')}: {evidence.get('reason')}")
            lines.append(f"  changes: {plan['changes']}")
            return lines

        out.emit(plan, plan_lines)
        return EXIT_OK
    request = RevokeRequest(key=key, mode=args.mode, reason=args.reason, ticket=args.ticket, emergency=args.emergency)
    view = books.revoke(request, cli_principal(), budget=_budget(app, args))
    out.emit(view.as_dict(), lambda: view_lines(view))
    return _exit(view)


def cmd_restore(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    request = RestoreRequest(run_id=args.run, reason=args.reason, ticket=args.ticket)
    view = runbooks_for(app).restore(request, cli_principal(), budget=_budget(app, args))
    out.emit(view.as_dict(), lambda: view_lines(view))
    return _exit(view)


def cmd_runs(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    books = runbooks_for(app)
    if args.run:
        view = books.get(args.run)
        out.emit(view.as_dict(), lambda: view_lines(view))
        return EXIT_OK
    key = parse_key_uri(args.key, allowed_vaults=app.settings.vaults) if args.key else None
    runs = books.runs(key, limit=args.limit)
    doc = {"runs": [{"run": r.run_id, "kind": r.kind, "key": r.key, "status": r.status,
                     "caller": r.caller_name, "ticket": r.ticket, "created": r.created.isoformat()} for r in runs]}
    out.emit(doc, lambda: [f"{r.run_id}  {r.kind:<7} {r.status:<19} {r.key}  {r.ticket}" for r in runs])
    return EXIT_OK


def cmd_resume(app: Keysteward, args: argparse.Namespace, out: Out) -> int:
    if args.run:
        view = runbooks_for(app).resume(args.run, budget=_budget(app, args))
        out.emit(view.as_dict(), lambda: view_lines(view))
        return _exit(view)
    report = resume_unfinished(app, budget=_budget(app, args))
    doc = {"runs": [v.as_dict() for v in report.views], "errors": report.errors}
    out.emit(doc, lambda: [ln for v in report.views for ln in view_lines(v)]
             + [f"error: {rid}: {e}" for rid, e in report.errors.items()])
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

__all__ = ["HANDLERS", "add_commands", "cli_principal", "view_lines"]
