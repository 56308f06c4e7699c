"""HTTP: the on-call page (read-only; routes are a contract).

=========================  ======  ==============================================================
route                      method  page
=========================  ======  ==============================================================
ui                         GET     the estate: every key in scope, bindings by state, runs
ui/key?key=URI             GET     one key: versions as a timeline with state and retention
                                   verdict, the bindings on each version, its runs, a dry-run form
ui/blast-radius?key=&mode  GET     a revocation's blast radius, as the dry run computes it (reads
                                   only: the same as POST /api/revoke with ``dryRun``)
ui/runs/{id}               GET     a run's steps; refreshes itself until the run is finished
                                   (``?part=live`` answers the refreshing part alone)
=========================  ======  ==============================================================

Every page goes through :func:`functions._http.guarded` with role KeySteward.Read, behind App
Service Authentication and the function key like the API: without a principal the answer is
the API's 401 JSON error. Pages carry a strict Content-Security-Policy (inline style and script
by nonce only, nothing fetched from elsewhere), no caching, and no referrer, so the function
key in the address never leaves the page.
"""

from __future__ import annotations

import secrets

import azure.functions as func

from functions._http import FUNCTION_KEY_PARAM, Audit, guarded
from functions._root import get_app
from shared.auth import ROLE_READ, Principal
from shared.errors import NotFoundError, ValidationError
from shared.keyuri import parse_key_uri

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

MAX_RUN_ID = 64
RECENT_RUNS = 20


def html_response(body: str, nonce: str, *, status: int = 200) -> func.HttpResponse:
    csp = (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
           "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return func.HttpResponse(body=body, status_code=status, mimetype="text/html", charset="utf-8", headers={
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    })


def _only(req: func.HttpRequest, *allowed: str) -> None:
    unknown = sorted(set(req.params) - {*allowed, FUNCTION_KEY_PARAM})
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]!r}", field=unknown[0])


@bp.function_name("ui_estate")
@bp.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ui_estate(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/ui: the estate."""

    def handle(_principal: Principal, _audit: Audit) -> func.HttpResponse:
        _only(req)
        from functions import ui_render  # noqa: PLC0415 - the page and the core load on first use (cold start)

        app = get_app()
        estate = app.estate.read()
        runs = app.runbooks.runs(limit=RECENT_RUNS)
        nonce = secrets.token_urlsafe(16)
        return html_response(ui_render.estate_page(estate, runs, nonce=nonce), nonce)

    return guarded(req, role=ROLE_READ, operation="ui-estate", handler=handle)


@bp.function_name("ui_key")
@bp.route(route="ui/key", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ui_key(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/ui/key?key=URI: one key's versions, bindings, verdicts and runs."""

    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:
        _only(req, "key")
        from functions import ui_render  # noqa: PLC0415 - the page and the core load on first use (cold start)

        app = get_app()
        key = parse_key_uri(req.params.get("key"), allowed_vaults=app.settings.vaults, require_version=False)
        key = key.versionless()
        audit.key = key.uri
        view = app.estate.read(key=key).keys[0]
        if not view.versions and not view.bindings:  # a key in use but deleted is still shown
            raise NotFoundError(view.error or f"{key}: no such key", code="KeyNotFound", status=404)
        runs = app.runbooks.runs(key, limit=RECENT_RUNS)
        nonce = secrets.token_urlsafe(16)
        return html_response(ui_render.key_page(view, runs, nonce=nonce), nonce)

    return guarded(req, role=ROLE_READ, operation="ui-key", handler=handle)


@bp.function_name("ui_blast_radius")
@bp.route(route="ui/blast-radius", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ui_blast_radius(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/ui/blast-radius?key=URI&mode=MODE: the dry run of a revocation (reads only)."""

    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:
        _only(req, "key", "mode")
        from functions import ui_render  # noqa: PLC0415 - the page and the core load on first use (cold start)
        from shared.runbooks import MODES  # noqa: PLC0415

        app = get_app()
        key = parse_key_uri(req.params.get("key"), allowed_vaults=app.settings.vaults)
        audit.key, audit.outcome = key.uri, "dry-run"
        mode = req.params.get("mode", "")
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}", field="mode")
        doc = app.runbooks.plan(key, mode)
        nonce = secrets.token_urlsafe(16)
        return html_response(ui_render.blast_page(doc, nonce=nonce), nonce)

    return guarded(req, role=ROLE_READ, operation="ui-blast-radius", handler=handle)


@bp.function_name("ui_run")
@bp.route(route="ui/runs/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def ui_run(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/ui/runs/{id}[?part=live]: a run and its steps, refreshing until it is finished."""

    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:
        _only(req, "part")
        from functions import ui_render  # noqa: PLC0415 - the page and the core load on first use (cold start)

        run_id = str(req.route_params.get("id") or "").strip()
        if not run_id or len(run_id) > MAX_RUN_ID:
            raise ValidationError("the run id in the route is missing or too long", field="id")
        part = req.params.get("part")
        if part not in (None, "live"):
            raise ValidationError("part must be 'live'", field="part")
        audit.run = run_id
        view = get_app().runbooks.get(run_id)
        audit.key = view.run.key
        nonce = secrets.token_urlsafe(16)
        body = ui_render.run_live(view) if part == "live" else ui_render.run_page(view, nonce=nonce)
        return html_response(body, nonce)

    return guarded(req, role=ROLE_READ, operation="ui-run", handler=handle)
