"""The keysteward command: the same core as the Functions app, for operators and local use.

It reads the same settings (environment variables; ``--settings FILE`` loads a
local.settings.json's ``Values`` first). Text and aligned tables for people; ``--json`` for
scripts (one JSON document on stdout, nothing else there). Log lines go to
``.run/keysteward.log`` (JSON, wall-clock UTC times), or to stderr with ``-v``. Times in the
output are in keysteward's clock: the sandbox's with ``KEYSTEWARD_SANDBOX``, else UTC.
Exit codes: 0 success, 1 a check or operation found a problem, 2 bad usage or settings,
130 interrupted (Ctrl-C).
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
from rich.console import RenderableType

from shared.app import Keysteward, build
from shared.clirender import Output, duration, humanize_text, relative, short_id, table, when
from shared.clock import SystemClock
from shared.config import load_settings
from shared.errors import ConfigError, KeystewardError, PermanentError, ValidationError
from shared.keyuri import parse_key_uri
from shared.logs import configure_cli
from shared.model import KeyRef
from shared.reconcile import ActionKind, PassResult
from shared.runbooks_cli import EXAMPLES as RUNBOOK_EXAMPLES
from shared.runbooks_cli import HANDLERS as RUNBOOK_HANDLERS
from shared.runbooks_cli import add_commands as add_runbook_commands
from shared.workqueue import MemoryQueue

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


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


def pass_lines(result: PassResult) -> list[RenderableType]:
    """One key's pass: a heading with counts, then a table of the bindings that need (or
    could not get) a change. In-sync and versionless bindings are counted, not listed."""
    current = result.current.version if result.current else "?"
    counts = ", ".join(f"{result.count(k)} {k.value}" for k in ActionKind if result.count(k))
    out: list[RenderableType] = [f"{result.key}  (current version {current})", f"  {counts or 'no bindings'}"]
    rows = table("action", "service", "resource", "pinned", "note")
    listed = 0
    for a in result.actions:
        if a.kind is ActionKind.IN_SYNC or a.kind is ActionKind.VERSIONLESS:
            continue
        b = a.binding
        rows.add_row(a.kind.value, b.service.value, short_id(b.resource_id), b.pinned_version or "versionless",
                     humanize_text(a.reason or ""))
        listed += 1
    for b, reason in result.failed:
        rows.add_row("FAILED", b.service.value, short_id(b.resource_id), b.pinned_version or "versionless",
                     humanize_text(reason))
        listed += 1
    if listed:
        out.append(rows)
    return out


def _key(app: Keysteward, text: str, *, require_version: bool | None = None) -> KeyRef:
    return parse_key_uri(text, allowed_vaults=app.settings.vaults, require_version=require_version)


def clock_name(app: Keysteward) -> str:
    """Which clock the times in the output come from (the one keysteward decides with)."""
    if app.settings.sandbox:
        return "sandbox clock, UTC"
    return "UTC wall clock" if isinstance(app.clock, SystemClock) else "the app's clock, UTC"


def cmd_plan(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key) if args.key else None
    with out.busy("reading keys and bound services..."):
        results = app.reconcile_all(dry_run=True, key=key)

    def render() -> list[RenderableType]:
        lines: list[RenderableType] = [ln for r in results for ln in pass_lines(r)]
        to_change = sum(r.count(ActionKind.UPDATE) for r in results)
        lines.append(f"{len(results)} key(s); {to_change} binding(s) would be updated; nothing was written "
                     f"(times: {out.clock_name})")
        return lines

    out.emit({"plans": [pass_doc(r) for r in results]}, render)
    return EXIT_OK


def cmd_reconcile(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key) if args.key else None
    with out.busy("reconciling: reading keys and starting updates..."):
        results = app.reconcile_all(key=key)
    started, begun = time.monotonic(), app.clock.now()
    deadline = started + args.timeout
    # Confirm passes: level-triggered, so a pass writes only what is still wrong.
    total = sum(len(r.actions) for r in results)
    moved = {s.binding.resource_id for r in results for s in r.started}
    with out.progress(f"converging (gives up after {duration(args.timeout)})", total=total) as update:
        while args.wait and any(r.pending for r in results) and time.monotonic() < deadline:
            pending = sum(len(r.started) + r.count(ActionKind.IN_FLIGHT) for r in results)
            update(completed=total - pending, total=total)
            time.sleep(args.interval)
            results = app.reconcile_all(key=key)
            moved |= {s.binding.resource_id for r in results for s in r.started}
        update(completed=total)
    took = app.clock.now() - begun  # in the clock every other time in the output is in

    def render() -> list[RenderableType]:
        lines: list[RenderableType] = [ln for r in results for ln in pass_lines(r)]
        done = all(r.converged for r in results)
        lines.append(f"updates started: {', '.join(sorted(short_id(m) for m in moved)) or 'none'}")
        if not args.wait:
            lines.append("updates started; not waiting (--no-wait): `keysteward plan` shows what is still pending")
        else:
            lines.append(("converged" if done else "NOT converged") + f" after {duration(took)} ({out.clock_name})")
        return lines

    out.emit({"passes": [pass_doc(r) for r in results]}, render)
    return EXIT_OK if all(r.converged for r in results) or not args.wait else EXIT_PROBLEM


def cmd_rotate(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key, require_version=False)
    result = app.rotator.rotate_now(key, reason="keysteward rotate")
    doc = {"key": str(key), "rotated": result.rotated, "newVersion": result.new_version}
    out.emit(doc, lambda: [f"{key}: rotated; new current version {result.new_version}"])
    return EXIT_OK


def status_render(status: dict[str, Any], *, now: Any, clock: str) -> list[RenderableType]:
    """``keysteward status``: the versions (newest first) with age, users and the retention
    verdict, each blocker beneath; then the bound services."""
    out: list[RenderableType] = [f"{status['key']}  (current version {status['currentVersion']})"]
    versions = table("", "version", "state", "created", "expires", "users", "may disable?")
    for v in reversed(status["versions"]):
        verdict = v["retention"]
        versions.add_row("*" if v["current"] else "", v["version"], "enabled" if v["enabled"] else "disabled",
                         relative(v["created"], now), relative(v["expiresOn"], now), str(len(v["usedBy"])),
                         "yes" if verdict["mayDisable"] else "no, keep")
    out.append(versions)
    kept = [(v["version"], b) for v in reversed(status["versions"]) for b in v["retention"]["blockers"]]
    if kept:
        why = table("version", "why it must stay enabled")
        for i, (version, b) in enumerate(kept):
            why.add_row(version if i == 0 or kept[i - 1][0] != version else "", humanize_text(b["message"]))
        out.append(why)
    # Usage evidence from Key Vault's audit logs (shared/usage.py): who called each version.
    from shared.evidence import evidence_line, status_lines  # noqa: PLC0415 - only with a status to show

    evidence = evidence_line(status)
    if evidence:
        out.append(evidence.strip())
    for v in status["versions"]:
        callers = status_lines(status, v)
        if callers:
            out.append(f"  {v['version']}:")
            out.extend(callers)
    if status["bindings"]:
        bindings = table("service", "resource", "pinned", "in use", "updatable", "backups")
        for b in status["bindings"]:
            in_use = b["inUseVersion"] or ("unknown (not reported)" if b.get("inUse") == "unknown" else "-")
            if b.get("lagging"):
                in_use = f"{in_use} (lagging)"
            bindings.add_row(b["service"], short_id(b["resourceId"]), b["pinnedVersion"] or "versionless",
                             in_use,
                             "yes" if b["updatable"] else ("no (STUCK on an old version)" if b["stuck"] else "no"),
                             b.get("backup") or "-")
        out.append(bindings)
    out.append(f"times: {clock} (now {when(now)}); * = current version")
    return out


def cmd_status(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    key = _key(app, args.key, require_version=False)
    with out.busy(f"reading {key.name}: versions, bound services, retention..."):
        status = app.retention.key_status(key)
        now = app.clock.now()
    out.emit(status, lambda: status_render(status, now=now, clock=out.clock_name))
    return EXIT_OK


def cmd_check(app: Keysteward, args: argparse.Namespace, out: Output) -> int:  # noqa: ARG001 - handler signature
    with out.busy("preflight: reading vaults, keys and bound services..."):
        doc = app.preflight.check()

    def render() -> list[RenderableType]:
        head = "OK" if doc["ok"] else "PROBLEMS"
        lines: list[RenderableType] = [f"{head}: {doc['violations']} violation(s), {doc['warnings']} warning(s)"]
        rows = table("level", "check", "scope", "finding")
        shown = [f for f in doc["findings"] if f["level"] != "ok"]
        for f in shown:
            rows.add_row(f["level"], f["check"], short_id(str(f["scope"])), humanize_text(str(f["message"])))
        if shown:
            lines.append(rows)
        passed = len(doc["findings"]) - len(shown)
        lines.append(f"{passed} check(s) passed")
        return lines

    out.emit(doc, render)
    return EXIT_OK if doc["ok"] else EXIT_PROBLEM


def cmd_retire(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    with out.busy("retention pass: reading retire-managed keys..."):
        result = app.retention.sweep(dry_run=args.dry_run, repair=False)
    doc = {**result.as_dict(), "dryRun": args.dry_run}
    verb = "would retire" if args.dry_run else "retired"

    def render() -> list[RenderableType]:
        lines: list[RenderableType] = [f"{verb} {len(result.retired)} version(s)"
                                       + (f" (run {result.run})" if result.run else "")]
        rows = table("outcome", "version", "why")
        for u in result.retired:
            rows.add_row(verb, u, "")
        for u, reasons in result.kept.items():
            rows.add_row("kept", u, humanize_text("; ".join(reasons)))
        if result.retired or result.kept:
            lines.append(rows)
        lines += [f"error: {e}" for e in result.errors]
        return lines

    out.emit(doc, render)
    return EXIT_PROBLEM if result.errors else EXIT_OK


def cmd_disable(app: Keysteward, args: argparse.Namespace, out: Output) -> int:
    from shared.retention import RetentionRefused  # noqa: PLC0415

    key = _key(app, args.key, require_version=True)
    try:
        doc = app.retention.disable_version(key, reason=args.reason, ticket=args.ticket,
                                            caller=os.environ.get("USER", "cli"))
    except RetentionRefused as err:
        blockers = err.verdict.blockers
        refused = {"key": str(key), "disabled": False, "refused": True, **err.verdict.as_dict()}
        out.emit(refused, lambda: [f"refused: {humanize_text(b.message)}" for b in blockers])
        return EXIT_PROBLEM
    out.emit(doc, lambda: [f"{key}: disabled (run {doc['run']})"])
    return EXIT_OK


# One example per command, shown by `keysteward COMMAND --help` (plain text, copied as is).
_VAULT = "https://kv-contoso-prod-weu.vault.azure.net"
EXAMPLES: dict[str, str] = {
    "plan": f"keysteward plan --key {_VAULT}/keys/cmk-adx",
    "reconcile": f"keysteward reconcile --key {_VAULT}/keys/cmk-adx --timeout 600",
    "rotate": f"keysteward rotate --key {_VAULT}/keys/cmk-adx",
    "status": f"keysteward status --key {_VAULT}/keys/cmk-adx",
    "check": "keysteward check --json > preflight.json",
    "retire": "keysteward retire --dry-run",
    "disable": f"keysteward disable --key {_VAULT}/keys/cmk-adx/0123456789abcdef0123456789abcdef "
               "--reason 'rotated out' --ticket CHG-1234",
    "serve": "keysteward --settings local.settings.json serve --port 7071",
    **RUNBOOK_EXAMPLES,
}

_DESCRIPTION = """\
keysteward: rotation, retention and revocation of Azure customer-managed keys.

Reads the app settings from the environment (or --settings local.settings.json). Text and
tables for people; --json prints one JSON document on stdout for scripts. Log lines go to
.run/keysteward.log, or to stderr with -v. Times are in keysteward's clock: the sandbox's
clock when KEYSTEWARD_SANDBOX is set, else UTC wall-clock time.

exit codes: 0 ok, 1 a problem was found (or an operation failed), 2 bad usage or settings,
130 interrupted."""


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="keysteward", description=_DESCRIPTION, formatter_class=raw,
                                epilog="example:\n  keysteward --settings .run/local.settings.json status --key "
                                       f"{_VAULT}/keys/cmk-adx\n\n`keysteward COMMAND --help` shows each command.")
    p.add_argument("--settings", help="a local.settings.json whose Values are read before the environment")
    p.add_argument("-v", "--verbose", action="store_true", help="log lines to stderr (default: .run/keysteward.log)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text, formatter_class=raw,
                            epilog=f"example:\n  {EXAMPLES[name]}")
        sp.add_argument("--json", action="store_true", help="one JSON document on stdout (for scripts)")
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log lines to stderr")
        return sp

    sp = add("plan", "show what a reconcile would change (no writes)")
    sp.add_argument("--key", help="versionless key URI (default: every bound key)")
    sp = add("reconcile", "move every pinned binding to its key's current version, then confirm convergence")
    sp.add_argument("--key", help="versionless key URI (default: every bound key)")
    sp.add_argument("--no-wait", dest="wait", action="store_false", help="start updates and return")
    sp.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for convergence (900)")
    sp.add_argument("--interval", type=float, default=5.0, help="seconds between confirm passes (5)")
    sp = add("rotate", "create a new version of a key now")
    sp.add_argument("--key", required=True, help="versionless key URI")
    sp = add("status", "every version of a key, who uses it, and whether it may be disabled")
    sp.add_argument("--key", required=True, help="versionless key URI")
    add("check", "preflight: vaults, keys and bound services set up as Azure requires (exit 1 on a violation)")
    sp = add("retire", "disable old versions that the retention rule allows, for keys tagged keysteward-retire")
    sp.add_argument("--dry-run", action="store_true", help="show what would be retired")
    sp = add("disable", "disable one version, only if the retention rule allows it")
    sp.add_argument("--key", required=True, help="versioned key URI")
    sp.add_argument("--reason", required=True, help="why (recorded in the version's tags and the journal)")
    sp.add_argument("--ticket", required=True, help="change or incident ticket")
    add_runbook_commands(add)
    sp = sub.add_parser("serve", help="run the app on the local development host (python -m sandbox.host)",
                        description="Runs function_app.py on the local development host (development only). "
                                    "--settings (before serve) names its local.settings.json.",
                        formatter_class=raw, epilog=f"example:\n  {EXAMPLES['serve']}")
    sp.add_argument("--port", type=int, help="port (default: Host.LocalHttpPort of the settings file, or 7071)")
    sp.add_argument("--host", help="address to bind (default 127.0.0.1, loopback only)")
    sp.add_argument("--app", help="app module[:attribute] (default function_app:app)")
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


def serve_argv(args: argparse.Namespace) -> list[str]:
    """The development host's command line for ``keysteward serve``."""
    argv = [sys.executable, "-m", "sandbox.host"]
    for flag, value in (("--port", args.port), ("--host", args.host), ("--app", args.app),
                        ("--settings", args.settings)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def main(argv: Sequence[str] | None = None, *, app: Keysteward | None = None,
         stdout: TextIO | None = None) -> int:
    """Entry point of the console script; ``app`` may be injected (tests)."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.command == "serve":
        # The development host lives beside the app, never inside it: run it as its own program.
        command = serve_argv(args)
        os.execvp(command[0], command)  # noqa: S606
    as_json = bool(getattr(args, "json", False))
    configure_cli(verbose=bool(getattr(args, "verbose", False)), log_dir=Path.cwd() / ".run")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(command=args.command)
    out = Output(as_json=as_json, stream=stdout or sys.stdout)
    try:
        if args.settings:
            _load_local_settings(args.settings)
        # The CLI confirms its own updates in-process: its follow-ups never go to the Functions queue.
        app = app or build(load_settings(os.environ), queue=MemoryQueue())
        out.clock_name = clock_name(app)
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
    except KeyboardInterrupt:
        # Steps are journaled and idempotent: `keysteward resume` continues an interrupted run.
        print("interrupted; `keysteward runs` and `keysteward resume` continue any run it started",
              file=sys.stderr)
        return EXIT_INTERRUPTED


EXIT_INTERRUPTED = 130

if __name__ == "__main__":
    sys.exit(main())
