"""Event Grid trigger for Key Vault key events (function name ``on_key_vault_event``)."""

from __future__ import annotations

import azure.functions as func
import structlog

from functions._root import get_app
from shared import metrics
from shared.errors import PermanentError
from shared.events import IgnoredEvent, MalformedEvent, parse_event

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
log = structlog.get_logger("keysteward.events")


@bp.function_name("on_key_vault_event")
@bp.event_grid_trigger(arg_name="event")
def on_key_vault_event(event: func.EventGridEvent) -> None:
    """Parses the event and hands it to the core.

    A malformed event is logged and dropped (Event Grid would retry it for 24 hours for
    nothing); a transient failure raises so that Event Grid redelivers; a permanent one is
    logged as an error and dropped.
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(event_id=event.id)
    try:
        data = event.get_json()
    except ValueError:
        data = None
    try:
        parsed = parse_event(
            event_id=event.id,
            event_type=event.event_type,
            data=data,
            source=event.topic,
            subject=event.subject,
            event_time=event.event_time,
        )
    except MalformedEvent as err:
        log.warning("event-dropped", reason=err.reason, event_type=str(event.event_type)[:200])
        metrics.current().event_handled(str(event.event_type), "dropped", event.id)
        return
    if isinstance(parsed, IgnoredEvent):
        log.info("event-ignored", event_type=parsed.event_type, reason=parsed.reason)
        metrics.current().event_handled(str(event.event_type), "ignored", event.id)
        return
    structlog.contextvars.bind_contextvars(key=str(parsed.key), event_type=parsed.event_type.value)
    try:
        result = get_app().handle_event(parsed)
    except PermanentError as err:
        log.error("event-failed", error=str(err))  # noqa: TRY400 - a known failure class: no trace needed
        metrics.current().event_handled(str(event.event_type), "failed", event.id)
        return
    metrics.current().event_handled(str(event.event_type), result.action, event.id)
    log.info("event-handled", action=result.action, detail=result.detail,
             enqueued=len(result.enqueued), passes=len(result.passes))
