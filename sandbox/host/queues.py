"""Queue triggers of the development host: the poller over Azurite's queues."""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.storage.queue import QueueClient, QueueServiceClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from sandbox.host.loading import FunctionSpec, QueueTriggerSpec
from sandbox.host.settings import LOG, QueueOptions
from sandbox.host.timers import invoke_guarded

# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------


class QueuePoller:
    """Polls one queue for one queue-triggered function, as the Functions queue listener does.

    Messages are received ``batch_size`` at a time, hidden for ``lease`` while they run
    (the function timeout), deleted on success. On failure a message is made visible again
    after ``options.visibility_timeout``; once it has failed ``max_dequeue_count`` times it
    is copied to ``<queue>-poison`` and deleted. A message that cannot be decoded goes to the
    poison queue at once, since no retry can fix it. Empty polls back off up to
    ``options.max_polling_interval``.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        options: QueueOptions,
        lease: timedelta = timedelta(minutes=10),
        min_poll_interval: float = 0.1,
        stop: threading.Event | None = None,
    ) -> None:
        if not isinstance(spec.trigger, QueueTriggerSpec):
            raise TypeError(f"function {spec.name} is not queue-triggered")
        self.spec = spec
        self.trigger = spec.trigger
        self.options = options
        self._lease = max(1, int(lease.total_seconds()))
        self._min_poll = min_poll_interval
        self._stop = stop or threading.Event()
        # Few SDK retries: the poll loop itself retries, and a long SDK back-off delays shutdown.
        service = QueueServiceClient.from_connection_string(
            self.trigger.connection_string, retry_total=1, connection_timeout=5
        )
        self.queue: QueueClient = service.get_queue_client(self.trigger.queue_name)
        self.poison: QueueClient = service.get_queue_client(f"{self.trigger.queue_name}-poison")
        self._poison_ready = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size, thread_name_prefix=f"devhost-q-{spec.name}")

    def describe(self) -> str:
        return f"{self.trigger.queue_name} at {self.queue.url.rsplit('/', 1)[0]}"

    def ensure_queue(self) -> None:
        """Creates the queue when missing (the Functions host does too)."""
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"devhost-queue-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        interval = self._min_poll
        ready = False
        down = False
        while not self._stop.is_set():
            try:
                if not ready:
                    self.ensure_queue()
                    ready = True
                batch = list(
                    self.queue.receive_messages(
                        max_messages=self.options.batch_size,
                        messages_per_page=self.options.batch_size,
                        visibility_timeout=self._lease,
                    )
                )
            except AzureError as err:
                if not down:  # once per outage: the emulator may simply not be started yet
                    LOG.warning("queue %s: cannot receive (retrying quietly): %s", self.trigger.queue_name, err)
                down = True
                batch = []
            else:
                if down:
                    LOG.info("queue %s: storage answers again", self.trigger.queue_name)
                down = False
            if not batch:
                self._stop.wait(interval)
                interval = min(interval * 2, max(self._min_poll, self.options.max_polling_interval.total_seconds()))
                continue
            interval = self._min_poll
            futures = [self._pool.submit(self.process, message) for message in batch]
            for future in futures:
                future.result()

    def process(self, message: StorageQueueMessage) -> str:
        """Handles one received message; returns "deleted", "retry" or "poison"."""
        count = int(message.dequeue_count or 0)
        name = self.trigger.queue_name
        if count > self.options.max_dequeue_count:
            return self._to_poison(message, f"dequeue count {count} exceeds {self.options.max_dequeue_count}")
        try:
            body = self._decode(str(message.content or ""))
        except ValueError as err:
            return self._to_poison(message, f"cannot decode the message: {err}")

        def make() -> FuncQueueMessage:
            return FuncQueueMessage(  # type: ignore[no-untyped-call]  # the library leaves __init__ unannotated
                id=message.id,
                body=body,
                dequeue_count=count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )

        if invoke_guarded(self.spec, make, stop=self._stop):
            try:
                self.queue.delete_message(message.id, message.pop_receipt)
            except AzureError as err:
                LOG.warning("queue %s: processed message %s but cannot delete it: %s", name, message.id, err)
            return "deleted"
        if count >= self.options.max_dequeue_count:
            return self._to_poison(message, f"failed {count} times")
        try:
            self.queue.update_message(
                message.id,
                message.pop_receipt,
                visibility_timeout=int(self.options.visibility_timeout.total_seconds()),
            )
        except AzureError as err:
            LOG.warning("queue %s: cannot release message %s: %s", name, message.id, err)
        return "retry"

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as err:
            raise ValueError(f"not base64 ({err}); host.json extensions.queues.messageEncoding is base64") from err

    def _to_poison(self, message: StorageQueueMessage, reason: str) -> str:
        poison_name = f"{self.trigger.queue_name}-poison"
        try:
            if not self._poison_ready:
                with contextlib.suppress(ResourceExistsError):
                    self.poison.create_queue()
                self._poison_ready = True
            self.poison.send_message(message.content)
            self.queue.delete_message(message.id, message.pop_receipt)
        except AzureError as err:
            LOG.error(
                "queue %s: cannot move message %s to %s: %s",
                self.trigger.queue_name,
                message.id,
                poison_name,
                err,
            )
            return "retry"
        LOG.error("queue %s: message %s moved to %s (%s)", self.trigger.queue_name, message.id, poison_name, reason)
        return "poison"
