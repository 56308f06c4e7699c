"""Fast at any estate size with no tuning: adaptive pacing, what an event costs, coalescing,
and the cold start, measured side by side in one run.

    python -m benchmarks.bench_fast [--quick]

Writes ``benchmarks/out/fast.json``; ``benchmarks/RESULTS.md`` explains the figures.

1. **Pacing.** 1,000 pinned Data Explorer clusters in *one* subscription, keysteward on its
   default settings (nothing tells it the bucket), under three ARM write buckets: ARM's
   documented 200 refilling 10/s, a tight 50 refilling 10/s, and 200 / 10/s with another client
   taking half the refill (5/s). LRO 1 s, so the figure is the pacing. Next to it, one cluster
   at a time (``begin_update(...).result()``, a sample of 20 extrapolated: sequential by
   construction). The lower bound with net refill r and bucket B: ``(N - B) / r + LRO``.
2. **Cost per event.** 1,000 and 10,000 clusters over 10 subscriptions, a second key used by 10
   of them, a third key used by none; for the ``arm`` and ``resourcegraph`` inventories: the
   keysteward CPU (process CPU minus the in-process sandbox's own) and the ARM + Resource Graph
   calls for an unused key's event, a duplicate delivery, and a new version of the 10-binding
   key (handler and every work item it leads to, to the end).
3. **A burst.** 100 ``KeyNewVersionCreated`` events for one key (100 rotations) handed over one
   after the other as the Functions host does with one Event Grid delivery: passes and writes.
4. **Cold start.** ``benchmarks.coldstart`` (import ratio against a bare app).

Sandbox time runs on the manual clock (see ``bench_propagation``'s Scheduler); keysteward runs
with ``KEYSTEWARD_MAX_CONCURRENCY=1`` because the scheduler needs one acting thread per work
item (requests take zero sandbox time, so parallel starts would not change a sandbox-time
figure); every other setting is the default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import coldstart
from benchmarks.bench_propagation import (
    GridCapture,
    HostQueue,
    MeteredWorld,
    Scheduler,
    SimClock,
    machine,
    quiet_logs,
)
from sandbox import seeds
from sandbox.transport import SandboxTransport, StaticTokenCredential
from shared.app import Keysteward, build
from shared.clients import pacer_for
from shared.config import load_settings
from shared.events import IgnoredEvent, KeyVaultEvent, parse_event
from shared.idempotency import MemoryIdempotencyStore
from shared.notify import LogNotifier
from shared.reconcile import PassResult
from shared.workqueue import WorkItem

OUT = Path(__file__).resolve().parent / "out" / "fast.json"
KEY = "cmk-fleet"
TEN_KEY = "cmk-ten"
UNUSED_KEY = "cmk-unused"
LRO_S = 1.0
REFILL = 10.0
BUCKETS: list[tuple[str, float, float]] = [  # (name, bucket, another client's rate)
    ("ARM default 200 / 10 per s", 200.0, 0.0),
    ("tight 50 / 10 per s", 50.0, 0.0),
    ("200 / 10 per s, another client using half", 200.0, REFILL / 2),
]


class Estate:
    def __init__(self, n: int, subs: int, *, ten: bool = False) -> None:
        doc = seeds.generate_fleet(n, 0, subs, versions=1)
        keys = doc["vaults"][0]["keys"]
        keys[0]["size"] = 2048  # Data Explorer accepts RSA 2048 only
        keys.append({"name": UNUSED_KEY, "size": 2048, "versions": [{"label": "v1"}]})
        if ten:
            keys.append({"name": TEN_KEY, "size": 2048, "versions": [{"label": "v1"}]})
            for cluster in doc["kusto_clusters"][:10]:
                cluster["key"] = f"kv-fleet/{TEN_KEY}"
        self.subs = [str(s["id"]).lower() for s in doc["subscriptions"]]
        self.clock = SimClock()
        self.world = MeteredWorld(subscriptions=self.subs, clock=self.clock)
        result = seeds.apply_seed(self.world, doc)
        self.world.lro.duration_s = LRO_S
        self.world.throttle.reset()
        self.vault_url = result.vault_urls["kv-fleet"]
        self.capture = GridCapture(self.world)
        self.clock.advance(timedelta(hours=1))
        self.n = n
        self.records = MemoryIdempotencyStore(self.clock)

    def rotate(self, key: str) -> KeyVaultEvent:
        from azure.keyvault.keys import KeyClient  # noqa: PLC0415

        client = KeyClient(self.vault_url, StaticTokenCredential(), transport=SandboxTransport(self.world))
        # Rotations are at least a second apart: Key Vault creates at most 20 key versions per
        # 10 s per vault (software keys), and reports creation times in whole seconds.
        self.clock.advance(timedelta(seconds=1))
        version = str(client.rotate_key(key).properties.version)
        self.world.tick(self.clock.now())
        return self.event(key, version)

    def event(self, key: str, version: str) -> KeyVaultEvent:
        for raw in reversed(self.capture.events):
            data = raw.get("data") or {}
            if str(raw.get("eventType", "")).endswith("KeyNewVersionCreated") and data.get("Version") == version \
                    and data.get("ObjectName") == key:
                parsed = parse_event(event_id=raw["id"], event_type=raw["eventType"], data=data,
                                     source=raw.get("topic"), subject=raw.get("subject"),
                                     event_time=raw.get("eventTime"))
                assert not isinstance(parsed, IgnoredEvent)
                return parsed
        raise RuntimeError(f"no event for {key}/{version}")

    def app(self, queue: Any, **env: str) -> Keysteward:
        settings = load_settings({"KEYSTEWARD_SUBSCRIPTIONS": ",".join(self.subs), "KEYSTEWARD_VAULTS": self.vault_url,
                                  "KEYSTEWARD_MAX_CONCURRENCY": "1", **env})
        clock = self.clock
        # The default pacer (reserve, no caps), on the sandbox clock so that it waits in sandbox time.
        pacer = pacer_for(settings, sleep=clock.sleep, monotonic=clock.timestamp)
        app = build(settings, clock=clock, transport_factory=lambda: SandboxTransport(self.world),
                    credential=StaticTokenCredential(), notifier=LogNotifier(), queue=queue, pacer=pacer)
        app.idempotency = self.records  # shared by every invocation, as the Table storage one is
        return app


def calls(world: MeteredWorld, since: int) -> dict[str, int]:
    c: Counter[str] = Counter()
    for e in world.requests_since(since):
        if e.service != "arm":
            c["vault"] += 1
            continue
        graph = "resourcegraph" in e.path.lower()
        if e.status == 429:
            c["arm_429"] += 1
        if graph:
            c["graph_queries"] += 1
        elif e.method == "GET":
            c["arm_reads"] += 1
        else:
            c["arm_writes"] += 1
    c["arm_and_graph"] = c["arm_reads"] + c["arm_writes"] + c["graph_queries"]
    return dict(c)


def run_to_end(estate: Estate, app_env: dict[str, str], handle: Callable[[Keysteward], Any]) -> dict[str, Any]:
    """Runs ``handle(app)`` then every work item it leads to, as the host would, in sandbox time."""
    scheduler = Scheduler(estate.clock)
    queue = HostQueue(scheduler)
    app = estate.app(queue, **app_env)
    passes: list[PassResult] = []
    actions: list[str] = []

    def process(item: WorkItem) -> None:
        passes.append(app.process_work_item(item))

    def first() -> None:
        result = handle(app)
        for r in result if isinstance(result, list) else [result]:
            actions.append(r.action)
            passes.extend(r.passes)

    queue.process = process
    scheduler.submit(first)
    seq0, sandbox0 = estate.world.last_seq, estate.world.handle_cpu_s
    cpu0, wall0 = time.process_time(), time.perf_counter()
    scheduler.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    sandbox_cpu = estate.world.handle_cpu_s - sandbox0
    return {"actions": dict(Counter(actions)), "work_items": scheduler.tasks_run - 1, "passes": len(passes),
            "started": sum(len(p.started) for p in passes), "calls": calls(estate.world, seq0),
            "cpu_s": round(cpu, 4), "cpu_sandbox_s": round(sandbox_cpu, 4),
            "cpu_keysteward_s": round(cpu - sandbox_cpu, 4), "wall_s": round(wall, 3), "app": app}


# ---- 1. pacing -----------------------------------------------------------------------------
def pacing_case(n: int, bucket: float, other_per_s: float) -> dict[str, Any]:
    estate = Estate(n, 1)
    sub = estate.subs[0]
    estate.world.throttle.configure(arm_write_burst=bucket, arm_writes_per_s=REFILL)
    if other_per_s > 0:
        owed = [0.0, estate.clock.timestamp()]

        def other_client(now: datetime) -> None:
            ts = now.timestamp()
            owed[0] += max(0.0, ts - owed[1]) * other_per_s
            owed[1] = ts
            while owed[0] >= 1.0:
                estate.world.throttle.arm(sub, write=True, now=ts)
                owed[0] -= 1.0

        estate.clock.on_advance(other_client)
    event = estate.rotate(KEY)
    t0, seq0 = estate.clock.timestamp(), estate.world.last_seq
    run = run_to_end(estate, {}, lambda app: app.handle_event(event))
    ops = [op for op in estate.world.operations.values()
           if op.started.timestamp() >= t0 and op.status == "Succeeded" and "/clusters/" in op.resource_id.lower()]
    done = sorted(op.due.timestamp() - t0 for op in ops)
    patches = [e for e in estate.world.requests_since(seq0) if e.service == "arm" and e.method == "PATCH"]
    net = REFILL - other_per_s
    bound = max(0.0, (n - bucket) / net) + LRO_S
    converged = done[-1] if len(done) == n else None
    app = run.pop("app")
    snap = app.clients.pacer.snapshot(sub, _writes()) if app.clients else {}
    return {
        "bucket": bucket, "refill_per_s": REFILL, "other_client_per_s": other_per_s, "bindings": n,
        "lower_bound_s": round(bound, 2), "converged_s": round(converged, 2) if converged is not None else None,
        "over_bound": round(converged / bound, 3) if converged is not None else None,
        "patch_requests": len(patches), "patch_429": sum(1 for e in patches if e.status == 429),
        "patch_per_binding": round(len(patches) / n, 3), "pacer_learnt": snap,
        **{k: v for k, v in run.items() if k in ("work_items", "passes", "cpu_keysteward_s", "wall_s")},
        "curve": [round(t, 2) for t in done],
    }


def _writes() -> Any:
    from shared.pacing import Kind  # noqa: PLC0415

    return Kind.WRITES


def one_at_a_time(n: int, sample: int) -> dict[str, Any]:
    from azure.mgmt.kusto import KustoManagementClient  # noqa: PLC0415
    from azure.mgmt.kusto.models import ClusterProperties, ClusterUpdate, KeyVaultProperties  # noqa: PLC0415

    estate = Estate(n, 1)
    event = estate.rotate(KEY)
    version = str(event.key.version)
    t0 = estate.clock.timestamp()
    client = KustoManagementClient(StaticTokenCredential(), estate.subs[0], transport=SandboxTransport(estate.world))
    rids = sorted(r for r in estate.world.resources if "/clusters/adxfleet" in r)[:sample]
    for rid in rids:
        kvp = estate.world.resources[rid].properties["keyVaultProperties"]
        update = ClusterUpdate(properties=ClusterProperties(key_vault_properties=KeyVaultProperties(
            key_name=KEY, key_version=version, key_vault_uri=kvp["keyVaultUri"],
            user_identity=kvp.get("userIdentity") or None)))
        client.clusters.begin_update(rid.split("/")[4], rid.rsplit("/", 1)[-1], update).result()
    per = (estate.clock.timestamp() - t0) / len(rids)
    return {"sample": len(rids), "per_cluster_s": round(per, 2), "fleet_s": round(per * n, 1), "extrapolated": True}


# ---- 2. cost per event ---------------------------------------------------------------------------
def event_costs(n: int, inventory: str, repeats: int) -> dict[str, Any]:
    estate = Estate(n, 10, ten=True)
    env = {"KEYSTEWARD_INVENTORY": inventory}
    out: dict[str, Any] = {"bindings": n, "inventory": inventory}
    # A new version of the 10-binding key: handler, work items, confirm passes, to the end.
    ten_event = estate.rotate(TEN_KEY)
    ten = run_to_end(estate, env, lambda app: app.handle_event(ten_event))
    ten.pop("app")
    out["ten_bindings_new_version"] = ten
    samples: dict[str, list[dict[str, Any]]] = {"unused_key": [], "duplicate": []}
    for _ in range(repeats):
        unused_event = estate.rotate(UNUSED_KEY)
        run = run_to_end(estate, env, lambda app, e=unused_event: app.handle_event(e))  # type: ignore[misc]
        run.pop("app")
        samples["unused_key"].append(run)
        # The 10-binding key's event delivered again: its id is in the idempotency table, which
        # every invocation shares (estate.records stands for the Table storage one).
        run = run_to_end(estate, env, lambda app: app.handle_event(ten_event))
        run.pop("app")
        samples["duplicate"].append(run)
    for name, runs in samples.items():
        out[name] = {"cpu_keysteward_s_median": round(statistics.median(r["cpu_keysteward_s"] for r in runs), 4),
                     "cpu_keysteward_s_all": [r["cpu_keysteward_s"] for r in runs],
                     "actions_all": [r["actions"] for r in runs], "calls_all": [r["calls"] for r in runs],
                     "calls": runs[0]["calls"], "actions": runs[0]["actions"], "work_items": runs[0]["work_items"]}
    return out


# ---- 3. a burst ---------------------------------------------------------------------------------
def burst(n_events: int, n_clusters: int) -> dict[str, Any]:
    estate = Estate(n_clusters, 1)
    events = [estate.rotate(KEY) for _ in range(n_events)]
    seq0 = estate.world.last_seq
    run = run_to_end(estate, {}, lambda app: [app.handle_event(e) for e in events])
    run.pop("app")
    patches = [e for e in estate.world.requests_since(seq0) if e.service == "arm" and e.method == "PATCH"]
    return {"events": n_events, "bindings": n_clusters, **run, "patch_requests": len(patches),
            "reconcile_passes_started_by_events": run["actions"].get("reconciled", 0)
            + run["actions"].get("fanned-out", 0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = parser.parse_args(argv)
    quick = args.quick
    n_fleet = 200 if quick else 1000
    report: dict[str, Any] = {"machine": machine(), "command": "python -m benchmarks.bench_fast" + (" --quick" if quick
                                                                                                    else "")}
    with quiet_logs():
        report["pacing"] = [dict(pacing_case(n_fleet, b, other), name=name) for name, b, other in BUCKETS]
        for case in report["pacing"]:
            print(f"pacing {case['name']}: converged {case['converged_s']} s, bound {case['lower_bound_s']} s "
                  f"({case['over_bound']}x), PATCH/binding {case['patch_per_binding']}, 429s {case['patch_429']}",
                  flush=True)
        report["one_at_a_time"] = one_at_a_time(n_fleet, 20)
        print(f"one at a time: {report['one_at_a_time']['fleet_s']} s", flush=True)
        sizes = [1000, 2000] if quick else [1000, 10000]
        report["event_costs"] = [event_costs(size, inv, 1 if quick else 3)
                                 for size in sizes for inv in ("resourcegraph", "arm")]
        for c in report["event_costs"]:
            print(f"{c['inventory']} {c['bindings']}: unused {c['unused_key']['cpu_keysteward_s_median']} s "
                  f"({c['unused_key']['calls'].get('arm_and_graph')} calls), duplicate "
                  f"{c['duplicate']['cpu_keysteward_s_median']} s ({c['duplicate']['calls'].get('arm_and_graph', 0)} "
                  f"calls), 10-binding key {c['ten_bindings_new_version']['calls'].get('arm_and_graph')} calls",
                  flush=True)
        report["burst"] = burst(100, 10)
        print(f"burst: {report['burst']['actions']}, passes {report['burst']['passes']}, "
              f"PATCH {report['burst']['patch_requests']}", flush=True)
    report["coldstart"] = coldstart.main(["--runs", "3" if quick else "9"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(f"wrote {OUT}")
    from benchmarks import plots  # noqa: PLC0415 - matplotlib only when plotting

    for path in plots.plot_pacing(report):
        print(f"wrote {path}")
    return {"pacing_over_bound": [c["over_bound"] for c in report["pacing"]],
            "pacing_patch_per_binding": [c["patch_per_binding"] for c in report["pacing"]],
            "coldstart_ratio": report["coldstart"]["as_deployed"]["ratio"]}


if __name__ == "__main__":
    main()
