"""Property-based checks of Key Vault event parsing.

Generated valid events (any spelling Key Vault or Event Grid might use: name case, stray
whitespace, numbers or strings or null for NBF/EXP, both schemas, data as object, text or
bytes) must parse to exactly the fields they were built from. Anything else, from JSON
garbage to truncated or enormous payloads, must parse, be ignored, or raise
``MalformedEvent``: never another exception.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.events import (
    MAX_TIMESTAMP,
    IgnoredEvent,
    KeyEventType,
    KeyVaultEvent,
    MalformedEvent,
    parse_event,
    parse_payload,
)
from shared.model import KeyRef


def fuzz(examples: int) -> settings:
    """Settings for one property: no deadline, no example database written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


# ---- spelling variants ------------------------------------------------------------------
# Cosmetic variation (letter case, stray whitespace) comes from one seeded Random per
# example: a failure still replays from its seed, and generation stays fast. Values that
# matter (names, versions, timestamps) are Hypothesis draws, so they shrink.

HEX = "0123456789abcdef"
PADDING = ["", "", "", " ", "  ", "\t", "\n", " \t\r\n"]
cosmetics = st.randoms(use_true_random=True)


def random_case(rnd: Random, text: str) -> str:
    """``text`` with any subset of its letters' case swapped."""
    mask = rnd.getrandbits(len(text)) if text else 0
    return "".join(c.swapcase() if mask >> i & 1 else c for i, c in enumerate(text))


def padded(rnd: Random, value: str) -> str:
    return rnd.choice(PADDING) + value + rnd.choice(PADDING)


def spelled(rnd: Random, name: str) -> str:
    """A field name as some sender might write it: any case, stray whitespace around it."""
    return padded(rnd, random_case(rnd, name))


# ---- valid events -----------------------------------------------------------------------

LOWER_ALNUM = string.ascii_lowercase + string.digits
vault_name = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(string.ascii_lowercase),
    st.text(LOWER_ALNUM + "-", min_size=1, max_size=12),
    st.sampled_from(LOWER_ALNUM),
).filter(lambda name: not name.startswith("xn--"))
key_name = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=40)
version = st.integers(0, 2**128 - 1).map(lambda n: f"{n:032x}")
subscription = st.uuids().map(str)
resource_group = st.text(string.ascii_letters + string.digits + "_-()", min_size=1, max_size=30)
event_id = st.one_of(st.uuids().map(str), st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=40))
seconds = st.integers(0, MAX_TIMESTAMP)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@dataclass(frozen=True)
class Timestamp:
    raw: object  # what goes into the payload (absent when `present` is False)
    present: bool
    expected: datetime | None


@st.composite
def timestamp(draw: st.DrawFn) -> Timestamp:
    rnd = draw(cosmetics)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    kind = draw(st.sampled_from(["absent", "null", "empty", "int", "float", "str", "str-frac"]))
    if kind == "absent":
        return Timestamp(None, present=False, expected=None)
    if kind == "null":
        return Timestamp(None, present=True, expected=None)
    if kind == "empty":
        return Timestamp(rnd.choice(PADDING), present=True, expected=None)
    whole = draw(seconds)
    if kind == "int":
        return Timestamp(whole, present=True, expected=epoch + timedelta(seconds=whole))
    if kind == "str":
        return Timestamp(padded(rnd, str(whole)), present=True, expected=epoch + timedelta(seconds=whole))
    millis = draw(st.integers(0, 999))
    if whole == MAX_TIMESTAMP:
        millis = 0
    value = whole + millis / 1000
    if kind == "float":
        return Timestamp(value, present=True, expected=epoch + timedelta(seconds=value))
    text = f"{whole}.{millis:03d}"
    return Timestamp(padded(rnd, text), present=True, expected=epoch + timedelta(seconds=float(text)))


@st.composite
def event_time(draw: st.DrawFn) -> tuple[object, datetime | None]:
    """An event time as sent (string with 0-7 fraction digits and any offset, datetime, none)."""
    kind = draw(st.sampled_from(["string", "string", "datetime", "none"]))
    if kind == "none":
        return None, None
    when = draw(moments)
    if kind == "datetime":
        offset = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
        return when.astimezone(offset), when
    digits = draw(st.integers(0, 7))
    fraction = f"{when.microsecond:06d}{draw(st.integers(0, 9))}"[:digits]
    expected = when.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    local = expected + timedelta(minutes=minutes)
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "")
    if minutes == 0 and draw(st.booleans()):
        text += draw(st.sampled_from(["Z", "z", ""]))
    else:
        sign = "-" if minutes < 0 else "+"
        hours, mins = divmod(abs(minutes), 60)
        text += f"{sign}{hours:02d}{draw(st.sampled_from([':', '']))}{mins:02d}"
    return padded(draw(cosmetics), text), expected


@dataclass(frozen=True)
class Generated:
    payload: dict[str, object]  # one raw event
    fields: dict[str, object]  # the same event as parse_event keywords
    expected: KeyVaultEvent


@st.composite
def valid_event(draw: st.DrawFn) -> Generated:
    rnd = draw(cosmetics)
    kind = draw(st.sampled_from(list(KeyEventType)))
    vault = draw(vault_name)
    name = draw(key_name)
    ver = draw(version)
    eid = draw(event_id)
    sub = draw(subscription)
    rg = draw(resource_group)
    loopback_port = draw(st.one_of(st.none(), st.integers(1024, 65535)))
    if loopback_port is None:
        host = random_case(rnd, f"{vault}.vault.azure.net") + draw(st.sampled_from(["", ":443"]))
        vault_url = f"https://{vault}.vault.azure.net"
    else:
        host = f"127.0.0.1:{loopback_port}"
        vault_url = f"https://127.0.0.1:{loopback_port}"
    key_id = f"https://{host}/keys/{name}/{random_case(rnd, ver)}"
    source = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{vault}"
    spelling = draw(st.sampled_from(["as written", "lower", "upper"]))
    if spelling == "lower":
        source, rg = source.lower(), rg.lower()
    elif spelling == "upper":  # ARM ids are case-insensitive
        source, rg = source.upper(), rg.upper()
    with_source = draw(st.booleans())
    nbf, exp = draw(timestamp()), draw(timestamp())
    sent_time, expected_time = draw(event_time())

    # Data: Id always; the rest present or not, spelled any way, values padded.
    data: dict[str, object] = {spelled(rnd, "Id"): padded(rnd, key_id)}
    optional = {
        "VaultName": padded(rnd, random_case(rnd, vault)),
        "ObjectType": padded(rnd, random_case(rnd, "Key")),
        "ObjectName": padded(rnd, name),
        "Version": padded(rnd, random_case(rnd, ver)),
    }
    for field_name, value in optional.items():
        if draw(st.booleans()):
            data[spelled(rnd, field_name)] = value
    for field_name, ts in (("NBF", nbf), ("EXP", exp)):
        if ts.present:
            data[spelled(rnd, field_name)] = ts.raw
    if draw(st.booleans()):
        data[draw(st.sampled_from(["extra", "Tags", "somethingNew"]))] = draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=10))
        )
    encoded: object = data
    encoding = draw(st.sampled_from(["object", "text", "bytes"]))
    if encoding == "text":
        encoded = json.dumps(data)
    elif encoding == "bytes":
        encoded = json.dumps(data).encode()

    # VaultName absent on a loopback host and no source: the name comes from the host.
    has_vault_name = any(k.strip().lower() == "vaultname" for k in data)
    fallback = vault if (loopback_port is None or has_vault_name or with_source) else "127"
    type_text = padded(rnd, random_case(rnd, kind.value))
    expected = KeyVaultEvent(
        event_id=eid,
        event_type=kind,
        key=KeyRef(vault_url, name, ver),
        vault_name=fallback,
        nbf=nbf.expected,
        exp=exp.expected,
        event_time=expected_time,
        source=source if with_source else "",
        subscription_id=sub if with_source else None,
        resource_group=rg if with_source else None,
    )
    fields: dict[str, object] = {
        "event_id": padded(rnd, eid),
        "event_type": type_text,
        "data": encoded,
        "source": source if with_source else None,
        "subject": draw(st.one_of(st.none(), st.just(name))),
        "event_time": sent_time,
    }
    if draw(st.booleans()):
        names = {"id": "id", "type": "eventType", "source": "topic", "time": "eventTime"}
        payload: dict[str, object] = {spelled(rnd, "dataVersion"): "1", spelled(rnd, "metadataVersion"): "1"}
    else:
        names = {"id": "id", "type": "type", "source": "source", "time": "time"}
        payload = {spelled(rnd, "specversion"): "1.0"}
    payload[spelled(rnd, names["id"])] = fields["event_id"]
    payload[spelled(rnd, names["type"])] = type_text
    payload[spelled(rnd, "data")] = encoded
    if with_source:
        payload[spelled(rnd, names["source"])] = source
    if fields["subject"] is not None:
        payload[spelled(rnd, "subject")] = fields["subject"]
    if sent_time is not None:
        # The trigger may hand a datetime; a raw payload always carries text.
        as_text = sent_time.isoformat() if isinstance(sent_time, datetime) else sent_time
        payload[spelled(rnd, names["time"])] = as_text
    return Generated(payload, fields, expected)


@fuzz(800)
@given(valid_event())
def test_valid_events_parse_to_the_fields_they_were_built_from(gen: Generated) -> None:
    assert parse_event(**gen.fields) == gen.expected
    assert parse_payload(gen.payload) == gen.expected
    assert parse_payload(to_json(gen.payload)) == gen.expected


def to_json(payload: dict[str, object]) -> str:
    """The payload as JSON text (``bytes`` data, which JSON cannot hold, as its text)."""
    return json.dumps(payload, default=lambda raw: raw.decode())


# ---- garbage ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["", " ", "Key", "1.0", "1559081980", "-1", "1e9", "NaN", "https://", "\x00"]),
)
json_like = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
TOP_NAMES = ["id", "eventType", "type", "specversion", "data", "data_base64", "topic", "source", "time",
             "eventTime", "subject", "dataVersion", "metadataVersion"]  # fmt: skip
DATA_NAMES = ["Id", "VaultName", "ObjectType", "ObjectName", "Version", "NBF", "EXP"]
plausible_type = st.one_of(
    st.sampled_from([t.value for t in KeyEventType]),
    st.sampled_from(["Microsoft.KeyVault.SecretNewVersionCreated", "Microsoft.KeyVault.VaultAccessPolicyChanged"]),
    json_like,
)


@st.composite
def plausible_data(draw: st.DrawFn) -> object:
    """A data object with the right names and arbitrary values (reaches the deep checks)."""
    rnd = draw(cosmetics)
    data: dict[str, object] = {}
    for name in draw(st.lists(st.sampled_from(DATA_NAMES), max_size=8)):
        data[spelled(rnd, name)] = draw(
            st.one_of(
                json_like,
                st.builds(lambda v, n: f"https://{v}.vault.azure.net/keys/{n}/" + "a" * 32, vault_name, key_name),
            )
        )
    return draw(st.sampled_from([data, json.dumps(data), json.dumps(data).encode()]))


@st.composite
def plausible_payload(draw: st.DrawFn) -> object:
    rnd = draw(cosmetics)
    payload: dict[str, object] = {}
    for name in draw(st.lists(st.sampled_from(TOP_NAMES), max_size=10)):
        if name in ("eventType", "type"):
            value = draw(plausible_type)
        elif name == "data":
            value = draw(st.one_of(plausible_data(), json_like))
        elif name == "specversion":
            value = draw(st.one_of(st.just("1.0"), json_like))
        else:
            value = draw(json_like)
        payload[spelled(rnd, name)] = value
    return payload


def outcome(call: Any) -> KeyVaultEvent | IgnoredEvent | MalformedEvent:
    """Runs the parser; any exception but ``MalformedEvent`` fails the test by propagating."""
    try:
        result = call()
    except MalformedEvent as err:
        message = str(err)
        assert message.isascii()
        assert len(message) < 600, message
        return err
    assert isinstance(result, KeyVaultEvent | IgnoredEvent)
    if isinstance(result, KeyVaultEvent):
        assert result.key.version is not None
        for moment in (result.nbf, result.exp, result.event_time):
            assert moment is None or moment.utcoffset() == timedelta(0)
    return result


@fuzz(800)
@given(st.one_of(plausible_payload(), json_like, st.text(max_size=200), st.binary(max_size=200)))
def test_any_payload_parses_is_ignored_or_is_malformed(payload: object) -> None:
    outcome(lambda: parse_payload(payload))
    if isinstance(payload, dict):
        outcome(lambda: parse_payload(to_json(payload)))


@fuzz(500)
@given(
    st.one_of(event_id, json_like),
    plausible_type,
    st.one_of(plausible_data(), json_like, st.binary(max_size=100)),
    json_like,
    json_like,
    st.one_of(json_like, moments, st.datetimes()),
)
def test_any_trigger_fields_parse_are_ignored_or_are_malformed(
    eid: object, event_type: object, data: object, source: object, subject: object, when: object
) -> None:
    outcome(
        lambda: parse_event(
            event_id=eid, event_type=event_type, data=data, source=source, subject=subject, event_time=when
        )
    )


@fuzz(500)
@given(valid_event(), st.sampled_from([*DATA_NAMES, "Extra"]), st.one_of(json_like, st.text(max_size=300)))
def test_one_corrupted_data_field_parses_or_is_malformed(gen: Generated, name: str, value: object) -> None:
    data = gen.payload
    data_key = next(k for k in data if k.strip().lower() == "data")
    raw = data[data_key]
    parsed = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw)  # type: ignore[call-overload]
    for existing in [k for k in parsed if k.strip().lower() == name.lower()]:
        del parsed[existing]
    parsed[name] = value
    corrupted = {**data, data_key: parsed}
    result = outcome(lambda: parse_payload(corrupted))
    if isinstance(result, KeyVaultEvent) and name != "Id":
        assert result.key == gen.expected.key


@fuzz(300)
@given(valid_event(), st.integers(0, 10_000), st.booleans())
def test_truncated_json_is_malformed(gen: Generated, cut: int, as_bytes: bool) -> None:
    text = to_json(gen.payload)
    at = cut % len(text)
    truncated: str | bytes = text[:at]
    if as_bytes:
        truncated = text.encode()[: cut % len(text.encode())]
    result = outcome(lambda: parse_payload(truncated))
    assert isinstance(result, MalformedEvent)


huge_text = st.builds(
    lambda piece, times: piece * times,
    st.text(min_size=1, max_size=8),
    st.integers(1_000, 40_000),
)
unicode_text = st.text(st.characters(min_codepoint=0x80), min_size=1, max_size=50)


@fuzz(200)
@given(
    valid_event(),
    st.sampled_from(["event_id", "event_type", "source", "subject", "event_time", "Id", "VaultName", "NBF"]),
    st.one_of(huge_text, unicode_text),
)
def test_huge_and_unicode_values_parse_are_ignored_or_are_malformed(gen: Generated, where: str, value: str) -> None:
    fields = dict(gen.fields)
    if where in fields:
        fields[where] = value
    else:
        data = fields["data"]
        parsed = json.loads(data) if isinstance(data, str | bytes) else dict(data)  # type: ignore[call-overload]
        parsed[where] = value
        fields["data"] = parsed
    result = outcome(lambda: parse_event(**fields))
    if isinstance(result, KeyVaultEvent):
        # Only whitespace-free, printable values of sane size can have been accepted.
        assert len(result.event_id) <= 512
        assert len(result.source) <= 1024


@fuzz(200)
@given(st.text(string.printable, max_size=400), st.sampled_from(list(KeyEventType)))
def test_arbitrary_text_as_data_is_malformed_unless_it_is_a_key_object(text: str, kind: KeyEventType) -> None:
    outcome(lambda: parse_event(event_id="e", event_type=kind.value, data=text))
