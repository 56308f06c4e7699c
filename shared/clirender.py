"""How the ``keysteward`` command shows things to people: aligned tables, readable times and
durations in one named clock, progress on a terminal. Pure rendering over the documents the
commands also print with ``--json``; nothing here reads Azure or changes state.

Times are shown in the clock keysteward decides with: the sandbox's clock when
``KEYSTEWARD_SANDBOX`` is set, else UTC wall-clock time. Every table of times says which.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Output wider than this is written unwrapped when stdout is not a terminal (a pipe or a file):
# key URIs and resource ids then stay on one line, whole, for grep.
_PIPE_WIDTH = 400

Render = Callable[[], Sequence[RenderableType]]


def duration(delta: timedelta | float | None) -> str:
    """``5 d 0 h``, ``3 h 12 min``, ``4 min 05 s``, ``49 s``; negative spans are shown with ``-``."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    elif minutes:
        text = f"{minutes} min {secs:02d} s"
    else:
        text = f"{abs(seconds):.0f} s" if abs(seconds) >= 1 else f"{abs(seconds):.1f} s"
    return sign + text


def when(moment: datetime | str | None) -> str:
    """``2026-01-05 09:00:12`` (UTC, to the second) from a datetime or an ISO-8601 string."""
    if moment is None or moment == "":
        return "-"
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.strftime("%Y-%m-%d %H:%M:%S")


def relative(moment: datetime | str | None, now: datetime) -> str:
    """``3 d 4 h ago`` or ``in 20 min 00 s`` against ``now`` (the same clock)."""
    if moment is None or moment == "":
        return "-"
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    delta = value - now
    if abs(delta.total_seconds()) < 1:
        return "just now"
    return f"in {duration(delta)}" if delta.total_seconds() > 0 else f"{duration(-delta)} ago"


# A str(timedelta): "5 days, 0:00:49.577697" or "0:05:00"; never the time inside an ISO-8601 stamp.
_TIMEDELTA = re.compile(r"(?<![\dT:])(?:(\d+) days?, )?(\d+):(\d\d):(\d\d)(?:\.\d+)?(?![\d+Z])")
_ISO_IN_TEXT = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
_ISO_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def humanize_text(text: str) -> str:
    """Rewrites Python ``timedelta`` reprs inside a message (``5 days, 0:00:49.5``) as durations."""

    def repl(m: re.Match[str]) -> str:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        return duration(timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))

    return _ISO_IN_TEXT.sub(lambda m: when(m.group(0)), _TIMEDELTA.sub(repl, text))


def value_text(value: object) -> str:
    """One value for a table cell: ISO-8601 stamps as :func:`when`, lists of names joined (first
    three), lists of records and mappings counted, never a Python repr."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return when(value) if _ISO_STAMP.match(value) else humanize_text(value)
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if all(isinstance(v, str | int | float) for v in value):
            shown = ", ".join(str(v) for v in value[:3])
            return shown + (f" (+{len(value) - 3} more)" if len(value) > 3 else "")
        return f"{len(value)} item(s)"
    if isinstance(value, dict):
        if not value:
            return "none"
        return f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    return str(value)


def record_text(record: object) -> str:
    """A result record as ``name: value`` pairs (see :func:`value_text`)."""
    if not isinstance(record, dict):
        return value_text(record)
    return "; ".join(f"{name}: {value_text(value)}" for name, value in record.items())


def short_id(resource_id: str) -> str:
    """The last segment of an ARM id (the resource's name)."""
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def subscription_of(resource_id: str) -> str:
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("subscriptions") + 1] if "subscriptions" in lowered[:-1] else "-"


# Columns of ids that people copy into the next command: never shortened or wrapped (a 32-hex
# version id, a subscription GUID, a run id); the free-text columns give way instead.
_ID_WIDTH = {"version": 32, "pinned": 32, "in use": 32, "subscription": 36, "run": 30}


def table(*columns: str, title: str | None = None) -> Table:
    """A plain, aligned table: header row, no box drawing characters beyond a rule."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              highlight=False)
    for name in columns:
        width = _ID_WIDTH.get(name)
        t.add_column(name, min_width=width, no_wrap=width is not None)
    return t


class Output:
    """Writes either one JSON document (``--json``) or text and tables for people, on stdout.
    Progress and spinners go to stderr, only on a terminal and never with ``--json``."""

    def __init__(self, *, as_json: bool, stream: TextIO | None = None, err: TextIO | None = None,
                 clock_name: str = "UTC wall clock") -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.clock_name = clock_name
        tty = _isatty(self.stream)
        self.console = Console(file=self.stream, width=None if tty else _PIPE_WIDTH, highlight=False,
                               markup=False, emoji=False, soft_wrap=not tty)
        self.interactive = _isatty(self.err) and not as_json
        self.err_console = Console(file=self.err, highlight=False, markup=False, emoji=False)

    def emit(self, doc: Any, render: Render) -> None:
        if self.as_json:
            json.dump(doc, self.stream, indent=2, default=str)
            self.stream.write("\n")
            self.stream.flush()
            return
        with self.console.capture() as captured:
            for item in render():
                self.console.print(item)
        # Tables pad every cell to its column's width: trailing blanks help nobody.
        self.stream.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        self.stream.flush()

    @contextlib.contextmanager
    def busy(self, text: str) -> Iterator[None]:
        """A spinner with elapsed time while a read runs (terminal only)."""
        if not self.interactive:
            yield
            return
        with self.err_console.status(text):
            yield

    @contextlib.contextmanager
    def progress(self, text: str, *, total: float | None) -> Iterator[Callable[..., None]]:
        """A progress bar (terminal only). Yields ``update(completed=..., total=..., description=...)``."""
        if not self.interactive:
            yield lambda **_kw: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("elapsed"), TimeElapsedColumn())
        with Progress(*columns, console=self.err_console, transient=True) as bar:
            task = bar.add_task(text, total=total)

            def update(**kw: Any) -> None:
                bar.update(task, **kw)

            yield update


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


__all__ = ["Output", "Render", "duration", "humanize_text", "record_text", "relative", "short_id",
           "subscription_of", "table", "value_text", "when"]
