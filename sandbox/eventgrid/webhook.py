"""Event Grid: the HTTP side of delivery. :class:`WebhookSender` carries out one exchange (to a
registered in-process endpoint or over a socket); the functions here build what Event Grid sends
(the validation handshake of either schema, a delivery's ``aeg-*`` headers, CloudEvents
rendering) and read what a webhook answers."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import requests

from sandbox.clock import isoformat
from sandbox.eventgrid.model import (
    CLOUD_EVENT_SCHEMA,
    CLOUD_EVENTS_BATCH,
    EVENT_GRID_SCHEMA,
    SEND_TIMEOUT_S,
    VALIDATION_EVENT_TYPE,
    VALIDATION_ORIGIN,
    Delivery,
    JsonObj,
    LocalEndpoint,
    Subscription,
)


class WebhookSender:
    """Sends one HTTP exchange. ``ca_bundle`` (set by the loopback server) verifies https
    endpoints; endpoints registered with :meth:`register_local_endpoint` are called in process.
    Kept across a bus reset: this is transport configuration."""

    def __init__(self) -> None:
        self.ca_bundle: str | None = None
        self._lock = threading.Lock()
        self._local: dict[tuple[str, str], LocalEndpoint] = {}
        self._session = requests.Session()

    def register_local_endpoint(self, base_url: str, handler: LocalEndpoint) -> None:
        """Sends deliveries for ``base_url``'s scheme and host to ``handler`` instead of a socket."""
        parts = urlsplit(base_url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"not an absolute URL: {base_url!r}")
        with self._lock:
            self._local[(parts.scheme.lower(), parts.netloc.lower())] = handler

    def unregister_local_endpoint(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        with self._lock:
            self._local.pop((parts.scheme.lower(), parts.netloc.lower()), None)

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange; status 0 means the endpoint could not be reached (a failing local
        endpoint included). Never raises: Event Grid retries an unreachable webhook."""
        try:
            return self._send(method, url, headers, body)
        except Exception:  # noqa: BLE001 - a failing local endpoint is an unreachable webhook, retried
            return 0, {}, b""

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        with self._lock:
            local = self._local.get((parts.scheme.lower(), parts.netloc.lower()))
        if local is not None:
            path = parts.path or "/"
            if parts.query:
                path = f"{path}?{parts.query}"
            status, out_headers, out_body = local(method, path, dict(headers), body)
            return status, {k.lower(): v for k, v in out_headers.items()}, out_body
        verify: bool | str = True
        if parts.scheme.lower() == "https" and self.ca_bundle:
            verify = self.ca_bundle
        try:
            resp = self._session.request(
                method, url, headers=headers, data=body, timeout=SEND_TIMEOUT_S, verify=verify
            )
        except requests.RequestException:
            return 0, {}, b""
        return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content


def validate(
    sender: WebhookSender, sub: Subscription, attempt: int, now: datetime, *, topic: str, validation_url: str
) -> tuple[str, int, bool]:
    """Runs one validation handshake with ``sub``'s endpoint: ``(event id, status, validated)``.

    Event Grid schema: a POST carrying one ``SubscriptionValidationEvent``, answered 200
    ``{"validationResponse": code}``; CloudEvents: an OPTIONS with ``WebHook-Request-Origin``,
    answered 2xx with ``WebHook-Allowed-Origin``."""
    if sub.schema == CLOUD_EVENT_SCHEMA:
        headers = {"WebHook-Request-Origin": VALIDATION_ORIGIN, "WebHook-Request-Rate": "120"}
        status, out_headers, _ = sender.send("OPTIONS", sub.endpoint, headers, b"")
        allowed = out_headers.get("webhook-allowed-origin", "").strip()
        return f"validation-{sub.id}-{attempt}", status, 200 <= status < 300 and allowed in (VALIDATION_ORIGIN, "*")
    event_id = str(uuid.uuid4())
    body = [
        {
            "id": event_id,
            "topic": topic,
            "subject": "",
            "data": {
                "validationCode": sub.validation_code,
                "validationUrl": validation_url,
            },
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": isoformat(now),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
    ]
    headers = {
        "Content-Type": "application/json",
        "aeg-event-type": "SubscriptionValidation",
        "aeg-subscription-name": sub.name.upper(),
        "aeg-delivery-count": str(attempt - 1),
        "aeg-data-version": "2",
        "aeg-metadata-version": "1",
    }
    status, _, out_body = sender.send("POST", sub.endpoint, headers, json.dumps(body).encode())
    return event_id, status, status == 200 and _validation_response(out_body) == sub.validation_code


def deliver(sender: WebhookSender, sub: Subscription, d: Delivery, payload: list[JsonObj]) -> int:
    """POSTs one delivery (its rendered ``payload``) with Event Grid's headers; the status code."""
    cloud = sub.schema == CLOUD_EVENT_SCHEMA
    headers = {
        "Content-Type": CLOUD_EVENTS_BATCH if cloud else "application/json",
        "aeg-event-type": "Notification",
        "aeg-subscription-name": sub.name.upper(),
        "aeg-delivery-count": str(d.attempts),
        "aeg-data-version": str(d.events[0].get("dataVersion", "1")),
        "aeg-metadata-version": str(d.events[0].get("metadataVersion", "1")),
    }
    status, _, _ = sender.send("POST", sub.endpoint, headers, json.dumps(payload).encode())
    return status


def render(sub: Subscription, events: list[JsonObj]) -> list[JsonObj]:
    """The events as ``sub``'s schema carries them (CloudEvents 1.0 built from Event Grid schema)."""
    if sub.schema == EVENT_GRID_SCHEMA:
        return [copy.deepcopy(e) for e in events]
    return [
        {
            "id": e.get("id"),
            "source": e.get("topic"),
            "type": e.get("eventType"),
            "subject": e.get("subject"),
            "time": e.get("eventTime"),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "data": copy.deepcopy(e.get("data")),
        }
        for e in events
    ]


def _validation_response(body: bytes) -> str | None:
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return None
    if isinstance(parsed, dict):
        for k, v in parsed.items():
            if k.lower() == "validationresponse" and isinstance(v, str):
                return v
    return None
