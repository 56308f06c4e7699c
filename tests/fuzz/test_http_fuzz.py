"""Property-based checks of every HTTP route through its user function, with real
``func.HttpRequest`` objects, against the in-process sandbox.

Inputs: JSON bodies built from a valid request and then damaged (fields dropped, added,
retyped, blanked, made huge or non-ASCII, key URIs of other hosts, schemes, ports, userinfo,
IDN and percent-encoding), raw bodies that are not a JSON object at all (truncated, non-UTF-8,
repeated names, NaN, nested thousands deep, over-long integers, larger than the cap), query
strings, route ids, and ``X-MS-CLIENT-PRINCIPAL`` headers (garbage base64, base64 of
non-JSON, JSON of the wrong shape, missing or blank object ids, role case variants, claim
type variants, huge).

Every answer must be one the route documents (never a 5xx), JSON, free of traceback text,
and an error must say what is wrong. A refused request must change nothing: the sandbox
records no write (PATCH/PUT/POST/DELETE) and the journal neither gains nor changes a run.
The outcome of the caller checks is predicted from the header alone: 401 when it cannot
name a caller, 403 when the caller lacks the route's role.
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import functions._root as root
from functions._http import MAX_BODY_BYTES
from functions.keys_http import key_status_route, preflight_check, retire_version
from functions.runbooks import approve_run, get_run, list_runs, restore, revoke
from sandbox.world import World
from shared.auth import MAX_HEADER_CHARS, OID_CLAIMS, ROLE_CLAIMS, ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal
from shared.keyuri import parse_key_uri
from shared.runbooks import RevokeRequest, resume_unfinished
from tests.app.test_runbooks import Rig, rig_for
from tests.memory_journal import MemoryJournal


def fuzz(examples: int) -> settings:
    """Settings for one property: no deadline, no example database written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# ---- the bench: an estate, a finished revocation, a revocation waiting for approval ----------

VAULT = "https://kv-estate.vault.azure.net"
REQUESTER_OID = "11111111-aaaa-4000-8000-000000000001"  # asked for the pending revocation
OTHER_OID = "22222222-bbbb-4000-8000-000000000002"
REQUESTER = Principal(REQUESTER_OID, "Alice", frozenset({ROLE_READ, ROLE_REVOKE}))
ROLES = (ROLE_READ, ROLE_REVOKE, ROLE_RESTORE)
WRITES = frozenset({"PATCH", "PUT", "POST", "DELETE"})
# Placeholders resolved per example (versions and run ids exist only once the bench is built).
V1, V2, DONE, PENDING = "@V1@", "@V2@", "@DONE@", "@PENDING@"


@dataclass
class Bench:
    rig: Rig
    v1: str  # the previous version of cmk (every binding pinned to it)
    v2: str  # the current version
    done: str  # a finished revocation of key spare-done (restorable)
    pending: str  # a revocation of spare-pending waiting for a second person
    dirty: bool = False

    @property
    def world(self) -> World:
        return self.rig.world

    def resolve(self, text: str) -> str:
        return text.replace(V1, self.v1).replace(V2, self.v2).replace(DONE, self.done).replace(PENDING, self.pending)

    def state(self) -> list[tuple[str, str, str]]:
        return sorted((r.run_id, r.status, r.updated.isoformat()) for r in self.rig.journal.list_runs(limit=10_000))


def build_bench() -> Bench:
    world = World()
    rig = rig_for(
        world, MemoryJournal(world.clock), KEYSTEWARD_TRUST_PRINCIPAL_HEADER="true", KEYSTEWARD_TWO_PERSON_RULE="true"
    )
    assert rig.estate.vault_url == VAULT
    keys = rig.estate.keys
    for name in ("spare-done", "spare-pending"):
        keys.create_rsa_key(name, size=2048)
    versions = sorted(rig.versions().values(), key=lambda p: p.created_on)
    current = keys.get_key(rig.estate.key_name).properties.version
    previous = next(p.version for p in versions if p.version != current)
    books = rig.app.runbooks

    def request(name: str, *, emergency: bool) -> RevokeRequest:
        key = parse_key_uri(f"{VAULT}/keys/{name}", allowed_vaults=None)
        return RevokeRequest(key=key, mode="disable", reason="drill", ticket="T-1", emergency=emergency)

    done = books.revoke(request("spare-done", emergency=True), REQUESTER, budget=timedelta(0)).run.run_id
    report = resume_unfinished(rig.app.runbooks, budget=timedelta(hours=1))
    assert not report.errors
    assert rig.journal.get_run(done).status == "succeeded"
    pending = books.revoke(request("spare-pending", emergency=False), REQUESTER, budget=timedelta(0)).run
    assert pending.status == "pending-approval"
    return Bench(rig, previous, current, done, pending.run_id)


class Benches:
    """One bench per module; rebuilt after a request that was allowed to change it."""

    def __init__(self) -> None:
        self._bench: Bench | None = None

    def current(self) -> Bench:
        if self._bench is None or self._bench.dirty:
            self._bench = build_bench()
            root.install(self._bench.rig.app)
        return self._bench


@pytest.fixture(scope="module")
def benches() -> Iterator[Benches]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WEBSITE_AUTH_ENABLED", raising=False)  # the settings alone decide trust here
        holder = Benches()
        holder.current()
        yield holder
    root.install(None)


# ---- callers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An ``X-MS-CLIENT-PRINCIPAL`` value (``None``: not sent) and what it must amount to:
    ``roles`` is ``None`` when no caller can be named from it (401), else the app roles held."""

    header: str | None
    roles: frozenset[str] | None
    oid: str | None = None
    why: str = ""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


ROLE_TYPES_LOWER = {t.lower() for t in ROLE_CLAIMS}
OID_TYPES = [*OID_CLAIMS, "OID", OID_CLAIMS[0].upper(), "Oid"]
ROLE_TYPES = [*ROLE_CLAIMS, "ROLES", "Roles", ROLE_CLAIMS[1].upper()]
# Values that look like a role but are not one (roles are compared exactly: no trimming).
ROLE_LOOKALIKES = st.one_of(
    st.sampled_from(ROLES).map(str.lower),
    st.sampled_from(ROLES).map(str.upper),
    st.sampled_from(ROLES).map(lambda r: r.replace(".", "_")),
    st.sampled_from(ROLES).map(lambda r: r + "\u200b"),  # zero-width space
    st.sampled_from(ROLES).map(lambda r: f" {r} "),  # padded: not the role
    st.sampled_from(ROLES).map(lambda r: r.replace("e", "\u0435")),  # Cyrillic e
    st.sampled_from(["KeySteward", "KeySteward.*", "KeySteward.Admin", "Read", "*", ""]),
)
PADDING = st.sampled_from(["", "", " ", "\t", "  \n"])
unicode_text = st.text(st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), min_size=1, max_size=40)


@st.composite
def good_caller(draw: st.DrawFn) -> Caller:
    """A well-formed principal: object id under any accepted claim type, the roles it holds under
    any role claim type (or the document's ``role_typ``), plus look-alike roles and roles under
    claim types that do not carry roles (neither counts)."""
    # Object ids are canonical GUIDs (either case); anything else is refused (see bad_oid_caller).
    oid = draw(st.one_of(st.sampled_from([REQUESTER_OID, OTHER_OID]), st.uuids().map(str),
                         st.uuids().map(lambda u: str(u).upper())))
    declared = draw(st.one_of(st.none(), st.sampled_from(["roles", "groups", "appRoles"]), st.integers()))
    counting = [*ROLE_TYPES] + ([declared] if isinstance(declared, str) else [])
    claims: list[dict[str, str]] = [
        {"typ": draw(st.sampled_from(OID_TYPES)), "val": oid}
    ]
    granted = draw(
        st.sampled_from(
            [ROLES, ROLES, ROLES, ROLES, (ROLE_READ,), (ROLE_REVOKE,), (ROLE_RESTORE,), (ROLE_READ, ROLE_REVOKE), ()]
        )
    )
    claims += [{"typ": draw(st.sampled_from(counting)), "val": r} for r in granted]
    for _ in range(draw(st.integers(0, 2))):  # noise: look-alikes anywhere, real roles under other claim types
        typ = draw(st.sampled_from([*counting, "groups", "scp", "wids"]))
        value = draw(ROLE_LOOKALIKES) if typ.lower() in {t.lower() for t in counting} else draw(st.sampled_from(ROLES))
        claims.append({"typ": typ, "val": value})
    held = {
        c["val"]
        for c in claims[1:]
        if c["typ"].lower() in {t.lower() for t in counting} and c["val"] in ROLES
    }
    if draw(st.booleans()):
        claims.append(
            {
                "typ": draw(st.sampled_from(["name", "preferred_username"])),
                "val": draw(st.one_of(st.text(max_size=30), unicode_text, st.just("x" * 5000))),
            }
        )
    if draw(st.booleans()):
        claims.append(
            {"typ": draw(st.sampled_from(["aud", "iss", "groups-other", "email"])), "val": draw(st.text(max_size=20))}
        )
    order = draw(st.permutations(claims))
    doc: dict[str, Any] = {
        "auth_typ": draw(st.sampled_from(["aad", "AAD", "", "github"])),
        "claims": order,
        "name_typ": draw(st.sampled_from(["name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"])),
    }
    if declared is not None:
        doc["role_typ"] = declared
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    encoded = b64(text.encode("utf-8"))
    if draw(st.booleans()):
        encoded = encoded.rstrip("=")  # padding is optional
    encoded = draw(PADDING) + encoded + draw(PADDING)
    return Caller(encoded, frozenset(held), oid.lower(), "well-formed")


def _names_a_caller(doc: object) -> bool:
    """Whether a generated junk document happens to be a valid principal (then it is not junk)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        return False
    claims = doc["claims"]
    if not all(isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str) for c in claims):
        return False
    return any(c["typ"].lower() in {t.lower() for t in OID_CLAIMS} and c["val"].strip() for c in claims)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_like = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
wrong_claims = st.one_of(
    json_like,
    st.lists(json_like, max_size=3),
    st.lists(st.fixed_dictionaries({"typ": json_like, "val": json_like}), min_size=1, max_size=3),
    st.just([{"typ": "oid", "val": ""}]),
    st.just([{"typ": "oid", "val": "   "}]),
    st.just([{"typ": "oid", "val": 42}]),
    st.just([{"typ": "oid"}]),
    st.just([{"type": "oid", "value": "x"}]),
    st.just([{"typ": "roles", "val": ROLE_READ}]),  # roles but no object id
    st.just([{"typ": "sub", "val": "x"}, {"typ": "objectidentifier", "val": "x"}]),  # near misses
)


@st.composite
def bad_caller(draw: st.DrawFn) -> Caller:
    """A header no caller can be named from."""
    kind = draw(
        st.sampled_from(
            [
                "absent",
                "empty",
                "text",
                "unicode",
                "bytes",
                "not-json",
                "wrong-json",
                "wrong-claims",
                "huge",
                "deep",
                "long-int",
                "bad-alphabet",
                "latin1",
            ]
        )
    )
    if kind == "absent":
        return Caller(None, None, why=kind)
    if kind == "empty":
        return Caller(draw(st.sampled_from(["", " ", "\t", "===="])), None, why=kind)
    if kind == "text":
        value = draw(st.text(string.printable, min_size=1, max_size=200))
    elif kind == "unicode":
        value = draw(unicode_text)
    elif kind == "bytes":
        value = b64(draw(st.binary(min_size=1, max_size=200)))
    elif kind == "not-json":
        value = b64(
            draw(
                st.sampled_from(
                    [
                        b"not json",
                        b"{claims: []}",
                        b"{'claims': []}",
                        b"\xff\xfe{}",
                        b"NaN",
                        b'{"claims": [], }',
                        b"\x00",
                    ]
                )
            )
        )
    elif kind == "wrong-json":
        value = b64(json.dumps(draw(json_like)).encode())
    elif kind == "wrong-claims":
        doc: dict[str, Any] = {"auth_typ": "aad", "claims": draw(wrong_claims)}
        if draw(st.booleans()):
            doc["role_typ"] = draw(json_like)
        value = b64(json.dumps(doc).encode())
    elif kind == "huge":
        claims = [{"typ": "oid", "val": OTHER_OID}, {"typ": "roles", "val": ROLE_READ}]
        claims += [{"typ": "pad", "val": "x" * 1000}] * draw(st.integers(25, 40))
        value = b64(json.dumps({"claims": claims}).encode())  # well-formed, but over the size cap
        assert len(value) > MAX_HEADER_CHARS
    elif kind == "deep":
        depth = draw(st.integers(1_000, 20_000))
        value = b64(draw(st.sampled_from([b"[", b'{"a":'])) * depth)
    elif kind == "long-int":
        value = b64(b'{"claims": [], "n": ' + b"7" * draw(st.integers(4_301, 20_000)) + b"}")
    elif kind == "bad-alphabet":
        valid = b64(json.dumps({"claims": [{"typ": "oid", "val": OTHER_OID}]}).encode())
        at = draw(st.integers(0, len(valid) - 1))
        value = valid[:at] + draw(st.sampled_from(["!", "-", "_", "*", "\u00e9", "%3D"])) + valid[at:]
    else:  # latin1: the document encoded as Latin-1, not UTF-8
        value = b64(json.dumps({"claims": [{"typ": "oid", "val": "caf\u00e9"}]}, ensure_ascii=False).encode("latin-1"))
    if kind in ("text", "unicode", "bytes", "wrong-json", "wrong-claims"):
        try:
            decoded = json.loads(base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True))
        except Exception:
            decoded = None
        if _names_a_caller(decoded):
            return draw(good_caller())
    return Caller(value, None, why=kind)


def callers(good: int = 3, bad: int = 1) -> st.SearchStrategy[Caller]:
    """Mostly well-formed principals (so the request gets past authentication), some junk."""
    return st.one_of(*[good_caller()] * good, *[bad_caller()] * bad)


ALL_ROLES = Caller(
    b64(
        json.dumps(
            {"claims": [{"typ": "oid", "val": OTHER_OID}, *({"typ": "roles", "val": r} for r in ROLES)]}
        ).encode()
    ),
    frozenset(ROLES),
    OTHER_OID,
    "all roles",
)


# ---- key URIs ----------------------------------------------------------------------------

HOST = VAULT.removeprefix("https://")
GOOD_KEYS = [
    f"{VAULT}/keys/cmk",
    f"{VAULT}/keys/cmk/{V1}",
    f"{VAULT}/keys/cmk/{V2}",
    f"{VAULT}/keys/spare-done",
    f"{VAULT}/keys/spare-pending",
    f"{VAULT}/keys/missing",
    f"{VAULT}/keys/cmk/{'0' * 32}",
    f"{VAULT.upper()}/keys/cmk",
    f"https://{HOST}:443/keys/cmk/",
    f"{VAULT}/keys/cmk/{V1.upper()}",
]
BAD_KEYS = [
    "https://evil.vault.azure.net/keys/cmk",
    f"https://{HOST}.evil.example/keys/cmk",
    "https://vault.azure.net/keys/cmk",
    f"http://{HOST}/keys/cmk",
    f"HTTPS://{HOST}/keys/cmk",
    f"ftp://{HOST}/keys/cmk",
    f"//{HOST}/keys/cmk",
    f"https:/{HOST}/keys/cmk",
    f"https://{HOST}:8443/keys/cmk",
    f"https://{HOST}:0/keys/cmk",
    f"https://{HOST}:99999/keys/cmk",
    f"https://{HOST}:/keys/cmk",
    f"https://{HOST}@evil.example/keys/cmk",
    f"https://user:pw@{HOST}/keys/cmk",
    f"https://evil.example\\@{HOST}/keys/cmk",
    f"https://evil.example#@{HOST}/keys/cmk",
    "https://kv-\u00e9state.vault.azure.net/keys/cmk",
    "https://xn--kv-state-hya.vault.azure.net/keys/cmk",
    "https://kv\u2010estate.vault.azure.net/keys/cmk",
    "https://\uff4bv-estate.vault.azure.net/keys/cmk",
    f"https://{HOST}/keys/%63mk",
    "https://kv-estate%2Evault.azure.net/keys/cmk",
    f"https://{HOST}/keys%2Fcmk",
    f"https://{HOST}/keys/cmk/../other",
    f"https://{HOST}/keys/./cmk",
    f"https://{HOST}//keys/cmk",
    f"https://{HOST}/secrets/cmk",
    f"https://{HOST}/keys/cmk/{V1}/extra",
    f"https://{HOST}/keys/cmk?api-version=7.4",
    f"https://{HOST}/keys/cmk#frag",
    f"https://{HOST}/keys/cm k",
    f" {VAULT}/keys/cmk\n",
    f"{VAULT}/keys/cmk\x00",
    f"https://{HOST}/keys/{'k' * 200}",
    f"https://{HOST}/keys/cmk/{'a' * 31}",
    f"https://{HOST}/keys/cmk/{'g' * 32}",
    "https://127.0.0.1/keys/cmk",
    "https://2130706433/keys/cmk",
    "https://[::1]/keys/cmk",
    "",
    "   ",
    "cmk",
]
key_uris = st.one_of(
    st.sampled_from(GOOD_KEYS),
    st.sampled_from(BAD_KEYS),
    st.text(max_size=60),
    st.text(string.printable, max_size=60).map(lambda s: f"{VAULT}/keys/" + s),
    st.builds(
        lambda u, at, junk: u[:at] + junk + u[at:],
        st.sampled_from(GOOD_KEYS),
        st.integers(0, 60),
        st.sampled_from(["%", "%2e", "@", ":", "/", "\\", "..", "\u0000", "\u00e9", "xn--", " "]),
    ),
)


# ---- bodies ------------------------------------------------------------------------------

wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
    st.sampled_from([0, 1, "true", "false"]),
)
texts = st.one_of(
    st.text(max_size=40),
    unicode_text,
    st.sampled_from(
        ["", " ", "\t\n", "\u00a0", "\u200b", "a\x00b", "<script>", "'; DROP TABLE runs;--", "%s%n", "${jndi:x}"]
    ),
    st.integers(990, 2_100).map(lambda n: "r" * n),  # around the length caps
)


@st.composite
def damaged(draw: st.DrawFn, valid: dict[str, Any], plausible: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """``valid`` with some fields replaced by plausible values, then zero to three damages."""
    doc = dict(valid)
    for name, strategy in plausible.items():
        if draw(st.integers(0, 3)) == 0:
            doc[name] = draw(strategy)
    for damage in draw(st.lists(st.sampled_from(["drop", "extra", "retype", "text", "rename"]), max_size=3)):
        names = sorted(doc)
        if damage == "extra" or not names:
            doc[
                draw(
                    st.one_of(
                        st.sampled_from(["force", "Key", "dry_run", "dryrun", "__proto__", "", "code"]),
                        st.text(max_size=12),
                    )
                )
            ] = draw(json_like)
        elif damage == "drop":
            del doc[draw(st.sampled_from(names))]
        elif damage == "retype":
            doc[draw(st.sampled_from(names))] = draw(wrong_types)
        elif damage == "text":
            doc[draw(st.sampled_from(names))] = draw(texts)
        else:  # the same field under another spelling
            name = draw(st.sampled_from(names))
            doc[draw(st.sampled_from([name.upper(), name.capitalize(), f" {name}", f"{name} "]))] = doc.pop(name)
    return doc


@st.composite
def encoded(draw: st.DrawFn, doc: dict[str, Any]) -> bytes:
    """``doc`` as the client sent it: plain JSON most of the time, else some way of not being
    one JSON object."""
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    how = draw(
        st.sampled_from(
            ["json"] * 10
            + [
                "truncated",
                "duplicate",
                "nan",
                "wrapped",
                "latin1",
                "bom",
                "huge",
                "deep",
                "long-int",
                "trailing",
                "scalar",
                "empty",
                "binary",
                "comment",
            ]
        )
    )
    if how == "json":
        return text.encode()
    if how == "truncated":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "duplicate":
        name = draw(st.sampled_from(sorted(doc))) if doc else "key"
        return (text[:-1] + ("," if doc else "") + json.dumps(name) + ": " + json.dumps(draw(json_like)) + "}").encode()
    if how == "nan":
        return (
            text[:-1] + ("," if doc else "") + '"x": ' + draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])) + "}"
        ).encode()
    if how == "wrapped":
        return json.dumps(draw(st.sampled_from([[doc], {"body": doc}, [doc, doc]]))).encode()
    if how == "latin1":
        return json.dumps({**doc, "reason": "caf\u00e9"}, ensure_ascii=False).encode("latin-1", "replace")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "huge":
        return json.dumps(
            {**doc, "reason": "x" * draw(st.integers(MAX_BODY_BYTES - 200, MAX_BODY_BYTES + 200))}
        ).encode()
    if how == "deep":
        depth = draw(st.integers(900, MAX_BODY_BYTES // 6))
        return (text[:-1] + ("," if doc else "") + '"x": ' + "[" * depth + "]" * depth + "}").encode()
    if how == "long-int":
        return (text[:-1] + ("," if doc else "") + '"x": ' + "9" * draw(st.integers(4_301, 12_000)) + "}").encode()
    if how == "trailing":
        return (text + draw(st.sampled_from(["x", "{}", ",", "\x00", " \n "]))).encode()
    if how == "scalar":
        return draw(st.sampled_from([b"null", b"true", b"0", b'"text"', b"[]", b"1e999"]))
    if how == "empty":
        return draw(st.sampled_from([b"", b" ", b"\r\n\t"]))
    if how == "binary":
        return draw(st.binary(max_size=300))
    return (text[:-1] + ("," if doc else "") + "/* note */ " + '"x": 1}').encode()


REVOKE_VALID = {
    "key": f"{VAULT}/keys/cmk",
    "mode": "disable",
    "reason": "key exposed",
    "ticket": "INC-1",
    "dryRun": True,
}
REVOKE_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "key": key_uris,
    "mode": st.sampled_from(
        ["disable", "remove-access", "Disable", "DISABLE", " disable", "delete", "", "remove_access"]
    ),
    "dryRun": st.one_of(st.booleans(), st.sampled_from(["true", "false", 0, 1, None])),
    "emergency": st.one_of(st.booleans(), st.sampled_from(["yes", 1, None])),
    "reason": texts,
    "ticket": texts,
}
RESTORE_VALID = {"run": DONE, "reason": "all clear", "ticket": "INC-1"}
RUN_IDS = st.one_of(
    st.sampled_from([DONE, PENDING, f" {DONE} ", DONE.lower(), "20260105T090000000Z-0000000000", "nope"]),
    st.text(max_size=80),
    st.text(string.printable, min_size=60, max_size=70),
    unicode_text,
    st.sampled_from(["", " ", "../runs", "%2e%2e", "'", "PartitionKey eq 'x'", "x" * 65, "\x00"]),
)
RESTORE_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {"run": RUN_IDS, "reason": texts, "ticket": texts}
RETIRE_VALID = {"key": f"{VAULT}/keys/cmk/{V1}", "reason": "cleanup", "ticket": "CHG-1"}
RETIRE_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {"key": key_uris, "reason": texts, "ticket": texts}


# ---- one request, and what may come back -------------------------------------------------


@dataclass(frozen=True)
class Route:
    function: Callable[[func.HttpRequest], func.HttpResponse]
    method: str
    path: str
    role: tuple[str, ...]  # any one of them, checked before anything in the request is read
    answers: frozenset[int]  # what the route may answer (no faults are injected here)
    writes: bool = False  # whether a 2xx may change state
    extra_roles: tuple[str, ...] = field(default=())  # may be asked for later (403 after validation)


ROUTES = {
    "revoke": Route(
        revoke,
        "POST",
        "revoke",
        (ROLE_READ, ROLE_REVOKE),
        frozenset({200, 202, 400, 401, 403, 404, 409}),
        writes=True,
        extra_roles=(ROLE_REVOKE,),
    ),
    "restore": Route(
        restore, "POST", "restore", (ROLE_RESTORE,), frozenset({200, 202, 400, 401, 403, 404, 409}), writes=True
    ),
    "get_run": Route(get_run, "GET", "runs/{id}", ROLES, frozenset({200, 400, 401, 403, 404})),
    "list_runs": Route(list_runs, "GET", "runs", ROLES, frozenset({200, 400, 401, 403})),
    "approve": Route(
        approve_run,
        "POST",
        "runs/{id}/approve",
        (ROLE_REVOKE,),
        frozenset({200, 202, 400, 401, 403, 404, 409}),
        writes=True,
    ),
    "retire": Route(
        retire_version, "POST", "retire", (ROLE_REVOKE,), frozenset({200, 400, 401, 403, 404, 409}), writes=True
    ),
    "check": Route(preflight_check, "GET", "check", (ROLE_READ,), frozenset({200, 400, 401, 403})),
    "status": Route(key_status_route, "GET", "keys/status", (ROLE_READ,), frozenset({200, 400, 401, 403, 404})),
}
TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\b\w+Error: ")


def note(text: str) -> None:
    """Counts an outcome for ``--hypothesis-show-statistics`` (outside a property: nothing)."""
    if currently_in_test_context():
        hypothesis_event(text)


def send(
    benches: Benches,
    name: str,
    caller: Caller,
    *,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    run_id: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Sends one request through the route's user function and checks every property that holds
    whatever the input; returns the status and the JSON answer."""
    bench = benches.current()
    route = ROUTES[name]
    headers = {"Content-Type": "application/json", "x-functions-key": "function-key", **(extra_headers or {})}
    if caller.header is not None:
        headers["X-MS-CLIENT-PRINCIPAL"] = bench.resolve(caller.header)
    route_params = {"id": bench.resolve(run_id)} if run_id is not None else {}
    path = route.path.replace("{id}", "x")
    params = {bench.resolve(k): bench.resolve(v) for k, v in (params or {}).items()}
    raw = bench.resolve(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    req = func.HttpRequest(
        method=route.method,
        url=f"https://keysteward.azurewebsites.net/api/{path}",
        headers=headers,
        params=params,
        route_params=route_params,
        body=raw,
    )
    seq, before = bench.world.last_seq, bench.state()

    resp = route.function(req)

    status = resp.status_code
    note(f"{name}: {status}")
    text = resp.get_body().decode("utf-8")
    assert status in route.answers, (status, text[:500])
    assert resp.mimetype == "application/json"
    assert not TRACE.search(text), text[:500]
    doc = json.loads(text)
    assert isinstance(doc, dict)
    writes = [f"{e.method} {e.path}" for e in bench.world.requests_since(seq) if e.method in WRITES]
    changed = bench.state() != before
    if status >= 400:
        error = doc["error"]
        assert isinstance(error["code"], str) and error["code"], doc
        assert isinstance(error["message"], str) and error["message"].strip(), doc
        assert error.get("field") is None or isinstance(error["field"], str)
        if status in (401, 403):
            assert error["code"] == ("Unauthorized" if status == 401 else "Forbidden"), doc
        assert writes == [], (status, doc, writes)  # refused: nothing was written ...
        assert not changed, (status, doc)  # ... and no run was recorded or moved
    elif doc.get("dryRun") is True or not route.writes or (status == 200 and doc.get("duplicate")):
        assert writes == [] and not changed, (status, writes)  # reads only
    elif writes or changed:
        bench.dirty = True  # an accepted change: the next example gets a fresh bench
        note(f"{name}: changed state")

    # Authentication and authorisation come first, whatever the rest of the request says.
    if caller.roles is None:
        assert status == 401, (caller.why, status, doc)
    elif not set(route.role) & caller.roles:
        assert status == 403, (caller.roles, status, doc)
    else:
        assert status != 401, doc
        if status == 403:
            assert any(r not in caller.roles for r in route.extra_roles) or name == "approve", (caller, doc)
    return status, doc


# ---- per-route properties ----------------------------------------------------------------


@fuzz(600)
@given(callers(), damaged(REVOKE_VALID, REVOKE_PLAUSIBLE).flatmap(encoded))
def test_revoke_answers_a_documented_status_and_refusals_change_nothing(
    benches: Benches, caller: Caller, body: bytes
) -> None:
    send(benches, "revoke", caller, body=body)


@fuzz(300)
@given(callers(), damaged(RESTORE_VALID, RESTORE_PLAUSIBLE).flatmap(encoded))
def test_restore_answers_a_documented_status_and_refusals_change_nothing(
    benches: Benches, caller: Caller, body: bytes
) -> None:
    send(benches, "restore", caller, body=body)


@fuzz(300)
@given(callers(), damaged(RETIRE_VALID, RETIRE_PLAUSIBLE).flatmap(encoded))
def test_retire_answers_a_documented_status_and_refusals_change_nothing(
    benches: Benches, caller: Caller, body: bytes
) -> None:
    send(benches, "retire", caller, body=body)


approve_bodies = st.one_of(
    st.sampled_from([b"", b"{}", b" {} ", b"null", b"[]", b'{"approve": true}', b"{", b"\xff"]),
    st.dictionaries(st.text(max_size=8), json_like, max_size=3).flatmap(encoded),
)


@fuzz(250)
@given(callers(), RUN_IDS, approve_bodies)
def test_approve_answers_a_documented_status_and_refusals_change_nothing(
    benches: Benches, caller: Caller, run_id: str, body: bytes
) -> None:
    status, doc = send(benches, "approve", caller, body=body, run_id=run_id)
    if status == 202:
        assert caller.oid != REQUESTER_OID  # the requester never approves their own revocation


@fuzz(200)
@given(callers(), RUN_IDS, st.sampled_from([b"", b"{}", b"garbage"]))
def test_get_run_answers_a_documented_status(benches: Benches, caller: Caller, run_id: str, body: bytes) -> None:
    status, doc = send(benches, "get_run", caller, run_id=run_id, body=body)
    if status == 200:
        assert doc["run"] == benches.current().resolve(run_id).strip()


limits = st.one_of(
    st.integers(-5, 600).map(str),
    st.sampled_from(
        [
            "",
            " 5",
            "5 ",
            "+5",
            "0x10",
            "1e2",
            "5.0",
            "\u00b2",
            "\u0663",
            "\uff15",
            "\u2165",
            "\U0001d7e0",
            "1" * 5_000,
            "0" * 5_000 + "1",
            "9" * 30,
            "NaN",
            "-0",
            "10,20",
        ]
    ),
    st.text(max_size=10),
)
query_names = st.one_of(
    st.sampled_from(["sort", "Key", "KEY", "LIMIT", "key ", "", "api-version", "$filter"]), st.text(max_size=10)
)


@st.composite
def run_queries(draw: st.DrawFn) -> dict[str, str]:
    params: dict[str, str] = {}
    if draw(st.booleans()):
        params["key"] = draw(key_uris)
    if draw(st.booleans()):
        params["limit"] = draw(limits)
    if draw(st.integers(0, 3)) == 0:
        params[draw(query_names)] = draw(st.text(max_size=20))
    return params


@fuzz(350)
@given(callers(), run_queries())
def test_list_runs_answers_a_documented_status(benches: Benches, caller: Caller, params: dict[str, str]) -> None:
    status, doc = send(benches, "list_runs", caller, params=params)
    if status == 200:
        limit = params.get("limit", "100")
        assert limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500
        assert len(doc["runs"]) <= int(limit)


@fuzz(300)
@given(
    callers(),
    st.one_of(
        st.fixed_dictionaries({"key": key_uris}),
        st.dictionaries(query_names, st.text(max_size=20), max_size=2),
        st.builds(lambda k, n, v: {"key": k, n: v}, key_uris, query_names, st.text(max_size=10)),
    ),
)
def test_key_status_answers_a_documented_status(benches: Benches, caller: Caller, params: dict[str, str]) -> None:
    status, doc = send(benches, "status", caller, params=params)
    if status == 200:
        assert doc["key"].lower().startswith(VAULT)


@fuzz(120)
@given(callers(good=1, bad=2), st.dictionaries(query_names, st.text(max_size=20), max_size=2))
def test_check_answers_a_documented_status(benches: Benches, caller: Caller, params: dict[str, str]) -> None:
    status, doc = send(benches, "check", caller, params=params)
    if status == 200:
        assert isinstance(doc["ok"], bool)


# ---- callers, with requests that are otherwise valid ---------------------------------------

VALID_REQUESTS: dict[str, dict[str, Any]] = {
    "revoke": {"body": json.dumps(REVOKE_VALID).encode()},  # a dry run: role Read
    "restore": {"body": json.dumps({"run": "nope", "reason": "r", "ticket": "t"}).encode()},
    "get_run": {"run_id": DONE},
    "list_runs": {"params": {"limit": "5"}},
    "approve": {"run_id": "20260105T090000000Z-0000000000"},  # no such run: 404 past the role check
    "retire": {"body": json.dumps(RETIRE_VALID).encode()},  # blocked by retention: 409
    "check": {},
    "status": {"params": {"key": f"{VAULT}/keys/cmk"}},
}
EXPECTED_OK = {
    "revoke": 200,
    "restore": 404,
    "get_run": 200,
    "list_runs": 200,
    "approve": 404,
    "retire": 409,
    "check": 200,
    "status": 200,
}


@fuzz(500)
@given(st.sampled_from(sorted(ROUTES)), callers(good=1, bad=1))
def test_callers_get_exactly_401_403_or_the_answer(benches: Benches, name: str, caller: Caller) -> None:
    status, _ = send(benches, name, caller, **VALID_REQUESTS[name])
    if caller.roles is not None and set(ROUTES[name].role) & caller.roles:
        assert status == EXPECTED_OK[name]


def test_the_valid_requests_answer_as_expected_for_a_caller_with_every_role(benches: Benches) -> None:
    for name in sorted(ROUTES):
        status, doc = send(benches, name, ALL_ROLES, **VALID_REQUESTS[name])
        assert status == EXPECTED_OK[name], (name, doc)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("list_runs", {"code": "function-key"}),
        ("list_runs", {"code": "function-key", "limit": "3"}),
        ("check", {"code": "function-key"}),
        ("status", {"code": "function-key", "key": f"{VAULT}/keys/cmk"}),
    ],
)
def test_the_function_key_in_the_query_string_is_not_an_unknown_parameter(
    benches: Benches, name: str, params: dict[str, str]
) -> None:
    # The host passes ?code=KEY through to the function with the other query parameters.
    status, doc = send(benches, name, ALL_ROLES, params=params)
    assert status == 200, doc


@pytest.mark.parametrize("limit", ["\u00b2", "\u00b9\u00b2", "1" * 5_000, "\u0663"])
def test_limit_in_other_digit_forms_is_a_400(benches: Benches, limit: str) -> None:
    status, doc = send(benches, "list_runs", ALL_ROLES, params={"limit": limit})
    assert (status, doc["error"]["field"]) == (400, "limit")


@pytest.mark.parametrize("body", [b'{"key": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", b'{"key": ' + b"1" * 5_000 + b"}"])
def test_deeply_nested_or_over_long_numbers_in_a_body_are_a_400(benches: Benches, body: bytes) -> None:
    status, doc = send(benches, "revoke", ALL_ROLES, body=body)
    assert (status, doc["error"]["field"]) == (400, "body")


@pytest.mark.parametrize("payload", [b"[" * 20_000, b'{"claims": [' * 5_000])
def test_a_deeply_nested_principal_is_a_401(benches: Benches, payload: bytes) -> None:
    status, _ = send(benches, "check", Caller(b64(payload), None, why="deep"))
    assert status == 401
