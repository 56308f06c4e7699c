"""Event Grid custom topics: the publish endpoint that outcome events are sent to.

``POST https://{topic}.{region}-1.eventgrid.azure.net/api/events?api-version=2018-01-01``
with a JSON array of Event Grid schema events, as ``EventGridPublisherClient`` sends it for a
basic topic. The sandbox answers any topic host (it keeps no topic resources) and checks what
Event Grid checks:

- an ``api-version`` query parameter (400 ``MissingApiVersionParameter`` without one);
- credentials: ``Authorization: Bearer``, ``aeg-sas-key`` or ``aeg-sas-token`` (401 without);
- at most 1 MB per request (413 ``RequestEntityTooLarge``, nothing accepted);
- a JSON array of objects each carrying ``id``, ``subject``, ``eventType``, ``eventTime``,
  ``data`` and ``dataVersion`` (400 ``BadRequest`` naming the first bad event, nothing
  accepted): the ``EventGridEvent`` schema's required properties in
  ``specification/eventgrid/data-plane/Microsoft.EventGrid/stable/2018-01-01/EventGrid.json``
  (``data`` may be any JSON value, null included, but must be present); a CloudEvents batch
  is refused, since the topic's input schema is the Event Grid schema.

Accepted events are stamped with the topic's resource id (``topic``) and ``metadataVersion``
and go through :meth:`sandbox.eventgrid.EventGridBus.publish`: listed by ``GET /sandbox/events``
and delivered to every event subscription whose ``topic`` names this topic. Event Grid does
not deduplicate by ``id``, and neither does the sandbox.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sandbox.wire import Request, Response, error_response

if TYPE_CHECKING:
    from sandbox.world import World

TOPIC_SUFFIX = ".eventgrid.azure.net"
PUBLISH_PATH = "/api/events"
MAX_REQUEST_BYTES = 1_048_576  # Event Grid: 1 MB per publish request (and per event)
# EventGrid.json (data-plane stable 2018-01-01) EventGridEvent.required.
REQUIRED_FIELDS = ("id", "subject", "eventType", "eventTime", "dataVersion")
REQUIRED_PRESENT = ("data",)  # any JSON value, but present
TOPIC_RESOURCE_GROUP = "sandbox-topics"


def topic_id(world: World, name: str) -> str:
    """The resource id the sandbox stamps on events published to topic ``name``."""
    sub = world.subscriptions[0] if world.subscriptions else "00000000-0000-0000-0000-000000000000"
    return f"/subscriptions/{sub}/resourceGroups/{TOPIC_RESOURCE_GROUP}/providers/Microsoft.EventGrid/topics/{name}"


def _bad_event(index: int, event: Any) -> str | None:
    if not isinstance(event, dict):
        return f"Event {index} is not a JSON object."
    for name in REQUIRED_FIELDS:
        value = event.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"Event {index}: required property '{name}' is missing or empty."
    for name in REQUIRED_PRESENT:
        if name not in event:
            return f"Event {index}: required property '{name}' is missing."
    return None


def handle(world: World, req: Request, topic: str) -> Response:
    """One request to the custom topic ``topic``; runs under ``world.lock``."""
    if req.path.rstrip("/").lower() != PUBLISH_PATH:
        return error_response(404, "NotFound", f"The path {req.path} is not found on this topic.")
    if req.method != "POST":
        return error_response(405, "MethodNotAllowed", f"The method {req.method} is not allowed.")
    if not req.query.get("api-version"):
        return error_response(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
    bearer = req.headers.get("authorization", "").lower().startswith("bearer ")
    if not (bearer or req.headers.get("aeg-sas-key") or req.headers.get("aeg-sas-token")):
        return error_response(401, "Unauthorized", "The request authorization key is not authorized for "
                              f"{topic}{TOPIC_SUFFIX}. This is due to the reason: Missing credentials.")
    if len(req.body) > MAX_REQUEST_BYTES:
        return error_response(413, "RequestEntityTooLarge", f"The maximum size ({MAX_REQUEST_BYTES}) has been "
                              f"exceeded: the request has {len(req.body)} bytes.")
    if "cloudevents" in req.headers.get("content-type", "").lower():
        return error_response(400, "BadRequest", "This topic's input schema is EventGridSchema; "
                              "a CloudEvents batch is not accepted.")
    try:
        events = json.loads(req.body or b"null")
    except (UnicodeDecodeError, ValueError):
        return error_response(400, "BadRequest", "The request body is not valid JSON.")
    if not isinstance(events, list) or not events:
        return error_response(400, "BadRequest", "The request body must be a non-empty JSON array of events.")
    for index, event in enumerate(events):
        problem = _bad_event(index, event)
        if problem is not None:
            return error_response(400, "BadRequest", problem)
    stamp = topic_id(world, topic)
    world.eventgrid.publish([{**event, "topic": stamp, "metadataVersion": "1"} for event in events])
    return Response(status=200)
