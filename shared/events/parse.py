"""Key Vault events: the entry points :func:`parse_event` and :func:`parse_payload` (classify the
type, check the envelope against the data, build the typed event)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from shared.errors import ValidationError
from shared.events.fields import (
    _ARM_VAULT,
    _VAULT_NAME,
    _decode_json_object,
    _envelope_text,
    _event_time,
    _fields,
    _fold,
    _host_vault_name,
    _same,
    _text_field,
    _timestamp,
    _type_name,
)
from shared.events.model import (
    _IGNORED_PREFIXES,
    _KEY_TYPES,
    _WHITESPACE,
    MAX_DATA_BYTES,
    MAX_DATA_FIELDS,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_TYPE_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    IgnoredEvent,
    KeyEventType,
    KeyVaultEvent,
    MalformedEvent,
)
from shared.keyuri import clip as _clip
from shared.keyuri import parse_key_uri

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
