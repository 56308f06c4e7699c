"""Event Grid: the delivery engine of :class:`sandbox.eventgrid.EventGridBus` (pump, what is due,
batching, and what each attempt's answer does: delivered, retried, dead-lettered).

A mixin over the bus's state rather than a class of its own: it shares the bus's lock, queues
and logs, which the bus's admin side (subscriptions, publish, the views) also keeps.
"""

from __future__ import annotations

import copy
import random
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sandbox.clock import isoformat
from sandbox.eventgrid.model import (
    DUPLICATE_DELAY_S,
    NOT_RETRIED,
    VALIDATION_EVENT_TYPE,
    Delivery,
    JsonObj,
    Subscription,
    _Job,
    retry_delay_s,
)
from sandbox.eventgrid.webhook import WebhookSender, deliver, render, validate

if TYPE_CHECKING:
    from sandbox.world import World


class _Dispatch:
    """Sends what is due; the attributes below are the bus's (see ``EventGridBus.__init__``)."""

    world: World
    sender: WebhookSender
    subscriptions: dict[str, Subscription]
    pending: list[Delivery]
    deliveries: list[JsonObj]
    dead_letters: list[JsonObj]
    _lock: threading.Lock
    _rng: random.Random
    _seq: int
    admin_base_url: str

    def validation_url(self, sub: Subscription) -> str:
        return (
            f"{self.admin_base_url}/sandbox/event-subscriptions/{sub.id}/validate?code={sub.validation_code}"
        )

    def pump(self, now: datetime) -> None:
        """Sends everything due at ``now``; returns when nothing more is due.

        Does nothing while the calling thread holds ``world.lock`` (see :mod:`sandbox.eventgrid`, "Locking").
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
                    jobs.append(_Job("deliver", sub, d, render(sub, d.events)))
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

    def _run_validation(self, sub: Subscription, now: datetime) -> None:
        attempt = sub.validation_attempts + 1
        subs = self.world.subscriptions
        topic = sub.topic or (f"/subscriptions/{subs[0]}" if subs else "")
        event_id, status, ok = validate(
            self.sender, sub, attempt, now, topic=topic, validation_url=self.validation_url(sub)
        )
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
        status = deliver(self.sender, sub, d, job.payload)
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

