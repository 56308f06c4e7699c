"""Key Vault events from Event Grid, parsed at the edge into typed, frozen objects.

A trigger hands the raw fields of one event to :func:`parse_event` (or a whole raw event
object to :func:`parse_payload`) and gets back exactly one of:

- :class:`KeyVaultEvent`: one of the three key events this app acts on;
- :class:`IgnoredEvent`: a type the app ignores on purpose (secret and certificate events,
  access-policy changes, anything else); the caller logs one line and acknowledges it;

or the call raises :class:`MalformedEvent` (a :class:`~shared.errors.PermanentError`): the
event claims to be a key event but cannot be trusted. Nothing else is raised, whatever the
input.

Events are hints: the consumer re-reads the key from Key Vault before acting, so the
parser's job is to be exact about what it accepts, not to be the last line of defence.
The vault allowlist is enforced by the service layer, not here.

What Key Vault actually sends is looser than its schema: field names in PascalCase
(current) or camelCase (older schema versions), ``NBF``/``EXP`` as numbers or numeric
strings or null, and Microsoft's own sample carries a stray space in a field name
(``"ObjectName "``) and in a value (``" ee059b..."``). Field names are therefore matched
case-insensitively after stripping, and values are stripped.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Final

from shared.errors import PermanentError, ValidationError
from shared.keyuri import parse_key_uri
from shared.model import KeyRef

# Size caps. Key Vault's own values are tiny (a key id is under 300 characters, the whole
# data object under 1 KiB); the caps only stop a hostile or broken sender from making us
# hold, scan or log megabytes. Event Grid itself allows events up to 1 MiB.
MAX_EVENT_ID_LENGTH: Final = 512
MAX_EVENT_TYPE_LENGTH: Final = 256
MAX_SOURCE_LENGTH: Final = 1024
MAX_SUBJECT_LENGTH: Final = 1024
MAX_FIELD_LENGTH: Final = 2048  # a data value (the Id is the longest, capped at 2048 by keyuri)
MAX_DATA_BYTES: Final = 64 * 1024  # serialised data object, or a whole serialised event
MAX_DATA_FIELDS: Final = 64  # Key Vault sends 7
# datetime's upper bound (9999-12-31T23:59:59Z); anything later cannot be a real date.
MAX_TIMESTAMP: Final = 253_402_300_799
# Longest slice of a rejected value quoted back in an error message.
_CLIP: Final = 60
_WHITESPACE: Final = " \t\r\n\f\v"


class KeyEventType(StrEnum):
    """The Key Vault event types this app acts on."""

    NEW_VERSION = "Microsoft.KeyVault.KeyNewVersionCreated"
    NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"
    EXPIRED = "Microsoft.KeyVault.KeyExpired"


_KEY_TYPES: Final = {t.value.lower(): t for t in KeyEventType}
# Types ignored on purpose, each with the reason the caller logs. Any other type is
# ignored with a generic reason.
_IGNORED_PREFIXES: Final = (
    ("microsoft.keyvault.secret", "secret events are not handled"),
    ("microsoft.keyvault.certificate", "certificate events are not handled"),
    ("microsoft.keyvault.vaultaccesspolicychanged", "access policy changes are not handled"),
    ("microsoft.keyvault.key", "unknown Key Vault key event type"),
)


@dataclass(frozen=True)
class KeyVaultEvent:
    """A parsed key event.

    ``key`` is always versioned, built from the data ``Id`` (its ``vault_url`` is the
    normalised vault of that id, whatever host it names). ``vault_name`` is lower-case:
    the data ``VaultName`` if present, else the vault in ``source``, else the first label
    of the key's host. ``nbf``/``exp`` are the version's not-before and expiry (UTC), or
    ``None`` when unset. ``event_time`` is UTC, ``None`` when the event carried none.
    ``source`` is the Event Grid ``topic`` / CloudEvents ``source`` (the vault's ARM
    resource id), ``""`` when absent; ``subscription_id`` (lower-case: ARM ids are
    case-insensitive) and ``resource_group`` (as written) are parsed from it, ``None`` when
    it is not an ARM resource id.
    """

    event_id: str
    event_type: KeyEventType
    key: KeyRef
    vault_name: str
    nbf: datetime | None
    exp: datetime | None
    event_time: datetime | None
    source: str
    subscription_id: str | None
    resource_group: str | None


@dataclass(frozen=True)
class IgnoredEvent:
    """An event of a type the app ignores on purpose; the caller logs ``reason`` once.

    ``event_id`` and ``event_type`` are the raw values, clipped to their length caps
    (``""`` for an id that was not a string).
    """

    event_id: str
    event_type: str
    reason: str


class MalformedEvent(PermanentError):
    """An event that claims to be a key event but cannot be parsed.

    ``reason`` says what is wrong without quoting more than a short, ASCII-escaped slice of
    the input; ``event_id`` is the event's id when it was readable, else ``None``.
    Permanent: redelivering the same event cannot fix it.
    """

    def __init__(self, reason: str, *, event_id: str | None = None) -> None:
        where = f" {event_id!a}" if event_id else ""
        super().__init__(f"malformed Key Vault event{where}: {reason}", code="MalformedEvent")
        self.reason = reason
        self.event_id = event_id


def _clip(value: str) -> str:
    """Quotes a short ASCII-escaped prefix of ``value`` for an error message.

    At most ``_CLIP`` characters and ``2 * _CLIP`` characters once escaped (an escaped
    astral character takes ten), with the full length when something was cut.
    """
    n = min(len(value), _CLIP)
    while len(ascii(value[:n])) > 2 * _CLIP:
        n //= 2
    if n == len(value):
        return ascii(value)
    return f"{value[:n]!a}... ({len(value)} characters)"


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _fold(name: str) -> str | None:
    """The lookup form of a field name: stripped, lower-case, ASCII only (else ``None``).

    ASCII only because Unicode case folding maps look-alikes onto ASCII letters
    (``"\\u212a"`` KELVIN SIGN lower-cases to ``"k"``).
    """
    stripped = name.strip(_WHITESPACE)
    return stripped.lower() if stripped.isascii() else None


# --- the data object -------------------------------------------------------------------


def _same(a: object, b: object) -> bool:
    """Equality of two field values; a comparison that cannot be answered (nesting deeper
    than the recursion limit, values whose ``==`` raises) counts as a difference."""
    try:
        return bool(a == b)
    except (RecursionError, ValueError, TypeError):
        return False


class _DuplicateNameError(ValueError):
    """A JSON object names the same field twice with different values."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json`` object hook: the last of equal duplicates wins, unequal ones are refused
    (two parsers could otherwise read two different events from one text)."""
    obj: dict[str, object] = {}
    for name, value in pairs:
        if name in obj and not _same(obj[name], value):
            raise _DuplicateNameError(name)
        obj[name] = value
    return obj


def _decode_json_object(
    raw: str | bytes | bytearray | memoryview, *, what: str, event_id: str | None
) -> dict[str, object]:
    """Parses a JSON text (``str`` or UTF-8 bytes) that must hold one object.

    Raises ``MalformedEvent`` when it is too large, not UTF-8, not JSON (NaN and Infinity
    included), has a field twice with different values, or is not an object.
    """
    if len(raw) > MAX_DATA_BYTES:
        raise MalformedEvent(f"{what} is larger than {MAX_DATA_BYTES // 1024} KiB", event_id=event_id)
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEvent(f"{what} is not valid UTF-8", event_id=event_id) from None

    def no_constants(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")

    try:
        loaded: object = json.loads(text, parse_constant=no_constants, object_pairs_hook=_unique_object)
    except _DuplicateNameError as err:
        raise MalformedEvent(
            f"{what} has field {_clip(err.name)} twice with different values", event_id=event_id
        ) from None
    except (ValueError, RecursionError) as err:
        # ValueError covers JSONDecodeError and over-long integers; RecursionError very
        # deep nesting. Neither message is quoted: it can contain the input.
        raise MalformedEvent(f"{what} is not valid JSON ({type(err).__name__})", event_id=event_id) from None
    if not isinstance(loaded, dict):
        raise MalformedEvent(f"{what} must be a JSON object, got {_type_name(loaded)}", event_id=event_id)
    return loaded


def _fields(data: object, *, event_id: str | None) -> dict[str, object]:
    """The data object as ``{folded name: value}``; duplicate names must agree."""
    if isinstance(data, str | bytes | bytearray | memoryview):
        data = _decode_json_object(data, what="data", event_id=event_id)
    if not isinstance(data, Mapping):
        raise MalformedEvent(f"data must be an object, got {_type_name(data)}", event_id=event_id)
    if len(data) > MAX_DATA_FIELDS:
        raise MalformedEvent(f"data has more than {MAX_DATA_FIELDS} fields", event_id=event_id)
    fields: dict[str, object] = {}
    for name, value in data.items():
        if not isinstance(name, str):
            continue  # not a JSON field name; nothing we read can be behind it
        folded = _fold(name)
        if folded is None:
            continue  # unknown field: ignored, as Event Grid asks of consumers
        if folded in fields and not _same(fields[folded], value):
            raise MalformedEvent(f"data field {folded!r} appears twice with different values", event_id=event_id)
        fields[folded] = value
    return fields


def _text_field(fields: Mapping[str, object], name: str, *, event_id: str | None) -> str | None:
    """A stripped string field; ``None`` when absent, null or blank."""
    value = fields.get(name.lower())
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"data field {name} must be a string, got {_type_name(value)}", event_id=event_id)
    if len(value) > MAX_FIELD_LENGTH:
        raise MalformedEvent(f"data field {name} is longer than {MAX_FIELD_LENGTH} characters", event_id=event_id)
    return value.strip(_WHITESPACE) or None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC_TEXT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")


def _timestamp(fields: Mapping[str, object], name: str, *, event_id: str | None) -> datetime | None:
    """``NBF``/``EXP``: seconds since the epoch as a number or numeric string, or unset.

    Returns a UTC datetime, or ``None`` for absent, null or blank. Raises
    ``MalformedEvent`` for booleans, non-numeric text, NaN/infinity, negative values and
    values past year 9999.
    """
    value = fields.get(name.lower())
    if value is None:
        return None
    seconds: float
    if isinstance(value, bool):  # bool is an int subclass; JSON true/false is not a date
        raise MalformedEvent(f"data field {name} must be a number, got bool", event_id=event_id)
    if isinstance(value, int | float):
        seconds = value
    elif isinstance(value, str):
        text = value.strip(_WHITESPACE)
        if not text:
            return None
        if not _NUMERIC_TEXT.fullmatch(text):
            raise MalformedEvent(f"data field {name} must be seconds since 1970, got {_clip(text)}", event_id=event_id)
        seconds = float(text) if "." in text else int(text)
    else:
        raise MalformedEvent(f"data field {name} must be a number, got {_type_name(value)}", event_id=event_id)
    # `not (0 <= x <= MAX)` is also true for NaN.
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise MalformedEvent(
            f"data field {name} is out of range (0 to {MAX_TIMESTAMP} seconds since 1970)", event_id=event_id
        )
    return _EPOCH + timedelta(seconds=seconds)


# --- envelope fields -----------------------------------------------------------------------

# Event Grid sends up to 7 fractional digits ("2019-07-25T01:08:33.1036736Z"); datetime
# keeps 6, so the rest is truncated.
_ISO_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)


def _event_time(value: object, *, event_id: str | None) -> datetime | None:
    """The event time in UTC; ``None`` when absent. Naive times are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except (ValueError, OverflowError):
            raise MalformedEvent("event time is out of range in UTC", event_id=event_id) from None
    if not isinstance(value, str):
        raise MalformedEvent(f"event time must be a string, got {_type_name(value)}", event_id=event_id)
    text = value.strip(_WHITESPACE)
    if not text:
        return None
    match = _ISO_TIME.fullmatch(text)
    if match is None:
        raise MalformedEvent(f"event time {_clip(text)} is not an ISO-8601 date and time", event_id=event_id)
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    tz = UTC
    if sign is not None:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if int(off_m) > 59 or offset >= timedelta(hours=24):
            raise MalformedEvent(f"event time {_clip(text)} has an invalid UTC offset", event_id=event_id)
        tz = timezone(-offset if sign == "-" else offset)
    micros = int((fraction or "0").ljust(6, "0")[:6])
    try:
        parsed = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise MalformedEvent(f"event time {_clip(text)} is not a valid date", event_id=event_id) from None


_ARM_VAULT = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.KeyVault/(?:vaults|managedHSMs)/(?P<vault>[^/]+)/?",
    re.IGNORECASE,
)


def _envelope_text(value: object, what: str, cap: int, *, event_id: str | None) -> str:
    """An optional envelope string, stripped; ``""`` when absent."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{what} must be a string, got {_type_name(value)}", event_id=event_id)
    if len(value) > cap:
        raise MalformedEvent(f"{what} is longer than {cap} characters", event_id=event_id)
    text = value.strip(_WHITESPACE)
    if not text.isprintable():
        raise MalformedEvent(f"{what} contains control characters", event_id=event_id)
    return text


# Key Vault and Managed HSM DNS suffixes: under these, the first label of the host is the
# vault name and must agree with the data's VaultName. Other hosts (the sandbox's
# 127.0.0.1, private test hosts) carry no vault name.
_VAULT_DNS_SUFFIXES: Final = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
    ".vault.microsoftazure.de",
    ".managedhsm.azure.net",
    ".managedhsm.azure.cn",
    ".managedhsm.usgovcloudapi.net",
)
_VAULT_NAME = re.compile(r"[0-9a-zA-Z-]{1,63}")


def _host_vault_name(key: KeyRef) -> str | None:
    host = key.vault_url.removeprefix("https://").split(":", 1)[0]
    if host.endswith(_VAULT_DNS_SUFFIXES):
        return host.split(".", 1)[0]
    return None


# --- entry points ----------------------------------------------------------------------


def _event_id_text(event_id: object) -> str | None:
    """The event id if it is a usable string, else ``None``."""
    if not isinstance(event_id, str):
        return None
    text = event_id.strip(_WHITESPACE)
    if not text or len(text) > MAX_EVENT_ID_LENGTH or not text.isprintable():
        return None
    return text


def _classify(event_type: object, *, event_id: str | None, raw_id: object) -> KeyEventType | IgnoredEvent:
    """The key event type, or the :class:`IgnoredEvent` for any other type."""
    if not isinstance(event_type, str):
        raise MalformedEvent(f"event type must be a string, got {_type_name(event_type)}", event_id=event_id)
    text = event_type.strip(_WHITESPACE)
    if not text:
        raise MalformedEvent("event type is missing", event_id=event_id)
    # ASCII-only lower-casing, so no Unicode look-alike can turn into a key event type.
    folded = text.lower() if text.isascii() else ""
    key_type = _KEY_TYPES.get(folded)
    if key_type is not None:
        return key_type
    reason = "not a Key Vault key event"
    for prefix, why in _IGNORED_PREFIXES:
        if folded.startswith(prefix):
            reason = why
            break
    shown_id = raw_id.strip(_WHITESPACE)[:MAX_EVENT_ID_LENGTH] if isinstance(raw_id, str) else ""
    return IgnoredEvent(event_id=shown_id, event_type=text[:MAX_EVENT_TYPE_LENGTH], reason=reason)


def parse_event(
    *,
    event_id: object,
    event_type: object,
    data: object,
    source: object = None,
    subject: object = None,
    event_time: object = None,
) -> KeyVaultEvent | IgnoredEvent:
    """Parses the fields of one Event Grid / CloudEvents event (as a trigger hands them).

    ``data`` may be a mapping, or a JSON object as ``str`` or ``bytes``. ``source`` is the
    Event Grid ``topic`` or CloudEvents ``source``; ``event_time`` an ISO-8601 string or a
    ``datetime`` (naive means UTC). ``subject`` is checked for type and size only.

    Returns a :class:`KeyVaultEvent` for the three key event types (matched
    case-insensitively), an :class:`IgnoredEvent` for any other type (its other fields are
    not examined). Raises :class:`MalformedEvent` when the type is missing or not a
    string, or a key event fails any check: id missing, data not an object or too large,
    ``Id`` not a versioned key identifier, ``ObjectType`` other than ``Key``,
    ``Version``/``ObjectName``/``VaultName`` contradicting ``Id`` or ``source``, ``NBF``/
    ``EXP`` not a non-negative number within datetime range, or a bad event time. Never
    raises anything else.
    """
    eid = _event_id_text(event_id)
    kind = _classify(event_type, event_id=eid, raw_id=event_id)
    if isinstance(kind, IgnoredEvent):
        return kind
    if eid is None:
        if isinstance(event_id, str) and event_id.strip(_WHITESPACE):
            raise MalformedEvent(f"event id must be at most {MAX_EVENT_ID_LENGTH} printable characters", event_id=None)
        raise MalformedEvent(f"event id must be a non-empty string, got {_type_name(event_id)}")

    source_text = _envelope_text(source, "source", MAX_SOURCE_LENGTH, event_id=eid)
    _envelope_text(subject, "subject", MAX_SUBJECT_LENGTH, event_id=eid)
    when = _event_time(event_time, event_id=eid)

    fields = _fields(data, event_id=eid)
    object_type = _text_field(fields, "ObjectType", event_id=eid)
    if object_type is not None and object_type.lower() != "key":
        raise MalformedEvent(f"ObjectType must be Key, got {_clip(object_type)}", event_id=eid)
    key_id = _text_field(fields, "Id", event_id=eid)
    if key_id is None:
        raise MalformedEvent("data field Id is missing", event_id=eid)
    try:
        key = parse_key_uri(key_id, allowed_vaults=None, require_version=True)
    except ValidationError as err:
        raise MalformedEvent(f"data field Id: {err}", event_id=eid) from None

    version = _text_field(fields, "Version", event_id=eid)
    if version is not None and version.lower() != key.version:
        raise MalformedEvent(f"data field Version {_clip(version)} does not match the version in Id", event_id=eid)
    object_name = _text_field(fields, "ObjectName", event_id=eid)
    if object_name is not None and object_name.lower() != key.name.lower():
        raise MalformedEvent(
            f"data field ObjectName {_clip(object_name)} does not match the key name in Id", event_id=eid
        )

    vault_name = _text_field(fields, "VaultName", event_id=eid)
    if vault_name is not None and not _VAULT_NAME.fullmatch(vault_name):
        raise MalformedEvent(f"data field VaultName {_clip(vault_name)} is not a vault name", event_id=eid)
    host_vault = _host_vault_name(key)
    arm = _ARM_VAULT.fullmatch(source_text)
    source_vault = arm.group("vault").lower() if arm else None
    names = {n.lower() for n in (vault_name, host_vault, source_vault) if n is not None}
    if len(names) > 1:
        raise MalformedEvent(
            "vault names disagree between data VaultName, the Id host and source: " + ", ".join(sorted(names)),
            event_id=eid,
        )

    return KeyVaultEvent(
        event_id=eid,
        event_type=kind,
        key=key,
        vault_name=names.pop() if names else key.vault_name.lower(),
        nbf=_timestamp(fields, "NBF", event_id=eid),
        exp=_timestamp(fields, "EXP", event_id=eid),
        event_time=when,
        source=source_text,
        subscription_id=arm.group("sub").lower() if arm else None,
        resource_group=arm.group("rg") if arm else None,
    )


# Top-level names of the two schemas, folded. Event Grid: id, topic, subject, eventType,
# eventTime, data, dataVersion, metadataVersion. CloudEvents 1.0: specversion, id, source,
# type, subject, time, data (or data_base64).
_EVENT_GRID_TYPE: Final = "eventtype"
_CLOUDEVENTS_VERSION: Final = "specversion"


def parse_payload(obj: object) -> KeyVaultEvent | IgnoredEvent:
    """Parses one raw event object in Event Grid or CloudEvents 1.0 schema.

    ``obj`` is a mapping, or one JSON object as ``str`` or ``bytes`` (not the array Event
    Grid delivers: the caller iterates). The schema is detected from the top-level names,
    matched case-insensitively: ``specversion`` means CloudEvents (only ``1.0``),
    ``eventType`` means Event Grid; both or neither is malformed.

    Returns and raises as :func:`parse_event`, which it calls.
    """
    if isinstance(obj, str | bytes | bytearray | memoryview):
        obj = _decode_json_object(obj, what="event", event_id=None)
    if not isinstance(obj, Mapping):
        raise MalformedEvent(f"an event must be a JSON object, got {_type_name(obj)}")
    if len(obj) > MAX_DATA_FIELDS:
        raise MalformedEvent(f"the event has more than {MAX_DATA_FIELDS} top-level fields")
    top: dict[str, object] = {}
    for name, value in obj.items():
        folded = _fold(name) if isinstance(name, str) else None
        if folded is None:
            continue
        if folded in top and not _same(top[folded], value):
            raise MalformedEvent(f"top-level field {folded!r} appears twice with different values")
        top[folded] = value

    is_cloudevent = _CLOUDEVENTS_VERSION in top
    is_event_grid = _EVENT_GRID_TYPE in top
    eid = _event_id_text(top.get("id"))
    if is_cloudevent == is_event_grid:
        raise MalformedEvent(
            "cannot tell the schema: expected either 'specversion' (CloudEvents) or 'eventType' (Event Grid)",
            event_id=eid,
        )
    if is_cloudevent:
        spec = top[_CLOUDEVENTS_VERSION]
        if not isinstance(spec, str) or spec.strip(_WHITESPACE) != "1.0":
            shown = _clip(spec) if isinstance(spec, str) else _type_name(spec)
            raise MalformedEvent(f"unsupported CloudEvents specversion {shown}", event_id=eid)
        data = top.get("data")
        if data is None and "data_base64" in top:
            data = _base64_data(top["data_base64"], event_id=eid)
        return parse_event(
            event_id=top.get("id"),
            event_type=top.get("type"),
            data=data,
            source=top.get("source"),
            subject=top.get("subject"),
            event_time=top.get("time"),
        )
    return parse_event(
        event_id=top.get("id"),
        event_type=top.get(_EVENT_GRID_TYPE),
        data=top.get("data"),
        source=top.get("topic"),
        subject=top.get("subject"),
        event_time=top.get("eventtime"),
    )


def _base64_data(value: object, *, event_id: str | None) -> bytes:
    """CloudEvents ``data_base64``, decoded; the JSON inside is parsed by the caller."""
    if not isinstance(value, str):
        raise MalformedEvent(f"data_base64 must be a string, got {_type_name(value)}", event_id=event_id)
    # Base64 inflates by 4/3: anything longer cannot decode to an acceptable data object.
    if len(value) > MAX_DATA_BYTES * 4 // 3 + 4:
        raise MalformedEvent(f"data is larger than {MAX_DATA_BYTES} bytes", event_id=event_id)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEvent("data_base64 is not valid base64", event_id=event_id) from None
