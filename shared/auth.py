"""Caller identity and app roles, from App Service Authentication (Easy Auth).

App Service Authentication signs the caller in with Entra ID and hands the function the
caller's claims as ``X-MS-CLIENT-PRINCIPAL``: base64 of a JSON document
``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}``. The platform strips any
copy a client sends, so the header is trustworthy only where Easy Auth is on
(``WEBSITE_AUTH_ENABLED=True``, which App Service sets) or where a local host is explicitly
told to trust it (``KEYSTEWARD_TRUST_PRINCIPAL_HEADER``). Everywhere else it is refused,
whatever it says.

Every doubt fails closed: no header, an untrusted header, a header that does not decode, a
principal without an object id -> 401; a principal without the role the operation needs ->
403. Function keys stay on as a second lock (``auth_level=FUNCTION`` on every route).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.config import Settings

PRINCIPAL_HEADER: Final = "X-MS-CLIENT-PRINCIPAL"

ROLE_READ: Final = "KeySteward.Read"
ROLE_REVOKE: Final = "KeySteward.Revoke"
ROLE_RESTORE: Final = "KeySteward.Restore"

# Claim types Entra ID (v1 and v2 tokens) uses for the object id, the display name and roles.
OID_CLAIMS: Final = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
NAME_CLAIMS: Final = ("name", "preferred_username")
ROLE_CLAIMS: Final = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")

# An Entra object id is a GUID; in a claim it is written in its canonical 8-4-4-4-12 form.
_GUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# A real principal is a few KB (a token's claims); anything far larger is not one, and
# decoding it would only cost memory.
MAX_HEADER_CHARS: Final = 32_768
# Longest name kept for logs and the journal.
_MAX_NAME: Final = 256


class AuthError(Exception):
    """The caller is not allowed: ``status`` 401 (not authenticated) or 403 (not authorised).

    ``message`` is safe to return to the caller: it says what is missing, never what a
    forged header contained.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: Entra object id, a display name (for the audit trail only),
    and the app roles granted to them."""

    object_id: str
    name: str
    roles: frozenset[str]

    def has_role(self, role: str) -> bool:
        """App role values are compared exactly, as Entra ID issues them."""
        return role in self.roles


def canonical_object_id(value: str) -> str | None:
    """``value`` as a canonical (lower-case, 8-4-4-4-12) GUID, or ``None`` when it is not one.
    Braces, ``urn:uuid:``, missing hyphens and surrounding spaces are not GUIDs here: an oid
    claim carries the canonical form, and anything else is refused rather than compared."""
    return value.lower() if _GUID.fullmatch(value) else None


def same_object_id(a: str, b: str) -> bool:
    """Whether two recorded caller ids name one person: GUIDs compared as GUIDs; anything else
    (the CLI's ``cli:<user>``) compared case-insensitively, with braces and spaces ignored."""
    def norm(value: str) -> str:
        text = value.strip().strip("{}").strip().lower()
        return canonical_object_id(text) or text

    return norm(a) == norm(b)


def header_trusted(settings: Settings, environ: Mapping[str, str]) -> bool:
    """Whether ``X-MS-CLIENT-PRINCIPAL`` can be believed in this process.

    True when App Service Authentication is on (``WEBSITE_AUTH_ENABLED`` is ``true``, any
    case: the platform then strips client-sent copies) or when the settings say the local
    host may trust it (``KEYSTEWARD_TRUST_PRINCIPAL_HEADER``). ``environ`` is passed in (the
    trigger hands ``os.environ``) so nothing here reads process state.
    """
    easy_auth = (environ.get("WEBSITE_AUTH_ENABLED") or "").strip().lower() == "true"
    return easy_auth or settings.trust_principal_header


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as HTTP header maps."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def _decode(raw: str) -> Any:
    text = raw.strip()
    if not text or len(text) > MAX_HEADER_CHARS:
        raise AuthError(401, "the caller principal header is empty or too large")
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
        return json.loads(data.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as err:
        raise AuthError(401, "the caller principal header is malformed") from err


def _claims(doc: Any) -> list[tuple[str, str]]:
    if not isinstance(doc, dict):
        raise AuthError(401, "the caller principal header is malformed")
    claims = doc.get("claims")
    if not isinstance(claims, list):
        raise AuthError(401, "the caller principal carries no claims")
    out: list[tuple[str, str]] = []
    for claim in claims:
        if not isinstance(claim, dict):
            raise AuthError(401, "the caller principal header is malformed")
        typ, val = claim.get("typ"), claim.get("val")
        if not isinstance(typ, str) or not isinstance(val, str):
            raise AuthError(401, "the caller principal header is malformed")
        out.append((typ, val))
    return out


def principal_from_headers(headers: Mapping[str, str], *, trusted: bool) -> Principal:
    """The caller named by ``X-MS-CLIENT-PRINCIPAL`` in ``headers``.

    ``trusted`` comes from :func:`header_trusted`. Raises :class:`AuthError` (401) when the
    header may not be trusted here, is missing or malformed, or names no object id. Roles
    are the claims of the document's ``role_typ`` (default ``roles``) plus the well-known role
    claim types; a principal with no roles is returned (``require_role`` refuses it with 403).
    """
    if not trusted:
        raise AuthError(401, "caller identity cannot be verified here: App Service Authentication is not enabled")
    raw = _header(headers, PRINCIPAL_HEADER)
    if raw is None:
        raise AuthError(401, "authentication required: no caller principal")
    doc = _decode(raw)
    claims = _claims(doc)
    role_typ = doc.get("role_typ") if isinstance(doc.get("role_typ"), str) else None
    name_typ = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else None
    role_types = {t.lower() for t in ROLE_CLAIMS} | ({role_typ.lower()} if role_typ else set())
    name_types = ((name_typ,) if name_typ else ()) + NAME_CLAIMS

    values: dict[str, list[str]] = {}
    for typ, val in claims:
        values.setdefault(typ.lower(), []).append(val)

    raw_oid = next((v for t in OID_CLAIMS for v in values.get(t.lower(), []) if v), "")
    if not raw_oid:
        raise AuthError(401, "the caller principal has no object id")
    oid = canonical_object_id(raw_oid)
    if oid is None:
        raise AuthError(401, "the caller principal's object id is not a GUID")
    name = next((v.strip() for t in name_types for v in values.get(t.lower(), []) if v.strip()), oid)
    # Role values exactly as issued: a padded or re-cased value is not the role.
    roles = frozenset(v for t in role_types for v in values.get(t, []) if v)
    return Principal(object_id=oid, name=name[:_MAX_NAME], roles=roles)


def require_role(principal: Principal, role: str | tuple[str, ...]) -> None:
    """Raises :class:`AuthError` (403) unless ``principal`` holds app role ``role`` (one of
    them, when a tuple is given)."""
    wanted = (role,) if isinstance(role, str) else role
    if not any(principal.has_role(r) for r in wanted):
        raise AuthError(403, f"the caller lacks the app role {' or '.join(wanted)}")


def encode_principal(object_id: str, *, name: str = "", roles: tuple[str, ...] = (),
                     role_typ: str = "roles") -> str:
    """The ``X-MS-CLIENT-PRINCIPAL`` value App Service would send for such a caller (local
    host, CLI against a local host, and tests)."""
    claims = [{"typ": OID_CLAIMS[0], "val": object_id}]
    if name:
        claims.append({"typ": "name", "val": name})
    claims.extend({"typ": role_typ, "val": r} for r in roles)
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_typ}
    return base64.b64encode(json.dumps(doc).encode("utf-8")).decode("ascii")


ANY_RUNBOOK_ROLE: Final = (ROLE_READ, ROLE_REVOKE, ROLE_RESTORE)
"""Who may read runs: readers, and the on-call roles, which read the runs they act on."""

__all__ = [
    "ANY_RUNBOOK_ROLE",
    "PRINCIPAL_HEADER",
    "ROLE_READ",
    "ROLE_RESTORE",
    "ROLE_REVOKE",
    "AuthError",
    "Principal",
    "canonical_object_id",
    "encode_principal",
    "header_trusted",
    "principal_from_headers",
    "require_role",
    "same_object_id",
]
