"""The development host itself: ``DevHost``, ``build_host``, ``serve`` and ``main``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import IO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sandbox.host.frontend import Dispatcher, _Server
from sandbox.host.loading import (
    EventGridTriggerSpec,
    FunctionSpec,
    HttpTriggerSpec,
    QueueTriggerSpec,
    TimerTriggerSpec,
    import_app,
    load_functions,
)
from sandbox.host.queues import QueuePoller
from sandbox.host.routing import HostKeys, resolve_keys
from sandbox.host.settings import (
    BANNER,
    DEFAULT_PORT,
    EVENTGRID_WEBHOOK_PATH,
    LOG,
    TIME_ZONE_SETTING,
    HostConfig,
    HostConfigError,
    _app_setting_defaults,
    load_host_json,
    load_local_settings,
)
from sandbox.host.timers import (
    SandboxTimeSource,
    TimerScheduler,
    TimeSource,
    TimeSourceError,
    WallClock,
    _iso,
    time_source_from_env,
)

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
        if isinstance(self.clock, SandboxTimeSource):
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
