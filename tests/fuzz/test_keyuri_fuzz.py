"""Property-based checks of key URI validation.

Valid key URIs are built from their parts, with an independent expectation of the
``KeyRef`` they must give; invalid ones are built by breaking exactly one rule. Arbitrary
text must either parse (and then round-trip) or raise ``ValidationError``, nothing else.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.errors import ValidationError
from shared.keyuri import InvalidUriError, normalize_vault_url, parse_key_uri
from shared.model import KeyRef


def fuzz(examples: int) -> settings:
    """Settings for one property: no deadline, no example database written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ---- building blocks --------------------------------------------------------------------

HEX = "0123456789abcdef"
LOWER_ALNUM = string.ascii_lowercase + string.digits
label = st.one_of(
    st.sampled_from(LOWER_ALNUM),
    st.builds(
        lambda first, middle, last: first + middle + last,
        st.sampled_from(LOWER_ALNUM),
        st.text(LOWER_ALNUM + "-", max_size=14),
        st.sampled_from(LOWER_ALNUM),
    ),
).filter(lambda s: not s.startswith("xn--"))
tld = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_lowercase),
    st.text(LOWER_ALNUM, min_size=1, max_size=6),
)
dns_host = st.builds(lambda labels, top: ".".join([*labels, top]), st.lists(label, min_size=0, max_size=4), tld)
ipv4_host = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
host = st.one_of(dns_host, ipv4_host, st.sampled_from(["localhost", "sample-kv.vault.azure.net"]))
port = st.one_of(st.none(), st.just(443), st.integers(1, 65535))
KEY_NAME_CHARS = string.ascii_letters + string.digits + "-"
key_name = st.text(KEY_NAME_CHARS, min_size=1, max_size=127)
version = st.integers(0, 2**128 - 1).map(lambda n: f"{n:032x}")


@st.composite
def random_case(draw: st.DrawFn, text: str) -> str:
    """``text`` with any subset of its letters upper-cased (one draw: a bit mask)."""
    mask = draw(st.integers(0, 2 ** len(text) - 1))
    return "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(text))


@dataclass(frozen=True)
class Parts:
    host: str  # lower-case
    port: int | None
    name: str
    version: str | None  # lower-case
    text: str  # the URI as written (mixed case host/version, maybe :443, maybe trailing /)

    @property
    def expected(self) -> KeyRef:
        authority = self.host if self.port in (None, 443) else f"{self.host}:{self.port}"
        return KeyRef(f"https://{authority}", self.name, self.version)


@st.composite
def valid_key_uri(draw: st.DrawFn) -> Parts:
    h = draw(host)
    p = draw(port)
    n = draw(key_name)
    v = draw(st.one_of(st.none(), version))
    written_host = draw(random_case(h))
    written_version = draw(random_case(v)) if v else None
    authority = written_host if p is None else f"{written_host}:{p}"
    text = f"https://{authority}/keys/{n}"
    if written_version:
        text += f"/{written_version}"
    if draw(st.booleans()):
        text += "/"
    return Parts(h, p, n, v, text)


def rejected(text: object, **kwargs: object) -> bool:
    try:
        parse_key_uri(text, allowed_vaults=None, **kwargs)  # type: ignore[arg-type]
    except InvalidUriError as err:
        assert err.field == "key"
        message = str(err)
        assert message.isascii()
        assert len(message) < 300
        return True
    return False


# ---- valid URIs -------------------------------------------------------------------------


@fuzz(800)
@given(valid_key_uri())
def test_valid_uris_parse_to_their_parts_and_round_trip(parts: Parts) -> None:
    ref = parse_key_uri(parts.text, allowed_vaults=None)
    assert ref == parts.expected
    assert parse_key_uri(ref.uri, allowed_vaults=None) == ref
    assert ref.uri.isascii()
    assert parse_key_uri(parts.text, allowed_vaults=[ref.vault_url]) == ref
    require = ref.version is not None
    assert parse_key_uri(parts.text, allowed_vaults=None, require_version=require) == ref
    assert rejected(parts.text, require_version=not require)


@fuzz(300)
@given(valid_key_uri(), valid_key_uri(), st.booleans())
def test_allowlist_accepts_exactly_the_same_vault(target: Parts, other: Parts, include_target: bool) -> None:
    allowed = [other.expected.vault_url + "/"]
    if include_target:
        # Written differently (case, explicit :443, trailing slash): still the same vault.
        allowed.append(target.text.split("/keys/", 1)[0].upper().replace("HTTPS://", "https://") + "/")
    same_vault = include_target or target.expected.vault_url == other.expected.vault_url
    try:
        ref = parse_key_uri(target.text, allowed_vaults=allowed)
    except ValidationError as err:
        assert not same_vault, err
        assert "not an allowed vault" in str(err)
    else:
        assert same_vault
        assert ref == target.expected


@fuzz(300)
@given(valid_key_uri(), st.booleans())
def test_normalize_vault_url_agrees_with_parse_and_is_idempotent(parts: Parts, slash: bool) -> None:
    written = parts.text.split("/keys/", 1)[0] + ("/" if slash else "")
    normal = normalize_vault_url(written)
    assert normal == parts.expected.vault_url
    assert normalize_vault_url(normal) == normal


# ---- one broken rule at a time ----------------------------------------------------------

FORBIDDEN_CHARS = st.one_of(
    st.sampled_from(list(" \t\r\n\x0b\x0c\x00%\\@?#\x7f")),
    st.characters(min_codepoint=0x80),  # any non-ASCII: IDN, look-alikes, invisible marks
    st.characters(max_codepoint=0x1F),
)


@fuzz(500)
@given(valid_key_uri(), FORBIDDEN_CHARS, st.integers(0, 10_000))
def test_inserting_a_forbidden_character_anywhere_is_rejected(parts: Parts, char: str, where: int) -> None:
    at = where % (len(parts.text) + 1)
    assert rejected(parts.text[:at] + char + parts.text[at:])


@fuzz(250)
@given(valid_key_uri(), st.integers(0, 10_000), st.text(HEX, min_size=2, max_size=2))
def test_percent_encoding_anywhere_is_rejected(parts: Parts, where: int, code: str) -> None:
    at = where % len(parts.text)
    assert rejected(parts.text[:at] + "%" + code + parts.text[at + 1 :])


SCHEMES = st.one_of(
    st.sampled_from(["http", "HTTPS", "Https", "ftp", "file", "ws", "wss", "javascript", "data", "httpss", ""]),
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9+.-]{0,8}", fullmatch=True).filter(lambda s: s != "https"),
)
SEPARATORS = st.sampled_from(["://", ":/", ":///", ":\\\\", "//", ":", "://:", "://\\"])


@fuzz(250)
@given(valid_key_uri(), SCHEMES, SEPARATORS)
def test_other_schemes_are_rejected(parts: Parts, scheme: str, sep: str) -> None:
    rest = parts.text.removeprefix("https://")
    text = f"{scheme}{sep}{rest}"
    if text.startswith("https://"):
        return  # "https" + "://" rebuilt the valid URI
    assert rejected(text)


USERINFO = st.one_of(
    st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:", max_size=30),
    st.builds(lambda h: h, host),
    st.builds(lambda h: f"{h}:443", host),
)


@fuzz(250)
@given(valid_key_uri(), USERINFO, st.booleans())
def test_userinfo_is_rejected(parts: Parts, userinfo: str, evil_first: bool) -> None:
    rest = parts.text.removeprefix("https://")
    # Both readings of the trick: the allowed vault as userinfo in front of another host, and
    # arbitrary userinfo in front of the vault.
    text = f"https://{parts.host}@evil.example/{rest}" if evil_first else f"https://{userinfo}@{rest}"
    assert rejected(text)


@fuzz(250)
@given(
    valid_key_uri(),
    st.text(st.characters(min_codepoint=0x80, categories=["L", "N", "M", "Pd", "Zs", "Cf"]), min_size=1, max_size=5),
    label,
)
def test_idn_and_punycode_hosts_are_rejected(parts: Parts, unicode_part: str, tail: str) -> None:
    rest = parts.text.removeprefix("https://").split("/", 1)[1]
    assert rejected(f"https://{unicode_part}{tail}.vault.azure.net/{rest}")
    assert rejected(f"https://xn--{tail}.vault.azure.net/{rest}")
    assert rejected(f"https://{tail}.xn--{tail}/{rest}")


NUMERIC_HOSTS = st.one_of(
    st.integers(0, 2**32 + 5).map(str),  # 2130706433 = 127.0.0.1 to a WHATWG parser
    st.integers(0, 2**32).map(hex),  # 0x7f000001
    st.tuples(st.integers(0, 255), st.integers(0, 2**24)).map(lambda t: f"{t[0]}.{t[1]}"),  # 127.1
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 2**16)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}"),
    st.tuples(*[st.integers(0, 999)] * 4)
    .filter(lambda t: max(t) > 255)
    .map(lambda t: ".".join(map(str, t))),  # octet out of range
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: f"0{t[0]}.{t[1]}.{t[2]}.{t[3]}"),  # octal-looking
    st.tuples(*[st.integers(0, 255)] * 5).map(lambda t: ".".join(map(str, t))),
    st.builds(lambda h, n: f"{h}.{n}", dns_host, st.integers(0, 10**6)),  # numeric last label
)


@fuzz(250)
@given(NUMERIC_HOSTS, key_name)
def test_numeric_hosts_that_are_not_dotted_quads_are_rejected(bad_host: str, name: str) -> None:
    assert rejected(f"https://{bad_host}/keys/{name}")


BAD_PORTS = st.one_of(
    st.integers(65536, 10**7).map(str),
    st.just("0"),
    st.integers(0, 65535).map(lambda p: f"0{p}"),
    st.text(string.ascii_letters + "+-_.:", min_size=0, max_size=6),
    st.integers(-65535, -1).map(str),
)


@fuzz(250)
@given(host, BAD_PORTS, key_name)
def test_bad_ports_are_rejected(h: str, bad_port: str, name: str) -> None:
    assert rejected(f"https://{h}:{bad_port}/keys/{name}")


PATH_BREAKERS = st.sampled_from(["//", "/./", "/../", "/.//", "/%2e/", "/keys/", "/x/", "/./../"])


@fuzz(300)
@given(valid_key_uri(), PATH_BREAKERS, st.integers(0, 10_000))
def test_dot_segments_double_slashes_and_extra_segments_are_rejected(parts: Parts, breaker: str, which: int) -> None:
    scheme_len = len("https://")
    slashes = [i for i, c in enumerate(parts.text) if c == "/" and i >= scheme_len]
    at = slashes[which % len(slashes)]
    assert rejected(parts.text[:at] + breaker + parts.text[at + 1 :])


@fuzz(250)
@given(
    host,
    st.sampled_from(["secrets", "certificates", "Keys", "KEYS", "key", "deletedkeys", "", "keys/keys"]),
    key_name,
    st.one_of(st.none(), version),
)
def test_other_collections_are_rejected(h: str, collection: str, name: str, v: str | None) -> None:
    tail = f"/{v}" if v else ""
    assert rejected(f"https://{h}/{collection}/{name}{tail}")


@fuzz(250)
@given(
    host,
    st.one_of(
        st.text(min_size=1, max_size=130).filter(lambda s: not _is_key_name(s)),
        st.text(KEY_NAME_CHARS, min_size=128, max_size=200),
    ),
    st.one_of(
        st.none(),
        st.text(HEX, min_size=1, max_size=31),
        st.text(HEX, min_size=33, max_size=64),
        st.text(min_size=32, max_size=32).filter(lambda s: not all(c in HEX + HEX.upper() for c in s)),
    ),
)
def test_bad_names_or_versions_are_rejected(h: str, name: str, bad_version: str | None) -> None:
    assert rejected(f"https://{h}/keys/{name}")
    if bad_version is not None:
        assert rejected(f"https://{h}/keys/valid-name/{bad_version}")


def _is_key_name(text: str) -> bool:
    return 1 <= len(text) <= 127 and all(c in KEY_NAME_CHARS for c in text)


# ---- anything at all --------------------------------------------------------------------

ANYTHING = st.one_of(
    st.text(max_size=200),
    st.text(string.printable, max_size=200).map(lambda s: "https://" + s),
    st.builds(lambda h, s: f"https://{h}{s}", host, st.text(string.printable, max_size=80)),
    st.builds(lambda p, junk: p.text + junk, valid_key_uri(), st.text(max_size=10)),
    st.none(),
    st.integers(),
    st.binary(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
)


@fuzz(800)
@given(ANYTHING, st.one_of(st.none(), st.booleans()))
def test_anything_either_parses_and_round_trips_or_is_a_validation_error(text: object, require: bool | None) -> None:
    try:
        ref = parse_key_uri(text, allowed_vaults=None, require_version=require)
    except ValidationError as err:
        assert err.field == "key"
        assert str(err).isascii()
        return
    assert isinstance(text, str)
    assert parse_key_uri(ref.uri, allowed_vaults=[ref.vault_url], require_version=require) == ref
    assert ref.uri.isascii()
    assert ref.vault_url == normalize_vault_url(ref.vault_url)
    assert ref.vault_url.startswith("https://")
    assert ref.vault_url == ref.vault_url.lower()
    assert not ref.vault_url.endswith((":443", "/"))
    assert ref.version is None or (len(ref.version) == 32 and ref.version == ref.version.lower())


@fuzz(400)
@given(ANYTHING)
def test_normalize_vault_url_never_raises_anything_else(text: object) -> None:
    try:
        normal = normalize_vault_url(text)
    except ValidationError as err:
        assert isinstance(err, ValueError)
        assert err.field == "vault_url"
        return
    assert normalize_vault_url(normal) == normal
    assert parse_key_uri(normal + "/keys/k", allowed_vaults=[normal]).vault_url == normal
