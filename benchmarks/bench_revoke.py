"""Revocation speed: how long until every version of a key is disabled. Not a test: prints a
table and writes ``benchmarks/out/revoke.json``.

    python -m benchmarks.bench_revoke [--runs N] [--versions V] [--services S] [--latency-ms L]

The estate (``sandbox.seeds.generate_fleet``): one key with V versions (50) used by S
services (200: half Kusto clusters, half Cosmos DB accounts, over two subscriptions). Every
request to the sandbox costs L ms (20) of real latency (fault rule
``{"path": ".*", "latency_ms": L}``), applied outside the sandbox's lock as a network would.

One run is a revocation as ``POST /api/revoke`` starts it (``mode=disable``, whole key,
budget 0): resolve the blast radius (inventory), snapshot the versions, disable them with
bounded concurrency (``KEYSTEWARD_MAX_CONCURRENCY``, 16), then one verification read of every
service before handing verification to the timer. Measured, wall clock:

- ``disabled_s``: from the call to the moment the act step finished, i.e. every version is
  disabled (checked against the sandbox's state at that moment, and that the sandbox clock
  has not moved: no verification wait came first);
- ``answered_s``: until the call returned (the HTTP answer);
- per-step times, and the number of requests.

A sequential variant (concurrency 1) is run once for comparison. The figure reported is the
median over the runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from sandbox import seeds
from sandbox.transport import SandboxTransport, StaticTokenCredential, sandbox_session
from sandbox.world import World
from shared.auth import ROLE_REVOKE, Principal
from shared.config import load_settings
from shared.keyuri import parse_key_uri
from shared.notify import RecordingNotifier
from shared.runbooks import RevokeRequest, Runbooks
from shared.workqueue import MemoryQueue
from tests.memory_journal import MemoryJournal

OUT = Path(__file__).resolve().parent / "out" / "revoke.json"
VAULT, KEY = "kv-fleet", "cmk-fleet"
TARGET_S = 2.0
CALLER = Principal("00000000-0000-4000-8000-0000000000be", "bench", frozenset({ROLE_REVOKE}))


def one_run(*, versions: int, services: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    from shared.app import build  # noqa: PLC0415 - keeps module import light for --help

    world = World()
    doc = seeds.generate_fleet(services // 2, services - services // 2, 2, versions=versions)
    seeds.apply_seed(world, doc)
    subs = [s["id"] for s in doc["subscriptions"]]
    vault_url = f"https://{VAULT}.vault.azure.net"
    settings = load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": ",".join(subs),
        "KEYSTEWARD_VAULTS": vault_url,
        "KEYSTEWARD_MAX_CONCURRENCY": str(concurrency),
    })
    app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                credential=StaticTokenCredential(), notifier=RecordingNotifier(), queue=MemoryQueue(),
                polling_interval=0, journal=MemoryJournal(world.clock))
    r = sandbox_session(world).post("https://sandbox.local/sandbox/faults",
                                    json={"rules": [{"path": ".*", "latency_ms": latency_ms}]})
    r.raise_for_status()

    marks: dict[str, float] = {}
    checks: dict[str, Any] = {}
    clock_at_start = world.clock.now()
    started = 0.0

    def hook(_run_id: str, step: str, phase: str) -> None:
        marks[f"{step}/{phase}"] = time.perf_counter() - started
        if (step, phase) == ("act", "acted"):
            key = world.vaults[VAULT].keys[KEY]
            checks["enabled_after_act"] = sum(1 for v in key.versions.values() if v.enabled)
            checks["clock_moved_before_act_s"] = (world.clock.now() - clock_at_start).total_seconds()

    books = Runbooks(app.runbooks.deps, hook=hook)
    key = parse_key_uri(f"{vault_url}/keys/{KEY}", allowed_vaults=settings.vaults)
    seq = world.last_seq
    started = time.perf_counter()
    view = books.revoke(RevokeRequest(key, "disable", "benchmark", "BENCH-1"), CALLER, budget=timedelta(0))
    answered = time.perf_counter() - started
    if checks.get("enabled_after_act") != 0:
        raise RuntimeError(f"versions still enabled after act: {checks}")
    act = next(s for s in view.steps if s.name == "act")
    resolve = next(s for s in view.steps if s.name == "resolve")
    if len(act.result["done"]) != versions or len(resolve.result["bindings"]) != services:
        raise RuntimeError(f"unexpected run: {len(act.result['done'])} disabled, "
                           f"{len(resolve.result['bindings'])} bindings")
    return {
        "disabled_s": round(marks["act/acted"], 3),
        "answered_s": round(answered, 3),
        "resolve_s": round(marks["resolve/acted"] - marks["resolve/claimed"], 3),
        "snapshot_s": round(marks["snapshot/acted"] - marks["snapshot/claimed"], 3),
        "act_s": round(marks["act/acted"] - marks["act/claimed"], 3),
        "first_verify_poll_s": round(answered - marks["act/recorded"], 3),
        "requests": world.last_seq - seq,
        "clock_moved_before_act_s": checks["clock_moved_before_act_s"],
        "status": view.run.status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    runs = [one_run(versions=args.versions, services=args.services, latency_ms=args.latency_ms,
                    concurrency=args.concurrency) for _ in range(args.runs)]
    sequential = one_run(versions=args.versions, services=args.services, latency_ms=args.latency_ms, concurrency=1)

    def med(name: str) -> float:
        return round(float(statistics.median(r[name] for r in runs)), 3)

    summary = {
        "versions": args.versions,
        "services": args.services,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "disabled_s_median": med("disabled_s"),
        "disabled_s_max": max(r["disabled_s"] for r in runs),
        "answered_s_median": med("answered_s"),
        "resolve_s_median": med("resolve_s"),
        "snapshot_s_median": med("snapshot_s"),
        "act_s_median": med("act_s"),
        "first_verify_poll_s_median": med("first_verify_poll_s"),
        "requests_median": med("requests"),
        "target_s": TARGET_S,
        "meets_target": med("disabled_s") < TARGET_S,
        "sequential_disabled_s": sequential["disabled_s"],
        "sequential_act_s": sequential["act_s"],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"revoke: {args.versions} versions, {args.services} services, {args.latency_ms:g} ms per call, "
          f"concurrency {args.concurrency}, {args.runs} runs")
    print(f"{'':<28}{'median':>10}{'max':>10}")
    for name in ("disabled_s", "answered_s", "resolve_s", "snapshot_s", "act_s", "first_verify_poll_s", "requests"):
        print(f"{name:<28}{med(name):>10}{max(r[name] for r in runs):>10}")
    print(f"sequential (concurrency 1): disabled after {sequential['disabled_s']} s (act {sequential['act_s']} s)")
    print(f"target: every version disabled in < {TARGET_S} s: {'met' if summary['meets_target'] else 'NOT met'}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"summary": summary, "runs": runs, "sequential": sequential}, indent=2) + "\n",
                   encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
