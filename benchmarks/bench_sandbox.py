"""How fast is the sandbox? Not a test: prints a table and writes benchmarks/out/sandbox.json.

    python -m benchmarks.bench_sandbox [--requests N] [--clusters N]

Measures:
- ``KeyClient.get_key`` round trip in-process (official SDK on SandboxTransport), median µs;
- the sandbox's own share of it: ``World.handle`` alone on the same request, median µs;
- the same ``get_key`` over loopback HTTPS (real sockets and TLS, keep-alive), median µs;
- seeding a fleet of N Kusto clusters through the wire (``sandbox.seeds.generate_fleet``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.keyvault.keys import KeyClient

from sandbox import seeds
from sandbox.server import SandboxServer
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.wire import Request, Service
from sandbox.world import World

OUT = Path(__file__).resolve().parent / "out" / "sandbox.json"
ONE_KEY = {
    "subscriptions": [{"id": "00000000-0000-0000-0000-00000000a001", "name": "bench"}],
    "vaults": [{"name": "kv-bench", "subscription": "bench", "keys": [{"name": "cmk", "size": 2048}]}],
}


def median_us(fn: Callable[[], object], n: int, warmup: int = 50) -> tuple[float, float]:
    """(median, p95) in microseconds of ``n`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    for _ in range(n):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def bench_in_process(n: int) -> dict[str, Any]:
    world = World()
    seeds.apply_seed(world, ONE_KEY)
    client = KeyClient("https://kv-bench.vault.azure.net", StaticTokenCredential(), transport=SandboxTransport(world))
    sdk_median, sdk_p95 = median_us(lambda: client.get_key("cmk"), n)
    req = Request.build(
        method="GET",
        host="kv-bench.vault.azure.net",
        path="/keys/cmk/",
        query_string="api-version=2025-07-01",
        headers={"Authorization": "Bearer sandbox-token", "Accept": "application/json"},
        body=b"",
        service=Service.VAULT,
        vault="kv-bench",
    )
    status = world.handle(req).status
    if status != 200:
        raise RuntimeError(f"world.handle answered {status} to the benchmark request")
    handle_median, handle_p95 = median_us(lambda: world.handle(req), n)
    return {
        "requests": n,
        "get_key_median_us": round(sdk_median, 1),
        "get_key_p95_us": round(sdk_p95, 1),
        "world_handle_median_us": round(handle_median, 1),
        "world_handle_p95_us": round(handle_p95, 1),
        "sandbox_share": round(handle_median / sdk_median, 3),
    }


def bench_loopback(n: int) -> dict[str, Any]:
    world = World()
    with SandboxServer(world) as server:
        seeds.apply_seed(world, ONE_KEY)
        client = KeyClient(
            server.vault_url("kv-bench"),
            StaticTokenCredential(),
            verify_challenge_resource=False,
            connection_verify=server.ca_bundle,
        )
        median, p95 = median_us(lambda: client.get_key("cmk"), n)
        client.close()
    return {"requests": n, "get_key_median_us": round(median, 1), "get_key_p95_us": round(p95, 1)}


def bench_seed(n_clusters: int, n_subscriptions: int) -> dict[str, Any]:
    doc = seeds.generate_fleet(n_clusters, 0, n_subscriptions)
    world = World()
    started = time.perf_counter()
    plan = seeds.compile_seed(doc)
    compiled = time.perf_counter()
    result = seeds.apply_plan(world, plan)
    done = time.perf_counter()
    clusters = sum(1 for r in world.resources.values() if r.type == seeds.KUSTO_TYPE)
    if clusters != n_clusters:
        raise RuntimeError(f"seeded {clusters} clusters, expected {n_clusters}")
    return {
        "clusters": n_clusters,
        "subscriptions": n_subscriptions,
        "requests": result.requests,
        "compile_s": round(compiled - started, 3),
        "apply_s": round(done - compiled, 3),
        "total_s": round(done - started, 3),
        "requests_per_s": round(result.requests / (done - compiled)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=10000)
    parser.add_argument("--subscriptions", type=int, default=10)
    args = parser.parse_args(argv)

    in_process = bench_in_process(args.requests)
    loopback = bench_loopback(max(200, args.requests // 4))
    seeding = bench_seed(args.clusters, args.subscriptions)
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "in_process": in_process,
        "loopback": loopback,
        "seed_fleet": seeding,
    }
    rows = [
        ("KeyClient.get_key, in-process (median)", f"{in_process['get_key_median_us']:.0f} µs"),
        ("  of which World.handle (median)", f"{in_process['world_handle_median_us']:.0f} µs"),
        ("  sandbox share of the round trip", f"{in_process['sandbox_share'] * 100:.0f} %"),
        ("KeyClient.get_key, loopback HTTPS (median)", f"{loopback['get_key_median_us']:.0f} µs"),
        (f"seed {seeding['clusters']:,} clusters ({seeding['requests']:,} requests)", f"{seeding['total_s']:.2f} s"),
        ("  seeding throughput", f"{seeding['requests_per_s']:,} req/s"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
