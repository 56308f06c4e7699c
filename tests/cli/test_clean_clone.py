"""`make test` as the very first command on a fresh machine: a clean clone of this commit, a
`python3` on the PATH that has no project package (a bare virtual environment), no
node_modules. `make test` must build .venv, install the Python and Node tools and pass a
fast subset (the Makefile's TESTS and PYTEST_ARGS); run again, it must install nothing.

Slow by nature (a fresh .venv: about 40 s with pip's cache; npm about 15 s): marked
`cleanclone`, and run by `make test` in CI like every other test. The measured times are
printed (`pytest -s`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.stack import ROOT

pytestmark = pytest.mark.cleanclone

GIT = shutil.which("git") or "git"
MAKE = shutil.which("make") or "make"
# A subset that needs both installs: the docs checks (Python) and a live Azurite (Node).
SUBSET = {"TESTS": "tests/test_docs.py tests/cli/test_no_network.py",
          "PYTEST_ARGS": "-p no:cacheprovider -k 'not whole_stack'"}


def bare_python(where: Path) -> Path:
    """A virtual environment made from the base interpreter: only the standard library."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    return where / "bin"


def clean_env(bare_bin: Path) -> dict[str, str]:
    """The environment of a fresh shell: the bare python3 first on PATH, nothing of ours."""
    ours = {str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in ours]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KEYSTEWARD_", "PYTEST_", "MAKE", "MFLAGS"))
           and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "TESTS", "PYTEST_ARGS")}
    env["PATH"] = os.pathsep.join([str(bare_bin), *path])
    env["CI"] = "true"
    return env


def make_test(clone: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([MAKE, "test", *(f"{k}={v}" for k, v in SUBSET.items())], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    return done, time.monotonic() - started


def test_make_test_on_a_clean_clone_from_a_bare_python(tmp_path: Path) -> None:
    head = subprocess.run([GIT, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    clone = tmp_path / "keysteward"
    subprocess.run([GIT, "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([GIT, "checkout", "-q", head], cwd=clone, check=True)
    assert not (clone / ".venv").exists() and not (clone / "node_modules").exists()

    env = clean_env(bare_python(tmp_path / "bare"))
    python3 = shutil.which("python3", path=env["PATH"])
    assert python3 == str(tmp_path / "bare" / "bin" / "python3")
    probe = subprocess.run([python3, "-c", "import pytest"], env=env, capture_output=True, check=False)
    assert probe.returncode != 0, "the python3 on this PATH must not have the project's packages"

    first, took_first = make_test(clone, env)
    out = first.stdout + first.stderr
    print(f"\nclean clone: first `make test` took {took_first:.0f} s (venv, pip, npm, subset)")
    assert first.returncode == 0, out[-5000:]
    for said in ("==> creating .venv", "==> installing Python packages", "==> installing the Node tools"):
        assert said in out, out[-3000:]
    assert " passed" in out and " failed" not in out and (clone / ".venv" / "bin" / "keysteward").exists()

    second, took_second = make_test(clone, env)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-5000:]
    assert "==> " not in out, out[-3000:]  # inputs unchanged: nothing installed again
    print(f"clean clone: second `make test` took {took_second:.0f} s (subset only)")
