"""Cold start: how long importing ``function_app`` takes (what the Functions worker does to
index the app on every cold start), next to a bare ``azure.functions`` app with one route.

    python -m benchmarks.coldstart [--runs N]

Each measurement is a fresh interpreter (``python -c``) timing the import with
``time.perf_counter``; the two apps alternate (bare, keysteward, bare, ...) so that load on the
machine falls on both alike; the figure is the ratio of the medians. Writes
``benchmarks/out/coldstart.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "coldstart.json"

BARE_APP = '''
import azure.functions as func

app = func.FunctionApp()


@app.route(route="hello")
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")
'''

TIMER = (
    "import sys, time\nsys.path.insert(0, {path!r})\n{hide}t = time.perf_counter()\n"
    "import {module}\nprint(time.perf_counter() - t)\n"
)
# ``rich`` is the CLI's (requirements-cli.txt), not in requirements.txt, so a deployed app does not
# have it; structlog imports it when present (structlog.dev, for pretty console tracebacks). The
# "as deployed" figures hide it from both apps; the "this machine" figures do not.
HIDE_RICH = (
    "import importlib.abc\n"
    "class _NoRich(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'rich' or name.startswith('rich.'):\n"
    "            raise ImportError(name)\n"
    "sys.meta_path.insert(0, _NoRich())\n"
)


def _one(module: str, path: str, *, hide_rich: bool) -> float:
    env = dict(os.environ)  # bytecode caches are written by the warm-up run and then used, as on a deployed app
    code = TIMER.format(path=path, module=module, hide=HIDE_RICH if hide_rich else "")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=path)
    return float(out.stdout.strip().splitlines()[-1])


def measure(runs: int, *, hide_rich: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bare-app-") as bare_dir:
        Path(bare_dir, "bare_function_app.py").write_text(BARE_APP, encoding="utf-8")
        # One warm-up of each (the OS file cache, .pyc files), not counted.
        _one("bare_function_app", bare_dir, hide_rich=hide_rich)
        _one("function_app", str(ROOT), hide_rich=hide_rich)
        bare: list[float] = []
        ours: list[float] = []
        for _ in range(runs):
            bare.append(_one("bare_function_app", bare_dir, hide_rich=hide_rich))
            ours.append(_one("function_app", str(ROOT), hide_rich=hide_rich))
    b, o = statistics.median(bare), statistics.median(ours)
    return {"runs": runs, "bare_s": [round(x, 4) for x in bare], "keysteward_s": [round(x, 4) for x in ours],
            "bare_median_s": round(b, 4), "keysteward_median_s": round(o, 4), "ratio": round(o / b, 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    report = {"as_deployed": measure(args.runs, hide_rich=True), "this_machine": measure(args.runs, hide_rich=False)}
    for name, r in report.items():
        print(f"{name}: import function_app {r['keysteward_median_s'] * 1000:.0f} ms, bare app "
              f"{r['bare_median_s'] * 1000:.0f} ms, ratio {r['ratio']} (median of {args.runs}, alternating)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
