"""Caller identity from App Service Authentication's X-MS-CLIENT-PRINCIPAL: fail closed."""

from __future__ import annotations

import base64
import json

import pytest

from shared.auth import (
    ROLE_READ,
    ROLE_RESTORE,
    ROLE_REVOKE,
    AuthError,
    Principal,
    encode_principal,
    header_trusted,
    principal_from_headers,
    require_role,
)
from shared.config import load_settings

OID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
ROLE_CLAIM = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def header(doc: object) -> dict[str, str]:
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(doc).encode()).decode()}


def settings(trust: bool = False):  # type: ignore[no-untyped-def]
    return load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-00000000a001",
        "KEYSTEWARD_VAULTS": "https://kv1.vault.azure.net",
        "KEYSTEWARD_TRUST_PRINCIPAL_HEADER": "true" if trust else "false",
    })


def test_an_easy_auth_principal_with_roles() -> None:
    doc = {"auth_typ": "aad", "name_typ": "name", "role_typ": ROLE_CLAIM, "claims": [
        {"typ": OID_CLAIM, "val": OID}, {"typ": "name", "val": "Ada Lovelace"},
        {"typ": ROLE_CLAIM, "val": ROLE_REVOKE}, {"typ": ROLE_CLAIM, "val": ROLE_READ},
        {"typ": "aud", "val": "api://keysteward"}]}
    p = principal_from_headers(header(doc), trusted=True)
    assert p == Principal(OID, "Ada Lovelace", frozenset({ROLE_REVOKE, ROLE_READ}))
    require_role(p, ROLE_REVOKE)
    with pytest.raises(AuthError) as err:
        require_role(p, ROLE_RESTORE)
    assert err.value.status == 403


def test_short_claim_names_and_header_case() -> None:
    doc = {"claims": [{"typ": "oid", "val": OID}, {"typ": "preferred_username", "val": "ada@contoso.com"},
                      {"typ": "roles", "val": ROLE_READ}]}
    raw = header(doc)["X-MS-CLIENT-PRINCIPAL"].rstrip("=")  # padding is optional on the wire
    p = principal_from_headers({"x-ms-client-principal": raw}, trusted=True)
    assert (p.object_id, p.name, p.roles) == (OID, "ada@contoso.com", frozenset({ROLE_READ}))


def test_encode_principal_round_trips() -> None:
    raw = encode_principal(OID, name="Ada", roles=(ROLE_RESTORE,))
    assert principal_from_headers({"X-MS-CLIENT-PRINCIPAL": raw}, trusted=True) == Principal(
        OID, "Ada", frozenset({ROLE_RESTORE}))


def test_a_principal_without_roles_is_authenticated_but_refused_every_role() -> None:
    p = principal_from_headers(header({"claims": [{"typ": "oid", "val": OID}]}), trusted=True)
    assert p.roles == frozenset() and p.name == OID
    for role in (ROLE_READ, ROLE_REVOKE, ROLE_RESTORE):
        with pytest.raises(AuthError) as err:
            require_role(p, role)
        assert err.value.status == 403


def test_roles_are_compared_exactly() -> None:
    p = principal_from_headers(header({"claims": [{"typ": "oid", "val": OID},
                                                  {"typ": "roles", "val": "keysteward.revoke"}]}), trusted=True)
    with pytest.raises(AuthError):
        require_role(p, ROLE_REVOKE)


def test_an_untrusted_header_is_refused_whatever_it_says() -> None:
    with pytest.raises(AuthError) as err:
        principal_from_headers({"X-MS-CLIENT-PRINCIPAL": encode_principal(OID, roles=(ROLE_REVOKE,))}, trusted=False)
    assert err.value.status == 401


@pytest.mark.parametrize("headers", [
    {},
    {"X-MS-CLIENT-PRINCIPAL": ""},
    {"X-MS-CLIENT-PRINCIPAL": "not base64 !!"},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"not json").decode()},
    {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"\xff\xfe").decode()},
    {"X-MS-CLIENT-PRINCIPAL": "A" * 40_000},
    header([1, 2]),
    header({"claims": "roles"}),
    header({"claims": [{"typ": "roles"}]}),
    header({"claims": [["oid", OID]]}),
    header({"claims": [{"typ": "roles", "val": ROLE_REVOKE}]}),  # no object id
    header({"claims": [{"typ": "oid", "val": "  "}]}),
], ids=["missing", "empty", "not-base64", "not-json", "not-utf8", "huge", "array", "claims-not-list",
        "claim-without-val", "claim-not-object", "no-oid", "blank-oid"])
def test_missing_or_malformed_principals_fail_closed(headers: dict[str, str]) -> None:
    with pytest.raises(AuthError) as err:
        principal_from_headers(headers, trusted=True)
    assert err.value.status == 401
    assert "Traceback" not in err.value.message


@pytest.mark.parametrize(("environ", "trust", "expected"), [
    ({}, False, False),
    ({"WEBSITE_AUTH_ENABLED": "True"}, False, True),
    ({"WEBSITE_AUTH_ENABLED": "true"}, False, True),
    ({"WEBSITE_AUTH_ENABLED": "False"}, False, False),
    ({"WEBSITE_AUTH_ENABLED": "1"}, False, False),
    ({}, True, True),
])
def test_header_trusted_only_with_easy_auth_or_explicit_local_trust(
    environ: dict[str, str], trust: bool, expected: bool
) -> None:
    assert header_trusted(settings(trust), environ) is expected
