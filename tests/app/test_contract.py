"""The app's functions and their triggers are a contract with the platform and with operators."""

from __future__ import annotations

from tests.functionapp import fresh_function_app


def test_function_app_lists_the_expected_functions_and_triggers():
    functions = {f.get_function_name(): f for f in fresh_function_app().get_functions()}
    triggers = {name: next(b for b in f.get_bindings() if b.type.endswith("Trigger")) for name, f in functions.items()}
    assert triggers["on_key_vault_event"].type == "eventGridTrigger"
    assert triggers["process_work_item"].type == "queueTrigger"
    assert triggers["process_work_item"].queue_name == "%KEYSTEWARD_WORK_QUEUE%"
    assert triggers["rotation_schedule"].type == "timerTrigger"
    assert triggers["rotation_schedule"].schedule == "%KEYSTEWARD_ROTATION_SCHEDULE%"
    assert triggers["reconcile_schedule"].schedule == "%KEYSTEWARD_RECONCILE_SCHEDULE%"
    http = {name: t for name, t in triggers.items() if t.type == "httpTrigger"}
    routes = {t.route: sorted(m.value if hasattr(m, "value") else m for m in t.methods) for t in http.values()}
    expected = {
        "revoke": ["POST"], "restore": ["POST"], "runs/{id}": ["GET"], "runs": ["GET"],
        "runs/{id}/approve": ["POST"], "retire": ["POST"], "check": ["GET"], "keys/status": ["GET"],
        "ui": ["GET"], "ui/key": ["GET"], "ui/blast-radius": ["GET"], "ui/runs/{id}": ["GET"],
    }
    assert routes == expected
    assert {str(getattr(t.auth_level, "value", t.auth_level)).lower() for t in http.values()} == {
        "function"
    }  # function keys stay on as a second lock behind App Service Authentication
    assert set(functions) == {
        "on_key_vault_event", "process_work_item", "rotation_schedule", "reconcile_schedule",
        "revoke", "restore", "get_run", "list_runs", "approve_run", "retire_version", "preflight_check", "key_status",
        "ui_estate", "ui_key", "ui_blast_radius", "ui_run",
    }
