"""The journal's behaviour, run against both implementations: Table storage (Azurite) and memory."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient

from shared.errors import ConfigError, NotFoundError, PermanentError, TransientError, ValidationError
from shared.journal import (
    JSON_MAX_CHARS,
    PAGE_MAX_CHARS,
    STEP_RESULT_MAX_CHARS,
    ConflictError,
    Journal,
    Lease,
    Run,
    Step,
    TableJournal,
    from_connection_string,
    from_identity,
    new_run_id,
    run_row_key,
    table_service,
)
from tests.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.memory_journal import MemoryJournal

KEY = "https://vault-a.vault.azure.net/keys/cmk-a"
OTHER_KEY = "https://vault-b.vault.azure.net/keys/cmk-b"
STALE = timedelta(minutes=10)
TTL = timedelta(minutes=5)
T = TypeVar("T")


class FakeClock:
    """A clock that moves only when told to; sleep() advances it."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=seconds))

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


@dataclass
class Backend:
    """One journal under test, and a way to open another instance over the same store."""

    journal: Journal
    another: Callable[[], Journal]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))


@pytest.fixture(params=["memory", pytest.param("table", marks=pytest.mark.azurite)])
def backend(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Backend]:
    if request.param == "memory":
        journal = MemoryJournal(clock)
        yield Backend(journal, lambda: journal)
        return
    azurite: Azurite = request.getfixturevalue("azurite")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    services: list[TableServiceClient] = []

    def open_journal() -> Journal:
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        services.append(service)
        return TableJournal(service, clock=clock, table_prefix=prefix)

    yield Backend(open_journal(), open_journal)
    for service in services:
        service.close()


@pytest.fixture
def journal(backend: Backend) -> Journal:
    return backend.journal


def make_run(journal: Journal, key: str = KEY, **overrides: Any) -> Run:
    fields: dict[str, Any] = {
        "kind": "revoke",
        "key": key,
        "caller_oid": "0000-oid",
        "caller_name": "Ada On-call",
        "reason": "key material exposed",
        "ticket": "INC-42",
        "params": {"mode": "disable", "dryRun": False, "emergency": True},
    }
    fields.update(overrides)
    return journal.create_run(**fields)


# runs -----------------------------------------------------------------------------------


def test_create_and_get_run(journal: Journal, clock: FakeClock) -> None:
    run = make_run(journal)

    assert run.status == "running"
    assert not run.finished
    assert run.created == run.updated == clock.now()
    assert run.etag
    assert run_row_key(run.run_id) is not None
    got = journal.get_run(run.run_id)
    assert got == run
    assert got.params == {"mode": "disable", "dryRun": False, "emergency": True}
    assert got.result == {}
    assert got.caller_name == "Ada On-call"
    assert got.ticket == "INC-42"
    assert got.created.tzinfo is not None
    assert type(got.created) is datetime


def test_run_ids_sort_by_creation_and_are_url_safe(clock: FakeClock) -> None:
    first = new_run_id(clock.now())
    clock.advance(timedelta(milliseconds=1))
    second = new_run_id(clock.now())

    assert first < second
    assert first.startswith("20240501T120000123Z-")
    assert all(c.isalnum() or c == "-" for c in first + second)


@pytest.mark.parametrize("run_id", ["20240501T120000123Z-0123456789", "nonsense", "", "a/b#c"])
def test_get_unknown_run_raises_not_found(journal: Journal, run_id: str) -> None:
    with pytest.raises(NotFoundError):
        journal.get_run(run_id)


def test_create_run_refuses_bad_input(journal: Journal) -> None:
    with pytest.raises(ValidationError):
        make_run(journal, kind="delete")
    with pytest.raises(ValidationError):
        make_run(journal, status="done")
    with pytest.raises(ValidationError):
        make_run(journal, params={"when": datetime.now(UTC)})
    assert journal.list_runs() == []


def test_list_runs_of_a_key_newest_first(journal: Journal, clock: FakeClock) -> None:
    created = []
    for _ in range(3):
        created.append(make_run(journal))
        clock.advance(timedelta(seconds=1))
    other = make_run(journal, key=OTHER_KEY)

    runs = journal.list_runs(key=KEY)

    assert [r.run_id for r in runs] == [r.run_id for r in reversed(created)]
    assert other.run_id not in {r.run_id for r in runs}
    assert [r.run_id for r in journal.list_runs(key=OTHER_KEY)] == [other.run_id]
    assert journal.list_runs(key="https://nowhere.vault.azure.net/keys/none") == []


def test_list_runs_key_is_compared_normalised(journal: Journal) -> None:
    run = make_run(journal)

    assert [r.run_id for r in journal.list_runs(key=KEY.upper() + "/")] == [run.run_id]


def test_list_runs_limit_statuses_and_all_keys(journal: Journal, clock: FakeClock) -> None:
    ids = []
    for n in range(20):  # more than one 15-term filter batch
        run = make_run(journal, key=KEY if n % 4 else OTHER_KEY)
        if n % 3 == 0:
            run = journal.update_run(run, status="succeeded")
        ids.append(run.run_id)
        clock.advance(timedelta(milliseconds=5))
    newest_first = ids[::-1]
    of_key = [i for n, i in enumerate(ids) if n % 4][::-1]

    assert [r.run_id for r in journal.list_runs()] == newest_first
    assert [r.run_id for r in journal.list_runs(limit=7)] == newest_first[:7]
    assert [r.run_id for r in journal.list_runs(key=KEY)] == of_key
    assert [r.run_id for r in journal.list_runs(key=KEY, limit=4)] == of_key[:4]
    succeeded = [r.run_id for r in journal.list_runs(statuses={"succeeded"})]
    assert succeeded == [i for n, i in enumerate(ids) if n % 3 == 0][::-1]
    running_of_key = journal.list_runs(key=KEY, statuses={"running", "failed"}, limit=3)
    assert [r.run_id for r in running_of_key] == [i for n, i in enumerate(ids) if n % 4 and n % 3][::-1][:3]
    assert journal.list_runs(limit=0) == []


def test_update_run_replaces_fields_and_etag(journal: Journal, clock: FakeClock) -> None:
    run = make_run(journal)
    clock.advance(timedelta(seconds=30))

    done = journal.update_run(run, status="partially-succeeded", result={"disabled": 3, "failed": ["sql-1"]})

    assert done.finished
    assert done.etag != run.etag
    assert done.updated == clock.now()
    assert done.created == run.created
    assert done.params == run.params
    assert journal.get_run(run.run_id) == done
    again = journal.update_run(done, params={"mode": "disable", "restoreOf": None})
    assert again.status == "partially-succeeded"
    assert again.result == {"disabled": 3, "failed": ["sql-1"]}
    assert journal.get_run(run.run_id).params == {"mode": "disable", "restoreOf": None}


def test_update_run_conflicts_when_another_reader_updated_first(journal: Journal) -> None:
    run = make_run(journal)
    reader_a = journal.get_run(run.run_id)
    reader_b = journal.get_run(run.run_id)

    journal.update_run(reader_a, status="canceled")

    with pytest.raises(ConflictError):
        journal.update_run(reader_b, status="succeeded")
    assert journal.get_run(run.run_id).status == "canceled"


def test_update_run_refuses_unknown_status(journal: Journal) -> None:
    run = make_run(journal)
    with pytest.raises(ValidationError):
        journal.update_run(run, status="done")


def test_large_results_are_split_and_oversized_ones_truncated(journal: Journal) -> None:
    run = make_run(journal)
    large = {"resources": ["x" * 100 for _ in range(1000)], "note": "é ✓ \U0001f511"}  # ~100 K chars

    stored = journal.update_run(run, result=large)

    assert journal.get_run(run.run_id).result == large == stored.result
    huge = {"blob": "y" * (JSON_MAX_CHARS + 1)}
    truncated = journal.update_run(stored, result=huge)
    got = journal.get_run(run.run_id).result
    assert got == truncated.result
    assert got["truncated"] is True
    assert got["originalChars"] > JSON_MAX_CHARS
    assert got["preview"].startswith('{"blob":"yyy')


def test_list_unfinished_oldest_first_and_older_than(journal: Journal, clock: FakeClock) -> None:
    start = clock.now()
    old = make_run(journal)
    finished = journal.update_run(make_run(journal), status="succeeded")
    waiting = make_run(journal, status="pending-approval")
    clock.advance(timedelta(minutes=1))
    older = make_run(journal, key=OTHER_KEY)
    clock.advance(timedelta(minutes=30))
    recent = make_run(journal)

    assert [r.run_id for r in journal.list_unfinished()] == [old.run_id, older.run_id, recent.run_id]
    cutoff = start + timedelta(minutes=15)
    assert [r.run_id for r in journal.list_unfinished(cutoff)] == [old.run_id, older.run_id]
    assert journal.list_unfinished(start) == []
    assert finished.run_id not in {r.run_id for r in journal.list_unfinished()}
    assert waiting.run_id not in {r.run_id for r in journal.list_unfinished()}
    # Touching a run (e.g. approving it) makes it recent again.
    journal.update_run(journal.get_run(old.run_id), status="running")
    assert [r.run_id for r in journal.list_unfinished(cutoff)] == [older.run_id]


# steps ----------------------------------------------------------------------------------


def test_claim_step_first_claim_wins_until_stale(journal: Journal, clock: FakeClock) -> None:
    run = make_run(journal)

    first = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)

    assert first is not None
    assert (first.status, first.owner, first.attempt, first.started) == ("running", "a", 1, clock.now())
    assert first.finished is None
    assert journal.claim_step(run.run_id, 0, "disable-key", owner="b", stale_after=STALE) is None
    clock.advance(STALE - timedelta(seconds=1))
    assert journal.claim_step(run.run_id, 0, "disable-key", owner="b", stale_after=STALE) is None
    clock.advance(timedelta(seconds=1))

    taken = journal.claim_step(run.run_id, 0, "disable-key", owner="b", stale_after=STALE)

    assert taken is not None
    assert (taken.owner, taken.attempt, taken.started) == ("b", 2, clock.now())
    with pytest.raises(ConflictError):
        journal.complete_step(first, status="succeeded", result={"by": "a"})
    done = journal.complete_step(taken, status="succeeded", result={"by": "b"})
    assert (done.status, done.result, done.finished) == ("succeeded", {"by": "b"}, clock.now())
    clock.advance(STALE * 10)
    for owner in ("a", "b", "c"):
        assert journal.claim_step(run.run_id, 0, "disable-key", owner=owner, stale_after=STALE) is None
    assert journal.steps(run.run_id) == [done]


def test_claim_step_final_outcomes_are_never_claimed_again(journal: Journal, clock: FakeClock) -> None:
    run = make_run(journal)
    for index, status in enumerate(["succeeded", "failed", "skipped"]):
        step = journal.claim_step(run.run_id, index, f"s{index}", owner="a", stale_after=STALE)
        assert step is not None
        journal.complete_step(step, status=status, result={}, error="boom" if status == "failed" else None)
    clock.advance(STALE * 2)

    for index in range(3):
        assert journal.claim_step(run.run_id, index, f"s{index}", owner="a", stale_after=STALE) is None
    recorded = journal.steps(run.run_id)
    expected = [("succeeded", None), ("failed", "boom"), ("skipped", None)]
    assert [(s.status, s.error) for s in recorded] == expected


def test_step_handed_back_as_pending_is_claimed_at_once(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)
    assert step is not None

    journal.complete_step(step, status="pending", result={}, error="throttled")
    again = journal.claim_step(run.run_id, 0, "disable-key", owner="b", stale_after=STALE)

    assert again is not None
    assert (again.owner, again.attempt, again.error, again.finished) == ("b", 2, None, None)


def test_owner_may_reclaim_its_own_running_step(journal: Journal) -> None:
    run = make_run(journal)
    first = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)
    assert first is not None

    again = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)

    assert again is not None
    assert again.attempt == 2
    with pytest.raises(ConflictError):
        journal.complete_step(first, status="succeeded", result={})


def test_claim_step_refuses_a_renamed_step(journal: Journal) -> None:
    run = make_run(journal)
    assert journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE) is not None

    with pytest.raises(PermanentError):
        journal.claim_step(run.run_id, 0, "notify", owner="a", stale_after=STALE)


def test_complete_step_refuses_running_and_unknown_statuses(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)
    assert step is not None
    for status in ("running", "done"):
        with pytest.raises(ValidationError):
            journal.complete_step(step, status=status, result={})


def test_complete_step_refuses_a_step_already_completed(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)
    assert step is not None
    done = journal.complete_step(step, status="succeeded", result={"ok": True})

    with pytest.raises(PermanentError):
        journal.complete_step(done, status="failed", result={})
    assert journal.steps(run.run_id) == [done]


def test_steps_are_ordered_by_index_and_kept_per_run(journal: Journal) -> None:
    run = make_run(journal)
    other = make_run(journal)
    for index in (10, 2, 0, 9, 1):
        assert journal.claim_step(run.run_id, index, f"s{index}", owner="a", stale_after=STALE)
    assert journal.claim_step(other.run_id, 0, "s0", owner="a", stale_after=STALE)

    assert [s.index for s in journal.steps(run.run_id)] == [0, 1, 2, 9, 10]
    assert [s.name for s in journal.steps(other.run_id)] == ["s0"]
    assert journal.steps("20240501T120000123Z-0123456789") == []


def test_long_step_error_is_clipped(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "disable-key", owner="a", stale_after=STALE)
    assert step is not None

    done = journal.complete_step(step, status="failed", result={}, error="e" * 100_000)

    assert done.error is not None
    assert done.error.endswith("[truncated]")
    assert journal.steps(run.run_id)[0].error == done.error


def _radius(bindings: int) -> dict[str, Any]:
    """A blast radius the size of a large fleet's: ~250 characters per binding."""
    return {"bindings": [
        {"resourceId": f"/subscriptions/{n % 7:08d}-0000-0000-0000-000000000000/resourceGroups/rg-{n}"
                       f"/providers/Microsoft.Kusto/clusters/cluster-{n:05d}",
         "service": "kusto", "version": f"{n % 50:032x}", "affected": "yes", "health": "healthy",
         "principalId": str(uuid.UUID(int=n))}
        for n in range(bindings)
    ], "note": "é ✓ \U0001f511"}


def test_large_step_results_are_paged_and_read_back_whole(backend: Backend) -> None:
    journal = backend.journal
    run = make_run(journal)
    first = journal.claim_step(run.run_id, 0, "resolve", owner="a", stale_after=STALE)
    second = journal.claim_step(run.run_id, 1, "snapshot", owner="a", stale_after=STALE)
    assert first is not None and second is not None
    large = _radius(4000)  # ~1 M characters: over JSON_MAX_CHARS, three pages
    assert len(str(large)) > 2 * PAGE_MAX_CHARS

    done = journal.complete_step(first, status="succeeded", result=large)
    journal.complete_step(second, status="succeeded", result={"enabled": ["v1"]})

    assert done.result == large
    for reader in (journal, backend.another()):
        steps = reader.steps(run.run_id)
        assert [s.index for s in steps] == [0, 1]
        assert steps[0].result == large
        assert steps[1].result == {"enabled": ["v1"]}
        assert steps[0].etag == done.etag


def test_paged_progress_survives_a_reclaim_and_a_smaller_result_replaces_it(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "verify", owner="a", stale_after=STALE)
    assert step is not None
    progress = _radius(2000)
    journal.complete_step(step, status="pending", result=progress)

    again = journal.claim_step(run.run_id, 0, "verify", owner="b", stale_after=STALE)
    assert again is not None and again.result == progress and again.attempt == 2
    assert journal.steps(run.run_id)[0].result == progress

    journal.complete_step(again, status="succeeded", result={"confirmed": 2000})
    assert journal.steps(run.run_id)[0].result == {"confirmed": 2000}
    assert journal.claim_step(run.run_id, 0, "verify", owner="c", stale_after=STALE) is None


def test_step_result_beyond_the_paged_limit_is_truncated(journal: Journal) -> None:
    run = make_run(journal)
    step = journal.claim_step(run.run_id, 0, "verify", owner="a", stale_after=STALE)
    assert step is not None

    done = journal.complete_step(step, status="succeeded", result={"blob": "z" * STEP_RESULT_MAX_CHARS})

    got = journal.steps(run.run_id)[0].result
    assert got == done.result
    assert got["truncated"] is True and got["originalChars"] > STEP_RESULT_MAX_CHARS


def _race(count: int, attempt: Callable[[int], T | None]) -> list[T | None]:
    """Runs ``attempt(n)`` in ``count`` threads released together; returns their results."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        barrier.wait()
        try:
            results[n] = attempt(n)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-takeover"])
def test_racing_claims_have_exactly_one_winner(
    backend: Backend, clock: FakeClock, stale: bool
) -> None:
    instances = [backend.another() for _ in range(4)]
    run = make_run(backend.journal)
    for index in range(5):
        if stale:
            assert backend.journal.claim_step(run.run_id, index, "step", owner="dead", stale_after=STALE)
            clock.advance(STALE)

        def claim(n: int, index: int = index) -> Step | None:
            owner = f"instance-{n}"
            return instances[n].claim_step(run.run_id, index, "step", owner=owner, stale_after=STALE)

        winners = [r for r in _race(len(instances), claim) if r is not None]
        assert len(winners) == 1, winners
        assert backend.journal.steps(run.run_id)[index].owner == winners[0].owner


# leases ---------------------------------------------------------------------------------


def test_lease_refused_to_second_owner_until_expiry(journal: Journal, clock: FakeClock) -> None:
    lease = journal.acquire_lease(KEY, owner="a", ttl=TTL)

    assert lease is not None
    assert (lease.owner, lease.expires) == ("a", clock.now() + TTL)
    assert journal.acquire_lease(KEY, owner="b", ttl=TTL) is None
    assert journal.acquire_lease(KEY.upper(), owner="b", ttl=TTL) is None
    assert journal.acquire_lease(OTHER_KEY, owner="b", ttl=TTL) is not None
    clock.advance(TTL - timedelta(seconds=1))
    assert journal.acquire_lease(KEY, owner="b", ttl=TTL) is None
    clock.advance(timedelta(seconds=1))

    taken = journal.acquire_lease(KEY, owner="b", ttl=TTL)

    assert taken is not None
    assert taken.owner == "b"
    with pytest.raises(ConflictError):
        journal.renew_lease(lease, TTL)
    journal.release_lease(lease)  # no longer a's: must not free b's lease
    assert journal.acquire_lease(KEY, owner="c", ttl=TTL) is None
    journal.release_lease(taken)
    assert journal.acquire_lease(KEY, owner="c", ttl=TTL) is not None


def test_lease_renewal_extends_and_reacquire_by_owner(journal: Journal, clock: FakeClock) -> None:
    lease = journal.acquire_lease(KEY, owner="a", ttl=TTL)
    assert lease is not None
    clock.advance(TTL - timedelta(seconds=10))

    renewed = journal.renew_lease(lease, TTL)

    assert renewed.expires == clock.now() + TTL
    assert renewed.etag != lease.etag
    clock.advance(timedelta(minutes=1))
    assert journal.acquire_lease(KEY, owner="b", ttl=TTL) is None
    again = journal.acquire_lease(KEY, owner="a", ttl=TTL * 2)
    assert again is not None
    assert again.expires == clock.now() + TTL * 2
    with pytest.raises(ConflictError):
        journal.renew_lease(renewed, TTL)  # superseded by the re-acquire
    journal.release_lease(again)
    with pytest.raises(ConflictError):
        journal.renew_lease(again, TTL)
    journal.release_lease(again)  # releasing twice is harmless


def test_racing_lease_acquisitions_have_exactly_one_winner(backend: Backend, clock: FakeClock) -> None:
    instances = [backend.another() for _ in range(4)]
    for round_ in range(4):
        key = f"{KEY}-{round_}"
        if round_ % 2:  # half the rounds race for an expired lease
            assert backend.journal.acquire_lease(key, owner="dead", ttl=TTL)
            clock.advance(TTL)

        def acquire(n: int, key: str = key) -> Lease | None:
            return instances[n].acquire_lease(key, owner=f"instance-{n}", ttl=TTL)

        winners = [r for r in _race(len(instances), acquire) if r is not None]
        assert len(winners) == 1, winners


# construction ---------------------------------------------------------------------------


def test_table_service_understands_development_storage() -> None:
    service = table_service(" usedevelopmentstorage=TRUE; ")

    assert service.account_name == "devstoreaccount1"
    assert service.url.startswith("http://127.0.0.1:10002")


@pytest.mark.parametrize("conn", ["", "  ", "not a connection string"])
def test_table_service_refuses_malformed_connection_strings(conn: str) -> None:
    with pytest.raises(ConfigError):
        table_service(conn)


def _unreachable_table_uri() -> str:
    """A loopback table endpoint nothing listens on (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}/{ACCOUNT}"


class CountingCredential:
    """A token credential that counts the tokens asked of it (the journal's first request asks one)."""

    def __init__(self) -> None:
        self.requests = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests += 1
        return AccessToken("test-token", int(time.time()) + 3600)


def test_building_a_journal_does_no_storage_io_and_its_first_call_fails_transiently(clock: FakeClock) -> None:
    table_uri = _unreachable_table_uri()
    conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};TableEndpoint={table_uri};"
    credential = CountingCredential()

    by_string = from_connection_string(conn, clock=clock, table_prefix="unreached")  # would raise if it connected
    by_identity = from_identity(table_uri.replace("http:", "https:"), credential, clock=clock,
                                table_prefix="unreached")

    assert credential.requests == 0  # not even a token: nothing was sent
    with pytest.raises(TransientError, match="create table unreachedruns: connection failed"):
        by_string.list_runs()
    with pytest.raises(TransientError, match="create table unreachedsteps: connection failed"):
        by_string.steps(new_run_id(clock.now()))
    with pytest.raises(TransientError, match="create table unreachedleases: connection failed"):
        by_identity.acquire_lease(KEY, owner="me", ttl=TTL)
    assert credential.requests >= 1


@pytest.mark.azurite
def test_tables_are_created_on_first_use_once_per_table(azurite: Azurite, clock: FakeClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(request: Any) -> None:
        with lock:
            sent.append((request.http_request.method, request.http_request.url.split("?")[0]))

    def table_creations() -> int:
        return sum(1 for method, url in sent if method == "POST" and url.endswith("/Tables"))

    observer = TableServiceClient.from_connection_string(azurite.connection_string)

    def tables() -> list[str]:
        return sorted(t.name for t in observer.list_tables() if t.name.startswith(prefix))

    service = TableServiceClient.from_connection_string(azurite.connection_string, raw_request_hook=record)
    journal = TableJournal(service, clock=clock, table_prefix=prefix)
    assert (sent, tables()) == ([], [])

    assert _race(8, lambda _n: journal.list_runs()) == [[]] * 8  # eight first calls at once
    assert tables() == [f"{prefix}runs"]
    assert table_creations() == 1

    run = make_run(journal)
    journal.steps(run.run_id)
    assert tables() == [f"{prefix}runs", f"{prefix}steps"]
    journal.acquire_lease(KEY, owner="me", ttl=TTL)
    journal.revocations(KEY)
    assert tables() == [f"{prefix}leases", f"{prefix}revocations", f"{prefix}runs", f"{prefix}steps"]
    assert table_creations() == 4
    service.close()
    observer.close()


class RefusingOnce(RequestsTransport):
    """The wire refuses the first table creation, then behaves."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    def send(self, request: Any, **kwargs: Any) -> Any:
        if not self.refused and request.method == "POST" and request.url.split("?")[0].endswith("/Tables"):
            self.refused = True
            raise ServiceRequestError("connection refused (test)")
        return super().send(request, **kwargs)


@pytest.mark.azurite
def test_a_failed_table_creation_is_retried_by_the_next_call(azurite: Azurite, clock: FakeClock) -> None:
    transport = RefusingOnce()
    service = TableServiceClient.from_connection_string(azurite.connection_string, transport=transport,
                                                        retry_total=0)
    journal = TableJournal(service, clock=clock, table_prefix=f"t{uuid.uuid4().hex[:12]}")

    with pytest.raises(TransientError, match="create table"):
        make_run(journal)
    run = make_run(journal)

    assert transport.refused
    assert journal.get_run(run.run_id) == run
    service.close()


@pytest.mark.azurite
def test_from_connection_string_creates_tables_once(azurite: Azurite, clock: FakeClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    first = from_connection_string(azurite.connection_string, clock=clock, table_prefix=prefix)
    run = make_run(first)

    second = from_connection_string(azurite.connection_string, clock=clock, table_prefix=prefix)

    assert second.get_run(run.run_id) == run


# ---- revocations in force -----------------------------------------------------------------------------


def test_revocation_records_are_one_read_per_key_and_idempotent(backend: Backend, clock: FakeClock) -> None:
    journal = backend.journal
    other_key = KEY.replace("/keys/", "/keys/other-")
    first = journal.put_revocation(key=KEY, run_id="20240501T120000123Z-aaaaaaaaaa", mode="disable")
    clock.advance(timedelta(seconds=1))
    again = journal.put_revocation(key=KEY, run_id=first.run_id, mode="disable")  # a resumed drive
    assert (again.run_id, again.created) == (first.run_id, first.created)
    journal.put_revocation(key=KEY.upper().replace("HTTPS", "https"), run_id="20240501T120001123Z-bbbbbbbbbb",
                           mode="remove-access")
    journal.put_revocation(key=other_key, run_id="20240501T120002123Z-cccccccccc", mode="disable")
    for _ in range(25):  # other runs in the journal never hide a record
        make_run(journal, status="pending-approval")
    seen = backend.another().revocations(KEY)
    assert [(r.run_id, r.mode) for r in seen] == [(first.run_id, "disable"),
                                                 ("20240501T120001123Z-bbbbbbbbbb", "remove-access")]
    assert len(journal.revocations()) == 3


def test_revocation_restoring_mark_is_etag_guarded_and_ending_is_idempotent(backend: Backend) -> None:
    journal = backend.journal
    record = journal.put_revocation(key=KEY, run_id="20240501T120000123Z-aaaaaaaaaa", mode="disable")
    marked = journal.update_revocation(record, restoring="20240501T130000123Z-dddddddddd")
    assert backend.another().revocations(KEY)[0].restoring == "20240501T130000123Z-dddddddddd"
    with pytest.raises(ConflictError):
        journal.update_revocation(record, restoring=None)  # stale copy
    journal.end_revocation(key=KEY, run_id=record.run_id)
    journal.end_revocation(key=KEY, run_id=record.run_id)
    assert backend.another().revocations(KEY) == []
    with pytest.raises(ConflictError):
        journal.update_revocation(marked, restoring=None)  # ended
