"""Key Vault events: reading single fields exactly (the data object and its values, timestamps,
the envelope's text fields and time, the vault host), each refusing with :class:`MalformedEvent`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from shared.events.model import (
    _WHITESPACE,
    MAX_DATA_BYTES,
    MAX_DATA_FIELDS,
    MAX_FIELD_LENGTH,
    MAX_TIMESTAMP,
    MalformedEvent,
)
from shared.keyuri import clip as _clip
from shared.model import KeyRef


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


