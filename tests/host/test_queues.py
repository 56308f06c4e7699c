"""Queue triggers against Azurite: processing, retries, the poison queue, message encodings."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from sandbox.host import DevHost, HostConfig, QueueOptions, load_functions
from tests.azurite import Azurite
from tests.host import fixture_app
from tests.host.conftest import KEYS, ManualClock, wait_for

pytestmark = pytest.mark.azurite

OPTIONS = QueueOptions(
    max_dequeue_count=5,
    visibility_timeout=timedelta(0),
    batch_size=4,
    max_polling_interval=timedelta(milliseconds=200),
    message_encoding="base64",
)


@pytest.fixture
def queue_name() -> str:
    return f"work-{uuid.uuid4().hex[:12]}"


def _host(azurite: Azurite, queue_name: str, options: QueueOptions) -> DevHost:
    env = {"FIXTURE_SCHEDULE": "0 0 3 * * *", "FIXTURE_QUEUE": queue_name, "FixtureStorage": azurite.connection_string}
    functions = load_functions(fixture_app.build_app(), environ=env)
    return DevHost(
        functions, keys=KEYS, config=HostConfig(queues=options), clock=ManualClock(), port=0, queue_poll_interval=0.05
    )


@pytest.fixture
def queue_host(azurite: Azurite, queue_name: str) -> Iterator[DevHost]:
    fixture_app.reset()
    with _host(azurite, queue_name, OPTIONS) as host:
        yield host
    fixture_app.reset()


def _client(azurite: Azurite, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def _send(client: QueueClient, text: str) -> None:
    client.send_message(base64.b64encode(text.encode()).decode())


def _count(client: QueueClient) -> int:
    """Messages visible in the queue (0 when the queue does not exist yet)."""
    try:
        return len(client.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return 0


def test_a_good_message_is_processed_and_deleted(queue_host: DevHost, azurite: Azurite, queue_name: str) -> None:
    queue = _client(azurite, queue_name)
    _send(queue, '{"key": "k1"}')
    wait_for(lambda: len(fixture_app.calls("work")) == 1)
    (msg,) = fixture_app.calls("work")
    assert isinstance(msg, func.QueueMessage)
    assert msg.get_body() == b'{"key": "k1"}'
    assert msg.dequeue_count == 1
    assert msg.id
    assert msg.pop_receipt
    assert msg.insertion_time is not None
    assert msg.expiration_time is not None
    wait_for(lambda: queue.get_queue_properties().approximate_message_count == 0)


def test_a_failing_message_ends_in_the_poison_queue_after_five_dequeues(
    queue_host: DevHost, azurite: Azurite, queue_name: str
) -> None:
    queue = _client(azurite, queue_name)
    _send(queue, "fail")
    _send(queue, "fine")
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    wait_for(lambda: _count(poison) == 1, timeout=30)
    failing = [m for m in fixture_app.calls("work") if m.get_body() == b"fail"]
    assert [m.dequeue_count for m in failing] == [1, 2, 3, 4, 5]
    (poisoned,) = poison.peek_messages()
    assert base64.b64decode(poisoned.content) == b"fail"
    assert [m.get_body() for m in fixture_app.calls("work") if m.get_body() != b"fail"] == [b"fine"]
    wait_for(lambda: queue.get_queue_properties().approximate_message_count == 0)


def test_a_message_that_is_not_base64_goes_to_poison_at_once(
    queue_host: DevHost, azurite: Azurite, queue_name: str
) -> None:
    queue = _client(azurite, queue_name)
    queue.send_message("plain text, not base64!")
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    wait_for(lambda: _count(poison) == 1, timeout=15)
    assert fixture_app.calls("work") == []


def test_plain_encoding_is_honoured(azurite: Azurite, queue_name: str) -> None:
    fixture_app.reset()
    options = QueueOptions(message_encoding="none", max_polling_interval=timedelta(milliseconds=200))
    with _host(azurite, queue_name, options):
        _client(azurite, queue_name).send_message("plain body")
        wait_for(lambda: len(fixture_app.calls("work")) == 1)
    assert fixture_app.calls("work")[0].get_body() == b"plain body"
