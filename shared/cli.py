"""The ``keysteward`` command: the same core as the Functions app, for operators and local use.

It reads the same settings (environment variables; ``--settings FILE`` loads a
local.settings.json's ``Values`` first). Every command takes ``--json`` for scripts.
Exit codes: 0 success, 1 a check or operation found a problem, 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import structlog

from shared.app import Keysteward, build
from shared.config import load_settings
from shared.errors import ConfigError, KeystewardError, PermanentError, ValidationError
from shared.keyuri import parse_key_uri
from shared.logs import configure
from shared.model import KeyRef
from shared.reconcile import ActionKind, PassResult
from shared.runbooks_cli import HANDLERS as RUNBOOK_HANDLERS
from shared.runbooks_cli import add_commands as add_runbook_commands
from shared.workqueue import MemoryQueue

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class Output:
    """Writes either JSON (one document) or human lines; progress only on a terminal."""

    def __init__(self, *, as_json: bool, stream: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.as_json = as_json
        self.stream = stream
        self.err = err
        self.tty = err.isatty()

    def progress(self, text: str) -> None:
        if self.tty and not self.as_json:
            self.err.write("\r\033[K" + text)
            self.err.flush()

    def done_progress(self) -> None:
        if self.tty and not self.as_json:
            self.err.write("\r\033[K")
            self.err.flush()

    def emit(self, doc: Any, lines: Callable[[], list[str]]) -> None:
        if self.as_json:
            json.dump(doc, self.stream, indent=2, default=str)
            self.stream.write("\n")
        else:
            for line in lines():
                self.stream.write(line + "\n")


def pass_doc(result: PassResult) -> dict[str, Any]:
    return {
        "key": str(result.key),
        "currentVersion": result.current.version if result.current else None,
        "converged": result.converged,
        "bindings": [
            {
                "resourceId": a.binding.resource_id,
                "service": a.binding.service.value,
                "subscription": a.binding.subscription,
                "pinnedVersion": a.binding.pinned_version,
                "inUseVersion": a.binding.in_use_version,
                "action": a.kind.value,
                "reason": a.reason or None,
            }
            for a in result.actions
        ],
        "started": [s.binding.resource_id for s in result.started],
        "failed": [{"resourceId": b.resource_id, "reason": r} for b, r in result.failed],
    }


def pass_lines(result: PassResult) -> list[str]:
    head = f"{result.key}  current={result.current.version if result.current else '?'}"
    counts = ", ".join(f"{k.value}={result.count(k)}" for k in ActionKind if result.count(k))
    lines = [head, f"  {counts or 'no bindings'}"]
    for a in result.actions:
        if a.kind is not ActionKind.IN_SYNC and a.kind is not ActionKind.VERSIONLESS:
            lines.append(f"  {a.kind.value:<12} {a.binding.resource_id}" + (f"  ({a.reason})" if a.reason else ""))
    for b, reason in result.failed:
        lines.append(f"  FAILED       {b.resource_id}: {reason}")
    return lines


def _key(app: Keysteward, text: str, *, require_version: bool | None = None) -> KeyRef:
    return parse_key_uri(text, allowed_vaults=app.settings.vaults, require_version=require_version)


def cmd_plan(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key) if args.key else None
    results = app.reconcile_all(dry_run=True, key=key)
    out.emit({"plans": [pass_doc(r) for r in results]}, lambda: [ln for r in results for ln in pass_lines(r)])
    return EXIT_OK


def cmd_reconcile(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key) if args.key else None
    results = app.reconcile_all(key=key)
    deadline = time.monotonic() + args.timeout
    # Confirm passes: level-triggered, so a pass writes only what is still wrong.
    while args.wait and any(r.pending for r in results) and time.monotonic() < deadline:
        total = sum(len(r.actions) for r in results)
        pending = sum(len(r.started) + r.count(ActionKind.IN_FLIGHT) for r in results)
        out.progress(f"waiting for {pending} of {total} bindings to converge...")
        time.sleep(args.interval)
        results = app.reconcile_all(key=key)
    out.done_progress()
    out.emit({"passes": [pass_doc(r) for r in results]}, lambda: [ln for r in results for ln in pass_lines(r)])
    return EXIT_OK if all(r.converged for r in results) or not args.wait else EXIT_PROBLEM


def cmd_rotate(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key, require_version=False)
    result = app.rotator.rotate_now(key, reason="keysteward rotate")
    doc = {"key": str(key), "rotated": result.rotated, "newVersion": result.new_version}
    out.emit(doc, lambda: [f"{key}: rotated, new version {result.new_version}"])
    return EXIT_OK


def cmd_status(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    from shared.retention import key_status, status_lines  # noqa: PLC0415 - heavier module, only here

    key = _key(app, args.key, require_version=False)
    status = key_status(app, key)
    out.emit(status, lambda: status_lines(status))
    return EXIT_OK


def cmd_check(app: Keysteward, args: argparse.Namespace, out: Output) -> int:  # noqa: ARG001 - handler signature
    from shared.preflight import check_lines, run_check  # noqa: PLC0415

    doc = run_check(app)
    out.emit(doc, lambda: check_lines(doc))
    return EXIT_OK if doc["ok"] else EXIT_PROBLEM


def cmd_retire(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    from shared.retention import maintenance_pass  # noqa: PLC0415

    result = maintenance_pass(app, dry_run=args.dry_run, repair=False)
    doc = {**result.as_dict(), "dryRun": args.dry_run}
    verb = "would retire" if args.dry_run else "retired"

    def lines() -> list[str]:
        out_lines = [f"{verb} {len(result.retired)} version(s) (run {result.run})"]
        out_lines += [f"  {verb}: {u}" for u in result.retired]
        out_lines += [f"  kept: {u}: {'; '.join(r)}" for u, r in result.kept.items()]
        out_lines += [f"  error: {e}" for e in result.errors]
        return out_lines

    out.emit(doc, lines)
    return EXIT_PROBLEM if result.errors else EXIT_OK


def cmd_disable(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    from shared.retention import RetentionRefused, disable_version  # noqa: PLC0415

    key = _key(app, args.key, require_version=True)
    try:
        doc = disable_version(app, key, reason=args.reason, ticket=args.ticket, caller=os.environ.get("USER", "cli"))
    except RetentionRefused as err:
        blockers = err.verdict.blockers
        refused = {"key": str(key), "disabled": False, "refused": True, **err.verdict.as_dict()}
        out.emit(refused, lambda: [f"refused: {b.message}" for b in blockers])
        return EXIT_PROBLEM
    out.emit(doc, lambda: [f"{key}: disabled (run {doc['run']})"])
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keysteward", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--settings", help="a local.settings.json whose Values are read before the environment")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = add("plan", "show what a reconcile would change (no writes)")
    sp.add_argument("--key", help="versionless key URI (default: every bound key)")
    sp = add("reconcile", "move every pinned binding to its key's current version")
    sp.add_argument("--key", help="versionless key URI (default: every bound key)")
    sp.add_argument("--no-wait", dest="wait", action="store_false", help="start updates and return")
    sp.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for convergence (900)")
    sp.add_argument("--interval", type=float, default=5.0, help="seconds between confirm passes (5)")
    sp = add("rotate", "create a new version of a key now")
    sp.add_argument("--key", required=True, help="versionless key URI")
    sp = add("status", "every version of a key, who uses it, and whether it may be disabled")
    sp.add_argument("--key", required=True, help="versionless key URI")
    add("check", "preflight: vaults, keys and bound services set up as Azure requires")
    sp = add("retire", "disable old versions that the retention rule allows, for keys tagged keysteward-retire")
    sp.add_argument("--dry-run", action="store_true", help="show what would be retired")
    sp = add("disable", "disable one version, only if the retention rule allows it")
    sp.add_argument("--key", required=True, help="versioned key URI")
    sp.add_argument("--reason", required=True)
    sp.add_argument("--ticket", required=True)
    add_runbook_commands(add)
    sp = sub.add_parser("serve", help="run the app on the local development host (python -m sandbox.host)")
    sp.add_argument("rest", nargs=argparse.REMAINDER, help="host options, e.g. --port 7071")
    return p


_HANDLERS: dict[str, Callable[[Keysteward, argparse.Namespace, Output], int]] = {
    "plan": cmd_plan,
    "reconcile": cmd_reconcile,
    "rotate": cmd_rotate,
    "status": cmd_status,
    "check": cmd_check,
    "retire": cmd_retire,
    "disable": cmd_disable,
    **RUNBOOK_HANDLERS,
}


def _load_local_settings(path: str) -> None:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    for name, value in (raw.get("Values") or {}).items():
        os.environ.setdefault(str(name), str(value))


def main(argv: Sequence[str] | None = None, *, app: Keysteward | None = None,
         stdout: TextIO | None = None) -> int:
    """Entry point of the console script; ``app`` may be injected (tests)."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    out = Output(as_json=bool(getattr(args, "json", False)), stream=stdout or sys.stdout)
    if args.command == "serve":
        # The development host lives beside the app, never inside it: run it as its own program.
        os.execvp(sys.executable, [sys.executable, "-m", "sandbox.host", *args.rest])  # noqa: S606
    configure(json=out.as_json or not sys.stderr.isatty())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(command=args.command)
    try:
        if args.settings:
            _load_local_settings(args.settings)
        # The CLI confirms its own updates in-process: its follow-ups never go to the Functions queue.
        app = app or build(load_settings(os.environ), queue=MemoryQueue())
        return _HANDLERS[args.command](app, args, out)
    except ValidationError as err:
        message, field = str(err), err.field
        out.emit({"error": message, "field": field}, lambda: [f"error: {message}"])
        return EXIT_USAGE
    except ConfigError as err:
        message = str(err)
        out.emit({"error": message}, lambda: [f"error: {message}"])
        return EXIT_USAGE
    except PermanentError as err:
        message = str(err)
        out.emit({"error": message}, lambda: [f"error: {message}"])
        return EXIT_PROBLEM
    except KeystewardError as err:
        message = str(err)
        out.emit({"error": message, "retryable": True}, lambda: [f"error (retry later): {message}"])
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
