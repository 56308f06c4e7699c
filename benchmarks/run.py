"""Runs every benchmark: each ``benchmarks/bench_*.py`` module's ``main()``, in turn.

    python -m benchmarks.run [--only NAME ...]

A module that fails to import or to run is reported and the others still run. Each module
writes its own detailed figures (``benchmarks/out/<name>.json``); this runner writes what each
``main()`` returned, with its status and wall time, to ``benchmarks/out/run.json``, then draws
the plots (``benchmarks/plots.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "run.json"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def run_one(name: str) -> dict[str, Any]:
    started = time.perf_counter()
    entry: dict[str, Any] = {"module": f"benchmarks.{name}"}
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        main = getattr(module, "main", None)
        if not callable(main):
            return {**entry, "status": "failed", "error": "no main()", "wall_s": 0.0}
        # An argparse-style main(argv=None) gets an empty argv, never this runner's arguments.
        takes_argv = bool(inspect.signature(main).parameters)
        result = main([]) if takes_argv else main()
        entry["status"] = "ok"
        entry["result"] = result if isinstance(result, dict) else {"returned": result}
    except SystemExit as err:  # an argparse error or sys.exit() inside a benchmark
        entry["status"] = "ok" if err.code in (0, None) else "failed"
        entry["error"] = f"SystemExit({err.code!r})"
    except Exception as err:  # noqa: BLE001 - one broken benchmark must not stop the others
        entry["status"] = "failed"
        entry["error"] = f"{type(err).__name__}: {err}"
        entry["traceback"] = traceback.format_exc()
    entry["wall_s"] = round(time.perf_counter() - started, 2)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="module names (e.g. bench_propagation)")
    args = parser.parse_args(argv)
    names = [n for n in discover() if not args.only or n in args.only or n.removeprefix("bench_") in args.only]
    entries = []
    for name in names:
        print(f"== {name}", flush=True)
        entry = run_one(name)
        entries.append(entry)
        print(f"== {name}: {entry['status']} in {entry['wall_s']} s" + (f" ({entry['error']})" if "error" in entry
                                                                          else ""), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "benchmarks": entries},
                              indent=1, default=str), encoding="utf-8")
    print(f"wrote {OUT}")
    try:
        from benchmarks import plots  # noqa: PLC0415 - matplotlib only when plotting

        for path in plots.main([]):
            print(f"wrote {path}")
    except Exception as err:  # noqa: BLE001 - plots are a convenience; the figures are written
        print(f"plots skipped: {type(err).__name__}: {err}")
    failed = [e["module"] for e in entries if e["status"] != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
