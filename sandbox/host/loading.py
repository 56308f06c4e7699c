"""Loading the app into the development host: importing it and checking every binding."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

import azure.functions as func

from sandbox.host.routing import RouteTemplate
from sandbox.host.settings import (
    _QUEUE_NAME,
    DEFAULT_STORAGE_SETTING,
    SUPPORTED_TRIGGERS,
    HostConfigError,
    RetryPolicy,
    expand_settings,
    parse_retry_policy,
    storage_connection_string,
)
from sandbox.ncrontab import Schedule, ScheduleError, parse_schedule

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
