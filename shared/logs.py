"""structlog configuration: JSON lines in Azure (and whenever stdout is not a terminal),
readable console output on a terminal. Configured once by the entry point."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


class _StderrLogger:
    """Writes each line to the ``sys.stderr`` of the moment (it can be replaced after start)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    if _configured:
        return
    as_json = (not sys.stdout.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )
    _configured = True
