"""Strict validation of Key Vault key identifiers and vault URLs.

Everything a caller hands us as a key (HTTP bodies, CLI arguments, event payloads) goes
through :func:`parse_key_uri` before it becomes a :class:`~shared.model.KeyRef`. The rules
are deliberately narrower than RFC 3986: a key URI that two URL parsers could read
differently (userinfo, percent-encoding, backslashes, dot segments, numeric-looking hosts,
non-ASCII) is refused rather than normalised, so the vault we check against an allowlist
is the vault the SDK will talk to.

Accepted shape::

    https://{host}[:{port}]/keys/{name}[/{version}][/]

- ``host``: an ASCII DNS name in any case (returned lower-cased; no punycode ``xn--``
  labels, no trailing dot) or a canonical dotted-quad IPv4 address (the local sandbox
  serves vaults at ``https://127.0.0.1:PORT``).
- ``port``: optional; ``:443`` is dropped, any other port is kept.
- ``name``: Key Vault's rule, 1-127 of ``[0-9a-zA-Z-]``; case is kept.
- ``version``: 32 hexadecimal digits, returned lower-case (Key Vault issues lower-case
  versions and matches them case-insensitively).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from shared.errors import ValidationError
from shared.model import KeyRef

# Far above any real key id (a vault host is at most ~60 characters, a name 127, a
# version 32) yet small enough that a hostile body cannot make us scan megabytes.
MAX_URI_LENGTH: Final = 2048

# A DNS name is at most 253 characters (RFC 1035, without the trailing dot).
_MAX_HOST_LENGTH: Final = 253

_SCHEME: Final = "https://"
_KEY_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")
_KEY_VERSION = re.compile(r"[0-9a-fA-F]{32}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_DECIMAL_OCTET = re.compile(r"0|[1-9][0-9]{0,2}")
# WHATWG URL parsers read a host whose last label is a number (decimal, octal or hex) as
# an IPv4 address, so "0x7f.1" or "2130706433" would mean 127.0.0.1 to them.
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)")
_DEFAULT_HTTPS_PORT: Final = 443
_MAX_PORT: Final = 65535
# Longest slice of a rejected input quoted back in an error message.
_CLIP: Final = 60


class InvalidUriError(ValidationError, ValueError):
    """A key URI or vault URL failed validation.

    A :class:`~shared.errors.ValidationError` (so triggers answer 400 and ``field`` says
    which input was wrong) that is also a :class:`ValueError`, for settings loaders that
    catch the latter.
    """


def clip(text: str) -> str:
    """Quotes a short ASCII-escaped prefix of ``text`` for an error message.

    At most ``_CLIP`` characters and ``2 * _CLIP`` characters once escaped (an escaped
    astral character takes ten), with the full length when something was cut.
    """
    n = min(len(text), _CLIP)
    while len(ascii(text[:n])) > 2 * _CLIP:
        n //= 2
    if n == len(text):
        return ascii(text)
    return f"{text[:n]!a}... ({len(text)} characters)"


def _fail(field: str, text: str, why: str) -> InvalidUriError:
    return InvalidUriError(f"invalid {field} {clip(text)}: {why}", field=field)


def _check_text(text: object, *, field: str) -> str:
    """Returns ``text`` if it is a short, printable-ASCII string without whitespace."""
    if not isinstance(text, str):
        raise InvalidUriError(f"invalid {field}: expected a string, got {type(text).__name__}", field=field)
    if not text:
        raise InvalidUriError(f"invalid {field}: empty", field=field)
    if len(text) > MAX_URI_LENGTH:
        raise _fail(field, text, f"longer than {MAX_URI_LENGTH} characters")
    # Printable ASCII without space: rejects IDN/Unicode look-alikes, whitespace, control
    # characters and invisible code points in one test.
    if not all("!" <= ch <= "~" for ch in text):
        raise _fail(field, text, "only printable ASCII characters without whitespace are allowed")
    for bad, why in (
        ("%", "percent-encoding is not allowed"),
        ("\\", "backslashes are not allowed"),
        ("@", "user information is not allowed"),
        ("?", "a query string is not allowed"),
        ("#", "a fragment is not allowed"),
    ):
        if bad in text:
            raise _fail(field, text, why)
    if not text.startswith(_SCHEME):
        raise _fail(field, text, "the scheme must be exactly 'https://'")
    return text


def _ipv4(host: str) -> bool:
    """Whether ``host`` is a canonical dotted-quad IPv4 address (no leading zeros)."""
    parts = host.split(".")
    return len(parts) == 4 and all(_DECIMAL_OCTET.fullmatch(p) and int(p) <= 255 for p in parts)


def _authority(authority: str, *, field: str, text: str) -> str:
    """Validates ``host[:port]`` and returns the normalised ``https://host[:port]``."""
    host, sep, port = authority.partition(":")
    host = host.lower()
    if not host:
        raise _fail(field, text, "the host is missing")
    if len(host) > _MAX_HOST_LENGTH:
        raise _fail(field, text, f"the host is longer than {_MAX_HOST_LENGTH} characters")
    if not _ipv4(host):
        labels = host.split(".")
        if not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise _fail(field, text, "the host is not a valid DNS name or IPv4 address")
        if any(label.startswith("xn--") for label in labels):
            # Punycode is how a Unicode (IDN) host travels in ASCII; no vault name can
            # produce one (vault names never contain "--").
            raise _fail(field, text, "internationalised (punycode) host names are not allowed")
        if _NUMERIC_LABEL.fullmatch(labels[-1]):
            raise _fail(field, text, "the host looks numeric but is not a dotted-quad IPv4 address")
    if not sep:
        return f"https://{host}"
    if not _PORT.fullmatch(port) or int(port) > _MAX_PORT:
        raise _fail(field, text, "the port must be a number from 1 to 65535 without leading zeros")
    if int(port) == _DEFAULT_HTTPS_PORT:
        return f"https://{host}"
    return f"https://{host}:{port}"


def norm_vault_url(url: str | None) -> str:
    """A vault URL as keysteward compares it everywhere: stripped, no trailing slash, lower case,
    no default port (``:443``); ``None`` gives ``""``.

    The one lenient normaliser, for vault URLs Azure itself reports (a vault's ``vaultUri``, a
    service's ``keyVaultUri``): it never raises. For a URL that arrives as input (settings, HTTP,
    CLI) use :func:`normalize_vault_url`, which validates it first and gives the same form for
    every valid URL.
    """
    return (url or "").strip().rstrip("/").lower().removesuffix(":443")


def normalize_vault_url(text: object, *, field: str = "vault_url") -> str:
    """Validates a vault URL and returns it normalised (for input; see :func:`norm_vault_url`).

    Accepts ``https://{host}[:{port}]`` with an optional trailing ``/`` (for example
    ``https://myvault.vault.azure.net/`` or ``https://127.0.0.1:8443``) under the same
    character rules as :func:`parse_key_uri`. Returns ``https://{host}[:{port}]`` with the
    host lower-cased, ``:443`` dropped and no trailing slash, the form of
    :attr:`KeyRef.vault_url <shared.model.KeyRef.vault_url>`.

    Raises :class:`InvalidUriError` (a ``ValidationError`` and a ``ValueError``) with
    ``field`` set to the given name when the URL is not of that form.
    """
    checked = _check_text(text, field=field)
    rest = checked[len(_SCHEME) :]
    authority, slash, path = rest.partition("/")
    if slash and path:
        raise _fail(field, checked, "a vault URL has no path")
    return _authority(authority, field=field, text=checked)


def parse_key_uri(
    text: object,
    *,
    allowed_vaults: Sequence[str] | None,
    require_version: bool | None = None,
) -> KeyRef:
    """Validates a Key Vault key identifier and returns it as a :class:`KeyRef`.

    ``text`` must be ``https://{host}[:{port}]/keys/{name}[/{version}]`` with an optional
    trailing slash, under the rules in this module's docstring.

    ``allowed_vaults``: when not ``None``, the key's normalised vault URL must equal one of
    these vault URLs after :func:`normalize_vault_url`; ``None`` accepts any syntactically
    valid host (callers that enforce an allowlist later, such as the event parser, pass
    ``None``). ``require_version``: ``True`` demands a version, ``False`` forbids one,
    ``None`` accepts both.

    Returns a ``KeyRef`` whose ``uri`` parses back to an equal ``KeyRef``.

    Raises :class:`InvalidUriError` (a ``ValidationError`` with ``field="key"``) when the
    text is not such a key identifier, names a vault outside ``allowed_vaults``, or has the
    wrong versioning. Raises ``TypeError`` if ``allowed_vaults`` is a bare string (a
    programming error: it would be read as a sequence of characters), and
    ``InvalidUriError`` with ``field="allowed_vaults"`` if one of its entries is invalid.
    """
    if isinstance(allowed_vaults, str):
        raise TypeError("allowed_vaults must be a sequence of vault URLs, not a single string")
    field = "key"
    checked = _check_text(text, field=field)
    rest = checked[len(_SCHEME) :]
    authority, _, path = rest.partition("/")
    vault_url = _authority(authority, field=field, text=checked)

    segments = path.split("/")
    if segments and segments[-1] == "" and len(segments) > 1:
        segments.pop()  # one optional trailing slash
    if len(segments) not in (2, 3) or segments[0] != "keys":
        raise _fail(field, checked, "the path must be /keys/{name} or /keys/{name}/{version}")
    name = segments[1]
    if not _KEY_NAME.fullmatch(name):
        raise _fail(field, checked, "a key name is 1-127 letters, digits and hyphens")
    version: str | None = None
    if len(segments) == 3:
        if not _KEY_VERSION.fullmatch(segments[2]):
            raise _fail(field, checked, "a key version is 32 hexadecimal digits")
        version = segments[2].lower()

    if require_version is True and version is None:
        raise _fail(field, checked, "a key version is required")
    if require_version is False and version is not None:
        raise _fail(field, checked, "a versionless key URI is required")

    if allowed_vaults is not None:
        allowed = {normalize_vault_url(v, field="allowed_vaults") for v in allowed_vaults}
        if vault_url not in allowed:
            raise _fail(field, checked, f"vault {vault_url} is not an allowed vault")
    return KeyRef(vault_url, name, version)
