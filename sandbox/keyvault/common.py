"""Key Vault data plane: constants, errors, codecs, identifiers and JSON shapes, request validation
and the router every route module registers on."""

from __future__ import annotations

import base64
import binascii
import bisect
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox.clock import isoformat
from sandbox.state import Key, KeyVersion, Vault
from sandbox.wire import JsonObj, Request, Response, Router, SandboxError, json_response

if TYPE_CHECKING:
    from sandbox.world import World



# ---- constants ----------------------------------------------------------------------------

KEY_NEW_VERSION = "Microsoft.KeyVault.KeyNewVersionCreated"
KEY_NEAR_EXPIRY = "Microsoft.KeyVault.KeyNearExpiry"
KEY_EXPIRED = "Microsoft.KeyVault.KeyExpired"

# What Key Vault gives a key created without key_ops (seen in recorded service responses).
DEFAULT_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
_KNOWN_OPS = {op.lower(): op for op in (*DEFAULT_KEY_OPS, "import", "export")}
RSA_SIZES = (2048, 3072, 4096)
RSA_KTYS = ("RSA", "RSA-HSM")
DEFAULT_RETENTION_DAYS = 90
DAY = 86_400
# Key Vault's defaults and bounds for rotation policies (docs and service behaviour).
DEFAULT_NOTIFY_BEFORE_EXPIRY = "P30D"
MIN_POLICY_EXPIRY_S = 28 * DAY
MIN_TRIGGER_S = 7 * DAY
# Tags: at most 15 per object, names and values up to 256 characters.
MAX_TAGS = 15
MAX_TAG_CHARS = 256
# Paged lists: Key Vault returns at most 25 items per page and refuses larger maxresults.
MAX_PAGE = 25
_KEY_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_API_VERSION = re.compile(r"7\.\d+(?:-preview(?:\.\d+)?)?|20\d\d-\d\d-\d\d(?:-preview)?")
_LATEST_API = "2025-07-01"
# A runaway catch-up (huge clock jump with a short rotation period) stops after this many steps
# per key and tick; the next tick continues where it stopped.
_MAX_CATCH_UP_STEPS = 64
_NOT_FOUND_HELP = (
    "If you recently deleted this key you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


class KeyVaultError(SandboxError):
    """A Key Vault error; ``inner`` becomes ``error.innererror.code`` like the service sends."""

    def __init__(self, status: int, code: str, message: str, *, inner: str | None = None) -> None:
        super().__init__(status, code, message)
        self.inner = inner

    def response(self) -> Response:
        error: JsonObj = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return json_response(self.status, {"error": error})


def _bad(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def _forbidden(message: str, inner: str) -> KeyVaultError:
    return KeyVaultError(403, "Forbidden", message, inner=inner)


def _key_not_found(name: str, version: str | None = None) -> KeyVaultError:
    ident = f"{name}/{version}" if version else name
    return KeyVaultError(
        404, "KeyNotFound", f"A key with (name/id) {ident} was not found in this key vault. {_NOT_FOUND_HELP}"
    )


def _deleted_conflict(name: str) -> KeyVaultError:
    return KeyVaultError(
        409,
        "Conflict",
        f"Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
        "in this state, the key can only be recovered or purged.",
        inner="ObjectIsDeletedButRecoverable",
    )


# ---- small codecs -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise _bad(f"Property {what} must be a base64url string.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise _bad(f"Property {what} is not valid base64url.") from err


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def _b64_int(text: Any, what: str) -> int:
    data = _unb64url(text, what)
    if not data:
        raise _bad(f"Property {what} is empty.")
    return int.from_bytes(data, "big")


_DURATION = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?"
)


def parse_duration(text: str) -> int:
    """An ISO-8601 duration as Key Vault accepts it (``P90D``, ``P3M``, ``P1Y10D``, ``PT48H``), in seconds.

    A year counts 365 days and a month 30 days (the sandbox does not do calendar arithmetic).
    Raises ValueError when the text is not such a duration.
    """
    raw = text.strip().upper()
    m = _DURATION.fullmatch(raw)
    if m is None or raw in ("P", "PT") or raw.endswith("T"):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    parts = {k: int(v or 0) for k, v in m.groupdict().items()}
    days = parts["y"] * 365 + parts["mo"] * 30 + parts["w"] * 7 + parts["d"]
    return days * DAY + parts["h"] * 3600 + parts["mi"] * 60 + parts["s"]


# ---- identifiers and JSON shapes ------------------------------------------------------------


def key_id(world: World, vault_name: str, key_name: str, version: str | None = None) -> str:
    """The key identifier (``kid``) Key Vault reports; versionless when ``version`` is None."""
    base = f"{_vault_url(world, vault_name)}/keys/{key_name}"
    return f"{base}/{version}" if version else base


def _vault_url(world: World, vault_name: str) -> str:
    # vault_url_for is a replaceable attribute (loopback swaps it); give it its type once, here.
    url_for: Callable[[str], str] = world.vault_url_for
    return url_for(vault_name.lower())


def _base(world: World, vault: Vault) -> str:
    return _vault_url(world, vault.name)


def _retention_days(vault: Vault) -> int:
    days = vault.properties.get("softDeleteRetentionInDays")
    if isinstance(days, int) and not isinstance(days, bool) and days > 0:
        return days
    return DEFAULT_RETENTION_DAYS


def _soft_delete(vault: Vault) -> bool:
    # Soft delete is always on for current vaults; only an explicit false (legacy vaults) turns it off.
    return vault.properties.get("enableSoftDelete") is not False


def _recovery_level(vault: Vault) -> str:
    if not _soft_delete(vault):
        return "Purgeable"
    prefix = "Recoverable" if _retention_days(vault) >= DEFAULT_RETENTION_DAYS else "CustomizedRecoverable"
    return prefix if vault.purge_protection else f"{prefix}+Purgeable"


def _attributes(vault: Vault, kv: KeyVersion) -> JsonObj:
    attrs: JsonObj = {"enabled": kv.enabled}
    if kv.nbf is not None:
        attrs["nbf"] = kv.nbf
    if kv.exp is not None:
        attrs["exp"] = kv.exp
    attrs["created"] = kv.created
    attrs["updated"] = kv.updated
    attrs["recoveryLevel"] = _recovery_level(vault)
    # keys.json (data-plane stable 7.5) KeyAttributes.recoverableDays: "softDelete data retention
    # days. Value should be >=7 and <=90 when softDelete enabled, otherwise 0."
    attrs["recoverableDays"] = _retention_days(vault) if _soft_delete(vault) else 0
    attrs["exportable"] = False
    return attrs


def _bundle(world: World, vault: Vault, key: Key, kv: KeyVersion) -> JsonObj:
    numbers = kv.private_key.public_key().public_numbers()
    out: JsonObj = {
        "key": {
            "kid": key_id(world, vault.name, key.name, kv.version),
            "kty": kv.kty,
            "key_ops": list(kv.key_ops),
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        },
        "attributes": _attributes(vault, kv),
    }
    if kv.tags:
        out["tags"] = dict(kv.tags)
    return out


def _deleted_fields(world: World, vault: Vault, key: Key) -> JsonObj:
    return {
        "recoveryId": f"{_base(world, vault)}/deletedkeys/{key.name}",
        "deletedDate": key.deleted_date,
        "scheduledPurgeDate": key.scheduled_purge_date,
    }


def _item(world: World, vault: Vault, key: Key, kv: KeyVersion, *, versioned: bool) -> JsonObj:
    out: JsonObj = {
        "kid": key_id(world, vault.name, key.name, kv.version if versioned else None),
        "attributes": _attributes(vault, kv),
    }
    if kv.tags:
        out["tags"] = dict(kv.tags)
    return out


def _event(world: World, vault: Vault, key: Key, kv: KeyVersion, *, event_type: str, at: int) -> JsonObj:
    """One Event Grid schema event as Key Vault publishes it to the vault's system topic."""
    return {
        "id": str(uuid.uuid4()),
        "topic": vault.id,
        "subject": key.name,
        "eventType": event_type,
        "eventTime": isoformat(datetime.fromtimestamp(at, UTC)),
        "data": {
            "Id": key_id(world, vault.name, key.name, kv.version),
            "VaultName": vault.name,
            "ObjectType": "Key",
            "ObjectName": key.name,
            "Version": kv.version,
            "NBF": kv.nbf,
            "EXP": kv.exp,
        },
        "dataVersion": "1",
        "metadataVersion": "1",
    }


# ---- request validation ---------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _KEY_NAME.fullmatch(name):
        raise _bad(f"The request URI contains an invalid name: {name}")


def _ops(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(op, str) for op in raw):
        raise _bad("Property key_ops must be a list of strings.")
    out: list[str] = []
    for op in raw:
        known = _KNOWN_OPS.get(op.lower())
        if known is None:
            raise _bad(f"Invalid key operation: {op}.")
        if known not in out:
            out.append(known)
    return out


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _bad("Property tags must be an object of string values.")
    if len(raw) > MAX_TAGS:
        raise _bad(f"The number of tags ({len(raw)}) exceeds the maximum of {MAX_TAGS}.")
    for name, value in raw.items():
        if not name or len(name) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise _bad(f"Tag names and values must be 1-{MAX_TAG_CHARS} characters (tag {name[:40]!r}).")
    return dict(raw)


def _ts(raw: Any, what: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _bad(f"Property attributes.{what} must be a number of seconds since 1970-01-01T00:00:00Z.")
    return int(raw)


@dataclass
class _AttrPatch:
    enabled: bool | None = None
    nbf: int | None = None
    exp: int | None = None


def _attr_patch(raw: Any) -> _AttrPatch:
    if raw is None:
        return _AttrPatch()
    if not isinstance(raw, dict):
        raise _bad("Property attributes must be an object.")
    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise _bad("Property attributes.enabled must be a boolean.")
    return _AttrPatch(enabled=enabled, nbf=_ts(raw.get("nbf"), "nbf"), exp=_ts(raw.get("exp"), "exp"))


def _vault(world: World, req: Request) -> Vault:
    vault = world.vaults.get((req.vault or "").lower())
    if vault is None:  # handle() drops such requests before routing; this keeps handlers total
        raise KeyVaultError(404, "VaultNotFound", f"The vault {req.vault} does not exist.")
    return vault


def _live_key(vault: Vault, name: str) -> Key:
    _check_name(name)
    key = vault.keys.get(name.lower())
    if key is None or not key.versions:
        raise _key_not_found(name)
    return key


def _version(key: Key, version: str, name: str) -> KeyVersion:
    if not version:
        return key.current
    kv = key.versions.get(version.lower())
    if kv is None:
        raise _key_not_found(name, version)
    return kv


def _deleted_key(vault: Vault, name: str) -> Key:
    _check_name(name)
    key = vault.deleted_keys.get(name.lower())
    if key is None:
        raise KeyVaultError(404, "KeyNotFound", f"Deleted Key not found: {name}")
    return key


def _page_size(req: Request) -> int:
    raw = req.query.get("maxresults")
    if raw in (None, ""):
        return MAX_PAGE
    try:
        size = int(str(raw))
    except ValueError as err:
        raise _bad(f"The value '{raw}' is not valid for parameter maxresults.") from err
    if not 1 <= size <= MAX_PAGE:
        raise _bad(f"The value of parameter maxresults must be between 1 and {MAX_PAGE}.")
    return size


def _page(
    world: World,
    vault: Vault,
    req: Request,
    *,
    path: str,
    markers: list[str],
    render: Callable[[str], JsonObj],
    sorted_markers: bool,
) -> Response:
    """One page of the items named by ``markers``, after the ``$skiptoken`` marker, with a nextLink.

    The token names the last item of the previous page rather than an offset, so items added or
    removed between pages neither repeat nor vanish. ``sorted_markers`` says the markers are in
    order (names), which lets a page continue even when its marker item went away. Only the
    page's own items are rendered, so a page costs the same in a vault of 10 or 10,000 keys.
    """
    size = _page_size(req)
    token = req.query.get("$skiptoken") or ""
    start = 0
    if token:
        try:
            marker = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (binascii.Error, ValueError) as err:
            raise _bad("The $skiptoken parameter is not valid.") from err
        if sorted_markers:
            start = bisect.bisect_right(markers, marker)
        else:
            start = markers.index(marker) + 1 if marker in markers else len(markers)
    chunk = markers[start : start + size]
    body: JsonObj = {"value": [render(m) for m in chunk], "nextLink": None}
    if start + size < len(markers):
        api = req.query.get("api-version", _LATEST_API)
        query = f"api-version={api}&$skiptoken={_b64url(chunk[-1].encode())}&maxresults={size}"
        body["nextLink"] = f"{_base(world, vault)}{path}?{query}"
    return json_response(200, body)


# ---- the router (the route modules register on it) -------------------------------------------

ROUTER = Router(case_insensitive=True)
_N = r"(?P<name>[^/]+)"
_V = r"(?P<version>[^/]*)"

