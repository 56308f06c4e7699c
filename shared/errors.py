"""The two error classes that mean something to a caller, and the adapters' translation.

- :class:`TransientError`: retry later (throttling, 5xx, timeouts, dropped connections).
  A trigger re-raises it so the platform redelivers (Event Grid, queue).
- :class:`PermanentError`: stop and report (bad input, not found, forbidden, conflict).

SDK errors are translated once, in the adapters, with :func:`translate`, chained with
``raise ... from err``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # azure-core loads with the first SDK call, not when the Functions worker indexes the app.
    from azure.core.exceptions import AzureError, HttpResponseError

TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class KeystewardError(Exception):
    """Base of every error keysteward raises on purpose."""


class TransientError(KeystewardError):
    """A failure that may succeed later; ``retry_after`` (seconds) when the service said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(KeystewardError):
    """A failure that will not go away by retrying; ``code`` is the service's error code if any."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class NotFoundError(PermanentError):
    """The resource (vault, key, version, cluster, account) does not exist."""


class ConfigError(PermanentError):
    """A setting is missing or malformed; raised at start-up, never later."""


class ValidationError(PermanentError):
    """Caller input is malformed; ``field`` names what is wrong."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, code="BadRequest", status=400)
        self.field = field


@contextmanager
def azure_errors(what: str) -> Iterator[None]:
    """Translates any azure-core error raised inside the block (see :func:`translate`)."""
    from azure.core.exceptions import AzureError  # noqa: PLC0415 - cold start: on first use

    try:
        yield
    except AzureError as err:
        raise translate(err, what=what) from err


def _retry_after(err: HttpResponseError) -> float | None:
    response = err.response
    if response is None:
        return None
    headers = getattr(response, "headers", None)
    raw = headers.get("Retry-After") if headers is not None else None
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def translate(err: AzureError, *, what: str) -> KeystewardError:
    """Maps an azure-core error to Transient/Permanent. ``what`` says what was being done."""
    from azure.core.exceptions import (  # noqa: PLC0415 - cold start: on first use
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(err, ServiceRequestError | ServiceResponseError):
        return TransientError(f"{what}: connection failed ({type(err).__name__})")
    if isinstance(err, ResourceNotFoundError):
        code = getattr(getattr(err, "error", None), "code", None)
        return NotFoundError(f"{what}: not found ({code or 'NotFound'})", code=code, status=404)
    if isinstance(err, ClientAuthenticationError):
        return PermanentError(f"{what}: authentication failed", code="Unauthorized", status=401)
    if isinstance(err, ResourceExistsError):
        code = getattr(getattr(err, "error", None), "code", None)
        return PermanentError(f"{what}: conflict ({code or 'Conflict'})", code=code, status=409)
    if isinstance(err, HttpResponseError):
        status = err.status_code
        code = getattr(getattr(err, "error", None), "code", None)
        if status in TRANSIENT_STATUS:
            return TransientError(f"{what}: HTTP {status} ({code or 'no code'})", retry_after=_retry_after(err))
        return PermanentError(f"{what}: HTTP {status} ({code or 'no code'})", code=code, status=status)
    return TransientError(f"{what}: {type(err).__name__}")
