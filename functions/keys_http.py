"""HTTP: retention and preflight (routes are a contract).

- ``POST /api/retire`` {"key": VERSIONED_URI, "reason", "ticket"}: disables one version only when
  the retention rule allows it, else 409 with the blocking reasons (role KeySteward.Revoke).
- ``GET /api/check``: the preflight report (role KeySteward.Read); 200 either way, ``ok`` says.
- ``GET /api/keys/status?key=URI``: every version, who uses it, its retention verdict (KeySteward.Read).
"""

from __future__ import annotations

import azure.functions as func

from functions._http import FUNCTION_KEY_PARAM, Audit, check_fields, guarded, json_response, read_json_body
from functions._root import get_app
from shared.auth import ROLE_READ, ROLE_REVOKE, Principal
from shared.errors import ValidationError
from shared.keyuri import parse_key_uri

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

MAX_TEXT = 2000


@bp.function_name("retire_version")
@bp.route(route="retire", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def retire_version(req: func.HttpRequest) -> func.HttpResponse:
    def handle(principal: Principal, audit: Audit) -> func.HttpResponse:
        from shared.retention import RetentionRefused  # noqa: PLC0415 - cold start: on first use

        app = get_app()
        body = check_fields(read_json_body(req), required={"key": str, "reason": str, "ticket": str},
                            max_text=MAX_TEXT)
        key = parse_key_uri(body["key"], allowed_vaults=app.settings.vaults, require_version=True)
        audit.key = key.uri
        try:
            done = app.retention.disable_version(key, reason=body["reason"], ticket=body["ticket"],
                                                 caller=f"{principal.name} ({principal.object_id})")
        except RetentionRefused as err:
            audit.outcome = "refused-by-retention-rule"
            return json_response(409, {"error": {"code": "RetentionRuleBlocks", "message": str(err)},
                                       **err.verdict.as_dict()})
        audit.run, audit.outcome = str(done["run"]), "disabled"
        return json_response(200, done)

    return guarded(req, role=ROLE_REVOKE, operation="retire", handler=handle)


@bp.function_name("preflight_check")
@bp.route(route="check", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def preflight_check(req: func.HttpRequest) -> func.HttpResponse:
    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:
        unknown = sorted(set(req.params) - {FUNCTION_KEY_PARAM})
        if unknown:
            raise ValidationError(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        doc = get_app().preflight.check()
        audit.outcome = "ok" if doc["ok"] else "violations"
        return json_response(200, doc)

    return guarded(req, role=ROLE_READ, operation="check", handler=handle)


@bp.function_name("key_status")
@bp.route(route="keys/status", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def key_status_route(req: func.HttpRequest) -> func.HttpResponse:
    def handle(_principal: Principal, audit: Audit) -> func.HttpResponse:
        app = get_app()
        unknown = sorted(set(req.params) - {"key", FUNCTION_KEY_PARAM})
        if unknown:
            raise ValidationError(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
        key = parse_key_uri(req.params.get("key"), allowed_vaults=app.settings.vaults, require_version=False)
        audit.key = key.uri
        return json_response(200, app.retention.key_status(key))

    return guarded(req, role=ROLE_READ, operation="key-status", handler=handle)
