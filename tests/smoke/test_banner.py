"""`make run`'s banner: every command it prints pastes and runs as it is (real ids filled in,
the run id kept by the shell), against a real local stack on free ports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack import ROOT, Stack, banner

BASH = shutil.which("bash") or "/bin/bash"
COMMAND_START = re.compile(r"^\s+(\S*keysteward|\S+ -m shared\.cli|curl|export|RUN=)")


def banner_commands(text: str) -> list[str]:
    """The shell commands of the banner, continuation lines joined, in order."""
    commands: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if COMMAND_START.match(lines[i]):
            command = lines[i].strip()
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1].rstrip() + " " + lines[i].strip()
            commands.append(command)
        i += 1
    return commands


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack.on_free_ports(run_dir=tmp_path / "run", quiet=True)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.mark.azurite
@pytest.mark.loopback
def test_every_banner_command_pastes_and_runs(running_stack: Stack, tmp_path: Path) -> None:
    text = banner(running_stack)
    assert "<" not in text.replace("<<", ""), "no placeholders"  # `<old-version>` would be a redirect
    assert "sandbox has its own clock" in text and "/sandbox/clock" in text
    commands = banner_commands(text)
    # The clock move is pasted last here: before, it would let the early disable through.
    clock = next(c for c in commands if "/sandbox/clock" in c)
    commands = [c for c in commands if c is not clock] + [clock]
    assert len(commands) >= 12, commands
    script = ["set +e", f"cd {ROOT}"]
    for i, command in enumerate(commands):
        script += [f"echo '@@begin {i}'", command, f"rc=$?; echo; echo \"@@end {i} rc=$rc\""]
    done = subprocess.run([BASH, "-c", "\n".join(script)], capture_output=True, text=True, timeout=600,
                          check=False)
    outputs = dict(re.findall(r"@@begin (\d+)\n(.*?)\n@@end \1 rc=\d+", done.stdout, flags=re.DOTALL))
    codes = dict(re.findall(r"@@end (\d+) rc=(\d+)", done.stdout))
    assert len(codes) == len(commands), done.stdout[-3000:] + done.stderr[-3000:]
    for i, command in enumerate(commands):
        out, code = outputs.get(str(i), ""), int(codes[str(i)])
        where = f"{command}\n-> {code}\n{out[-2000:]}"
        subcommand = command.split("local.settings.json", 1)[-1].split()[:1]
        if subcommand == ["disable"]:
            assert code == 1 and "refused" in out, where  # the 24-hour rule, as the banner says
        elif subcommand == ["check"]:
            assert code in (0, 1), where
        else:
            assert code == 0, where
        if command.startswith("curl") and "/runs/" in command:
            doc = json.loads(out)
            assert doc["kind"] == "revoke" and doc["run"], where
        if command.startswith("curl") and "/restore" in command:
            assert '"run"' in out, where
        if "/sandbox/clock" in command:
            assert '"now"' in out, where
