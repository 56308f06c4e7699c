"""The CLI's rendering helpers: durations and times people read, never a Python repr."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from shared.clirender import Output, duration, humanize_text, record_text, relative, table, when


def test_durations_read_as_days_hours_minutes_seconds():
    assert duration(timedelta(days=5, seconds=49.577697)) == "5 d 0 h"
    assert duration(timedelta(hours=3, minutes=12, seconds=5)) == "3 h 12 min"
    assert duration(timedelta(minutes=4, seconds=5)) == "4 min 05 s"
    assert duration(49.4) == "49 s"
    assert duration(timedelta(seconds=-90)) == "-1 min 30 s"
    assert duration(None) == "-"


def test_timedelta_reprs_in_messages_become_durations_and_iso_stamps_stay_whole():
    text = "still on v1 5 days, 0:00:49.577697 after rotation; not valid before 2027-02-10T09:00:00+00:00"
    assert humanize_text(text) == "still on v1 5 d 0 h after rotation; not valid before 2027-02-10 09:00:00"
    assert humanize_text("retention is 24.0 h (23.9 h left)") == "retention is 24.0 h (23.9 h left)"


def test_times_relative_to_the_same_clock():
    now = datetime(2027, 2, 9, 9, 0, tzinfo=UTC)
    assert relative(now - timedelta(days=200), now) == "200 d 0 h ago"
    assert relative((now + timedelta(minutes=20)).isoformat(), now) == "in 20 min 00 s"
    assert relative(now, now) == "just now"
    assert when("2027-02-09T09:00:03.149806+00:00") == "2027-02-09 09:00:03"


def test_records_are_pairs_with_lists_joined_and_records_counted():
    record = {"done": ["a", "b", "c", "d"], "failed": {}, "bindings": [{"x": 1}], "at": "2027-02-09T09:00:00Z"}
    assert record_text(record) == "done: a, b, c (+1 more); failed: none; bindings: 1 item(s); at: 2027-02-09 09:00:00"


def test_json_output_is_one_document_and_text_has_no_trailing_blanks():
    buf = io.StringIO()
    Output(as_json=True, stream=buf).emit({"a": 1}, lambda: ["ignored"])
    assert buf.getvalue() == '{\n  "a": 1\n}\n'
    buf = io.StringIO()
    rows = table("version", "state")
    rows.add_row("0123456789abcdef0123456789abcdef", "enabled")
    Output(as_json=False, stream=buf).emit({}, lambda: ["head [not markup]", rows])
    lines = buf.getvalue().splitlines()
    assert lines[0] == "head [not markup]" and all(ln == ln.rstrip() for ln in lines)
    assert any("0123456789abcdef0123456789abcdef" in ln for ln in lines)  # ids are never shortened
