"""Browser-free smoke test: `make demo`'s story against the real local stack (Azurite, the
sandbox over loopback HTTPS, the development host), as separate processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
STEPS = ["1. rotate", "2. pinned services follow", "3. early disable refused", "4. 25 h later",
         "the sweep keeps the old version for backups", "31 days later the sweep retires it", "5. revoke dry run", "6. revoke", "services confirmed dark",
         "7. restore", "8. services healthy", "demo complete: every step held"]


@pytest.mark.azurite
def test_demo_story_runs_end_to_end():
    # Free ports for every listener (host and Azurite): other tests run beside this one.
    done = subprocess.run([sys.executable, "-m", "scripts.demo", "--free-ports"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for step in STEPS:
        assert re.search(rf"\]\s+{re.escape(step)}", out), f"missing step {step!r}:\n{out[-3000:]}"
