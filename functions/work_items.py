"""Queue trigger: one (key, subscription) reconcile per message (function ``process_work_item``).

The host moves a message to ``<queue>-poison`` after 5 dequeues; a transient failure raises
so the message becomes visible again; a malformed one raises too and ends in the poison queue.
"""

from __future__ import annotations

import azure.functions as func
import structlog

from functions._root import get_app
from shared.workqueue import WorkItem

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated
log = structlog.get_logger("keysteward.work")


@bp.function_name("process_work_item")
@bp.queue_trigger(arg_name="msg", queue_name="%KEYSTEWARD_WORK_QUEUE%", connection="AzureWebJobsStorage")
def process_work_item(msg: func.QueueMessage) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(message_id=msg.id, dequeue_count=msg.dequeue_count)
    item = WorkItem.from_json(msg.get_body().decode("utf-8", errors="replace"))
    structlog.contextvars.bind_contextvars(key=item.key, subscription=item.subscription, event_id=item.event_id)
    result = get_app().process_work_item(item)
    log.info("work-item-done", phase=item.phase, attempt=item.attempt, started=len(result.started),
             failed=len(result.failed), converged=result.converged)
