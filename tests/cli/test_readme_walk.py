"""README as written: every command of "The CLI" answers `--help` in plain text with an example
and does its job against the sandbox (as a separate process, with `--json`: one document on
stdout, nothing else there); every default of "Configuration reference" is the default that
the code and the development host apply."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.stack import ROOT, Stack, free_port
from shared.cli import _parser
from shared.config import load_settings
from shared.errors import ConfigError

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_commands() -> list[str]:
    """The subcommands named in the first column of README's command table."""
    names: list[str] = []
    for row in re.findall(r"^\| (`.+?) \|", section("The CLI"), flags=re.MULTILINE):
        names += [cell.split()[0] for cell in re.findall(r"`([^`]+)`", row)]
    return names


def cli(stack: Stack, *args: str) -> tuple[int, Any, str]:
    done = stack.cli(*args, "--json", check=False)
    try:
        doc = json.loads(done.stdout)  # the whole of stdout is one JSON document
    except json.JSONDecodeError as err:
        raise AssertionError(f"keysteward {' '.join(args)}: stdout is not one JSON document:\n"
                             f"{done.stdout[:2000]}\nstderr: {done.stderr[-2000:]}") from err
    return done.returncode, doc, done.stderr


def test_readme_names_every_command_and_only_those():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert sorted(readme_commands()) == sorted(sub.choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("command", readme_commands())
def test_help_is_plain_text_with_an_example(command: str):
    done = subprocess.run([sys.executable, "-m", "shared.cli", command, "--help"], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "example:" in done.stdout
    assert re.search(rf"keysteward (--settings \S+ )?{command}\b", done.stdout.split("example:", 1)[1])
    assert "``" not in done.stdout and ":func:" not in done.stdout and ":mod:" not in done.stdout
    assert done.stderr == ""


def test_top_level_help_states_exit_codes_and_the_clock():
    done = subprocess.run([sys.executable, "-m", "shared.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0
    assert "exit codes: 0 ok, 1" in done.stdout and "sandbox's" in done.stdout and "``" not in done.stdout


@pytest.mark.azurite
def test_every_command_in_the_readme_works_against_the_sandbox(stack: Stack):
    adx = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-adx"
    cosmos = f"{stack.vault_url('kv-contoso-prod-weu')}/keys/cmk-cosmos"
    called: set[str] = set()

    code, status, _ = cli(stack, "status", "--key", adx)
    called.add("status")
    assert code == 0 and status["currentVersion"] and len(status["versions"]) >= 2
    before = status["currentVersion"]

    code, plan, _ = cli(stack, "plan")
    called.add("plan")
    assert code == 0 and {p["key"] for p in plan["plans"]} >= {adx}

    code, rotated, _ = cli(stack, "rotate", "--key", adx)
    called.add("rotate")
    assert code == 0 and rotated["rotated"] and rotated["newVersion"] != before

    code, passes, _ = cli(stack, "reconcile", "--key", adx, "--interval", "1", "--timeout", "120")
    called.add("reconcile")
    assert code == 0 and all(p["converged"] for p in passes["passes"])
    assert all(b["action"] in ("in-sync", "versionless", "read-only")
               for p in passes["passes"] for b in p["bindings"]), passes

    code, check, _ = cli(stack, "check")
    called.add("check")
    assert code == (0 if check["ok"] else 1) and check["findings"]

    code, retire, _ = cli(stack, "retire", "--dry-run")
    called.add("retire")
    assert code == 0 and retire["dryRun"] is True

    code, refused, _ = cli(stack, "disable", "--key", f"{adx}/{before}", "--reason", "walk", "--ticket", "T-1")
    called.add("disable")
    assert code == 1 and refused["refused"] and refused["blockers"]

    code, radius, _ = cli(stack, "revoke", "--key", cosmos, "--mode", "disable", "--reason", "walk", "--ticket",
                          "T-2", "--dry-run")
    assert code == 0 and radius["summary"]["affected"] >= 1
    code, run, _ = cli(stack, "revoke", "--key", cosmos, "--mode", "disable", "--reason", "walk", "--ticket", "T-2",
                       "--no-wait")
    called.add("revoke")
    assert code == 0 and run["kind"] == "revoke"
    code, resumed, _ = cli(stack, "resume", run["run"])
    called.add("resume")
    assert code == 0 and resumed["status"] == "succeeded", resumed
    code, runs, _ = cli(stack, "runs", "--key", cosmos)
    called.add("runs")
    assert code == 0 and run["run"] in [r["run"] for r in runs["runs"]]
    code, restored, _ = cli(stack, "restore", "--run", run["run"], "--reason", "walk over", "--ticket", "T-2")
    called.add("restore")
    assert code == 0 and restored["status"] == "succeeded", restored

    port = free_port()
    host = subprocess.Popen([sys.executable, "-m", "shared.cli", "--settings", str(stack.settings_file), "serve",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    called.add("serve")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/admin/host/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert host.poll() is None and time.monotonic() < deadline, host.stdout.read() if host.stdout else ""
            time.sleep(0.3)
    finally:
        host.terminate()
        host.wait(timeout=30)
    assert called == set(readme_commands())


# ---- the settings table ------------------------------------------------------------------------

REQUIRED = {"KEYSTEWARD_SUBSCRIPTIONS": "00000000-0000-0000-0000-00000000a001",
            "KEYSTEWARD_VAULTS": "https://kv-contoso-prod-weu.vault.azure.net"}


def settings_rows() -> list[tuple[str, str]]:
    return re.findall(r"^\| `([A-Za-z0-9_]+)` \| (.+?) \|", section("Configuration reference"), flags=re.MULTILINE)


def _literal(default: str) -> str | None:
    """The README's default as a value (None: not a literal value, e.g. required or derived)."""
    if default in ("unset", "empty"):
        return ""
    match = re.fullmatch(r"`([^`]*)`", default)
    return match.group(1) if match else None


def test_each_default_in_the_settings_table_is_what_the_code_applies():
    baseline = load_settings(REQUIRED)
    checked = []
    for name, default in settings_rows():
        value = _literal(default.strip())
        if value is None or not name.startswith("KEYSTEWARD_"):
            continue
        # Setting the documented default explicitly must change nothing.
        assert load_settings({**REQUIRED, name: value}) == baseline, f"{name}: README says {default}"
        checked.append(name)
    assert len(checked) > 20


def test_required_settings_are_refused_when_missing():
    for name, default in settings_rows():
        if default.strip() == "(required)":
            with pytest.raises(ConfigError, match=name):
                load_settings({k: v for k, v in REQUIRED.items() if k != name})


def test_settings_required_by_the_app_are_binding_expressions():
    bindings = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "functions").glob("*.py"))
    for name, default in settings_rows():
        if default.strip() == "(required by the app)":
            assert f"%{name}%" in bindings, name


def test_the_development_host_applies_the_work_queue_default(tmp_path: Path):
    # In a process of its own: an app's functions can be listed only once per process.
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", **REQUIRED,
           "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *", "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */15 * * * *",
           "KEYSTEWARD_LOCAL_FUNCTION_KEY": "k1", "KEYSTEWARD_LOCAL_MASTER_KEY": "k2",
           "KEYSTEWARD_LOCAL_EVENTGRID_KEY": "k3"}
    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sandbox.host import build_host\n"
        "env = json.loads(sys.argv[1])\n"
        "host = build_host(settings=Path(sys.argv[2]), host_json=Path('host.json'), environ=env, port=0)\n"
        "print(json.dumps({'queues': [getattr(f.trigger, 'queue_name', None) for f in host.functions],\n"
        "                  'setting': env.get('KEYSTEWARD_WORK_QUEUE')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", program, json.dumps(env), str(tmp_path / "absent.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    default = _literal(next(d for n, d in settings_rows() if n == "KEYSTEWARD_WORK_QUEUE"))
    assert default in seen["queues"] and seen["setting"] == default
