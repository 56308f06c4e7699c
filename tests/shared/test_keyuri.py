"""Key URI and vault URL validation: what is accepted, how it is normalised, what is refused."""

from __future__ import annotations

import pytest

from shared.errors import PermanentError, ValidationError
from shared.keyuri import MAX_URI_LENGTH, InvalidUriError, normalize_vault_url, parse_key_uri
from shared.model import KeyRef

VERSION = "ee059b2bb5bc48398a53b168c6cdcb10"
VAULT = "https://sample-kv.vault.azure.net"


def parse(text: object, *, require_version: bool | None = None) -> KeyRef:
    return parse_key_uri(text, allowed_vaults=None, require_version=require_version)


# ---- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{VAULT}/keys/cmk/{VERSION}", KeyRef(VAULT, "cmk", VERSION)),
        (f"{VAULT}/keys/cmk", KeyRef(VAULT, "cmk", None)),
        (f"{VAULT}/keys/cmk/", KeyRef(VAULT, "cmk", None)),
        (f"{VAULT}/keys/cmk/{VERSION}/", KeyRef(VAULT, "cmk", VERSION)),
        (f"https://sample-kv.vault.azure.net:443/keys/cmk/{VERSION}", KeyRef(VAULT, "cmk", VERSION)),
        (f"https://Sample-KV.Vault.Azure.NET/keys/cmk/{VERSION}", KeyRef(VAULT, "cmk", VERSION)),
        (f"{VAULT}/keys/cmk/{VERSION.upper()}", KeyRef(VAULT, "cmk", VERSION)),
        (f"{VAULT}/keys/My-Key-01", KeyRef(VAULT, "My-Key-01", None)),
        (f"{VAULT}/keys/{'k' * 127}", KeyRef(VAULT, "k" * 127, None)),
        ("https://127.0.0.1:8443/keys/cmk", KeyRef("https://127.0.0.1:8443", "cmk", None)),
        ("https://127.0.0.1/keys/cmk", KeyRef("https://127.0.0.1", "cmk", None)),
        ("https://localhost:65535/keys/cmk", KeyRef("https://localhost:65535", "cmk", None)),
        ("https://hsm1.managedhsm.azure.net/keys/k", KeyRef("https://hsm1.managedhsm.azure.net", "k", None)),
        ("https://kv.vault.azure.cn/keys/k", KeyRef("https://kv.vault.azure.cn", "k", None)),
    ],
)
def test_valid_key_uris_are_normalised(text: str, expected: KeyRef) -> None:
    ref = parse(text)
    assert ref == expected
    assert parse(ref.uri) == ref


def test_require_version_true_demands_a_version() -> None:
    assert parse(f"{VAULT}/keys/cmk/{VERSION}", require_version=True).version == VERSION
    with pytest.raises(ValidationError, match="version is required"):
        parse(f"{VAULT}/keys/cmk", require_version=True)


def test_require_version_false_demands_versionless() -> None:
    assert parse(f"{VAULT}/keys/cmk", require_version=False).version is None
    with pytest.raises(ValidationError, match="versionless"):
        parse(f"{VAULT}/keys/cmk/{VERSION}", require_version=False)


# ---- the allowlist ----------------------------------------------------------------------


def test_allowlist_matches_after_normalisation() -> None:
    allowed = ["https://Sample-KV.vault.azure.net:443/", "https://127.0.0.1:8443"]
    assert parse_key_uri(f"{VAULT}/keys/cmk", allowed_vaults=allowed).vault_url == VAULT
    assert parse_key_uri("https://127.0.0.1:8443/keys/cmk", allowed_vaults=allowed).name == "cmk"


@pytest.mark.parametrize(
    "text",
    [
        "https://other-kv.vault.azure.net/keys/cmk",
        "https://sample-kv.vault.azure.net.evil.com/keys/cmk",
        "https://sample-kv.vault.azure.net:8443/keys/cmk",
        "https://127.0.0.1:8444/keys/cmk",
        "https://127.0.0.1/keys/cmk",
    ],
)
def test_allowlist_refuses_other_vaults(text: str) -> None:
    allowed = [VAULT, "https://127.0.0.1:8443"]
    with pytest.raises(ValidationError, match="not an allowed vault") as info:
        parse_key_uri(text, allowed_vaults=allowed)
    assert info.value.field == "key"


def test_empty_allowlist_refuses_everything() -> None:
    with pytest.raises(ValidationError, match="not an allowed vault"):
        parse_key_uri(f"{VAULT}/keys/cmk", allowed_vaults=[])


def test_allowlist_as_a_bare_string_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        parse_key_uri(f"{VAULT}/keys/cmk", allowed_vaults=VAULT)


def test_invalid_allowlist_entry_names_its_field() -> None:
    with pytest.raises(InvalidUriError) as info:
        parse_key_uri(f"{VAULT}/keys/cmk", allowed_vaults=["http://sample-kv.vault.azure.net"])
    assert info.value.field == "allowed_vaults"


# ---- refused ----------------------------------------------------------------------------

REJECTED = {
    # types and sizes
    "empty": "",
    "too long": f"{VAULT}/keys/{'k' * MAX_URI_LENGTH}",
    # schemes
    "http": f"http://sample-kv.vault.azure.net/keys/cmk/{VERSION}",
    "upper-case scheme": f"HTTPS://sample-kv.vault.azure.net/keys/cmk/{VERSION}",
    "no scheme": "sample-kv.vault.azure.net/keys/cmk",
    "scheme-relative": "//sample-kv.vault.azure.net/keys/cmk",
    "ftp": "ftp://sample-kv.vault.azure.net/keys/cmk",
    "javascript": "javascript:alert(1)",
    "https with one slash": "https:/sample-kv.vault.azure.net/keys/cmk",
    "https with three slashes": "https:///sample-kv.vault.azure.net/keys/cmk",
    # user information
    "userinfo": "https://user@sample-kv.vault.azure.net/keys/cmk",
    "userinfo with password": "https://user:pw@sample-kv.vault.azure.net/keys/cmk",
    "vault as userinfo": "https://sample-kv.vault.azure.net@evil.com/keys/cmk",
    "vault and port as userinfo": "https://sample-kv.vault.azure.net:443@evil.com/keys/cmk",
    # query, fragment, encodings, separators
    "query": f"{VAULT}/keys/cmk?api-version=7.4",
    "fragment": f"{VAULT}/keys/cmk#x",
    "percent-encoded name": f"{VAULT}/keys/c%6dk",
    "percent-encoded slash": f"{VAULT}/keys%2Fcmk",
    "percent-encoded host": "https://sample-kv%2Evault.azure.net/keys/cmk",
    "backslash path": "https://sample-kv.vault.azure.net\\keys\\cmk",
    "backslash host trick": "https://evil.com\\@sample-kv.vault.azure.net/keys/cmk",
    # whitespace and control characters
    "leading space": f" {VAULT}/keys/cmk",
    "trailing newline": f"{VAULT}/keys/cmk\n",
    "inner tab": f"{VAULT}/keys/\tcmk",
    "nul": f"{VAULT}/keys/cmk\x00",
    # non-ASCII and IDN
    "unicode host": "https://ex\u00e4mple.vault.azure.net/keys/cmk",
    "cyrillic a in host": "https://s\u0430mple-kv.vault.azure.net/keys/cmk",
    "fullwidth dot": "https://sample-kv\uff0evault.azure.net/keys/cmk",
    "zero-width space": f"{VAULT}/keys/c\u200bmk",
    "right-to-left override": f"{VAULT}/keys/\u202ecmk",
    "punycode host": "https://xn--smple-kv-2fg.vault.azure.net/keys/cmk",
    "punycode label later": "https://sample-kv.xn--vault-9za.azure.net/keys/cmk",
    # hosts
    "empty host": "https:///keys/cmk",
    "empty host with port": "https://:8443/keys/cmk",
    "trailing dot host": "https://sample-kv.vault.azure.net./keys/cmk",
    "double dot host": "https://sample-kv..vault.azure.net/keys/cmk",
    "leading hyphen label": "https://-kv.vault.azure.net/keys/cmk",
    "trailing hyphen label": "https://kv-.vault.azure.net/keys/cmk",
    "underscore host": "https://sample_kv.vault.azure.net/keys/cmk",
    "label too long": f"https://{'a' * 64}.vault.azure.net/keys/cmk",
    "host too long": f"https://{'.'.join(['a' * 63] * 4)}/keys/cmk",
    "decimal ip": "https://2130706433/keys/cmk",
    "hex ip": "https://0x7f000001/keys/cmk",
    "short ip": "https://127.1/keys/cmk",
    "octal ip": "https://0177.0.0.1/keys/cmk",
    "leading zero octet": "https://127.0.0.01/keys/cmk",
    "octet above 255": "https://256.0.0.1/keys/cmk",
    "five octets": "https://1.2.3.4.5/keys/cmk",
    "numeric last label": "https://sample-kv.123/keys/cmk",
    "ipv6": "https://[::1]:8443/keys/cmk",
    # ports
    "empty port": "https://sample-kv.vault.azure.net:/keys/cmk",
    "port zero": "https://sample-kv.vault.azure.net:0/keys/cmk",
    "port too big": "https://sample-kv.vault.azure.net:65536/keys/cmk",
    "port leading zero": "https://sample-kv.vault.azure.net:0443/keys/cmk",
    "port letters": "https://sample-kv.vault.azure.net:https/keys/cmk",
    "two ports": "https://sample-kv.vault.azure.net:443:443/keys/cmk",
    "signed port": "https://sample-kv.vault.azure.net:+443/keys/cmk",
    # paths
    "no path": VAULT,
    "root path": f"{VAULT}/",
    "keys only": f"{VAULT}/keys",
    "keys slash": f"{VAULT}/keys/",
    "secret": f"{VAULT}/secrets/cmk/{VERSION}",
    "certificate": f"{VAULT}/certificates/cmk",
    "upper-case collection": f"{VAULT}/Keys/cmk",
    "extra segment": f"{VAULT}/keys/cmk/{VERSION}/extra",
    "operation suffix": f"{VAULT}/keys/cmk/{VERSION}/wrapkey",
    "double slash before keys": f"{VAULT}//keys/cmk",
    "double slash before name": f"{VAULT}/keys//cmk",
    "double slash before version": f"{VAULT}/keys/cmk//{VERSION}",
    "double trailing slash": f"{VAULT}/keys/cmk//",
    "dot segment": f"{VAULT}/keys/./cmk",
    "dot-dot segment": f"{VAULT}/keys/../keys/cmk",
    "dot-dot escaping": f"{VAULT}/keys/cmk/../../secrets/s",
    "dot name": f"{VAULT}/keys/.",
    "name with dot": f"{VAULT}/keys/c.mk",
    "name with underscore": f"{VAULT}/keys/c_mk",
    "name too long": f"{VAULT}/keys/{'k' * 128}",
    "version too short": f"{VAULT}/keys/cmk/{VERSION[:-1]}",
    "version too long": f"{VAULT}/keys/cmk/{VERSION}0",
    "version not hex": f"{VAULT}/keys/cmk/{'g' * 32}",
    "version with hyphens": f"{VAULT}/keys/cmk/ee059b2b-b5bc-4839-8a53-b168c6cdcb10",
    "semicolon parameter": f"{VAULT}/keys/cmk;v=1",
}


@pytest.mark.parametrize("text", REJECTED.values(), ids=REJECTED.keys())
def test_malformed_key_uris_are_refused(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(text)
    assert info.value.field == "key"


@pytest.mark.parametrize("value", [None, 42, b"https://kv.vault.azure.net/keys/k", ["x"], KeyRef(VAULT, "k")])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="expected a string"):
        parse(value)


def test_error_is_a_400_validation_error_and_a_value_error() -> None:
    with pytest.raises(InvalidUriError) as info:
        parse("http://kv/keys/k")
    err = info.value
    assert isinstance(err, ValidationError)
    assert isinstance(err, PermanentError)
    assert isinstance(err, ValueError)
    assert err.status == 400
    assert err.field == "key"
    assert "scheme" in str(err)


def test_error_message_does_not_echo_huge_input() -> None:
    text = "https://kv.vault.azure.net/keys/" + "\u00e9" * 1000
    with pytest.raises(ValidationError) as info:
        parse(text)
    message = str(info.value)
    assert len(message) < 250
    assert message.isascii()
    assert "1032 characters" in message


# ---- vault URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://myvault.vault.azure.net/", "https://myvault.vault.azure.net"),
        ("https://myvault.vault.azure.net", "https://myvault.vault.azure.net"),
        ("https://MyVault.Vault.Azure.Net:443/", "https://myvault.vault.azure.net"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
        ("https://localhost", "https://localhost"),
    ],
)
def test_normalize_vault_url(text: str, expected: str) -> None:
    assert normalize_vault_url(text) == expected
    assert normalize_vault_url(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://myvault.vault.azure.net",
        "myvault.vault.azure.net",
        "https://myvault.vault.azure.net/keys",
        "https://myvault.vault.azure.net//",
        "https://myvault.vault.azure.net/?x=1",
        "https://user@myvault.vault.azure.net",
        "https://myvault.vault.azure.net:0",
        "https://my vault.vault.azure.net",
        "https://myv\u00e4ult.vault.azure.net",
        "https://",
    ],
)
def test_normalize_vault_url_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid vault_url") as info:
        normalize_vault_url(text)
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "vault_url"


def test_normalize_vault_url_field_name_is_configurable() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_vault_url(None, field="KEYSTEWARD_VAULTS")
    assert info.value.field == "KEYSTEWARD_VAULTS"
