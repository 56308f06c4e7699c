"""Property-based checks of the Event Grid trigger through its user function
(``on_key_vault_event``), with ``func.EventGridEvent`` objects, against the in-process sandbox.

Events come three ways: Event Grid schema and CloudEvents 1.0 envelopes with exact field
names and fuzzed values (valid key events for the estate's vault, other vaults, other types,
truncated, huge, non-ASCII, wrong types, missing fields, case variants), turned into the
trigger's ``func.EventGridEvent`` the way the host does (``sandbox.host.to_event_grid_event``);
``func.EventGridEvent`` objects built directly from arbitrary values; and valid events for the
estate while the sandbox fails every read.

The function must return normally, or raise ``TransientError`` and nothing else, and only
when Azure really failed. A malformed, ignored or out-of-scope event is logged (``event-dropped``
or ``event-ignored``) and changes nothing: no write reaches the sandbox, nothing is enqueued,
nothing is notified.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from structlog.testing import capture_logs

import functions._root as root
import tests.fuzz.test_events_fuzz as parser_fuzz  # its strategies (a module import: its tests stay there)
from functions.key_events import on_key_vault_event
from sandbox.faults import FaultRule
from sandbox.host import to_event_grid_event
from sandbox.world import World
from shared.app import Keysteward
from shared.errors import TransientError
from shared.events import IgnoredEvent, KeyEventType, KeyVaultEvent, MalformedEvent, parse_event
from shared.idempotency import MemoryIdempotencyStore
from shared.notify import RecordingNotifier
from shared.propagation import Propagation
from shared.workqueue import MemoryQueue
from tests.app.estate import Estate, make_estate, steward


def fuzz(examples: int) -> settings:
    """Settings for one property: no deadline, no example database written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


VAULT = "https://kv-estate.vault.azure.net"
WRITES = frozenset({"PATCH", "PUT", "POST", "DELETE"})


@dataclass
class Bench:
    world: World
    estate: Estate
    app: Keysteward
    queue: MemoryQueue
    notifier: RecordingNotifier

    def mark(self) -> tuple[int, int, int]:
        return self.world.last_seq, len(self.queue.items), len(self.notifier.outcomes)

    def changes_since(self, mark: tuple[int, int, int]) -> list[str]:
        seq, queued, notified = mark
        out = [f"{e.method} {e.host}{e.path}" for e in self.world.requests_since(seq) if e.method in WRITES]
        out += [f"enqueued {item.key}" for item, _ in list(self.queue.items)[queued:]]
        out += [f"notified {o.kind}" for o in self.notifier.outcomes[notified:]]
        return out


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    world = World()
    estate = make_estate(world, clusters_per_sub=1, accounts_per_sub=1, versionless=1)
    assert estate.vault_url == VAULT
    app, queue, notifier = steward(world, estate)
    root.install(app)
    yield Bench(world, estate, app, queue, notifier)
    root.install(None)


# ---- envelopes ---------------------------------------------------------------------------

json_like = parser_fuzz.json_like
KEY_TYPES = [t.value for t in KeyEventType]
OTHER_TYPES = [
    "Microsoft.KeyVault.SecretNewVersionCreated",
    "Microsoft.KeyVault.CertificateExpired",
    "Microsoft.KeyVault.VaultAccessPolicyChanged",
    "Microsoft.KeyVault.KeyRotated",
    "Microsoft.Storage.BlobCreated",
    "Microsoft.EventGrid.SubscriptionValidationEvent",
]
huge = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(2_000, 70_000))
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), min_size=1, max_size=40),
    huge,
    st.sampled_from(["", " ", "\x00", "null", "\u202e", "${jndi:ldap://x}", "%00", "../../"]),
)
event_types = st.one_of(
    st.sampled_from(KEY_TYPES),
    st.sampled_from(KEY_TYPES).map(str.upper),
    st.sampled_from(KEY_TYPES).map(lambda t: f" {t.lower()}\t"),
    st.sampled_from(OTHER_TYPES),
    odd_text,
)
# "@V1@" / "@V1U@": the estate's version (lower / upper case), filled in per example.
VERSIONS = st.one_of(st.just("@V1@"), st.just("@V1U@"), st.integers(0, 2**128 - 1).map(lambda n: f"{n:032x}"))
key_ids = st.one_of(
    st.builds(lambda name, v: f"{VAULT}/keys/{name}/{v}", st.sampled_from(["cmk", "cmk", "other", "CMK"]), VERSIONS),
    st.builds(lambda v: f"{VAULT}:443/keys/cmk/{v}", VERSIONS),
    st.builds(lambda v: f"https://kv-elsewhere.vault.azure.net/keys/cmk/{v}", VERSIONS),  # not in scope
    st.just(f"{VAULT}/keys/cmk"),  # no version
    st.sampled_from(
        [
            f"http://{VAULT[8:]}/keys/cmk/{'a' * 32}",
            f"https://evil.example@{VAULT[8:]}/keys/cmk/{'a' * 32}",
            f"{VAULT}/secrets/cmk/{'a' * 32}",
            f"{VAULT}/keys/cmk/%41{'a' * 30}",
            f"https://kv-\u00e9state.vault.azure.net/keys/cmk/{'a' * 32}",
            f"{VAULT}/keys/cmk/../x/{'a' * 32}",
        ]
    ),
    odd_text,
)
SOURCE = (
    "/subscriptions/00000000-0000-0000-0000-00000000a001/resourceGroups/rg-data/providers/"
    "Microsoft.KeyVault/vaults/kv-estate"
)


@st.composite
def key_data(draw: st.DrawFn) -> Any:
    """The event's data: a Key Vault data object (fields present or not, values fuzzed), or junk."""
    kind = draw(st.sampled_from(["object"] * 6 + ["text", "text", "plausible", "junk", "deep", "huge"]))
    if kind == "plausible":
        return draw(parser_fuzz.plausible_data())
    if kind == "junk":
        return draw(st.one_of(json_like, st.binary(max_size=100), odd_text))
    if kind == "deep":
        depth = draw(st.integers(500, 20_000))
        return draw(st.sampled_from(["[" * depth + "]" * depth, '{"Id": ' * depth]))
    if kind == "huge":
        return {"Id": f"{VAULT}/keys/cmk/@V1@", "VaultName": "kv-estate", "Padding": draw(huge)}
    key_id = mostly(draw, draw(st.builds(lambda v: f"{VAULT}/keys/cmk/{v}", VERSIONS)), key_ids)
    data: dict[str, Any] = {"Id": key_id}
    parts = key_id.rstrip("/").split("/")
    candidates = {
        "VaultName": "kv-estate",
        "ObjectType": "Key",
        "ObjectName": parts[-2] if len(parts) > 1 else "",
        "Version": parts[-1],
        "NBF": None,
        "EXP": None,
    }
    for name, value in candidates.items():
        if draw(st.booleans()):
            data[name] = draw(st.one_of(st.just(value), json_like, odd_text)) if draw(st.integers(0, 4)) == 0 else value
    if draw(st.integers(0, 5)) == 0:
        data.pop("Id")
    if draw(st.integers(0, 5)) == 0:  # a field name in another case (senders differ)
        name = draw(st.sampled_from(sorted(data))) if data else "Id"
        if name in data:
            data[draw(st.sampled_from([name.lower(), name.upper(), f"{name} "]))] = data.pop(name)
    return json.dumps(data) if kind == "text" else data


def mostly(draw: st.DrawFn, good: Any, bad: st.SearchStrategy[Any]) -> Any:
    """``good`` four times in five, else a draw from ``bad``."""
    return good if draw(st.integers(0, 4)) else draw(bad)


@st.composite
def envelope(draw: st.DrawFn) -> dict[str, Any]:
    """One raw event in the Event Grid schema or as a CloudEvent, field names exact, values
    mostly right and sometimes fuzzed, sometimes missing."""
    cloud = draw(st.booleans())
    names = (
        {"id": "id", "type": "type", "source": "source", "time": "time", "version": "specversion"}
        if cloud
        else {"id": "id", "type": "eventType", "source": "topic", "time": "eventTime", "version": "dataVersion"}
    )
    junk = st.one_of(odd_text, json_like)
    payload: dict[str, Any] = {
        names["id"]: mostly(draw, draw(st.uuids().map(str)), junk),
        names["type"]: mostly(draw, draw(st.sampled_from(KEY_TYPES)), event_types),
        names["source"]: mostly(draw, draw(st.sampled_from([SOURCE, SOURCE.upper(), SOURCE.lower()])), junk),
        "subject": mostly(draw, "cmk", junk),
        names["time"]: mostly(
            draw,
            draw(st.sampled_from(["2026-01-05T09:00:00Z", "2026-01-05T09:00:00.1234567+01:00", "2026-01-05T09:00:00"])),
            junk,
        ),
        names["version"]: mostly(draw, "1.0" if cloud else "1", json_like),
    }
    data = draw(key_data())
    if cloud and draw(st.integers(0, 3)) == 0:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        payload["data_base64"] = base64.b64encode(raw).decode()
    else:
        payload["data"] = data
    if not cloud:
        payload["metadataVersion"] = "1"
    if draw(st.integers(0, 4)) == 0:  # missing fields
        for name in draw(st.lists(st.sampled_from(sorted(payload)), min_size=1, max_size=2)):
            payload.pop(name, None)
    return payload


moments = st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)), st.datetimes())
direct_events = st.builds(
    lambda eid, etype, data, topic, subject, when, version: func.EventGridEvent(
        id=eid, data=data, topic=topic, subject=subject, event_type=etype, event_time=when, data_version=version
    ),
    st.one_of(st.uuids().map(str), odd_text, json_like),
    st.one_of(event_types, json_like),
    key_data(),
    st.one_of(st.just(SOURCE), odd_text, json_like),
    st.one_of(odd_text, json_like),
    st.one_of(moments, odd_text, json_like),
    st.one_of(st.just("1"), json_like),
)


# ---- the property --------------------------------------------------------------------------


def note(text: str) -> None:
    """Counts an outcome for ``--hypothesis-show-statistics`` (outside a property: nothing)."""
    if currently_in_test_context():
        hypothesis_event(text)


def resolve(bench: Bench, value: Any) -> Any:
    """The value with the estate's version where the strategy left a placeholder."""
    text = json.dumps(value) if not isinstance(value, str | bytes) else value
    if isinstance(text, bytes) or "@V1" not in text:
        return value
    filled = text.replace("@V1U@", bench.estate.v1.upper()).replace("@V1@", bench.estate.v1)
    return filled if isinstance(value, str) else json.loads(filled)


def expected(event: func.EventGridEvent) -> KeyVaultEvent | IgnoredEvent | MalformedEvent:
    """What the parser makes of the trigger's fields (the parser has its own fuzz suite)."""
    try:
        data = event.get_json()
    except ValueError:
        data = None
    try:
        return parse_event(
            event_id=event.id,
            event_type=event.event_type,
            data=data,
            source=event.topic,
            subject=event.subject,
            event_time=event.event_time,
        )
    except MalformedEvent as err:
        return err


def deliver(bench: Bench, event: func.EventGridEvent, *, faults: bool = False) -> str:
    """Runs the trigger once and checks the properties; returns what became of the event."""
    outcome = expected(event)
    mark = bench.mark()
    with capture_logs() as logs:
        try:
            on_key_vault_event(event)
        except TransientError:
            assert faults, "a transient failure without a fault"
            assert isinstance(outcome, KeyVaultEvent), outcome
            note("raised TransientError")
            return "transient"
    names = [entry["event"] for entry in logs]
    if isinstance(outcome, MalformedEvent):
        kind = "dropped"
        assert "event-dropped" in names, names
        dropped = next(e for e in logs if e["event"] == "event-dropped")
        assert dropped["log_level"] == "warning" and dropped["reason"], dropped
    elif isinstance(outcome, IgnoredEvent):
        kind = "ignored"
        assert "event-ignored" in names, names
    elif outcome.key.vault_url != VAULT:
        kind = "out of scope"
        assert "event-handled" in names, names
    else:
        kind = "handled"
        assert "event-handled" in names or "event-failed" in names, names
    if kind != "handled":
        assert bench.changes_since(mark) == [], (kind, bench.changes_since(mark))
    note(kind)
    return kind


@fuzz(600)
@given(envelope())
def test_any_envelope_is_handled_dropped_or_ignored_and_only_key_events_change_anything(
    bench: Bench, payload: dict[str, Any]
) -> None:
    payload = {k: resolve(bench, v) for k, v in payload.items()}
    try:
        event = to_event_grid_event(payload)
    except ValueError:
        note("refused by the host (no id or type)")
        return
    deliver(bench, event)


@fuzz(400)
@given(direct_events)
def test_any_trigger_object_is_handled_dropped_or_ignored(bench: Bench, event: func.EventGridEvent) -> None:
    deliver(bench, event)


@fuzz(200)
@given(st.sampled_from(KEY_TYPES), st.sampled_from(["object", "text", "bytes"]), st.booleans(), st.integers(1, 400))
def test_truncated_key_events_are_dropped(bench: Bench, event_type: str, encoding: str, cloud: bool, cut: int) -> None:
    data = json.dumps(
        {
            "Id": f"{VAULT}/keys/cmk/{bench.estate.v1}",
            "VaultName": "kv-estate",
            "ObjectType": "Key",
            "ObjectName": "cmk",
            "Version": bench.estate.v1,
            "NBF": None,
            "EXP": None,
        }
    )
    truncated = data[: cut % len(data)]
    payload: dict[str, Any] = {"id": "e1", "subject": "cmk"}
    if cloud:
        payload |= {"specversion": "1.0", "type": event_type, "source": SOURCE, "time": "2026-01-05T09:00:00Z"}
    else:
        payload |= {"eventType": event_type, "topic": SOURCE, "eventTime": "2026-01-05T09:00:00Z", "dataVersion": "1"}
    if cloud and encoding == "bytes":
        payload["data_base64"] = base64.b64encode(truncated.encode()).decode()
    else:
        payload["data"] = truncated.encode() if encoding == "bytes" else truncated
    assert deliver(bench, to_event_grid_event(payload)) == "dropped"


FAULTS = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", None]),
        "host": st.sampled_from([r"kv-estate\.vault\.azure\.net", r"management\.azure\.com", None]),
        "status": st.sampled_from([429, 500, 502, 503, 504]),
        "retry_after": st.sampled_from([None, 1, 5]),
    }
)


@fuzz(60)
@given(st.sampled_from(KEY_TYPES), st.one_of(FAULTS, st.just({"drop": True})))
def test_a_key_event_raises_transient_error_when_azure_fails(
    bench: Bench, event_type: str, rule: dict[str, Any]
) -> None:
    """Event Grid redelivers what raises; only a real transient failure may raise."""
    event = func.EventGridEvent(
        id="e-transient",
        event_type=event_type,
        topic=SOURCE,
        subject="cmk",
        event_time=None,
        data_version="1",
        data={
            "Id": f"{VAULT}/keys/cmk/{bench.estate.v1}",
            "VaultName": "kv-estate",
            "ObjectType": "Key",
            "ObjectName": "cmk",
            "Version": bench.estate.v1,
            "NBF": None,
            "EXP": None,
        },
    )
    # Every example is a first delivery: forget the ids and passes earlier examples recorded
    # (a redelivered id or an already reconciled version is a no-op that never reaches Azure).
    app = bench.app
    app.idempotency = MemoryIdempotencyStore(bench.world.clock)
    app.propagation = Propagation(settings=app.settings, keys=app.keys, targets=app.targets, inventory=app.inventory,
                                  notifier=app.notifier, queue=app.queue, idempotency=app.idempotency,
                                  reconciler=app.reconciler)
    bench.world.faults.set_rules([_rule(rule)])
    try:
        kind = deliver(bench, event, faults=True)
    finally:
        bench.world.faults.clear()
    # A fault on every request always surfaces; so does one on the vault for the rotation events
    # (they read the key first; a new version across subscriptions is only fanned out).
    if rule.get("host") is None or (rule["host"].startswith("kv-estate") and event_type != KEY_TYPES[0]):
        assert kind == "transient"


def _rule(raw: dict[str, Any]) -> FaultRule:
    return FaultRule.parse({k: v for k, v in raw.items() if v is not None})


def test_event_time_in_every_shape_the_host_produces(bench: Bench) -> None:
    # The host hands a datetime (parsed from the envelope) or None; both reach the parser.
    for when in (None, datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 5, 9)):
        event = func.EventGridEvent(
            id="e-time",
            event_type=KEY_TYPES[0],
            topic=SOURCE,
            subject="cmk",
            event_time=when,
            data_version="1",
            data={"Id": f"{VAULT}/keys/cmk/{bench.estate.v1}"},
        )
        assert deliver(bench, event) in ("handled", "dropped")


def test_characters_outside_ascii_in_every_field_are_dropped_or_ignored(bench: Bench) -> None:
    for value in ("\u00e9", "\ud7ff", "\U0001f511", "\u202e", string.printable):
        event = func.EventGridEvent(
            id=value,
            event_type=value,
            topic=value,
            subject=value,
            event_time=None,
            data_version=value,
            data={"Id": value},
        )
        assert deliver(bench, event) in ("dropped", "ignored")
