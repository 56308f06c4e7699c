"""Work items: one (key, subscription) reconcile per message on a Storage queue.

The event handler fans a key's bindings out per subscription so that Azure Functions spreads a
large fleet over many instances; a pass that started updates re-enqueues itself (``confirm``)
with a visibility delay instead of holding a function open while operations run.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import ValidationError, translate

if TYPE_CHECKING:
    # The Storage SDK is imported when a queue is built, not when the app is indexed.
    from azure.core.credentials import TokenCredential
    from azure.storage.queue import QueueClient

# A confirm chain gives up (and reports) after this many passes: with the default 30 s delay
# and doubling up to 10 min, that is several hours, far beyond any real update operation.
MAX_CONFIRM_ATTEMPTS = 20
MAX_MESSAGE_BYTES = 48 * 1024  # Storage queue messages are limited to 64 KiB (base64 inflates)


@dataclass(frozen=True)
class WorkItem:
    key: str  # versionless key URI
    subscription: str
    phase: str = "apply"  # apply | confirm
    attempt: int = 0
    event_id: str | None = None
    started: tuple[str, ...] = field(default=())  # resource ids whose update an earlier pass started
    # "<service> <resource id>" of the key's bindings in this subscription, as the event handler
    # found them: the pass reads these resources instead of listing the subscription again.
    # Empty: list the subscription (the timer's items, or when too many to carry).
    resources: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        raw = asdict(self)
        raw["started"] = list(self.started)
        raw["resources"] = list(self.resources)
        if not self.resources:
            del raw["resources"]
        text = json.dumps(raw, separators=(",", ":"))
        if len(text) > MAX_MESSAGE_BYTES and self.resources:
            # Too many bindings to carry: the pass lists the subscription instead.
            raw.pop("resources", None)
            text = json.dumps(raw, separators=(",", ":"))
        if len(text) > MAX_MESSAGE_BYTES:
            # Too many ids to carry: drop them; the confirm pass still converges, it only
            # reports "in sync" instead of "updated" for those bindings.
            raw["started"] = []
            text = json.dumps(raw, separators=(",", ":"))
        return text

    @staticmethod
    def from_json(text: str) -> WorkItem:
        """Parses a queue message; raises ValidationError (the message is then poison)."""
        try:
            raw: Any = json.loads(text)
        except ValueError as err:
            raise ValidationError(f"work item is not JSON: {err}", field="message") from err
        if not isinstance(raw, dict):
            raise ValidationError("work item must be a JSON object", field="message")
        key, sub = raw.get("key"), raw.get("subscription")
        phase, attempt = raw.get("phase", "apply"), raw.get("attempt", 0)
        started = raw.get("started", [])
        if not isinstance(key, str) or not isinstance(sub, str):
            raise ValidationError("work item needs string 'key' and 'subscription'", field="key")
        if phase not in ("apply", "confirm") or not isinstance(attempt, int) or attempt < 0:
            raise ValidationError("work item has a bad 'phase' or 'attempt'", field="phase")
        if not isinstance(started, list) or not all(isinstance(s, str) for s in started):
            raise ValidationError("work item 'started' must be a list of strings", field="started")
        resources = raw.get("resources", [])
        if not isinstance(resources, list) or not all(
                isinstance(r, str) and len(r.split(" ", 1)) == 2 for r in resources):
            raise ValidationError("work item 'resources' must be a list of '<service> <resource id>'",
                                  field="resources")
        event_id = raw.get("event_id")
        return WorkItem(key, sub.lower(), phase, attempt, event_id if isinstance(event_id, str) else None,
                        tuple(started), tuple(resources))

    def next_confirm(self, started: tuple[str, ...]) -> WorkItem:
        merged = tuple(dict.fromkeys((*self.started, *started)))
        return WorkItem(self.key, self.subscription, "confirm", self.attempt + 1, self.event_id, merged,
                        self.resources)


# Confirm passes run every ``base`` for this many attempts, then back off.
STEADY_CONFIRMS = 10


def confirm_delay(base: timedelta, attempt: int, *, expected: timedelta | None = None) -> timedelta:
    """When to confirm next. The first confirm after starting updates waits for the operations'
    own expected duration (their Retry-After) when known; then every ``base`` (detection lags an
    operation's end by at most ``base``); after STEADY_CONFIRMS attempts the wait doubles, capped
    at 10 minutes, for operations that run far longer than announced."""
    if attempt <= 1 and expected is not None and expected > timedelta(0):
        return min(max(expected, base), timedelta(minutes=10))
    delay: timedelta = base * (2 ** max(0, attempt - STEADY_CONFIRMS))
    return min(delay, timedelta(minutes=10))


class WorkQueue(Protocol):
    def put(self, item: WorkItem, *, delay: timedelta = timedelta(0)) -> None: ...


class MemoryQueue:
    """An in-memory queue (CLI runs everything in one process; tests at this boundary)."""

    def __init__(self) -> None:
        self.items: deque[tuple[WorkItem, timedelta]] = deque()

    def put(self, item: WorkItem, *, delay: timedelta = timedelta(0)) -> None:
        self.items.append((item, delay))

    def pop(self) -> tuple[WorkItem, timedelta] | None:
        return self.items.popleft() if self.items else None




class StorageWorkQueue:
    """The Functions storage account's queue; base64 text, as the queue trigger expects.

    Built from a connection string, or (:meth:`with_identity`) from the queue service URI and
    a token credential, for an identity-based ``AzureWebJobsStorage``."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._created = False

    @classmethod
    def from_connection_string(cls, connection_string: str, queue_name: str) -> StorageWorkQueue:
        from azure.storage.queue import (  # noqa: PLC0415 - on first use (cold start)
            QueueClient,
            TextBase64DecodePolicy,
            TextBase64EncodePolicy,
        )

        # The queue trigger reads base64 text (fresh policies per client: the SDK configures them).
        return cls(QueueClient.from_connection_string(
            connection_string, queue_name,
            message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()))

    @classmethod
    def with_identity(cls, queue_service_uri: str, queue_name: str, credential: TokenCredential) -> StorageWorkQueue:
        from azure.storage.queue import (  # noqa: PLC0415 - on first use (cold start)
            QueueClient,
            TextBase64DecodePolicy,
            TextBase64EncodePolicy,
        )

        return cls(QueueClient(queue_service_uri, queue_name, credential=credential,
                               message_encode_policy=TextBase64EncodePolicy(),
                               message_decode_policy=TextBase64DecodePolicy()))

    def put(self, item: WorkItem, *, delay: timedelta = timedelta(0)) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError  # noqa: PLC0415

        try:
            if not self._created:
                with contextlib.suppress(ResourceExistsError):
                    self._client.create_queue()
                self._created = True
            self._client.send_message(item.to_json(), visibility_timeout=int(delay.total_seconds()) or None)
        except AzureError as err:
            raise translate(err, what=f"enqueue work item for {item.key}") from err
