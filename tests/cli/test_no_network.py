"""Azurite never phones home, and the whole stack runs with no route off loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.stack import AZURITE_FLAGS, ROOT, Stack, azurite_argv

# Azurite's own launch options: any file that starts Azurite passes some of them.
LAUNCH_FLAGS = re.compile(r"--(blobHost|queueHost|tableHost|inMemoryPersistence|azuriteDebug)\b")


def tracked_files() -> list[Path]:
    git = shutil.which("git") or "git"
    listed = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / p for p in listed.splitlines() if not p.endswith("package-lock.json")]


def test_the_one_azurite_command_line_has_telemetry_off_and_loopback_hosts():
    argv = azurite_argv("azurite", (1, 2, 3))
    assert "--disableTelemetry" in argv and "--disableTelemetry" in AZURITE_FLAGS
    hosts = [argv[i + 1] for i, a in enumerate(argv) if a.endswith("Host")]
    assert hosts == ["127.0.0.1"] * 3


def test_every_file_that_starts_azurite_turns_telemetry_off():
    starters = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        if path.name == Path(__file__).name:
            continue
        if LAUNCH_FLAGS.search(text) and "azurite" in text.lower():
            starters.append(path.relative_to(ROOT).as_posix())
            assert "--disableTelemetry" in text or "azurite_argv" in text, path
    scripts = json.loads((ROOT / "package.json").read_text()).get("scripts", {})
    for name, command in scripts.items():
        if "azurite" in command:
            assert "--disableTelemetry" in command, name
    assert "scripts/stack.py" in starters


@pytest.mark.azurite
def test_the_running_azurite_has_the_flag(stack: Stack):
    proc = dict(stack.procs)["azurite"]
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    assert b"--disableTelemetry" in cmdline, cmdline


UNSHARE = shutil.which("unshare")


def _can_unshare() -> bool:
    if UNSHARE is None:
        return False
    return subprocess.run([UNSHARE, "-rn", sys.executable, "-c", ""], capture_output=True, check=False).returncode == 0


@pytest.mark.azurite
@pytest.mark.loopback
def test_the_whole_stack_runs_with_no_route_off_loopback():
    if not _can_unshare():
        pytest.skip("unshare -rn (a network namespace) is not permitted here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert UNSHARE is not None
    done = subprocess.run([UNSHARE, "-rn", sys.executable, "-m", "tests.cli._offline"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ping"] == 200 and result["plans"] > 0 and result["versions"] >= 2
