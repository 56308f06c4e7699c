"""A development host for Azure Functions Python v2-model apps (local use only).

Azure Functions Core Tools cannot be installed on the project's machines, so this module
serves a ``func.FunctionApp`` the way the Functions host would, closely enough to develop
and test against. It is NOT the Azure Functions host: in Azure the real host runs the same
``function_app.py`` unchanged, and nothing here is deployed.

What it does, and the contract it keeps:

* Start-up: ``local.settings.json`` ``Values`` go into the environment without overriding
  variables already set (as Core Tools does); ``host.json`` is read for the route prefix,
  ``functionTimeout``, ``extensions.queues`` and the host-level ``retry`` (app settings
  ``AzureFunctionsJobHost__a__b`` override it, as in Azure); the app module is
  imported and ``app.get_functions()`` is called once. Every binding is checked: a binding
  type this host does not serve, a ``%SETTING%`` expression naming a missing setting, an
  invalid schedule or queue name, or a parameter without a binding stops the host with
  ``HostConfigError`` before anything listens.
* HTTP triggers at ``/{routePrefix}/{route}`` (ASP.NET-style templates: ``{p}``, ``{p?}``,
  ``{p=default}``, ``{p:int}``, ``{*rest}``), 404 for no route, 405 for a method the route
  does not allow, auth levels anonymous / function / admin checked against local keys in
  the ``code`` query parameter or the ``x-functions-key`` header (401 otherwise). A function
  that raises answers 500 with a generic body; the traceback goes to the log only.
* Event Grid triggers at ``POST /runtime/webhooks/eventgrid?functionName=<name>``, guarded by
  the Event Grid system key (or the master key), with the Event Grid schema validation
  handshake, the CloudEvents 1.0 ``OPTIONS`` handshake, one invocation per event, 202 when
  all succeeded and 500 when any failed (so Event Grid retries), as the real extension does.
* Timer triggers on six-field NCRONTAB or TimeSpan schedules, driven by an injectable
  ``TimeSource``: the sandbox clock when ``KEYSTEWARD_SANDBOX`` names its connection file,
  else the wall clock. Missed occurrences are coalesced into one ``past_due`` invocation.
* Queue triggers polled through ``azure-storage-queue`` (Azurite locally): base64 (default)
  or plain messages, deleted on success, made visible again after ``visibilityTimeout`` on
  failure, and moved to ``<queue>-poison`` once ``maxDequeueCount`` attempts have failed.
  ``UseDevelopmentStorage=true`` means Azurite on its default ports.
* Retry policies (``@app.retry`` or host.json ``retry``) apply to timer functions only, as
  in the Functions host; queue and Event Grid deliveries have their own redelivery.
* ``POST /admin/functions/<name>`` (master key) runs a timer or queue function on demand,
  as the real host's admin API does; ``GET /admin/host/ping`` answers 200 for readiness.

Not covered: other binding types (refused at start), the ``context`` parameter, enforcing
``functionTimeout`` (a Python thread cannot be stopped), persisting timer status across
restarts (``useMonitor``), identity-based storage connections.

Entry points: ``python -m sandbox.host [--port P] [--app module[:attr]] [--settings F]
[--host-json F] [--host 127.0.0.1]``, ``main(argv)`` and ``serve(...)``; ``build_host`` and
``DevHost`` for embedding and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import azure.functions as func
import requests
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient, QueueServiceClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from sandbox.ncrontab import Schedule, ScheduleError, parse_schedule

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


# ---------------------------------------------------------------------------------------------
# Loading the app
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpTriggerSpec:
    """``methods`` None accepts every method; ``auth_level`` is anonymous, function or admin."""

    route: str
    methods: frozenset[str] | None
    auth_level: str


@dataclass(frozen=True)
class EventGridTriggerSpec:
    """An Event Grid trigger: one invocation per delivered event."""


@dataclass(frozen=True)
class TimerTriggerSpec:
    """A timer trigger; ``schedule`` already has its ``%SETTING%`` expressions expanded."""

    schedule: Schedule
    run_on_startup: bool
    use_monitor: bool


@dataclass(frozen=True)
class QueueTriggerSpec:
    """A queue trigger; ``connection_setting`` names the setting holding the connection string."""

    queue_name: str
    connection_setting: str
    connection_string: str


TriggerSpec = HttpTriggerSpec | EventGridTriggerSpec | TimerTriggerSpec | QueueTriggerSpec


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the app: its name, trigger, trigger parameter name and user function."""

    name: str
    trigger_type: str
    arg_name: str
    trigger: TriggerSpec
    user_function: Callable[..., Any]
    retry: RetryPolicy | None = None


def import_app(module_name: str, attribute: str = "app") -> Any:
    """Imports ``module_name`` and returns its ``attribute`` (a ``func.FunctionApp``).

    The working directory goes on ``sys.path`` first, as the Functions worker does with the
    app root. Raises ``HostConfigError`` when the module or attribute is missing or wrong.
    """
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise HostConfigError(f"cannot import the app module {module_name!r}: {err}") from err
    app = getattr(module, attribute, None)
    if app is None:
        raise HostConfigError(f"module {module_name!r} has no attribute {attribute!r}")
    if not isinstance(app, func.FunctionApp):
        raise HostConfigError(f"{module_name}.{attribute} is a {type(app).__name__}, not a func.FunctionApp")
    return app


def load_functions(
    app: Any, *, environ: Mapping[str, str], host_retry: RetryPolicy | None = None, zone: tzinfo = UTC
) -> list[FunctionSpec]:
    """Reads every function of ``app`` through ``app.get_functions()`` (called once here).

    The bindings are read in their function.json form (``get_raw_bindings``), the same
    metadata the Python worker sends the Functions host. Raises ``HostConfigError`` naming
    every function that cannot be served.
    """
    try:
        functions = app.get_functions()
    except ValueError as err:
        raise HostConfigError(f"the app's functions are invalid: {err}") from err
    specs: list[FunctionSpec] = []
    problems: list[str] = []
    for fn in functions:
        name = str(fn.get_function_name())
        try:
            specs.append(_function_spec(fn, name, environ=environ, host_retry=host_retry, zone=zone))
        except HostConfigError as err:
            problems.append(str(err))
    if problems:
        raise HostConfigError("cannot serve this app:\n  " + "\n  ".join(problems))
    return specs


def _function_spec(
    fn: Any, name: str, *, environ: Mapping[str, str], host_retry: RetryPolicy | None, zone: tzinfo
) -> FunctionSpec:
    bindings = [json.loads(raw) for raw in fn.get_raw_bindings()]
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise HostConfigError(f"function {name}: expected one trigger, found {len(triggers)}")
    trigger = triggers[0]
    ttype = str(trigger["type"])
    if ttype not in SUPPORTED_TRIGGERS:
        raise HostConfigError(
            f"function {name}: trigger type {ttype!r} is not supported by the development host "
            f"(supported: {', '.join(SUPPORTED_TRIGGERS)})"
        )
    for binding in bindings:
        if binding is trigger:
            continue
        is_http_return = binding.get("type") == "http" and ttype == "httpTrigger"
        if not is_http_return:
            raise HostConfigError(
                f"function {name}: binding {binding.get('name')!r} of type {binding.get('type')!r} "
                "is not supported by the development host"
            )
    arg_name = str(trigger["name"])
    user_function: Callable[..., Any] = fn.get_user_function()
    _check_parameters(user_function, arg_name, name)
    where = f"function {name}"
    spec: TriggerSpec
    if ttype == "httpTrigger":
        route = expand_settings(str(trigger.get("route") or name), environ, where=where).strip("/")
        methods_raw = trigger.get("methods")
        methods = frozenset(str(m).upper() for m in methods_raw) if methods_raw else None
        auth = str(trigger.get("authLevel") or "function").lower()
        if auth not in ("anonymous", "function", "admin"):
            raise HostConfigError(f"{where}: unknown authLevel {auth!r}")
        RouteTemplate(route)  # fails early on a template this host cannot match
        spec = HttpTriggerSpec(route=route, methods=methods, auth_level=auth)
    elif ttype == "eventGridTrigger":
        spec = EventGridTriggerSpec()
    elif ttype == "timerTrigger":
        expression = expand_settings(str(trigger.get("schedule", "")), environ, where=where)
        try:
            schedule = parse_schedule(expression, zone=zone)
        except ScheduleError as err:
            raise HostConfigError(f"{where}: {err}") from err
        spec = TimerTriggerSpec(
            schedule=schedule,
            run_on_startup=bool(trigger.get("runOnStartup") or False),
            use_monitor=bool(trigger.get("useMonitor", True)),
        )
    else:
        queue_name = expand_settings(str(trigger.get("queueName", "")), environ, where=where)
        if not _QUEUE_NAME.match(queue_name):
            raise HostConfigError(
                f"{where}: {queue_name!r} is not a valid queue name (3-63 lowercase letters, digits, single dashes)"
            )
        setting = str(trigger.get("connection") or DEFAULT_STORAGE_SETTING)
        conn = environ.get(setting) or environ.get(f"AzureWebJobs{setting}")
        if not conn:
            if any(key.startswith(f"{setting}__") for key in environ):
                raise HostConfigError(
                    f"{where}: identity-based connection {setting}__* is not supported by the development "
                    "host; set a connection string"
                )
            raise HostConfigError(f"{where}: connection setting {setting!r} is not set")
        spec = QueueTriggerSpec(
            queue_name=queue_name,
            connection_setting=setting,
            connection_string=storage_connection_string(conn),
        )
    retry_raw = fn.get_settings_dict("retry_policy")
    retry = parse_retry_policy(retry_raw, where=where) if retry_raw else host_retry
    return FunctionSpec(
        name=name,
        trigger_type=ttype,
        arg_name=arg_name,
        trigger=spec,
        user_function=user_function,
        retry=retry,
    )


def _check_parameters(user_function: Callable[..., Any], arg_name: str, name: str) -> None:
    try:
        params = inspect.signature(user_function).parameters
    except (TypeError, ValueError) as err:
        raise HostConfigError(f"function {name}: cannot read its signature: {err}") from err
    if arg_name not in params:
        raise HostConfigError(f"function {name}: the trigger binding {arg_name!r} is not a parameter")
    for pname, param in params.items():
        if pname == arg_name or param.default is not inspect.Parameter.empty:
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        raise HostConfigError(f"function {name}: parameter {pname!r} has no binding the development host can supply")


def call_user_function(spec: FunctionSpec, value: object) -> Any:
    """Runs the user function with its trigger value; coroutine functions run to completion."""
    result = spec.user_function(**{spec.arg_name: value})
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostKeys:
    """The local keys; ``generated`` names the ones made up at start (printed in the banner)."""

    function: str
    master: str
    eventgrid: str
    generated: frozenset[str] = frozenset()

    def allows(self, level: str, presented: str | None) -> bool:
        """Whether ``presented`` satisfies auth ``level`` (anonymous, function, admin, system)."""
        if level == "anonymous":
            return True
        if not presented:
            return False
        accepted = {
            "function": (self.function, self.master),
            "admin": (self.master,),
            "system": (self.eventgrid, self.master),
        }[level]
        return any(hmac.compare_digest(presented.encode(), key.encode()) for key in accepted)


def resolve_keys(environ: Mapping[str, str]) -> HostKeys:
    """Reads the local keys from the settings, generating any that is unset."""
    generated: set[str] = set()

    def key(setting: str, label: str) -> str:
        value = environ.get(setting, "").strip()
        if value:
            return value
        generated.add(label)
        return secrets.token_urlsafe(32)

    function = key(FUNCTION_KEY_SETTING, "function")
    master = key(MASTER_KEY_SETTING, "master")
    eventgrid = key(EVENTGRID_KEY_SETTING, "eventgrid")
    return HostKeys(function=function, master=master, eventgrid=eventgrid, generated=frozenset(generated))


# ---------------------------------------------------------------------------------------------
# HTTP route templates
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[A-Za-z]+(?:\([^)}]*\))?)*)(=[^}?]*)?(\?)?\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


class RouteTemplate:
    """An ASP.NET-style route template compiled to a regular expression.

    ``match(path)`` takes the path after the route prefix (``/keys/k1``) and returns the
    percent-decoded route parameters, or None. Literal segments match case-insensitively.
    Raises ``HostConfigError`` on a template it cannot serve (unknown constraint, misplaced
    catch-all).
    """

    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self.defaults: dict[str, str] = {}
        parts: list[str] = []
        rank: list[int] = []
        segments = self.template.split("/") if self.template else []
        for index, segment in enumerate(segments):
            whole = _TOKEN.fullmatch(segment)
            if whole is not None:
                star, pname, constraints, default, optional = whole.groups()
                pattern = self._constraint_pattern(constraints, pname)
                if default:
                    self.defaults[pname] = default[1:]
                if star:
                    if index != len(segments) - 1:
                        raise HostConfigError(f"route {template!r}: a catch-all parameter must be last")
                    parts.append(f"(?:/(?P<{pname}>.*))?")
                    rank.append(4)
                elif optional or default:
                    parts.append(f"(?:/(?P<{pname}>{pattern}))?")
                    rank.append(3)
                else:
                    parts.append(f"/(?P<{pname}>{pattern})")
                    rank.append(1 if constraints else 2)
                continue
            pieces: list[str] = []
            position = 0
            for token in _TOKEN.finditer(segment):
                pieces.append(re.escape(segment[position : token.start()]))
                star, pname, constraints, _default, _optional = token.groups()
                if star:
                    raise HostConfigError(f"route {template!r}: a catch-all parameter must be a whole segment")
                pieces.append(f"(?P<{pname}>{self._constraint_pattern(constraints, pname, lazy=True)})")
                position = token.end()
            rest = segment[position:]
            if "{" in rest or "}" in rest:
                raise HostConfigError(f"route {template!r}: cannot parse segment {segment!r}")
            pieces.append(re.escape(rest))
            parts.append("/" + "".join(pieces))
            rank.append(0 if position == 0 else 1)
        self.rank = tuple(rank)
        try:
            self._regex = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
        except re.error as err:
            raise HostConfigError(f"route {template!r}: {err}") from err

    def _constraint_pattern(self, constraints: str | None, pname: str, *, lazy: bool = False) -> str:
        pattern = "[^/]+?" if lazy else "[^/]+"
        for constraint in (c for c in (constraints or "").split(":") if c):
            cname = constraint.split("(", 1)[0].lower()
            if cname not in _CONSTRAINTS:
                raise HostConfigError(
                    f"route {self.template!r}: constraint {constraint!r} on {pname!r} is not supported"
                )
            pattern = _CONSTRAINTS[cname]
        return pattern

    def match(self, path: str) -> dict[str, str] | None:
        found = self._regex.match(path)
        if found is None:
            return None
        params = dict(self.defaults)
        params.update({k: unquote(v) for k, v in found.groupdict().items() if v is not None})
        return params


# ---------------------------------------------------------------------------------------------
# Time sources
# ---------------------------------------------------------------------------------------------


class TimeSource(Protocol):
    """Where timers read the time. ``now()`` is timezone-aware; raises ``TimeSourceError``."""

    def now(self) -> datetime: ...


class TimeSourceError(Exception):
    """The time source cannot tell the time right now (for example the sandbox is down)."""


class WallClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def describe(self) -> str:
        return "wall clock"


class SandboxClock:
    """The sandbox's clock, read over loopback HTTPS from ``{admin_url}/sandbox/clock``.

    The connection file is (re)read when the sandbox cannot be reached, so a sandbox that
    starts after the host, or restarts on another port, is picked up.
    """

    def __init__(self, connection_file: Path, *, timeout: float = 2.0) -> None:
        self.connection_file = connection_file
        self._timeout = timeout
        self._session: requests.Session | None = None
        self._url: str | None = None
        self._ca_bundle: str | bool = True
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"sandbox clock ({self.connection_file})"

    def _connect(self) -> tuple[requests.Session, str]:
        try:
            doc = json.loads(self.connection_file.read_text(encoding="utf-8"))
            admin_url = str(doc["admin_url"]).rstrip("/")
            ca_bundle = str(doc["ca_bundle"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TimeSourceError(f"cannot read the sandbox connection file {self.connection_file}: {err}") from err
        session = requests.Session()
        # Passed per request too: requests lets REQUESTS_CA_BUNDLE override a session-level verify.
        session.verify = ca_bundle
        self._ca_bundle = ca_bundle
        self._session, self._url = session, f"{admin_url}/sandbox/clock"
        return session, self._url

    def now(self) -> datetime:
        with self._lock:
            if self._session is None or self._url is None:
                session, url = self._connect()
            else:
                session, url = self._session, self._url
            try:
                response = session.get(url, timeout=self._timeout, verify=self._ca_bundle)
                response.raise_for_status()
                return parse_datetime(str(response.json()["now"]))
            except (requests.RequestException, OSError, ValueError, KeyError, TypeError) as err:
                self._session = None
                session.close()
                raise TimeSourceError(f"cannot read the sandbox clock at {url}: {err}") from err

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def time_source_from_env(environ: Mapping[str, str]) -> TimeSource:
    """The sandbox clock when ``KEYSTEWARD_SANDBOX`` names a connection file, else the wall clock."""
    path = environ.get(SANDBOX_SETTING, "").strip()
    return SandboxClock(Path(path)) if path else WallClock()


def parse_datetime(text: str) -> datetime:
    """ISO-8601 with ``Z`` and up to 7 fractional digits (as Azure writes them); naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when is not None else None


# ---------------------------------------------------------------------------------------------
# Invocation with retries (timers)
# ---------------------------------------------------------------------------------------------


def invoke_guarded(spec: FunctionSpec, make_value: Callable[[], object], *, stop: threading.Event) -> bool:
    """Runs one invocation (plus its retry policy's retries); True when it succeeded.

    A failure is logged with its traceback; it never propagates, because the caller (a
    trigger listener) decides what a failure means: 500, redelivery, poison queue.
    """
    attempt = 0
    while True:
        invocation = uuid.uuid4()
        started = time.monotonic()
        try:
            result = call_user_function(spec, make_value())
        except Exception:
            LOG.exception("function %s failed (invocation %s)", spec.name, invocation)
        else:
            if result is not None and spec.trigger_type != "httpTrigger":
                LOG.warning("function %s returned a value but has no output binding; ignored", spec.name)
            LOG.info(
                "function %s succeeded (invocation %s, %.0f ms)",
                spec.name,
                invocation,
                (time.monotonic() - started) * 1000,
            )
            return True
        policy = spec.retry if spec.trigger_type == "timerTrigger" else None
        attempt += 1
        if policy is None or (0 <= policy.max_retry_count < attempt):
            return False
        wait = policy.delay_before(attempt).total_seconds()
        LOG.info("function %s: retry %d in %.1f s", spec.name, attempt, wait)
        if stop.wait(wait):
            return False


# ---------------------------------------------------------------------------------------------
# Timers
# ---------------------------------------------------------------------------------------------


@dataclass
class _TimerState:
    spec: FunctionSpec
    trigger: TimerTriggerSpec
    next_due: datetime | None = None
    last_seen: datetime | None = None
    last_run: datetime | None = None
    started: bool = False
    running: bool = False


class TimerScheduler:
    """Fires timer functions as the time source's clock passes their schedules.

    Each ``tick`` reads the clock once. A timer fires when the clock has reached its next
    occurrence; however many occurrences were skipped (a 25-hour sandbox jump, a host that
    was paused) it fires ONCE, with ``past_due=True`` when it is more than ``tolerance``
    late or later occurrences were also missed, like the real host's schedule monitor. A
    timer whose previous invocation still runs is not fired again until it finishes. A clock
    that moves backwards resets the schedule from the new time.
    """

    def __init__(
        self,
        timers: Sequence[FunctionSpec],
        *,
        clock: TimeSource,
        poll_interval: float = 0.2,
        tolerance: timedelta = timedelta(seconds=2),
        stop: threading.Event | None = None,
    ) -> None:
        self._states = [_TimerState(spec=t, trigger=_timer(t)) for t in timers]
        self._clock = clock
        self._poll = poll_interval
        self._tolerance = tolerance
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._clock_down = False

    def next_due(self) -> dict[str, datetime | None]:
        """The next occurrence of each timer, by function name (None before the first tick)."""
        with self._lock:
            return {s.spec.name: s.next_due for s in self._states}

    def busy(self) -> list[str]:
        """The timers whose invocation is still running (they are not fired again meanwhile)."""
        with self._lock:
            return [s.spec.name for s in self._states if s.running]

    def start(self) -> None:
        if not self._states:
            return
        self._thread = threading.Thread(target=self._run, name="devhost-timers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in list(self._workers):
            worker.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._clock.now()
            except TimeSourceError as err:
                if not self._clock_down:
                    LOG.warning("timers paused: %s", err)
                self._clock_down = True
            else:
                if self._clock_down:
                    LOG.info("timers resumed: the clock answers again")
                self._clock_down = False
                self.tick(now)
            self._stop.wait(self._poll)

    def tick(self, now: datetime) -> list[str]:
        """Fires what is due at ``now``; returns the names of the functions started."""
        fired: list[str] = []
        with self._lock:
            for state in self._states:
                if state.running:
                    continue
                schedule = state.trigger.schedule
                if not state.started:
                    state.started = True
                    state.last_seen = now
                    state.next_due = schedule.next_after(now)
                    if state.trigger.run_on_startup:
                        self._fire(state, now, past_due=False, scheduled=now)
                        fired.append(state.spec.name)
                    continue
                if state.last_seen is not None and now < state.last_seen:
                    LOG.warning("timer %s: the clock moved backwards; schedule reset", state.spec.name)
                    state.next_due = schedule.next_after(now)
                state.last_seen = now
                due = state.next_due
                if due is None or now < due:
                    continue
                missed_more = schedule.next_after(due) <= now
                past_due = missed_more or (now - due) > self._tolerance
                state.next_due = schedule.next_after(now)
                self._fire(state, now, past_due=past_due, scheduled=due)
                fired.append(state.spec.name)
        return fired

    def _fire(self, state: _TimerState, now: datetime, *, past_due: bool, scheduled: datetime) -> None:
        status = {"Last": _iso(scheduled), "Next": _iso(state.next_due), "LastUpdated": _iso(now)}
        state.last_run = scheduled
        state.running = True
        LOG.info("timer %s fires (scheduled %s, past_due=%s)", state.spec.name, _iso(scheduled), past_due)

        def make() -> TimerRequest:
            return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})

        def work() -> None:
            try:
                invoke_guarded(state.spec, make, stop=self._stop)
            finally:
                with self._lock:
                    state.running = False

        worker = threading.Thread(target=work, name=f"devhost-timer-{state.spec.name}", daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()


def _timer(spec: FunctionSpec) -> TimerTriggerSpec:
    if not isinstance(spec.trigger, TimerTriggerSpec):
        raise TypeError(f"function {spec.name} is not a timer")
    return spec.trigger


# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------


class QueuePoller:
    """Polls one queue for one queue-triggered function, as the Functions queue listener does.

    Messages are received ``batch_size`` at a time, hidden for ``lease`` while they run
    (the function timeout), deleted on success. On failure a message is made visible again
    after ``options.visibility_timeout``; once it has failed ``max_dequeue_count`` times it
    is copied to ``<queue>-poison`` and deleted. A message that cannot be decoded goes to the
    poison queue at once, since no retry can fix it. Empty polls back off up to
    ``options.max_polling_interval``.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        options: QueueOptions,
        lease: timedelta = timedelta(minutes=10),
        min_poll_interval: float = 0.1,
        stop: threading.Event | None = None,
    ) -> None:
        if not isinstance(spec.trigger, QueueTriggerSpec):
            raise TypeError(f"function {spec.name} is not queue-triggered")
        self.spec = spec
        self.trigger = spec.trigger
        self.options = options
        self._lease = max(1, int(lease.total_seconds()))
        self._min_poll = min_poll_interval
        self._stop = stop or threading.Event()
        # Few SDK retries: the poll loop itself retries, and a long SDK back-off delays shutdown.
        service = QueueServiceClient.from_connection_string(
            self.trigger.connection_string, retry_total=1, connection_timeout=5
        )
        self.queue: QueueClient = service.get_queue_client(self.trigger.queue_name)
        self.poison: QueueClient = service.get_queue_client(f"{self.trigger.queue_name}-poison")
        self._poison_ready = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size, thread_name_prefix=f"devhost-q-{spec.name}")

    def describe(self) -> str:
        return f"{self.trigger.queue_name} at {self.queue.url.rsplit('/', 1)[0]}"

    def ensure_queue(self) -> None:
        """Creates the queue when missing (the Functions host does too)."""
        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"devhost-queue-{self.spec.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        interval = self._min_poll
        ready = False
        down = False
        while not self._stop.is_set():
            try:
                if not ready:
                    self.ensure_queue()
                    ready = True
                batch = list(
                    self.queue.receive_messages(
                        max_messages=self.options.batch_size,
                        messages_per_page=self.options.batch_size,
                        visibility_timeout=self._lease,
                    )
                )
            except AzureError as err:
                if not down:  # once per outage: the emulator may simply not be started yet
                    LOG.warning("queue %s: cannot receive (retrying quietly): %s", self.trigger.queue_name, err)
                down = True
                batch = []
            else:
                if down:
                    LOG.info("queue %s: storage answers again", self.trigger.queue_name)
                down = False
            if not batch:
                self._stop.wait(interval)
                interval = min(interval * 2, max(self._min_poll, self.options.max_polling_interval.total_seconds()))
                continue
            interval = self._min_poll
            futures = [self._pool.submit(self.process, message) for message in batch]
            for future in futures:
                future.result()

    def process(self, message: StorageQueueMessage) -> str:
        """Handles one received message; returns "deleted", "retry" or "poison"."""
        count = int(message.dequeue_count or 0)
        name = self.trigger.queue_name
        if count > self.options.max_dequeue_count:
            return self._to_poison(message, f"dequeue count {count} exceeds {self.options.max_dequeue_count}")
        try:
            body = self._decode(str(message.content or ""))
        except ValueError as err:
            return self._to_poison(message, f"cannot decode the message: {err}")

        def make() -> FuncQueueMessage:
            return FuncQueueMessage(  # type: ignore[no-untyped-call]  # the library leaves __init__ unannotated
                id=message.id,
                body=body,
                dequeue_count=count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )

        if invoke_guarded(self.spec, make, stop=self._stop):
            try:
                self.queue.delete_message(message.id, message.pop_receipt)
            except AzureError as err:
                LOG.warning("queue %s: processed message %s but cannot delete it: %s", name, message.id, err)
            return "deleted"
        if count >= self.options.max_dequeue_count:
            return self._to_poison(message, f"failed {count} times")
        try:
            self.queue.update_message(
                message.id,
                message.pop_receipt,
                visibility_timeout=int(self.options.visibility_timeout.total_seconds()),
            )
        except AzureError as err:
            LOG.warning("queue %s: cannot release message %s: %s", name, message.id, err)
        return "retry"

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as err:
            raise ValueError(f"not base64 ({err}); host.json extensions.queues.messageEncoding is base64") from err

    def _to_poison(self, message: StorageQueueMessage, reason: str) -> str:
        poison_name = f"{self.trigger.queue_name}-poison"
        try:
            if not self._poison_ready:
                with contextlib.suppress(ResourceExistsError):
                    self.poison.create_queue()
                self._poison_ready = True
            self.poison.send_message(message.content)
            self.queue.delete_message(message.id, message.pop_receipt)
        except AzureError as err:
            LOG.error(  # noqa: TRY400 - the storage error is the whole story; its traceback adds nothing
                "queue %s: cannot move message %s to %s: %s",
                self.trigger.queue_name,
                message.id,
                poison_name,
                err,
            )
            return "retry"
        LOG.error("queue %s: message %s moved to %s (%s)", self.trigger.queue_name, message.id, poison_name, reason)
        return "poison"


# ---------------------------------------------------------------------------------------------
# The HTTP front end
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers, body."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


def _text(status: int, text: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, (("Content-Type", "text/plain; charset=utf-8"), *headers), text.encode())


def _json(status: int, doc: object) -> Answer:
    return Answer(status, (("Content-Type", "application/json; charset=utf-8"),), json.dumps(doc).encode())


@dataclass(frozen=True)
class Incoming:
    """A request as the front end hands it to the dispatcher."""

    method: str
    url: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes

    def key(self) -> str | None:
        return self.query.get("code") or self.headers.get("x-functions-key")


class Dispatcher:
    """Routes requests to HTTP functions, the Event Grid webhook and the admin endpoints."""

    def __init__(
        self, functions: Sequence[FunctionSpec], *, keys: HostKeys, config: HostConfig, stop: threading.Event
    ) -> None:
        self.keys = keys
        self.config = config
        self._stop = stop
        self.functions = {f.name.lower(): f for f in functions}
        prefix = f"/{config.route_prefix}" if config.route_prefix else ""
        self.prefix = prefix
        routes = [(RouteTemplate(f.trigger.route), f) for f in functions if isinstance(f.trigger, HttpTriggerSpec)]
        # ASP.NET route precedence: literal segments before parameters before catch-alls.
        self.routes = sorted(routes, key=lambda pair: pair[0].rank)
        self.queue_pollers: dict[str, QueuePoller] = {}

    def dispatch(self, request: Incoming) -> Answer:
        path = request.path
        lowered = path.lower().rstrip("/")
        if lowered == EVENTGRID_WEBHOOK_PATH:
            return self._eventgrid(request)
        if lowered.startswith("/admin/"):
            return self._admin(request, lowered)
        if self.prefix:
            if lowered != self.prefix and not lowered.startswith(self.prefix + "/"):
                return _text(404, "Not Found")
            path = path[len(self.prefix) :]
        return self._http(request, path)

    # -- HTTP triggers -------------------------------------------------------------------------

    def _http(self, request: Incoming, path: str) -> Answer:
        allowed: set[str] = set()
        for template, spec in self.routes:
            params = template.match(path or "/")
            if params is None:
                continue
            trigger = spec.trigger
            if not isinstance(trigger, HttpTriggerSpec):
                continue
            if trigger.methods is not None and request.method not in trigger.methods:
                allowed |= trigger.methods
                continue
            if not self.keys.allows(trigger.auth_level, request.key()):
                return _text(401, "Unauthorized")
            return self._invoke_http(spec, request, params)
        if allowed:
            return _text(405, "Method Not Allowed", ("Allow", ", ".join(sorted(allowed))))
        return _text(404, "Not Found")

    def _invoke_http(self, spec: FunctionSpec, request: Incoming, params: Mapping[str, str]) -> Answer:
        req = func.HttpRequest(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=dict(params),
            body=request.body,
        )
        invocation = uuid.uuid4()
        try:
            result = call_user_function(spec, req)
            return _http_answer(result)
        except Exception:
            LOG.exception("function %s failed (invocation %s)", spec.name, invocation)
            return _text(500, f"Internal Server Error (invocation {invocation})")

    # -- Event Grid ----------------------------------------------------------------------------

    def _eventgrid(self, request: Incoming) -> Answer:
        if not self.keys.allows("system", request.key()):
            return _text(401, "Unauthorized")
        name = request.query.get("functionName", "")
        spec = self.functions.get(name.lower())
        if spec is None or not isinstance(spec.trigger, EventGridTriggerSpec):
            available = ", ".join(
                f.name for f in self.functions.values() if isinstance(f.trigger, EventGridTriggerSpec)
            )
            LOG.info("cannot find function: %r, available function names: [%s]", name, available)
            return _text(404, f"cannot find function: '{name}'")
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin")
            if not origin:
                return _text(400, "WebHook-Request-Origin header is required")
            LOG.info("CloudEvents validation handshake for function %s (origin %s)", spec.name, origin)
            return Answer(
                200,
                (
                    ("WebHook-Allowed-Origin", origin),
                    ("WebHook-Allowed-Rate", "*"),
                    ("Allow", "POST, OPTIONS"),
                ),
            )
        if request.method != "POST":
            return _text(405, "Method Not Allowed", ("Allow", "POST, OPTIONS"))
        kind = request.headers.get("aeg-event-type", "").lower()
        if kind not in ("subscriptionvalidation", "notification", "unsubscribe"):
            return _text(400, "aeg-event-type header must be SubscriptionValidation, Notification or Unsubscribe")
        if kind == "unsubscribe":
            return Answer(202)
        try:
            doc = json.loads(request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _text(400, "the body is not JSON")
        if kind == "subscriptionvalidation":
            code = _validation_code(doc)
            if code is None:
                return _text(400, "no validationCode in the subscription validation event")
            LOG.info("Event Grid validation handshake for function %s", spec.name)
            return _json(200, {"validationResponse": code})
        events = [doc] if isinstance(doc, dict) else doc
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return _text(400, "the body must be a JSON array of events")
        try:
            parsed = [to_event_grid_event(e) for e in events]
        except ValueError as err:
            return _text(400, f"invalid event: {err}")
        failed = [event.id for event in parsed if not invoke_guarded(spec, _constant(event), stop=self._stop)]
        if failed:
            return _text(500, f"function {spec.name} failed for event(s) {', '.join(failed)}")
        return Answer(202)

    # -- admin ---------------------------------------------------------------------------------

    def _admin(self, request: Incoming, lowered: str) -> Answer:
        if lowered == "/admin/host/ping":
            return Answer(200)
        if not self.keys.allows("admin", request.key()):
            return _text(401, "Unauthorized")
        if lowered == "/admin/host/status":
            return _json(200, {"state": "Running", "host": "keysteward development host"})
        if lowered.startswith("/admin/functions/") and request.method == "POST":
            spec = self.functions.get(lowered.removeprefix("/admin/functions/"))
            if spec is None:
                return _text(404, "Not Found")
            return self._run_on_demand(spec, request.body)
        return _text(404, "Not Found")

    def _run_on_demand(self, spec: FunctionSpec, body: bytes) -> Answer:
        try:
            doc = json.loads(body or b"{}")
            given = doc.get("input", "") if isinstance(doc, dict) else ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _text(400, 'the body must be JSON like {"input": "..."}')
        value: Callable[[], object]
        if isinstance(spec.trigger, TimerTriggerSpec):

            def value() -> object:
                return TimerRequest(past_due=False)
        elif isinstance(spec.trigger, QueueTriggerSpec):
            text = given if isinstance(given, str) else json.dumps(given)

            def value() -> object:
                return FuncQueueMessage(  # type: ignore[no-untyped-call]  # the library leaves __init__ unannotated
                    id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1
                )
        else:
            return _text(400, f"function {spec.name} cannot be run from the admin API; call its trigger")
        worker = threading.Thread(
            target=invoke_guarded,
            args=(spec, value),
            kwargs={"stop": self._stop},
            name=f"devhost-admin-{spec.name}",
            daemon=True,
        )
        worker.start()
        return Answer(202)


def _constant(value: object) -> Callable[[], object]:
    def make() -> object:
        return value

    return make


def _validation_code(doc: object) -> str | None:
    event = doc[0] if isinstance(doc, list) and doc else doc
    if not isinstance(event, dict):
        return None
    data = event.get("data")
    if isinstance(data, str):  # CloudEvents validation events may carry their data encoded as JSON text
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(data)
    code = data.get("validationCode") if isinstance(data, dict) else None
    return str(code) if code is not None else None


def to_event_grid_event(event: Mapping[str, Any]) -> func.EventGridEvent:
    """Builds the ``func.EventGridEvent`` a function receives from one delivered event.

    Event Grid schema fields map one to one; a CloudEvents 1.0 event (it has ``specversion``)
    maps ``source``->topic, ``type``->event_type, ``time``->event_time and
    ``dataschema`` (or else ``specversion``)->data_version; ``data_base64`` is decoded.
    Raises ``ValueError`` when ``id`` or the event type is missing or the time is unreadable.
    """
    cloud = "specversion" in event
    event_id = event.get("id")
    event_type = event.get("type" if cloud else "eventType")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError("an event has no id")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"event {event_id} has no {'type' if cloud else 'eventType'}")
    time_raw = event.get("time" if cloud else "eventTime")
    event_time = parse_datetime(time_raw) if isinstance(time_raw, str) and time_raw else None
    data: Any = event.get("data")
    if cloud and data is None and isinstance(event.get("data_base64"), str):
        raw = base64.b64decode(event["data_base64"])
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = raw
    if cloud:
        topic = event.get("source")
        version = event.get("dataschema") or event.get("specversion")
    else:
        topic = event.get("topic")
        version = event.get("dataVersion")
    return func.EventGridEvent(
        id=event_id,
        data=data,
        topic=str(topic) if topic is not None else "",
        subject=str(event.get("subject") or ""),
        event_type=event_type,
        event_time=event_time,
        data_version=str(version) if version is not None else "",
    )


def _http_answer(result: object) -> Answer:
    """Turns what an HTTP function returned into the HTTP answer (as the Python worker does)."""
    if isinstance(result, func.HttpResponse):
        headers = [
            (k, v)
            for k, v in result.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", f"{result.mimetype}; charset={result.charset}"))
        return Answer(int(result.status_code), tuple(headers), result.get_body())
    if isinstance(result, str | bytes):
        body = result.encode() if isinstance(result, str) else result
        return Answer(200, (("Content-Type", "text/plain; charset=utf-8"),), body)
    raise TypeError(f"an HTTP function must return func.HttpResponse, str or bytes, not {type(result).__name__}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keysteward-devhost"
    server: _Server

    def _handle(self) -> None:
        started = time.monotonic()
        try:
            body = self._read_body()
        except ValueError as err:
            self._send(Answer(413 if "too large" in str(err) else 400, (), str(err).encode()))
            return
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        query: dict[str, str] = {}
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = Incoming(
            method=self.command.upper(),
            url=f"http://{host}{self.path}",
            path=split.path or "/",
            query=query,
            headers=headers,
            body=body,
        )
        answer = self.server.dispatcher.dispatch(request)
        self._send(answer)
        LOG.info(
            "%s %s -> %d (%.0f ms)",
            self.command,
            split.path,
            answer.status,
            (time.monotonic() - started) * 1000,
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD" and answer.body:
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug(format, *args)


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------


class DevHost:
    """Serves one app: the HTTP front end, the timer scheduler and one poller per queue.

    ``start()`` binds ``bind:port`` (port 0 picks a free one; see ``url``) and starts the
    background threads; ``stop()`` stops them all and waits for them. Usable as a context
    manager.
    """

    def __init__(
        self,
        functions: Sequence[FunctionSpec],
        *,
        keys: HostKeys,
        config: HostConfig | None = None,
        clock: TimeSource | None = None,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        timer_poll_interval: float = 0.2,
        queue_poll_interval: float = 0.1,
    ) -> None:
        self.functions = list(functions)
        self.keys = keys
        self.config = config or HostConfig()
        self.clock: TimeSource = clock or WallClock()
        self._stop = threading.Event()
        self.dispatcher = Dispatcher(self.functions, keys=keys, config=self.config, stop=self._stop)
        self.timers = TimerScheduler(
            [f for f in self.functions if isinstance(f.trigger, TimerTriggerSpec)],
            clock=self.clock,
            poll_interval=timer_poll_interval,
            stop=self._stop,
        )
        lease = self.config.function_timeout or timedelta(minutes=10)
        self.queues = [
            QueuePoller(
                f,
                options=self.config.queues,
                lease=lease,
                min_poll_interval=queue_poll_interval,
                stop=self._stop,
            )
            for f in self.functions
            if isinstance(f.trigger, QueueTriggerSpec)
        ]
        self._bind = bind
        self._port = port
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:7071``; only meaningful after ``start()``."""
        if self._server is None:
            raise RuntimeError("the host is not started")
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host_text}:{port}"

    def start(self) -> None:
        """Binds the port and starts the server, timers and queue pollers. Raises ``OSError``."""
        self._server = _Server((self._bind, self._port), self.dispatcher)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="devhost-http", daemon=True
        )
        self._server_thread.start()
        self.timers.start()
        for poller in self.queues:
            poller.start()

    def stop(self) -> None:
        """Stops everything; in-flight invocations are waited for (a few seconds at most)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(5)
        self.timers.stop()
        for poller in self.queues:
            poller.stop()
        if isinstance(self.clock, SandboxClock):
            self.clock.close()

    def __enter__(self) -> DevHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> Iterator[str]:
        """The start banner: what is served where, and the keys."""
        yield BANNER
        yield f"Listening on {self.url}"
        yield "Functions:"
        for spec in self.functions:
            trigger = spec.trigger
            if isinstance(trigger, HttpTriggerSpec):
                methods = ",".join(sorted(trigger.methods)) if trigger.methods else "ALL"
                yield (
                    f"  {spec.name}: [{methods}] {self.url}{self.dispatcher.prefix}/{trigger.route} "
                    f"(auth: {trigger.auth_level})"
                )
            elif isinstance(trigger, EventGridTriggerSpec):
                yield (
                    f"  {spec.name}: eventGridTrigger {self.url}{EVENTGRID_WEBHOOK_PATH}"
                    f"?functionName={spec.name}&code={self.keys.eventgrid}"
                )
            elif isinstance(trigger, TimerTriggerSpec):
                yield (
                    f"  {spec.name}: timerTrigger '{trigger.schedule.expression}' next "
                    f"{self._next_due(trigger)} ({_describe_clock(self.clock)})"
                )
            elif isinstance(trigger, QueueTriggerSpec):
                poller = next(p for p in self.queues if p.spec is spec)
                yield (f"  {spec.name}: queueTrigger {poller.describe()} (setting {trigger.connection_setting})")
        yield "Keys (local only):"
        for label, value in (
            ("function", self.keys.function),
            ("master", self.keys.master),
            ("eventgrid", self.keys.eventgrid),
        ):
            note = " (generated; set it in local.settings.json to keep it)" if label in self.keys.generated else ""
            yield f"  {label}: {value}{note}"

    def _next_due(self, trigger: TimerTriggerSpec) -> str:
        try:
            now = self.clock.now()
        except TimeSourceError:
            return "unknown (clock unreachable)"
        return _iso(trigger.schedule.next_after(now)) or "unknown"


def _describe_clock(clock: TimeSource) -> str:
    describe = getattr(clock, "describe", None)
    return str(describe()) if callable(describe) else type(clock).__name__


def build_host(
    *,
    app: str = "function_app",
    attribute: str = "app",
    settings: Path = Path("local.settings.json"),
    host_json: Path = Path("host.json"),
    port: int | None = None,
    bind: str = "127.0.0.1",
    environ: MutableMapping[str, str] | None = None,
    clock: TimeSource | None = None,
) -> DevHost:
    """Loads settings, host.json and the app, and returns an unstarted ``DevHost``.

    Port: ``port`` if given, else local.settings.json ``Host.LocalHttpPort``, else 7071.
    Raises ``HostConfigError`` when anything cannot be served.
    """
    env = os.environ if environ is None else environ
    local = load_local_settings(settings, env)
    if not local.found:
        LOG.warning("%s not found; using the environment only", settings)
    for name, value in _app_setting_defaults().items():
        env.setdefault(name, value)
    config = load_host_json(host_json, env)
    zone = _time_zone(env)
    functions = load_functions(import_app(app, attribute), environ=env, host_retry=config.retry, zone=zone)
    keys = resolve_keys(env)
    chosen_port = port if port is not None else (local.local_http_port or DEFAULT_PORT)
    return DevHost(
        functions,
        keys=keys,
        config=config,
        clock=clock or time_source_from_env(env),
        bind=bind,
        port=chosen_port,
    )


def _time_zone(environ: Mapping[str, str]) -> tzinfo:
    name = environ.get(TIME_ZONE_SETTING, "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise HostConfigError(f"{TIME_ZONE_SETTING}={name!r} is not an IANA time zone") from err


def serve(
    *,
    app: str = "function_app",
    settings: str | Path = "local.settings.json",
    port: int | None = None,
    bind: str = "127.0.0.1",
    host_json: str | Path = "host.json",
    out: IO[str] | None = None,
) -> int:
    """Runs the development host until SIGINT or SIGTERM; returns the process exit code.

    ``app`` is ``module`` or ``module:attribute``. Exit code 2 means the app cannot be served
    (the reason is printed), 1 that the port could not be bound, 0 a clean shutdown.
    """
    stream = out or sys.stdout
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every request at INFO
    module, _, attribute = app.partition(":")
    try:
        host = build_host(
            app=module,
            attribute=attribute or "app",
            settings=Path(settings),
            host_json=Path(host_json),
            port=port,
            bind=bind,
        )
    except HostConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        host.start()
    except OSError as err:
        print(f"error: cannot listen on {bind}:{port}: {err}", file=sys.stderr)
        return 1
    for line in host.describe():
        print(line, file=stream)
    stream.flush()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        LOG.info("signal %d: stopping", signum)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        host.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("development host stopped", file=stream)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m sandbox.host [--port P] [--app M[:attr]] [--settings F] [--host H]``."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.host", description=BANNER)
    parser.add_argument("--port", type=int, default=None, help="port (default: Host.LocalHttpPort or 7071)")
    parser.add_argument("--app", default="function_app", help="app module[:attribute] (default function_app:app)")
    parser.add_argument("--settings", default="local.settings.json", help="local settings file")
    parser.add_argument("--host-json", default="host.json", help="host.json path")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)
    return serve(app=args.app, settings=args.settings, port=args.port, bind=args.host, host_json=args.host_json)


if __name__ == "__main__":
    sys.exit(main())
