"""structlog configuration: JSON lines in Azure (and whenever stdout is not a terminal),
readable console output on a terminal. Configured once by the entry point."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

_configured = False


class _StderrLogger:
    """Writes each line to the ``sys.stderr`` of the moment (it can be replaced after start)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def _factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


def _structlog(*, as_json: bool, level: int, factory: Callable[..., Any], cache: bool) -> None:
    """The one processor chain: context, level, UTC ISO time, then JSON or console lines."""
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
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    if _configured:
        return
    _structlog(as_json=(not sys.stdout.isatty()) if json is None else json, level=level, factory=_factory,
               cache=True)
    _configured = True


class _FileLogger:
    """Appends each line to a log file (the CLI's: its output stays for people and scripts)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def msg(self, message: str) -> None:
        with self._path.open("a", encoding="utf-8") as fh:
            fh.write(message + "\n")

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure_cli(*, verbose: bool, log_dir: Path, level: int = logging.INFO) -> Path | None:
    """The ``keysteward`` command's logging: readable lines on stderr with ``-v``; otherwise
    JSON lines appended to ``log_dir/keysteward.log`` (returned), so that stdout carries only
    the command's output and stderr only its errors and progress. Time stamps are UTC wall
    clock. When the folder cannot be written the lines go to stderr rather than nowhere.
    Reconfigures on every call (the CLI is one command per process; tests call it repeatedly).
    """
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    path: Path | None = None
    if not verbose:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            path = log_dir / "keysteward.log"
            path.touch()
        except OSError:
            path = None
    target = path

    def factory(*_args: object) -> _StderrLogger | _FileLogger:
        return _StderrLogger() if target is None else _FileLogger(target)

    _structlog(as_json=path is not None, level=level, factory=factory, cache=False)
    # The Azure SDKs log through the standard library: warnings and errors to the same place.
    handler: logging.Handler = logging.StreamHandler() if path is None else logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_keysteward_cli", False)]:
        root.removeHandler(old)
        old.close()
    handler._keysteward_cli = True  # type: ignore[attr-defined]  # marks the handler this function owns
    root.addHandler(handler)
    _configured = True
    return path
