"""Settings of the development host: constants, app settings, local.settings.json, host.json and retry policies."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

LOG = logging.getLogger("sandbox.host")

BANNER = (
    "keysteward development host - a local stand-in for the Azure Functions host, for "
    "development only; in Azure the Functions host runs the same function_app.py unchanged."
)

DEFAULT_PORT = 7071
FUNCTION_KEY_SETTING = "KEYSTEWARD_LOCAL_FUNCTION_KEY"
MASTER_KEY_SETTING = "KEYSTEWARD_LOCAL_MASTER_KEY"
EVENTGRID_KEY_SETTING = "KEYSTEWARD_LOCAL_EVENTGRID_KEY"
SANDBOX_SETTING = "KEYSTEWARD_SANDBOX"
TIME_ZONE_SETTING = "WEBSITE_TIME_ZONE"


def _app_setting_defaults() -> dict[str, str]:
    """App settings this host fills in when unset, before binding expressions are resolved:
    the documented defaults of settings that ``function_app.py`` names in ``%SETTING%``
    expressions (README, Configuration reference). The real Functions host has no such
    defaults; in Azure, infra/azuredeploy.json sets them (parameter ``workQueueName``)."""
    from dataclasses import fields  # noqa: PLC0415 - used once, at start

    from shared.config import Settings  # noqa: PLC0415 - the app's own defaults, one source

    default = {f.name: f.default for f in fields(Settings)}["work_queue"]
    return {"KEYSTEWARD_WORK_QUEUE": str(default)}


EVENTGRID_WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
DEFAULT_STORAGE_SETTING = "AzureWebJobsStorage"

# Azurite's well-known development account (public and documented; not a secret).
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_STORAGE_CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=http;AccountName={_DEV_ACCOUNT};AccountKey={_DEV_ACCOUNT_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{_DEV_ACCOUNT};"
    f"QueueEndpoint=http://127.0.0.1:10001/{_DEV_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{_DEV_ACCOUNT};"
)

# The Functions host rejects request bodies over 100 MB.
MAX_REQUEST_BODY = 100 * 1024 * 1024

SUPPORTED_TRIGGERS = ("httpTrigger", "eventGridTrigger", "timerTrigger", "queueTrigger")
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
_SETTING_EXPR = re.compile(r"%([^%]+)%")


class HostConfigError(Exception):
    """The app, its settings or host.json cannot be served; the message says what and where."""


# ---------------------------------------------------------------------------------------------
# Settings and host.json
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalSettings:
    """What ``local.settings.json`` held. ``found`` is False when the file does not exist."""

    path: Path
    found: bool
    values: Mapping[str, str]
    local_http_port: int | None


def load_local_settings(path: Path, environ: MutableMapping[str, str]) -> LocalSettings:
    """Reads ``path`` and copies ``Values`` into ``environ``, never overriding a set variable.

    A missing file is not an error (Core Tools only warns); malformed JSON, ``IsEncrypted:
    true`` or a non-object ``Values`` raise ``HostConfigError``. Non-string values are
    stringified as the Functions host does (``true`` -> ``"true"``).
    """
    if not path.exists():
        return LocalSettings(path=path, found=False, values={}, local_http_port=None)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HostConfigError(f"{path}: cannot read local settings: {err}") from err
    if not isinstance(doc, dict):
        raise HostConfigError(f"{path}: the top level must be a JSON object")
    if doc.get("IsEncrypted") is True:
        raise HostConfigError(f"{path}: encrypted local settings are not supported; set IsEncrypted false")
    raw_values = doc.get("Values", {})
    if not isinstance(raw_values, dict):
        raise HostConfigError(f"{path}: 'Values' must be a JSON object")
    values: dict[str, str] = {}
    for name, value in raw_values.items():
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        values[str(name)] = text
        environ.setdefault(str(name), text)
    port: int | None = None
    host_section = doc.get("Host")
    if isinstance(host_section, dict) and "LocalHttpPort" in host_section:
        try:
            port = int(host_section["LocalHttpPort"])
        except (TypeError, ValueError) as err:
            raise HostConfigError(f"{path}: Host.LocalHttpPort must be a number") from err
    return LocalSettings(path=path, found=True, values=values, local_http_port=port)


def parse_timespan(text: str) -> timedelta:
    """Parses a .NET TimeSpan ``[d.]hh:mm:ss[.fff]``; raises ``ValueError`` otherwise."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?", text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan (expected hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    return timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=micro
    )


@dataclass(frozen=True)
class RetryPolicy:
    """A function retry policy (``@app.retry`` or host.json ``retry``); applied to timers.

    ``max_retry_count`` -1 retries without end, as in the Functions host.
    """

    strategy: str  # "fixedDelay" or "exponentialBackoff"
    max_retry_count: int
    delay: timedelta = timedelta(0)
    minimum: timedelta = timedelta(0)
    maximum: timedelta = timedelta(0)

    def delay_before(self, retry: int) -> timedelta:
        """The wait before retry number ``retry`` (1-based)."""
        if self.strategy == "fixedDelay":
            return self.delay
        grown = self.minimum * (1 << min(retry - 1, 30))  # capped: beyond 2**30 only the maximum matters
        return min(grown, self.maximum) if self.maximum > timedelta(0) else grown


def parse_retry_policy(raw: Mapping[str, Any], *, where: str) -> RetryPolicy:
    """Reads a retry policy in either spelling (``fixed_delay`` or ``fixedDelay`` ...)."""
    strategy_raw = str(raw.get("strategy", "")).replace("_", "").lower()
    strategies = {"fixeddelay": "fixedDelay", "exponentialbackoff": "exponentialBackoff"}
    if strategy_raw not in strategies:
        raise HostConfigError(f"{where}: unknown retry strategy {raw.get('strategy')!r}")

    def pick(*names: str) -> str | None:
        for name in names:
            value = raw.get(name)
            if value is not None:
                return str(value)
        return None

    try:
        count = int(pick("max_retry_count", "maxRetryCount") or "0")
        delay = parse_timespan(pick("delay_interval", "delayInterval") or "00:00:00")
        minimum = parse_timespan(pick("minimum_interval", "minimumInterval") or "00:00:00")
        maximum = parse_timespan(pick("maximum_interval", "maximumInterval") or "00:00:00")
    except ValueError as err:
        raise HostConfigError(f"{where}: invalid retry policy: {err}") from err
    return RetryPolicy(strategies[strategy_raw], count, delay, minimum, maximum)


# The Functions host's default is one minute; two seconds keeps local round trips short.
_DEFAULT_MAX_POLLING = timedelta(seconds=2)


@dataclass(frozen=True)
class QueueOptions:
    """``host.json`` ``extensions.queues``, with the Functions host's defaults.

    ``visibility_timeout`` is the wait before a failed message is visible again;
    ``max_polling_interval`` caps the back-off between empty polls.
    """

    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    batch_size: int = 16
    max_polling_interval: timedelta = _DEFAULT_MAX_POLLING
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    """The parts of ``host.json`` the development host honours."""

    route_prefix: str = "api"
    function_timeout: timedelta | None = None
    queues: QueueOptions = field(default_factory=QueueOptions)
    retry: RetryPolicy | None = None


HOST_JSON_OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def load_host_json(path: Path, environ: Mapping[str, str] | None = None) -> HostConfig:
    """Reads ``host.json``; a missing file gives the defaults. Raises ``HostConfigError``.

    App settings named ``AzureFunctionsJobHost__<path>`` (``__`` between levels) override
    the file, as in the Functions host; e.g. a local setting
    ``AzureFunctionsJobHost__extensions__queues__visibilityTimeout = 00:00:02`` shortens the
    retry delay in development without touching the deployed host.json.
    """
    doc: Any = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise HostConfigError(f"{path}: cannot read host.json: {err}") from err
    if not isinstance(doc, dict):
        raise HostConfigError(f"{path}: the top level must be a JSON object")
    for name, value in (environ or {}).items():
        if name.lower().startswith(HOST_JSON_OVERRIDE_PREFIX.lower()):
            _override(doc, name[len(HOST_JSON_OVERRIDE_PREFIX) :].split("__"), value)
    extensions = doc.get("extensions") or {}
    http = extensions.get("http") or {}
    queues = extensions.get("queues") or {}
    try:
        timeout_raw = doc.get("functionTimeout")
        timeout = parse_timespan(str(timeout_raw)) if timeout_raw not in (None, "-1") else None
        options = QueueOptions(
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(str(queues.get("visibilityTimeout", "00:00:00"))),
            batch_size=int(queues.get("batchSize", 16)),
            max_polling_interval=_polling_interval(queues.get("maxPollingInterval")),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )
    except (TypeError, ValueError) as err:
        raise HostConfigError(f"{path}: {err}") from err
    if options.message_encoding not in ("base64", "none"):
        raise HostConfigError(f"{path}: extensions.queues.messageEncoding must be 'base64' or 'none'")
    if not 1 <= options.batch_size <= 32:
        raise HostConfigError(f"{path}: extensions.queues.batchSize must be 1..32")
    if options.max_dequeue_count < 1:
        raise HostConfigError(f"{path}: extensions.queues.maxDequeueCount must be at least 1")
    retry = parse_retry_policy(doc["retry"], where=f"{path}: retry") if doc.get("retry") else None
    prefix = str(http.get("routePrefix", "api")).strip("/")
    return HostConfig(route_prefix=prefix, function_timeout=timeout, queues=options, retry=retry)


def _override(doc: dict[str, Any], keys: Sequence[str], value: str) -> None:
    """Sets ``doc[k1][k2]...`` to ``value``, matching existing keys case-insensitively."""
    node = doc
    for index, key in enumerate(keys):
        existing = next((k for k in node if k.lower() == key.lower()), key)
        if index == len(keys) - 1:
            node[existing] = value
            return
        child = node.get(existing)
        if not isinstance(child, dict):
            child = {}
            node[existing] = child
        node = child


def _polling_interval(raw: object) -> timedelta:
    if raw is None:
        return _DEFAULT_MAX_POLLING
    if isinstance(raw, int | float):  # the Functions host reads a bare number as milliseconds
        return timedelta(milliseconds=float(raw))
    return parse_timespan(str(raw))


def expand_settings(text: str, environ: Mapping[str, str], *, where: str) -> str:
    """Replaces each ``%NAME%`` with the app setting NAME; a missing one raises ``HostConfigError``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostConfigError(f"{where}: binding expression %{name}% names an app setting that is not set")
        return environ[name]

    return _SETTING_EXPR.sub(replace, text)


def storage_connection_string(value: str) -> str:
    """Maps ``UseDevelopmentStorage=true`` to Azurite's default endpoints; other values unchanged."""
    parts = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in value.split(";") if p.strip())}
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return DEVELOPMENT_STORAGE_CONNECTION_STRING
    return value
