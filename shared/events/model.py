"""Key Vault events: the typed results of parsing (:class:`KeyVaultEvent`, :class:`IgnoredEvent`), the
error (:class:`MalformedEvent`), the event types and the size caps the parser enforces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from shared.errors import PermanentError
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


