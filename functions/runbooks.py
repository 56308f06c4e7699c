"""HTTP triggers of the runbooks: revoke, restore, approve, and reading runs.

Routes (a contract; the host prefixes ``/api``), all ``auth_level=FUNCTION`` (function keys
stay on as a second lock) and all through :func:`functions._http.guarded` (Easy Auth
principal, app role, error mapping, one audit line):

===========================  ======  ===================  ===========================================
route                        method  role                 answer
===========================  ======  ===================  ===========================================
revoke                       POST    Revoke (Read or      200 blast radius (``dryRun``), else 202 run
                                     Revoke for a dry
                                     run)
restore                      POST    Restore              202 run (200 with ``duplicate`` when the
                                                          revocation was already restored)
runs/{id}                    GET     Read, Revoke or      200 run with steps
                                     Restore
runs                         GET     Read, Revoke or      200 ``{"runs": [...]}`` (``?key=URI``)
                                     Restore
runs/{id}/approve            POST    Revoke               202 run (two-person rule)
===========================  ======  ===================  ===========================================

A refusal because the key is revoked by a run in force answers 409 (``KeyRevoked``) naming
that run. A revoke, restore or approve answers once the acting steps are done (the key is disabled or
the access removed: seconds), without waiting for the services to confirm: verification
continues on ``resume`` and on the timer (:func:`shared.runbooks.resume_unfinished`), so no
request comes near the platform's 230-second HTTP limit.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import azure.functions as func

from functions._http import FUNCTION_KEY_PARAM, Audit, check_fields, guarded, json_response, read_json_body
from functions._root import get_app
from shared.auth import ANY_RUNBOOK_ROLE, ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal, require_role
from shared.errors import ValidationError
from shared.keyuri import parse_key_uri

if TYPE_CHECKING:
    # The runbook core (and the SDKs behind it) loads on a route's first use, not when the
    # worker indexes the app on a cold start.
    from shared.journal import Run
    from shared.runbooks import RunView

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

# Time a request may spend waiting for services to confirm: none (see the module docstring).
HTTP_WAIT_BUDGET: Final = timedelta(0)
MAX_REASON: Final = 1000
MAX_RUN_ID: Final = 64
MAX_LIST: Final = 500
_LIMIT: Final = re.compile(r"[0-9]{1,10}")


def _run_answer(view: RunView, *, accepted: int = 202) -> func.HttpResponse:
    return json_response(200 if view.duplicate else accepted, view.as_dict())


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "run": run.run_id, "kind": run.kind, "key": run.key, "status": run.status,
        "caller": {"objectId": run.caller_oid, "name": run.caller_name},
        "reason": run.reason, "ticket": run.ticket, "mode": run.params.get("mode"),
        "created": run.created.isoformat(), "updated": run.updated.isoformat(),
    }


def _run_id(req: func.HttpRequest) -> str:
    run_id = str(req.route_params.get("id") or "").strip()
    if not run_id or len(run_id) > MAX_RUN_ID:
        raise ValidationError("the run id in the route is missing or too long", field="id")
    return run_id


@bp.function_name("revoke")
@bp.route(route="revoke", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def revoke(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/revoke: a dry run (200, the blast radius) or a revocation (202, the run)."""

    def handle(principal: Principal, audit: Audit) -> func.HttpResponse:
        from shared.runbooks import MODES, RevokeRequest  # noqa: PLC0415 - on first use (cold start)

        app = get_app()
        body = check_fields(
            read_json_body(req),
            required={"key": str, "mode": str, "reason": str, "ticket": str, "dryRun": bool},
            optional={"emergency": bool},
            max_text=MAX_REASON,
        )
        # Parsed against the allowlist before anything else: a foreign vault never sees a token.
        key = parse_key_uri(body["key"], allowed_vaults=app.settings.vaults)
        audit.key = key.uri
        if body["mode"] not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
        books = app.runbooks
        if body["dryRun"]:
            audit.outcome = "dry-run"
            return json_response(200, books.plan(key, body["mode"]))
        require_role(principal, ROLE_REVOKE)
        request = RevokeRequest(key=key, mode=body["mode"], reason=body["reason"], ticket=body["ticket"],
                                emergency=bool(body.get("emergency", False)))
        view = books.revoke(request, principal, budget=HTTP_WAIT_BUDGET)
        audit.run, audit.outcome = view.run.run_id, view.run.status
        return _run_answer(view)

    return guarded(req, role=(ROLE_READ, ROLE_REVOKE), operation="revoke", handler=handle)


@bp.function_name("restore")
@bp.route(route="restore", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def restore(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/restore: undoes one finished revocation (202), at most once (200 duplicate)."""

    def handle(principal: Principal, audit: Audit) -> func.HttpResponse:
        from shared.runbooks import RestoreRequest  # noqa: PLC0415 - on first use (cold start)

        body = check_fields(read_json_body(req), required={"run": str, "reason": str, "ticket": str},
                            max_text=MAX_REASON)
        if len(body["run"]) > MAX_RUN_ID:
            raise ValidationError("run is not a run id", field="run")
        books = get_app().runbooks
        view = books.restore(RestoreRequest(run_id=body["run"], reason=body["reason"], ticket=body["ticket"]),
                             principal, budget=HTTP_WAIT_BUDGET)
        audit.key, audit.run = view.run.key, view.run.run_id
        audit.outcome = "duplicate" if view.duplicate else view.run.status
        return _run_answer(view)

    return guarded(req, role=ROLE_RESTORE, operation="restore", handler=handle)


@bp.function_name("get_run")
@bp.route(route="runs/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/runs/{id}: the run (kind, who, why, ticket, status) with its steps."""

    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:

        audit.run = _run_id(req)
        view = get_app().runbooks.get(audit.run)
        audit.key = view.run.key
        return json_response(200, view.as_dict())

    return guarded(req, role=ANY_RUNBOOK_ROLE, operation="get-run", handler=handle)


@bp.function_name("list_runs")
@bp.route(route="runs", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/runs[?key=URI][&limit=N]: runs newest first."""

    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:

        app = get_app()
        unknown = sorted(set(req.params) - {"key", "limit", FUNCTION_KEY_PARAM})
        if unknown:
            raise ValidationError(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        raw_key = req.params.get("key")
        key = parse_key_uri(raw_key, allowed_vaults=app.settings.vaults) if raw_key is not None else None
        audit.key = key.uri if key else None
        raw_limit = req.params.get("limit", "100")
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIST:
            raise ValidationError(f"limit must be a number from 1 to {MAX_LIST}", field="limit")
        runs = app.runbooks.runs(key, limit=int(raw_limit))
        return json_response(200, {"runs": [_run_summary(r) for r in runs]})

    return guarded(req, role=ANY_RUNBOOK_ROLE, operation="list-runs", handler=handle)


@bp.function_name("approve_run")
@bp.route(route="runs/{id}/approve", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def approve_run(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/runs/{id}/approve: a second KeySteward.Revoke holder starts a revocation that
    waits under the two-person rule (202)."""

    def handle(principal: Principal, audit: Audit) -> func.HttpResponse:

        audit.run = _run_id(req)
        check_fields(read_json_body(req, allow_empty=True), required={})  # nothing to say but "yes"
        view = get_app().runbooks.approve(audit.run, principal, budget=HTTP_WAIT_BUDGET)
        audit.key, audit.outcome = view.run.key, view.run.status
        return _run_answer(view)

    return guarded(req, role=ROLE_REVOKE, operation="approve-run", handler=handle)
