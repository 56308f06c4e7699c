"""An event costs what its key costs: duplicates write nothing, a burst makes one pass, the
filtered Resource Graph query finds exactly the key's bindings, and fanned-out work items
read the handler's bindings instead of listing the subscription again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sandbox.world import World
from shared.errors import ValidationError
from shared.events import IgnoredEvent, KeyVaultEvent, parse_event
from shared.idempotency import Claim, MemoryIdempotencyStore, PassMark, TableIdempotencyStore, covers
from shared.inventory import for_key, graph_query_for_key
from shared.model import KeyRef
from shared.workqueue import WorkItem
from tests.app.estate import EventCapture, key_client, make_cluster, make_estate, make_vault, steward
from tests.azurite import Azurite


def new_version_events(capture: EventCapture) -> list[KeyVaultEvent]:
    out = []
    for raw in capture.of_type("KeyNewVersionCreated"):
        parsed = parse_event(event_id=raw["id"], event_type=raw["eventType"], data=raw["data"],
                             source=raw.get("topic"), subject=raw.get("subject"), event_time=raw.get("eventTime"))
        assert not isinstance(parsed, IgnoredEvent)
        out.append(parsed)
    return out


def summary(bindings):
    return sorted((b.resource_id.lower(), b.service.value, b.pinned_version) for b in bindings)


@pytest.mark.parametrize("inventory", ["arm", "resourcegraph"])
def test_a_duplicate_event_writes_nothing_and_reads_nothing(inventory: str) -> None:
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=0, versionless=0)
    capture = EventCapture(world)
    app, queue, _ = steward(world, estate, KEYSTEWARD_INVENTORY=inventory)
    estate.keys.rotate_key(estate.key_name)
    world.tick(world.clock.now())
    (event,) = new_version_events(capture)
    first = app.handle_event(event)
    assert first.action == "fanned-out"
    seq = world.last_seq
    again = app.handle_event(event)
    assert again.action == "duplicate"
    assert world.requests_since(seq) == []  # not a read, not a write
    assert len(queue.items) == 2  # nothing enqueued by the duplicate


def test_a_burst_of_events_for_one_key_makes_one_pass() -> None:
    world = World()
    estate = make_estate(world, clusters_per_sub=3, accounts_per_sub=0, versionless=0)
    capture = EventCapture(world)
    app, queue, _ = steward(world, estate)
    kc = estate.keys
    for _ in range(5):
        world.clock.advance(timedelta(seconds=1))  # Key Vault creates at most 2 versions a second
        kc.rotate_key(estate.key_name)
    world.tick(world.clock.now())
    events = new_version_events(capture)
    assert len(events) == 5
    actions = [app.handle_event(e).action for e in events]
    assert actions.count("fanned-out") == 1
    assert actions.count("coalesced") == 4
    assert len(queue.items) == 2  # one work item per subscription, once


@pytest.mark.parametrize("inventory", ["resourcegraph", "arm"])
def test_the_filtered_query_returns_exactly_the_keys_bindings(inventory: str) -> None:
    """A seeded estate with look-alike keys (a name that is a prefix, the same name in another
    vault): the filtered query's bindings equal the full-estate answer filtered by key."""
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=1, versionless=1)
    sub = estate.subs[0]
    kc = estate.keys
    lookalike = str(kc.create_rsa_key("cmk-2", size=2048).properties.version)
    make_cluster(world, sub, "adxlookalike", vault_url=estate.vault_url, key="cmk-2", version=lookalike,
                 grant_in=(sub, estate.vault_name))
    other_url = make_vault(world, sub, "kv-other")
    other_version = str(key_client(world, other_url).create_rsa_key("cmk", size=2048).properties.version)
    make_cluster(world, sub, "adxothervault", vault_url=other_url, key="cmk", version=other_version,
                 grant_in=(sub, "kv-other"))
    app, _, _ = steward(world, estate, KEYSTEWARD_INVENTORY=inventory)
    everything = app.all_bindings()
    for key in (KeyRef(estate.vault_url, "cmk", None), KeyRef(estate.vault_url, "cmk-2", None),
                KeyRef(other_url, "cmk", None)):
        seq = world.last_seq
        filtered = app.key_bindings(key)
        assert summary(filtered) == summary(for_key(everything, key))
        assert filtered
        paths = [c.path for c in world.requests_since(seq)]
        if inventory == "resourcegraph":
            assert paths == ["/providers/Microsoft.ResourceGraph/resources"]
        else:  # the list pages, as raw JSON: one per subscription and type here (Kusto
            # databases, listed cluster by cluster only, are left to the timer's full pass)
            assert len(paths) == len(estate.subs) * 4
            assert all(c.method == "GET" for c in world.requests_since(seq))
    assert len(app.key_bindings(KeyRef(estate.vault_url, "unused", None))) == 0


def test_the_filtered_query_refuses_what_cannot_be_a_key_name() -> None:
    with pytest.raises(ValidationError):
        graph_query_for_key(KeyRef("https://kv.vault.azure.net", "x' or 1 == 1 or name has 'y", None),
                            ["microsoft.kusto/clusters"])


def test_fanned_out_work_items_read_their_bindings_instead_of_listing() -> None:
    world = World()
    estate = make_estate(world, clusters_per_sub=2, accounts_per_sub=0, versionless=0)
    capture = EventCapture(world)
    app, queue, _ = steward(world, estate)
    v2 = str(estate.keys.rotate_key(estate.key_name).properties.version)
    world.tick(world.clock.now())
    (event,) = new_version_events(capture)
    app.handle_event(event)
    item, _ = queue.items.popleft()
    assert len(item.resources) == 2
    assert WorkItem.from_json(item.to_json()) == item
    seq = world.last_seq
    result = app.process_work_item(item)
    assert len(result.started) == 2
    lists = [c for c in world.requests_since(seq) if c.method == "GET" and c.path.lower().endswith("/clusters")]
    assert lists == []
    world.tick(world.clock.now())
    assert {v for name, v in estate.pinned_versions().items() if item.subscription[-4:] in name} == {v2}


def test_a_failed_handling_forgets_its_claim_and_a_concurrent_one_is_redelivered() -> None:
    world = World()
    store = MemoryIdempotencyStore(world.clock)
    assert store.claim("e1") is Claim.NEW
    assert store.claim("e1") is Claim.IN_PROGRESS
    store.release("e1")
    assert store.claim("e1") is Claim.NEW
    store.complete("e1")
    assert store.claim("e1") is Claim.DONE
    mark = PassMark("v2", None)
    assert covers(mark, version="v2", event_time=None)
    assert not covers(mark, version="v3", event_time=None)
    assert not covers(None, version="v2", event_time=None)
    created = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    newer = PassMark("v3", created)
    assert covers(newer, version="v2", event_time=created - timedelta(seconds=1))
    # Same second: not known to be older (Key Vault's times are whole seconds): a pass runs.
    assert not covers(newer, version="v2", event_time=created)
    assert not covers(newer, version="v4", event_time=created + timedelta(seconds=1))


@pytest.mark.azurite
def test_table_records_claim_once_and_expire(azurite: Azurite) -> None:
    from datetime import timedelta

    world = World()
    store = TableIdempotencyStore.from_connection_string(azurite.connection_string, world.clock,
                                                         table_prefix="ksidem", ttl=timedelta(minutes=5))
    assert store.claim("evt/1?#") is Claim.NEW
    assert store.claim("evt/1?#") is Claim.IN_PROGRESS
    store.complete("evt/1?#")
    assert store.claim("evt/1?#") is Claim.DONE
    world.clock.advance(timedelta(minutes=6))
    assert store.claim("evt/1?#") is Claim.NEW  # expired: taken over
    store.release("evt/1?#")
    store.mark_pass("https://kv.vault.azure.net/keys/k", PassMark("v9", None))
    assert store.last_pass("https://kv.vault.azure.net/keys/K") == PassMark("v9", None)


def test_a_malformed_resources_list_in_a_work_item_is_refused() -> None:
    good = WorkItem("https://kv-estate.vault.azure.net/keys/cmk", "s", resources=("kusto /subscriptions/s/x",))
    assert WorkItem.from_json(good.to_json()).resources == good.resources
    with pytest.raises(ValidationError, match="resources"):
        WorkItem.from_json('{"key": "k", "subscription": "s", "resources": ["no-space"]}')
    with pytest.raises(ValidationError, match="resources"):
        WorkItem.from_json('{"key": "k", "subscription": "s", "resources": "kusto x"}')


def test_a_fleet_update_on_default_settings_meets_no_429_under_a_tight_unannounced_bucket() -> None:
    """The pacer in the clients' pipeline, end to end: 120 pinned clusters in one subscription,
    ARM's write bucket set to 50 refilling 10/s (keysteward is not told), default settings."""
    from sandbox import seeds
    from sandbox.clock import SandboxClock
    from sandbox.transport import SandboxTransport, StaticTokenCredential
    from shared.app import build
    from shared.config import load_settings
    from shared.notify import LogNotifier
    from shared.workqueue import MemoryQueue

    doc = seeds.generate_fleet(120, 0, 1, versions=1)
    doc["vaults"][0]["keys"][0]["size"] = 2048
    sub = str(doc["subscriptions"][0]["id"]).lower()
    world = World(subscriptions=[sub], clock=SandboxClock())
    seeded = seeds.apply_seed(world, doc)
    world.throttle.reset()
    world.throttle.configure(arm_write_burst=50, arm_writes_per_s=10)
    world.clock.advance(timedelta(hours=1))
    vault_url = seeded.vault_urls["kv-fleet"]
    settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": sub, "KEYSTEWARD_VAULTS": vault_url})
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=LogNotifier(), queue=MemoryQueue(), polling_interval=0)
    key_client(world, vault_url).rotate_key("cmk-fleet")
    seq = world.last_seq
    result = app.reconciler.reconcile_key(KeyRef(vault_url, "cmk-fleet", None))
    assert len(result.started) == 120
    assert not result.failed
    answers = [e for e in world.requests_since(seq) if e.service == "arm"]
    assert [e.status for e in answers if e.status == 429] == []
    assert sum(1 for e in answers if e.method == "PATCH") == 120  # one write per binding


def test_many_bindings_in_a_subscription_are_found_again_not_carried() -> None:
    """Past MAX_CARRIED_RESOURCES a work item carries no ids (each would cost a read on every
    confirm pass): it finds its subscription's bindings of the key through the filtered path."""
    from shared.app import MAX_CARRIED_RESOURCES

    world = World()
    estate = make_estate(world, clusters_per_sub=MAX_CARRIED_RESOURCES + 1, accounts_per_sub=0, versionless=0)
    capture = EventCapture(world)
    app, queue, _ = steward(world, estate)
    estate.keys.rotate_key(estate.key_name)
    world.tick(world.clock.now())
    (event,) = new_version_events(capture)
    app.handle_event(event)
    item, _ = queue.items.popleft()
    assert item.resources == ()
    seq = world.last_seq
    result = app.process_work_item(item)
    assert len(result.started) == MAX_CARRIED_RESOURCES + 1
    single_gets = [c for c in world.requests_since(seq) if c.method == "GET" and "/clusters/" in c.path.lower()]
    assert single_gets == []  # the list pages, not a read per cluster
