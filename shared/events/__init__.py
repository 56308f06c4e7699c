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

The package separates the event model from the parsing: ``model`` (the typed results, the
error, the types and size caps), ``fields`` (exact readers of single fields) and ``parse``
(the entry points).
"""

from __future__ import annotations

from shared.events.model import (
    MAX_DATA_BYTES,
    MAX_DATA_FIELDS,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENT_TYPE_LENGTH,
    MAX_FIELD_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_SUBJECT_LENGTH,
    MAX_TIMESTAMP,
    IgnoredEvent,
    KeyEventType,
    KeyVaultEvent,
    MalformedEvent,
)
from shared.events.parse import parse_event, parse_payload

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_DATA_FIELDS",
    "MAX_EVENT_ID_LENGTH",
    "MAX_EVENT_TYPE_LENGTH",
    "MAX_FIELD_LENGTH",
    "MAX_SOURCE_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "MAX_TIMESTAMP",
    "IgnoredEvent",
    "KeyEventType",
    "KeyVaultEvent",
    "MalformedEvent",
    "parse_event",
    "parse_payload",
]
