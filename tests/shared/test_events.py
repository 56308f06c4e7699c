"""Key Vault event parsing: documented payloads, both schemas, ignored types, malformed input."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.errors import PermanentError
from shared.events import (
    MAX_DATA_BYTES,
    MAX_EVENT_ID_LENGTH,
    IgnoredEvent,
    KeyEventType,
    KeyVaultEvent,
    MalformedEvent,
    parse_event,
    parse_payload,
)
from shared.model import KeyRef

VERSION = "ee059b2bb5bc48398a53b168c6cdcb10"
TOPIC = "/subscriptions/{subscription-id}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv"
SUB = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
ARM_TOPIC = f"/subscriptions/{SUB}/resourceGroups/sample-rg/providers/Microsoft.KeyVault/vaults/sample-kv"

# The example on "Azure Key Vault as Event Grid source" (learn.microsoft.com/azure/event-grid/
# event-schema-key-vault), byte for byte in its quirks: a trailing space in the "ObjectName "
# field name, a leading space in the Version value, NBF/EXP as strings, 7 fractional digits.
DOC_SECRET_EVENT_GRID: dict[str, Any] = {
    "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
    "topic": TOPIC,
    "subject": "newsecret",
    "eventType": "Microsoft.KeyVault.SecretNewVersionCreated",
    "eventTime": "2019-07-25T01:08:33.1036736Z",
    "data": {
        "Id": f"https://sample-kv.vault.azure.net/secrets/newsecret/{VERSION}",
        "VaultName": "sample-kv",
        "ObjectType": "Secret",
        "ObjectName ": "newsecret",
        "Version": f" {VERSION}",
        "NBF": "1559081980",
        "EXP": "1559082102",
    },
    "dataVersion": "1",
    "metadataVersion": "1",
}
DOC_SECRET_CLOUDEVENT: dict[str, Any] = {
    "id": "00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
    "source": TOPIC,
    "subject": "newsecret",
    "type": "Microsoft.KeyVault.SecretNewVersionCreated",
    "time": "2019-07-25T01:08:33.1036736Z",
    "data": copy.deepcopy(DOC_SECRET_EVENT_GRID["data"]),
    "specversion": "1.0",
}
# An earlier revision of the same page: camelCase data names, same quirks.
DOC_SECRET_CAMEL_DATA: dict[str, Any] = {
    "Id": f"https://sample-kv.vault.azure.net/secrets/newsecret/{VERSION}",
    "vaultName": "sample-kv",
    "objectType": "Secret",
    "objectName ": "newsecret",
    "version": f" {VERSION}",
    "nbf": "1559081980",
    "exp": "1559082102",
}

NBF = datetime(2019, 5, 28, 22, 19, 40, tzinfo=UTC)
EXP = datetime(2019, 5, 28, 22, 21, 42, tzinfo=UTC)
EVENT_TIME = datetime(2019, 7, 25, 1, 8, 33, 103673, tzinfo=UTC)
KEY = KeyRef("https://sample-kv.vault.azure.net", "newkey", VERSION)


def as_key_event(doc: dict[str, Any], event_type: str, *, type_field: str = "eventType") -> dict[str, Any]:
    """The documented example turned into a key event (the page shows only the secret one)."""
    event = copy.deepcopy(doc)
    event[type_field] = event_type
    event["subject"] = "newkey"
    data = event["data"]
    data["Id"] = f"https://sample-kv.vault.azure.net/keys/newkey/{VERSION}"
    for name in list(data):
        if name.strip().lower() == "objecttype":
            data[name] = "Key"
        if name.strip().lower() == "objectname":
            data[name] = "newkey"
    return event


def key_data(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "Id": f"https://sample-kv.vault.azure.net/keys/newkey/{VERSION}",
        "VaultName": "sample-kv",
        "ObjectType": "Key",
        "ObjectName": "newkey",
        "Version": VERSION,
        "NBF": 1559081980,
        "EXP": 1559082102,
    }
    for name, value in overrides.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    return data


_DEFAULT: Any = object()


def parse_key(data: object = _DEFAULT, **envelope: object) -> KeyVaultEvent:
    fields: dict[str, object] = {
        "event_id": "e-1",
        "event_type": KeyEventType.NEW_VERSION.value,
        "data": key_data() if data is _DEFAULT else data,
        "source": ARM_TOPIC,
        "subject": "newkey",
        "event_time": "2019-07-25T01:08:33.1036736Z",
    }
    fields.update(envelope)
    result = parse_event(**fields)
    assert isinstance(result, KeyVaultEvent)
    return result


def malformed(data: object = _DEFAULT, **envelope: object) -> MalformedEvent:
    with pytest.raises(MalformedEvent) as info:
        parse_key(data, **envelope)
    return info.value


# ---- documented payloads ------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(KeyEventType))
@pytest.mark.parametrize("doc", [DOC_SECRET_EVENT_GRID, DOC_SECRET_CLOUDEVENT], ids=["eventgrid", "cloudevents"])
def test_documented_example_as_key_event(doc: dict[str, Any], event_type: KeyEventType) -> None:
    type_field = "type" if "specversion" in doc else "eventType"
    event = parse_payload(as_key_event(doc, event_type.value, type_field=type_field))
    assert event == KeyVaultEvent(
        event_id="00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
        event_type=event_type,
        key=KEY,
        vault_name="sample-kv",
        nbf=NBF,
        exp=EXP,
        event_time=EVENT_TIME,
        source=TOPIC,
        subscription_id="{subscription-id}",
        resource_group="sample-rg",
    )


def test_documented_example_with_camel_case_data() -> None:
    doc = copy.deepcopy(DOC_SECRET_EVENT_GRID)
    doc["data"] = copy.deepcopy(DOC_SECRET_CAMEL_DATA)
    event = parse_payload(as_key_event(doc, "Microsoft.KeyVault.KeyNearExpiry"))
    assert isinstance(event, KeyVaultEvent)
    assert (event.event_type, event.key, event.nbf, event.exp) == (KeyEventType.NEAR_EXPIRY, KEY, NBF, EXP)


@pytest.mark.parametrize("doc", [DOC_SECRET_EVENT_GRID, DOC_SECRET_CLOUDEVENT], ids=["eventgrid", "cloudevents"])
def test_documented_secret_example_is_ignored(doc: dict[str, Any]) -> None:
    assert parse_payload(doc) == IgnoredEvent(
        event_id="00eccf70-95a7-4e7c-8299-2eb17ee9ad64",
        event_type="Microsoft.KeyVault.SecretNewVersionCreated",
        reason="secret events are not handled",
    )


def test_documented_delivery_as_json_text_and_bytes() -> None:
    event = as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value)
    text = json.dumps(event)
    assert parse_payload(text) == parse_payload(text.encode()) == parse_payload(event)
    assert parse_payload(bytearray(text.encode())) == parse_payload(event)


# ---- parse_event: the trigger's view ------------------------------------------------------


def test_trigger_fields_with_numeric_nbf_exp() -> None:
    event = parse_key()
    assert event.key == KEY
    assert event.nbf == NBF
    assert event.exp == EXP
    assert event.source == ARM_TOPIC
    assert event.subscription_id == SUB
    assert event.resource_group == "sample-rg"
    assert event.vault_name == "sample-kv"


@pytest.mark.parametrize("encode", [json.dumps, lambda d: json.dumps(d).encode()], ids=["str", "bytes"])
def test_data_as_json(encode: Any) -> None:
    assert parse_key(encode(key_data())) == parse_key()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1559081980.5, NBF + timedelta(milliseconds=500)),
        ("1559081980.25", NBF + timedelta(milliseconds=250)),
        (" 1559081980 ", NBF),
        (253402300799, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_nbf_values(value: object, expected: datetime | None) -> None:
    assert parse_key(key_data(NBF=value)).nbf == expected


def test_nbf_exp_absent() -> None:
    event = parse_key(key_data(NBF=..., EXP=...))
    assert (event.nbf, event.exp) == (None, None)


def test_optional_data_fields_may_be_missing() -> None:
    data = {"Id": f"https://sample-kv.vault.azure.net/keys/newkey/{VERSION}"}
    event = parse_key(data, source=None, subject=None, event_time=None)
    assert event.key == KEY
    assert event.vault_name == "sample-kv"
    assert (event.source, event.subscription_id, event.resource_group, event.event_time) == (
        "",
        None,
        None,
        None,
    )


def test_field_names_are_case_insensitive_and_stripped() -> None:
    data = {
        " iD": f"  https://sample-kv.vault.azure.net/keys/newkey/{VERSION}\t",
        "VAULTNAME ": " sample-kv",
        "\tobjecttype": "KEY",
        "ObjectName  ": "NewKey",
        " version ": VERSION.upper(),
        "Nbf": "1559081980",
        "eXp": 1559082102,
        "SomethingNew": {"ignored": True},
    }
    event = parse_key(data)
    assert (event.key, event.nbf, event.exp) == (KEY, NBF, EXP)


def test_duplicate_names_that_agree_are_accepted() -> None:
    data = key_data()
    data["id "] = data["Id"]
    assert parse_key(data).key == KEY


def test_unknown_and_non_ascii_names_are_ignored() -> None:
    data = key_data()
    data["\u212aeyName"] = "x"  # KELVIN SIGN: lower-cases to "k", must not alias anything
    data["\u0130d"] = "https://evil.vault.azure.net/keys/x"  # dotted capital I
    assert parse_key(data).key == KEY


def test_event_type_is_matched_case_insensitively() -> None:
    assert parse_key(event_type="  microsoft.keyvault.keyexpired ").event_type is KeyEventType.EXPIRED


def test_loopback_sandbox_vault() -> None:
    data = key_data(Id=f"https://127.0.0.1:8443/keys/newkey/{VERSION}")
    event = parse_key(data)
    assert event.key == KeyRef("https://127.0.0.1:8443", "newkey", VERSION)
    assert event.vault_name == "sample-kv"


def test_vault_name_falls_back_to_source_then_host() -> None:
    loopback = key_data(Id=f"https://127.0.0.1:8443/keys/newkey/{VERSION}", VaultName=...)
    assert parse_key(loopback).vault_name == "sample-kv"
    assert parse_key(key_data(VaultName=...), source=None).vault_name == "sample-kv"


def test_managed_hsm_source() -> None:
    data = key_data(Id=f"https://hsm1.managedhsm.azure.net/keys/newkey/{VERSION}", VaultName="hsm1")
    source = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/managedHSMs/hsm1"
    event = parse_key(data, source=source)
    assert (event.vault_name, event.subscription_id, event.resource_group) == ("hsm1", SUB, "rg")


def test_source_that_is_not_an_arm_id_is_kept_without_parts() -> None:
    event = parse_key(source="sandbox://sample-kv")
    assert (event.source, event.subscription_id, event.resource_group) == ("sandbox://sample-kv", None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2019-07-25T01:08:33.1036736Z", EVENT_TIME),
        ("2019-07-25T01:08:33Z", EVENT_TIME.replace(microsecond=0)),
        ("2019-07-25t01:08:33.1z", EVENT_TIME.replace(microsecond=100000)),
        ("2019-07-25 01:08:33.103673", EVENT_TIME),
        ("2019-07-25T03:08:33.103673+02:00", EVENT_TIME),
        ("2019-07-24T23:38:33.103673-0130", EVENT_TIME),
        (EVENT_TIME, EVENT_TIME),
        (EVENT_TIME.replace(tzinfo=None), EVENT_TIME),
        (EVENT_TIME.astimezone(timezone(timedelta(hours=-5))), EVENT_TIME),
        (None, None),
        ("", None),
    ],
)
def test_event_time(value: object, expected: datetime | None) -> None:
    parsed = parse_key(event_time=value).event_time
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


def test_event_is_frozen() -> None:
    event = parse_key()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.key = KEY  # type: ignore[misc]


# ---- ignored types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [
        ("Microsoft.KeyVault.SecretNearExpiry", "secret events are not handled"),
        ("Microsoft.KeyVault.SecretExpired", "secret events are not handled"),
        ("Microsoft.KeyVault.CertificateNewVersionCreated", "certificate events are not handled"),
        ("Microsoft.KeyVault.CertificateExpired", "certificate events are not handled"),
        ("Microsoft.KeyVault.VaultAccessPolicyChanged", "access policy changes are not handled"),
        ("Microsoft.KeyVault.KeyDeleted", "unknown Key Vault key event type"),
        ("Microsoft.EventGrid.SubscriptionValidationEvent", "not a Key Vault key event"),
        ("Microsoft.Storage.BlobCreated", "not a Key Vault key event"),
        # Unicode look-alikes of a key type must not be taken for one.
        ("Micro\u017foft.KeyVault.KeyExpired", "not a Key Vault key event"),
        ("Microsoft.KeyVault.\u212aeyExpired", "not a Key Vault key event"),
    ],
)
def test_ignored_types(event_type: str, reason: str) -> None:
    result = parse_event(event_id="e-1", event_type=event_type, data=None)
    assert result == IgnoredEvent(event_id="e-1", event_type=event_type, reason=reason)


def test_ignored_event_does_not_examine_the_rest() -> None:
    result = parse_event(
        event_id=12, event_type="Microsoft.KeyVault.SecretExpired", data=[1, 2], source=3, event_time="soon"
    )
    assert isinstance(result, IgnoredEvent)
    assert (result.event_id, result.event_type) == ("", "Microsoft.KeyVault.SecretExpired")


def test_ignored_event_clips_huge_values() -> None:
    result = parse_event(event_id="i" * 100_000, event_type="x" * 100_000, data=None)
    assert isinstance(result, IgnoredEvent)
    assert len(result.event_id) <= MAX_EVENT_ID_LENGTH
    assert len(result.event_type) <= 256


# ---- malformed key events -----------------------------------------------------------------

KEY_ID = f"https://sample-kv.vault.azure.net/keys/newkey/{VERSION}"
MALFORMED_DATA: dict[str, object] = {
    "Id missing": key_data(Id=...),
    "Id null": key_data(Id=None),
    "Id empty": key_data(Id=""),
    "Id blank": key_data(Id="   "),
    "Id number": key_data(Id=42),
    "Id list": key_data(Id=[KEY_ID]),
    "Id of a secret": key_data(Id=f"https://sample-kv.vault.azure.net/secrets/newkey/{VERSION}"),
    "Id versionless": key_data(Id="https://sample-kv.vault.azure.net/keys/newkey", Version=...),
    "Id over http": key_data(Id=f"http://sample-kv.vault.azure.net/keys/newkey/{VERSION}"),
    "Id with userinfo": key_data(Id=f"https://sample-kv.vault.azure.net@evil.com/keys/newkey/{VERSION}"),
    "Id with query": key_data(Id=f"{KEY_ID}?x=1"),
    "Id percent-encoded": key_data(Id=f"https://sample-kv.vault.azure.net/keys/new%6bey/{VERSION}"),
    "Id with unicode host": key_data(Id=f"https://s\u0430mple-kv.vault.azure.net/keys/newkey/{VERSION}"),
    "Id too long": key_data(Id="https://a/keys/" + "k" * 5000),
    "ObjectType Secret": key_data(ObjectType="Secret"),
    "ObjectType number": key_data(ObjectType=1),
    "Version mismatch": key_data(Version="0" * 32),
    "Version number": key_data(Version=1),
    "ObjectName mismatch": key_data(ObjectName="otherkey"),
    "VaultName mismatch with host": key_data(VaultName="other-kv"),
    "VaultName not a name": key_data(VaultName="sample kv/../x"),
    "NBF word": key_data(NBF="soon"),
    "NBF negative string": key_data(NBF="-5"),
    "NBF negative number": key_data(NBF=-5),
    "NBF bool": key_data(NBF=True),
    "NBF list": key_data(NBF=[1559081980]),
    "NBF object": key_data(NBF={"seconds": 1}),
    "NBF exponent string": key_data(NBF="1.5e9"),
    "NBF underscore string": key_data(NBF="1_559_081_980"),
    "NBF hex string": key_data(NBF="0x5cedb7fc"),
    "NBF nan": key_data(NBF=float("nan")),
    "NBF infinity": key_data(NBF=float("inf")),
    "NBF infinity string": key_data(NBF="Infinity"),
    "NBF after year 9999": key_data(NBF=253402300800),
    "EXP absurd": key_data(EXP=10**30),
    "EXP ISO string": key_data(EXP="2019-05-28T22:21:42Z"),
    "EXP unicode digits": key_data(EXP="\u0661\u0665\u0665\u0669"),
    "conflicting duplicate names": {
        **key_data(),
        "id ": "https://sample-kv.vault.azure.net/keys/other/" + "1" * 32,
    },
    "data list": [key_data()],
    "data number": 7,
    "data bool": True,
    "data missing": None,
    "data JSON array": json.dumps([key_data()]),
    "data JSON string": json.dumps(KEY_ID),
    "data JSON truncated": json.dumps(key_data())[:40],
    "data not JSON": "Id=https://sample-kv.vault.azure.net/keys/newkey",
    "data JSON with NaN": json.dumps(key_data(NBF=float("nan"))),
    "data bytes not UTF-8": b"\xff\xfe{}",
    "data deeply nested": "[" * 100_000,
    "data too large": json.dumps(key_data(Padding="x" * MAX_DATA_BYTES)),
    "data too many fields": {**key_data(), **{f"f{i}": i for i in range(100)}},
}


@pytest.mark.parametrize("data", MALFORMED_DATA.values(), ids=MALFORMED_DATA.keys())
def test_malformed_data(data: object) -> None:
    err = malformed(data)
    assert err.event_id == "e-1"
    assert err.reason
    assert isinstance(err, PermanentError)
    message = str(err)
    assert message.isascii()
    assert len(message) < 400, message


def test_vault_name_must_agree_with_source() -> None:
    other = ARM_TOPIC.replace("vaults/sample-kv", "vaults/other-kv")
    err = malformed(source=other)
    assert "vault names disagree" in err.reason
    loopback = key_data(Id=f"https://127.0.0.1:8443/keys/newkey/{VERSION}")
    assert "vault names disagree" in malformed(loopback, source=other).reason


MALFORMED_ENVELOPE: dict[str, dict[str, object]] = {
    "id missing": {"event_id": None},
    "id empty": {"event_id": "  "},
    "id number": {"event_id": 17},
    "id too long": {"event_id": "e" * (MAX_EVENT_ID_LENGTH + 1)},
    "id with control characters": {"event_id": "e-1\x1b[2J"},
    "type null": {"event_type": None},
    "type empty": {"event_type": ""},
    "type number": {"event_type": 3},
    "type list": {"event_type": [KeyEventType.EXPIRED.value]},
    "source number": {"source": 5},
    "source too long": {"source": "/" * 5000},
    "source with newline": {"source": ARM_TOPIC + "\nINJECTED"},
    "subject number": {"subject": ["x"]},
    "subject too long": {"subject": "s" * 5000},
    "time word": {"event_time": "yesterday"},
    "time date only": {"event_time": "2019-07-25"},
    "time basic format": {"event_time": "20190725T010833Z"},
    "time month 13": {"event_time": "2019-13-25T01:08:33Z"},
    "time hour 24": {"event_time": "2019-07-25T24:08:33Z"},
    "time offset 24h": {"event_time": "2019-07-25T01:08:33+24:00"},
    "time offset minutes 60": {"event_time": "2019-07-25T01:08:33+01:60"},
    "time ten fraction digits": {"event_time": "2019-07-25T01:08:33.1234567890Z"},
    "time unicode digits": {"event_time": "\u0662\u0660\u0661\u0669-07-25T01:08:33Z"},
    "time number": {"event_time": 1564016913},
    "time out of range in UTC": {"event_time": datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))},
}


@pytest.mark.parametrize("envelope", MALFORMED_ENVELOPE.values(), ids=MALFORMED_ENVELOPE.keys())
def test_malformed_envelope(envelope: dict[str, object]) -> None:
    err = malformed(**envelope)
    assert str(err).isascii()
    assert len(str(err)) < 400


def test_malformed_event_carries_id_and_reason() -> None:
    err = malformed(key_data(Version="0" * 32))
    assert err.event_id == "e-1"
    assert err.reason == f"data field Version {'0' * 32!r} does not match the version in Id"
    assert str(err) == f"malformed Key Vault event 'e-1': {err.reason}"
    assert err.code == "MalformedEvent"


def test_malformed_message_clips_huge_values() -> None:
    err = malformed(key_data(NBF="9" * 1000 + "x"))
    assert "1001 characters" in err.reason
    assert len(str(err)) < 250


# ---- parse_payload: schema detection ------------------------------------------------------


def test_top_level_names_are_case_insensitive() -> None:
    event = {
        "ID": "e-1",
        " Topic": ARM_TOPIC,
        "EVENTTYPE": KeyEventType.NEW_VERSION.value,
        "EventTime ": "2019-07-25T01:08:33Z",
        "Data": key_data(),
        "DataVersion": "1",
    }
    result = parse_payload(event)
    assert isinstance(result, KeyVaultEvent)
    assert (result.event_id, result.key, result.source) == ("e-1", KEY, ARM_TOPIC)


def test_cloudevent_with_data_base64() -> None:
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": ARM_TOPIC,
        "type": KeyEventType.NEAR_EXPIRY.value,
        "time": "2019-07-25T01:08:33Z",
        "data_base64": base64.b64encode(json.dumps(key_data()).encode()).decode(),
    }
    result = parse_payload(event)
    assert isinstance(result, KeyVaultEvent)
    assert (result.event_type, result.key) == (KeyEventType.NEAR_EXPIRY, KEY)


MALFORMED_PAYLOADS: dict[str, object] = {
    "array": [as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value)],
    "null": None,
    "number": 3,
    "JSON array text": json.dumps([{"id": "e"}]),
    "not JSON": "{id: e}",
    "empty object": {},
    "neither schema": {"id": "e-1", "data": key_data()},
    "both schemas": {**as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value), "specversion": "1.0"},
    "specversion 0.3": {
        **as_key_event(DOC_SECRET_CLOUDEVENT, "Microsoft.KeyVault.KeyExpired", type_field="type"),
        "specversion": "0.3",
    },
    "specversion number": {
        **as_key_event(DOC_SECRET_CLOUDEVENT, "Microsoft.KeyVault.KeyExpired", type_field="type"),
        "specversion": 1.0,
    },
    "conflicting duplicate top-level names": {
        **as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value),
        "ID": "another",
    },
    "bad data_base64": {
        "specversion": "1.0",
        "id": "e",
        "type": KeyEventType.EXPIRED.value,
        "data_base64": "!!not base64!!",
    },
    "data_base64 number": {
        "specversion": "1.0",
        "id": "e",
        "type": KeyEventType.EXPIRED.value,
        "data_base64": 5,
    },
    "event too large": json.dumps({"eventType": KeyEventType.EXPIRED.value, "pad": "x" * MAX_DATA_BYTES}),
}


@pytest.mark.parametrize("payload", MALFORMED_PAYLOADS.values(), ids=MALFORMED_PAYLOADS.keys())
def test_malformed_payloads(payload: object) -> None:
    with pytest.raises(MalformedEvent):
        parse_payload(payload)


def test_subscription_validation_event_is_ignored() -> None:
    event = {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": f"/subscriptions/{SUB}",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
    result = parse_payload(event)
    assert isinstance(result, IgnoredEvent)
    assert result.event_type == "Microsoft.EventGrid.SubscriptionValidationEvent"


def test_non_string_names_are_ignored() -> None:
    data: dict[object, object] = {}
    data.update(key_data())
    data[1] = "x"
    data[("Id",)] = "https://evil.vault.azure.net/keys/x"
    assert parse_key(data).key == KEY
    payload: dict[object, object] = {}
    payload.update(as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value))
    payload[2] = "x"
    assert isinstance(parse_payload(payload), KeyVaultEvent)


def test_too_many_top_level_fields_is_malformed() -> None:
    payload = {**as_key_event(DOC_SECRET_EVENT_GRID, KeyEventType.EXPIRED.value), **{f"x{i}": i for i in range(64)}}
    with pytest.raises(MalformedEvent, match="top-level fields"):
        parse_payload(payload)


def test_oversized_data_base64_is_malformed() -> None:
    event = {"specversion": "1.0", "id": "e", "type": KeyEventType.EXPIRED.value, "data_base64": "A" * 100_000}
    with pytest.raises(MalformedEvent, match="larger than"):
        parse_payload(event)


def test_malformed_message_clips_astral_characters() -> None:
    err = malformed(key_data(NBF="\U0001f600" * 100))
    assert "100 characters" in err.reason
    assert len(str(err)) < 250
    assert str(err).isascii()


def test_json_text_naming_a_field_twice() -> None:
    good = f'"Id": "{KEY_ID}"'
    evil = '"Id": "https://evil.vault.azure.net/keys/newkey/' + "0" * 32 + '"'
    assert parse_key("{" + good + ", " + good + "}").key == KEY
    err = malformed("{" + good + ", " + evil + "}")
    assert "'Id' twice with different values" in err.reason
    with pytest.raises(MalformedEvent, match="twice"):
        parse_payload('{"eventType": "x", "eventType": "Microsoft.KeyVault.KeyExpired"}')


def test_duplicate_values_too_deep_to_compare_are_a_difference() -> None:
    def nested(depth: int) -> object:
        value: object = []
        for _ in range(depth):
            value = [value]
        return value

    # Equal, but comparing them exceeds the recursion limit.
    data = {**key_data(), "Extra": nested(5000), "extra ": nested(5000)}
    assert "appears twice" in malformed(data).reason
    same = nested(5000)
    data = {**key_data(), "Extra": same, "extra ": same}  # one object: identity short-cuts ==
    assert parse_key(data).key == KEY
