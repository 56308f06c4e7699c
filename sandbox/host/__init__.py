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

The package: ``settings`` (app settings, local.settings.json, host.json, retry policies),
``loading`` (importing the app and checking its bindings), ``routing`` (keys and HTTP route
templates), ``timers`` (time sources, guarded invocation with retries, the timer scheduler),
``queues`` (the queue poller), ``frontend`` (the HTTP server and dispatcher) and ``devhost``
(the host itself, ``build_host``, ``serve`` and ``main``). Every name is importable from
``sandbox.host`` as before.
"""

from sandbox.host.devhost import (
    DevHost,
    build_host,
    main,
    serve,
)
from sandbox.host.frontend import (
    Answer,
    Dispatcher,
    Incoming,
    to_event_grid_event,
)
from sandbox.host.loading import (
    EventGridTriggerSpec,
    FunctionSpec,
    HttpTriggerSpec,
    QueueTriggerSpec,
    TimerTriggerSpec,
    TriggerSpec,
    call_user_function,
    import_app,
    load_functions,
)
from sandbox.host.queues import (
    QueuePoller,
)
from sandbox.host.routing import (
    HostKeys,
    RouteTemplate,
    resolve_keys,
)
from sandbox.host.settings import (
    BANNER,
    DEFAULT_PORT,
    DEFAULT_STORAGE_SETTING,
    DEVELOPMENT_STORAGE_CONNECTION_STRING,
    EVENTGRID_KEY_SETTING,
    EVENTGRID_WEBHOOK_PATH,
    FUNCTION_KEY_SETTING,
    HOST_JSON_OVERRIDE_PREFIX,
    LOG,
    MASTER_KEY_SETTING,
    MAX_REQUEST_BODY,
    SANDBOX_SETTING,
    SUPPORTED_TRIGGERS,
    TIME_ZONE_SETTING,
    HostConfig,
    HostConfigError,
    LocalSettings,
    QueueOptions,
    RetryPolicy,
    expand_settings,
    load_host_json,
    load_local_settings,
    parse_retry_policy,
    parse_timespan,
    storage_connection_string,
)
from sandbox.host.timers import (
    SandboxTimeSource,
    TimerScheduler,
    TimeSource,
    TimeSourceError,
    WallClock,
    invoke_guarded,
    parse_datetime,
    time_source_from_env,
)

__all__ = [
    "BANNER",
    "DEFAULT_PORT",
    "DEFAULT_STORAGE_SETTING",
    "DEVELOPMENT_STORAGE_CONNECTION_STRING",
    "EVENTGRID_KEY_SETTING",
    "EVENTGRID_WEBHOOK_PATH",
    "FUNCTION_KEY_SETTING",
    "HOST_JSON_OVERRIDE_PREFIX",
    "LOG",
    "MASTER_KEY_SETTING",
    "MAX_REQUEST_BODY",
    "SANDBOX_SETTING",
    "SUPPORTED_TRIGGERS",
    "TIME_ZONE_SETTING",
    "Answer",
    "DevHost",
    "Dispatcher",
    "EventGridTriggerSpec",
    "FunctionSpec",
    "HostConfig",
    "HostConfigError",
    "HostKeys",
    "HttpTriggerSpec",
    "Incoming",
    "LocalSettings",
    "QueueOptions",
    "QueuePoller",
    "QueueTriggerSpec",
    "RetryPolicy",
    "RouteTemplate",
    "SandboxTimeSource",
    "TimeSource",
    "TimeSourceError",
    "TimerScheduler",
    "TimerTriggerSpec",
    "TriggerSpec",
    "WallClock",
    "build_host",
    "call_user_function",
    "expand_settings",
    "import_app",
    "invoke_guarded",
    "load_functions",
    "load_host_json",
    "load_local_settings",
    "main",
    "parse_datetime",
    "parse_retry_policy",
    "parse_timespan",
    "resolve_keys",
    "serve",
    "storage_connection_string",
    "time_source_from_env",
    "to_event_grid_event",
]
