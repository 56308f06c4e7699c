"""Timer-trigger schedules as the Azure Functions host reads them, for the development host.

Two forms are accepted, as in the real timer trigger:

* NCRONTAB with six fields, ``{second} {minute} {hour} {day} {month} {day-of-week}``
  (``0 */15 * * * *``, ``0 0 3 * * MON-FRI``). Day-of-month and day-of-week must both match
  (NCrontab ANDs them, unlike Vixie cron's OR). Evaluated in UTC unless a time zone is given.
* A ``TimeSpan`` ``hh:mm:ss`` (or ``d.hh:mm:ss``): fire every interval, counted from the
  previous firing (or from start).

``parse_schedule`` raises ``ScheduleError`` for anything else, so a bad schedule stops the
host at start rather than silently never firing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from croniter import croniter

_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})$")


class ScheduleError(ValueError):
    """The schedule expression is neither six-field NCRONTAB nor a TimeSpan."""


class Schedule(Protocol):
    """When a timer fires."""

    @property
    def expression(self) -> str:
        """The schedule as written (after %SETTING% expansion)."""
        ...

    def next_after(self, when: datetime) -> datetime:
        """The first occurrence strictly after ``when`` (timezone-aware in, UTC out)."""
        ...


@dataclass(frozen=True)
class CronSchedule:
    """A six-field NCRONTAB expression evaluated in ``zone`` (UTC by default)."""

    expression: str
    zone: tzinfo = UTC

    def next_after(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("the time must carry a timezone")
        start = when.astimezone(self.zone)
        itr = croniter(self.expression, start, second_at_beginning=True, day_or=False)
        nxt: datetime = itr.get_next(datetime)
        return nxt.astimezone(UTC)


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule: ``interval`` after the previous evaluation (the last firing)."""

    expression: str
    interval: timedelta

    def next_after(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError("the time must carry a timezone")
        return (when + self.interval).astimezone(UTC)


def parse_schedule(expression: str, *, zone: tzinfo = UTC) -> Schedule:
    """Parses a timer schedule; raises ``ScheduleError`` with the reason when it is invalid."""
    text = expression.strip()
    span = _TIMESPAN.match(text)
    if span is not None:
        interval = timedelta(
            days=int(span["days"] or 0), hours=int(span["h"]), minutes=int(span["m"]), seconds=int(span["s"])
        )
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan schedule {expression!r} must be longer than zero")
        return IntervalSchedule(expression=text, interval=interval)
    fields = text.split()
    if len(fields) != 6:
        raise ScheduleError(
            f"schedule {expression!r} has {len(fields)} fields; NCRONTAB needs 6 "
            "(second minute hour day month day-of-week)"
        )
    if not croniter.is_valid(text, second_at_beginning=True):
        raise ScheduleError(f"schedule {expression!r} is not a valid NCRONTAB expression")
    return CronSchedule(expression=text, zone=zone)
