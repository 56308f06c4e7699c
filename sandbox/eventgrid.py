"""Event Grid: subscriptions, webhook validation and at-least-once delivery on sandbox time.

The Key Vault data plane calls :meth:`EventGridBus.publish` with Event Grid schema events
(``KeyNewVersionCreated``, ``KeyNearExpiry``, ``KeyExpired``); each subscription that exists at
that moment and whose filter matches gets its own copy queued. :meth:`EventGridBus.pump` sends
whatever is due, the way Event Grid does it:

- a webhook is validated before its first event (Event Grid schema: a POST carrying one
  ``Microsoft.EventGrid.SubscriptionValidationEvent``, answered 200 ``{"validationResponse": code}``;
  CloudEvents: an HTTP OPTIONS with ``WebHook-Request-Origin``, answered 2xx with
  ``WebHook-Allowed-Origin``); until then events wait;
- every delivery is a POST of a JSON array with ``aeg-*`` headers; only 200-204 count as success;
- failures are retried after 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then
  every 12 h, up to 30 attempts or a 24 h time to live; 400, 401, 403 and 413 are not retried
  and go straight to the dead-letter list, as do events whose attempts or TTL run out;
- a subscription may ask for duplicates (a delivered event is delivered again a little later)
  and for shuffled order, the two liberties Event Grid takes that consumers must survive.

Every attempt is recorded in :attr:`EventGridBus.deliveries` (seq, event id and type,
subscription, attempt, status code, time, outcome).

Locking: ``publish`` and the admin calls run under ``world.lock`` and only touch the bus's own
queues under its small lock. Sending never happens under ``world.lock`` (a webhook may call
back into the sandbox): when ``pump`` finds that its thread holds ``world.lock`` it leaves the
work queued, and the world pumps again once the request is answered.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from sandbox.clock import isoformat

if TYPE_CHECKING:
    from sandbox.world import World

JsonObj = dict[str, Any]

EVENT_GRID_SCHEMA = "EventGridSchema"
CLOUD_EVENT_SCHEMA = "CloudEventSchemaV1_0"
SCHEMAS = (EVENT_GRID_SCHEMA, CLOUD_EVENT_SCHEMA)

VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
VALIDATION_ORIGIN = "eventgrid.azure.net"
CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json; charset=utf-8"

# Event Grid's documented retry schedule; after the listed waits it retries every 12 hours.
RETRY_SCHEDULE_S = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
RETRY_LATER_S = 43200
DEFAULT_MAX_ATTEMPTS = 30
DEFAULT_TTL = timedelta(hours=24)
# Event Grid does not retry these: the endpoint said the request itself is wrong or refused.
NOT_RETRIED = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 413: "RequestEntityTooLarge"}
# A duplicate arrives this many sandbox seconds (at most) after the original delivery.
DUPLICATE_DELAY_S = (1.0, 30.0)
# How long the default sender waits for a webhook (Event Grid gives up after 30 s).
SEND_TIMEOUT_S = 30.0

# (method, path with query, headers, body) -> (status, headers, body)
LocalEndpoint = Callable[[str, str, dict[str, str], bytes], tuple[int, Mapping[str, str], bytes]]


def retry_delay_s(attempts_made: int) -> int:
    """Seconds to wait after the ``attempts_made``-th failed attempt (1-based)."""
    if attempts_made <= len(RETRY_SCHEDULE_S):
        return RETRY_SCHEDULE_S[attempts_made - 1]
    return RETRY_LATER_S


@dataclass
class Subscription:
    """A webhook subscription. ``topic`` narrows it to one vault's resource id (None = all)."""

    id: str
    name: str
    endpoint: str
    schema: str
    event_types: list[str]
    topic: str | None
    duplicate_rate: float
    shuffle: bool
    max_events_per_batch: int
    max_delivery_attempts: int
    event_ttl: timedelta
    created: datetime
    validation_code: str
    validated: bool = False
    validation_attempts: int = 0
    validation_due: datetime | None = None
    validation_in_flight: bool = False
    last_validation_status: int | None = None

    def wants(self, event: JsonObj) -> bool:
        if self.event_types and str(event.get("eventType", "")).lower() not in {
            t.lower() for t in self.event_types
        }:
            return False
        return self.topic is None or str(event.get("topic", "")).lower() == self.topic.lower()

    def describe(self, validation_url: str) -> JsonObj:
        return {
            "id": self.id,
            "name": self.name,
            "endpoint": self.endpoint,
            "schema": self.schema,
            "event_types": list(self.event_types),
            "topic": self.topic,
            "duplicate_rate": self.duplicate_rate,
            "shuffle": self.shuffle,
            "max_events_per_batch": self.max_events_per_batch,
            "max_delivery_attempts": self.max_delivery_attempts,
            "event_ttl_minutes": self.event_ttl.total_seconds() / 60,
            "created": isoformat(self.created),
            "provisioningState": "Succeeded" if self.validated else "Creating",
            "validation": {
                "state": "Validated" if self.validated else "Pending",
                "attempts": self.validation_attempts,
                "last_status": self.last_validation_status,
                "validationUrl": validation_url,
            },
        }


@dataclass
class Delivery:
    """Events waiting to be (re)sent to one subscription as one POST."""

    subscription_id: str
    events: list[JsonObj]
    published: datetime
    due: datetime
    attempts: int = 0
    duplicate: bool = False
    in_flight: bool = False
    seq: int = 0


@dataclass
class _Job:
    """One HTTP exchange decided under the bus lock and carried out outside it."""

    kind: str  # "validate" | "deliver"
    subscription: Subscription
    delivery: Delivery | None = None
    payload: list[JsonObj] = field(default_factory=list)


class EventGridBus:
    """Subscriptions, pending deliveries, the delivery log and the dead-letter list."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._lock = threading.Lock()
        self._rng = random.Random(world.seed)
        self._seq = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.pending: list[Delivery] = []
        self.deliveries: list[JsonObj] = []  # the delivery log, one entry per event per attempt
        self.dead_letters: list[JsonObj] = []
        self.published: list[JsonObj] = []
        # Transport configuration, kept across reset(): set by the loopback server and by tests.
        self.ca_bundle: str | None = None
        self.admin_base_url = "https://sandbox.local"
        self._local: dict[tuple[str, str], LocalEndpoint] = {}
        self._session = requests.Session()

    # ---- configuration ---------------------------------------------------------------------
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

    def reset(self) -> None:
        """Forgets subscriptions, queues and logs; keeps transport configuration."""
        with self._lock:
            self.subscriptions.clear()
            self.pending.clear()
            self.deliveries.clear()
            self.dead_letters.clear()
            self.published.clear()
            self._seq = 0

    # ---- subscriptions -----------------------------------------------------------------------
    def subscribe(
        self,
        *,
        endpoint: str,
        schema: str = EVENT_GRID_SCHEMA,
        event_types: list[str] | None = None,
        topic: str | None = None,
        duplicate_rate: float = 0.0,
        shuffle: bool = False,
        name: str | None = None,
        max_events_per_batch: int = 1,
        max_delivery_attempts: int = DEFAULT_MAX_ATTEMPTS,
        event_ttl: timedelta = DEFAULT_TTL,
    ) -> Subscription:
        """Creates a subscription; validation happens on the next pump. Arguments are trusted
        (the admin API checks them)."""
        now = self.world.clock.now()
        sub_id = uuid.uuid4().hex[:12]
        sub = Subscription(
            id=sub_id,
            name=name or f"sandbox-{sub_id}",
            endpoint=endpoint,
            schema=schema,
            event_types=list(event_types or []),
            topic=topic,
            duplicate_rate=duplicate_rate,
            shuffle=shuffle,
            max_events_per_batch=max_events_per_batch,
            max_delivery_attempts=max_delivery_attempts,
            event_ttl=event_ttl,
            created=now,
            validation_code=str(uuid.uuid4()).upper(),
            validation_due=now,
        )
        with self._lock:
            self.subscriptions[sub_id] = sub
        return sub

    def unsubscribe(self, sub_id: str) -> bool:
        """Deletes a subscription and its pending deliveries; False when it does not exist."""
        with self._lock:
            if self.subscriptions.pop(sub_id, None) is None:
                return False
            self.pending = [d for d in self.pending if d.subscription_id != sub_id]
            return True

    def remove_for_topic(self, topic: str) -> int:
        """Drops subscriptions scoped to ``topic`` (a vault's soft delete removes them in Azure)."""
        with self._lock:
            gone = [s.id for s in self.subscriptions.values() if s.topic and s.topic.lower() == topic.lower()]
        for sub_id in gone:
            self.unsubscribe(sub_id)
        return len(gone)

    def validation_url(self, sub: Subscription) -> str:
        return (
            f"{self.admin_base_url}/sandbox/event-subscriptions/{sub.id}/validate?code={sub.validation_code}"
        )

    def describe(self, sub_id: str) -> JsonObj | None:
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                return None
            out = sub.describe(self.validation_url(sub))
            out["pending"] = sum(len(d.events) for d in self.pending if d.subscription_id == sub_id)
            return out

    def describe_all(self) -> list[JsonObj]:
        with self._lock:
            ids = list(self.subscriptions)
        return [d for d in (self.describe(i) for i in ids) if d is not None]

    def validate_manually(self, sub_id: str, code: str) -> bool:
        """The ``validationUrl`` path: a GET with the right code validates the subscription."""
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None or code != sub.validation_code:
                return False
            sub.validated = True
            return True

    # ---- events ------------------------------------------------------------------------------
    def publish(self, events: list[JsonObj]) -> None:
        """Queues each Event Grid schema event for every matching subscription, due now."""
        now = self.world.clock.now()
        with self._lock:
            for raw in events:
                event = copy.deepcopy(raw)
                event.setdefault("id", str(uuid.uuid4()))
                event.setdefault("eventTime", isoformat(now))
                event.setdefault("dataVersion", "1")
                event.setdefault("metadataVersion", "1")
                self.published.append(event)
                for sub in self.subscriptions.values():
                    if sub.wants(event):
                        self.pending.append(
                            Delivery(subscription_id=sub.id, events=[event], published=now, due=now)
                        )

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(d.events) for d in self.pending)

    def deliveries_since(self, seq: int) -> list[JsonObj]:
        with self._lock:
            return [dict(d) for d in self.deliveries if d["seq"] > seq]

    def pump(self, now: datetime) -> None:
        """Sends everything due at ``now``; returns when nothing more is due.

        Does nothing while the calling thread holds ``world.lock`` (see the module docstring).
        """
        is_owned = getattr(self.world.lock, "_is_owned", None)
        if is_owned is not None and is_owned():
            return
        # Each round sends what is due; a success can make more due now (queued events after
        # a validation), a failure always reschedules into the future, so rounds are few.
        for _ in range(100):
            jobs = self._collect(now)
            if not jobs:
                return
            for job in jobs:
                if job.kind == "validate":
                    self._run_validation(job.subscription, now)
                else:
                    self._run_delivery(job, now)

    # ---- internals ---------------------------------------------------------------------------
    def _collect(self, now: datetime) -> list[_Job]:
        jobs: list[_Job] = []
        with self._lock:
            kept: list[Delivery] = []
            for d in self.pending:
                sub = self.subscriptions.get(d.subscription_id)
                if sub is None:
                    continue
                if not d.in_flight and now - d.published > sub.event_ttl:
                    self._dead_letter(sub, d, "TimeToLiveExceeded", None, now)
                    continue
                kept.append(d)
            self.pending = kept
            for sub in self.subscriptions.values():
                if sub.validated or sub.validation_in_flight:
                    continue
                has_work = any(d.subscription_id == sub.id for d in self.pending)
                if has_work and sub.validation_due is not None and sub.validation_due <= now:
                    sub.validation_in_flight = True
                    jobs.append(_Job("validate", sub))
            due_by_sub: dict[str, list[Delivery]] = {}
            for d in self.pending:
                sub = self.subscriptions[d.subscription_id]
                if d.in_flight or not sub.validated or d.due > now:
                    continue
                due_by_sub.setdefault(sub.id, []).append(d)
            for sub_id, due in due_by_sub.items():
                sub = self.subscriptions[sub_id]
                batches = self._batch(sub, due)
                if sub.shuffle:
                    self._rng.shuffle(batches)
                for d in batches:
                    d.in_flight = True
                    jobs.append(_Job("deliver", sub, d, self._render(sub, d.events)))
            # Handshakes first: a subscription validated in this round delivers in the next one.
            return [j for j in jobs if j.kind == "validate"] + [j for j in jobs if j.kind == "deliver"]

    def _batch(self, sub: Subscription, due: list[Delivery]) -> list[Delivery]:
        """First attempts of the same subscription travel together, up to its batch size."""
        if sub.max_events_per_batch <= 1:
            return due
        fresh = [d for d in due if d.attempts == 0 and not d.duplicate]
        out = [d for d in due if d.attempts > 0 or d.duplicate]
        for i in range(0, len(fresh), sub.max_events_per_batch):
            group = fresh[i : i + sub.max_events_per_batch]
            if len(group) == 1:
                out.append(group[0])
                continue
            merged = Delivery(
                subscription_id=sub.id,
                events=[e for d in group for e in d.events],
                published=min(d.published for d in group),
                due=min(d.due for d in group),
            )
            self.pending = [d for d in self.pending if not any(d is g for g in group)]
            self.pending.append(merged)
            out.append(merged)
        return out

    @staticmethod
    def _render(sub: Subscription, events: list[JsonObj]) -> list[JsonObj]:
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

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange; status 0 means the endpoint could not be reached."""
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

    def _run_validation(self, sub: Subscription, now: datetime) -> None:
        attempt = sub.validation_attempts + 1
        if sub.schema == CLOUD_EVENT_SCHEMA:
            headers = {"WebHook-Request-Origin": VALIDATION_ORIGIN, "WebHook-Request-Rate": "120"}
            status, out_headers, _ = self._guarded_send("OPTIONS", sub.endpoint, headers, b"")
            allowed = out_headers.get("webhook-allowed-origin", "").strip()
            ok = 200 <= status < 300 and allowed in (VALIDATION_ORIGIN, "*")
            event_id = f"validation-{sub.id}-{attempt}"
        else:
            event_id = str(uuid.uuid4())
            subs = self.world.subscriptions
            topic = sub.topic or (f"/subscriptions/{subs[0]}" if subs else "")
            body = [
                {
                    "id": event_id,
                    "topic": topic,
                    "subject": "",
                    "data": {
                        "validationCode": sub.validation_code,
                        "validationUrl": self.validation_url(sub),
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
            status, _, out_body = self._guarded_send("POST", sub.endpoint, headers, json.dumps(body).encode())
            ok = status == 200 and _validation_response(out_body) == sub.validation_code
        with self._lock:
            sub.validation_in_flight = False
            sub.validation_attempts = attempt
            sub.last_validation_status = status
            if ok:
                sub.validated = True
            else:
                sub.validation_due = now + timedelta(seconds=retry_delay_s(attempt))
            self._log(
                event_id=event_id,
                event_type=VALIDATION_EVENT_TYPE,
                sub=sub,
                attempt=attempt,
                status=status,
                now=now,
                outcome="validated" if ok else "validation-failed",
                duplicate=False,
            )

    def _run_delivery(self, job: _Job, now: datetime) -> None:
        sub, d = job.subscription, job.delivery
        assert d is not None  # noqa: S101 - "deliver" jobs always carry their delivery
        attempt = d.attempts + 1
        cloud = sub.schema == CLOUD_EVENT_SCHEMA
        headers = {
            "Content-Type": CLOUD_EVENTS_BATCH if cloud else "application/json",
            "aeg-event-type": "Notification",
            "aeg-subscription-name": sub.name.upper(),
            "aeg-delivery-count": str(d.attempts),
            "aeg-data-version": str(d.events[0].get("dataVersion", "1")),
            "aeg-metadata-version": str(d.events[0].get("metadataVersion", "1")),
        }
        status, _, _ = self._guarded_send("POST", sub.endpoint, headers, json.dumps(job.payload).encode())
        with self._lock:
            d.in_flight = False
            d.attempts = attempt
            if sub.id not in self.subscriptions:
                return
            if 200 <= status <= 204:
                outcome = "delivered"
                self._drop(d)
                if not d.duplicate and sub.duplicate_rate > 0 and self._rng.random() < sub.duplicate_rate:
                    self.pending.append(
                        Delivery(
                            subscription_id=sub.id,
                            events=d.events,
                            published=now,
                            due=now + timedelta(seconds=self._rng.uniform(*DUPLICATE_DELAY_S)),
                            duplicate=True,
                        )
                    )
            elif status in NOT_RETRIED:
                outcome = "dead-lettered"
                self._drop(d)
                self._dead_letter(sub, d, NOT_RETRIED[status], status, now)
            else:
                next_due = now + timedelta(seconds=retry_delay_s(attempt))
                if attempt >= sub.max_delivery_attempts:
                    outcome = "dead-lettered"
                    self._drop(d)
                    self._dead_letter(sub, d, "MaxDeliveryAttemptsExceeded", status, now)
                elif next_due - d.published > sub.event_ttl:
                    outcome = "dead-lettered"
                    self._drop(d)
                    self._dead_letter(sub, d, "TimeToLiveExceeded", status, now)
                else:
                    outcome = "retry-scheduled"
                    d.due = next_due
            for event in d.events:
                self._log(
                    event_id=str(event.get("id")),
                    event_type=str(event.get("eventType")),
                    sub=sub,
                    attempt=attempt,
                    status=status,
                    now=now,
                    outcome=outcome,
                    duplicate=d.duplicate,
                )

    def _guarded_send(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            return self._send(method, url, headers, body)
        except Exception:  # noqa: BLE001 - a failing local endpoint is an unreachable webhook, retried
            return 0, {}, b""

    def _drop(self, d: Delivery) -> None:
        self.pending = [p for p in self.pending if p is not d]

    def _dead_letter(
        self, sub: Subscription, d: Delivery, reason: str, status: int | None, now: datetime
    ) -> None:
        for event in d.events:
            self.dead_letters.append(
                {
                    "event": copy.deepcopy(event),
                    "subscription_id": sub.id,
                    "deadLetterReason": reason,
                    "deliveryAttempts": d.attempts,
                    "lastDeliveryOutcome": status,
                    "deadLetteredAt": isoformat(now),
                }
            )

    def _log(
        self,
        *,
        event_id: str,
        event_type: str,
        sub: Subscription,
        attempt: int,
        status: int,
        now: datetime,
        outcome: str,
        duplicate: bool,
    ) -> None:
        self._seq += 1
        self.deliveries.append(
            {
                "seq": self._seq,
                "event_id": event_id,
                "event_type": event_type,
                "subscription_id": sub.id,
                "attempt": attempt,
                "status_code": status,
                "time": isoformat(now),
                "outcome": outcome,
                "duplicate": duplicate,
            }
        )


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
