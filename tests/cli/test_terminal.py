"""The CLI as an operator sees it: run in a pseudo-terminal (pexpect) against the demo estate.

Captures `status`, `plan`, `revoke --dry-run` and `reconcile` (with its progress bar), checks
they read as text and aligned tables with no log lines, no Python reprs and no raw timedeltas,
and that README's "What the CLI shows" carries the same tables. Transcripts are written to
the stack's folder (`terminal-*.txt`) for refreshing the README.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pexpect
import pytest

from scripts.stack import ROOT, Stack

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
SPINNER = re.compile(r"^[\u2800-\u28ff] ")
pytestmark = pytest.mark.azurite


def run_in_terminal(stack: Stack, *args: str, timeout: float = 180) -> tuple[int, str, str]:
    """Runs ``keysteward --settings S ARGS`` in a 160x50 pseudo-terminal; returns the exit code,
    the raw bytes as text (progress included) and the text without terminal control codes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSTEWARD_")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"})
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, ["-m", "shared.cli", "--settings", str(stack.settings_file), *args],
                          cwd=str(ROOT), env=env, dimensions=(50, 160), encoding="utf-8", timeout=timeout)
    raw = child.read()
    child.close()
    # What stays on the screen: spinners and progress bars redraw their line (\r, erase-line)
    # and are erased at the end (transient); keep what was written after the last redraw.
    # (The terminal turns each \n into \r\n.)
    lines = [ANSI.sub("", re.split(r"\r|\x1b\[2K", ln)[-1]).rstrip() for ln in raw.replace("\r\n", "\n").split("\n")]
    # Spinners (a braille frame first) and the progress bar are erased from the screen at the end.
    screen = "\n".join(ln for ln in lines if ln and not SPINNER.match(ln) and "━" not in ln).strip() + "\n"
    return int(child.exitstatus if child.exitstatus is not None else -1), raw, screen


def assert_for_people(text: str) -> None:
    assert '"event":' not in text and "[info" not in text, text  # no log lines
    assert "{'" not in text and "':" not in text, text  # no Python dict reprs
    assert not re.search(r"\d+ days?, \d+:\d\d:\d\d", text) and not re.search(r"\b\d+:\d\d:\d\d\.\d+", text), text
    assert "``" not in text


def header_lines(text: str) -> list[str]:
    """Table header rows: the line above each horizontal rule."""
    lines = text.splitlines()
    return [" ".join(lines[i - 1].split()) for i, ln in enumerate(lines) if i and set(ln.strip()) == {"─"}]


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("### What the CLI shows", 1)[1].split("\n## ", 1)[0]


def test_status_plan_revoke_dry_run_and_reconcile_in_a_terminal(stack: Stack) -> None:
    adx = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-adx"
    cosmos = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-cosmos"
    transcripts: dict[str, str] = {}

    code, _raw, text = run_in_terminal(stack, "status", "--key", adx)
    assert code == 0, text
    assert "may disable?" in text and "why it must stay enabled" in text and "times: sandbox clock" in text
    assert re.search(r"\b\d+ d \d+ h ago\b", text), text  # ages as durations
    transcripts["status"] = text

    code, _raw, text = run_in_terminal(stack, "plan")
    assert code == 0, text
    assert "nothing was written" in text
    transcripts["plan"] = text

    code, _raw, text = run_in_terminal(stack, "revoke", "--key", cosmos, "--mode", "disable", "--reason", "drill",
                                       "--ticket", "T-2", "--dry-run")
    assert code == 0, text
    assert "reached?" in text and "count by" in text and "nothing was changed (dry run)" in text
    transcripts["revoke --dry-run"] = text

    # A rotation leaves the pinned clusters behind (no host runs here to follow the event):
    # reconcile then waits for their updates, with a progress bar on the terminal.
    assert stack.cli("rotate", "--key", adx).returncode == 0
    code, raw, text = run_in_terminal(stack, "reconcile", "--key", adx, "--interval", "1", "--timeout", "120")
    assert code == 0, text
    assert "converging" in ANSI.sub("", raw), raw[-2000:]  # the progress bar was shown
    assert re.search(r"converged after \d", text), text
    transcripts["reconcile"] = text

    for name, text in transcripts.items():
        assert_for_people(text)
        (stack.run_dir / f"terminal-{name.replace(' ', '')}.txt").write_text(text, encoding="utf-8")
    block = " ".join(readme_block().split())
    for name, text in transcripts.items():
        for header in header_lines(text):
            assert header in block, f"README's terminal output lacks the {name} table {header!r}"


def test_json_is_one_document_and_logs_stay_out_of_the_terminal(stack: Stack) -> None:
    log = ROOT / ".run" / "keysteward.log"  # the CLI runs from the project folder
    before = log.stat().st_size if log.exists() else 0
    code, _raw, text = run_in_terminal(stack, "plan", "--json")
    assert code == 0
    assert "plans" in json.loads(text)  # the terminal shows one JSON document and nothing else
    assert log.exists() and log.stat().st_size > before  # the log lines went to the file
    with log.open("rb") as fh:  # other tests' CLI calls may append to the same file meanwhile
        fh.seek(before)
        added = [json.loads(line) for line in fh.read().decode("utf-8").splitlines() if line.strip()]
    mine = [d for d in added if d.get("command") == "plan"]
    assert mine and all(d["timestamp"].endswith("Z") for d in mine), added[-3:]
    code, _raw, text = run_in_terminal(stack, "-v", "plan")
    assert code == 0 and re.search(r"\[(info|warning)\s*\]", text), text  # -v: log lines on the terminal
