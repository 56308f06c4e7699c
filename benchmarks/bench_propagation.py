"""Fleet propagation: how long until every pinned cluster is on a rotated key's new version.

Not a test: prints a table and writes ``benchmarks/out/propagation.json`` (plots come from
``benchmarks/plots.py``; ``benchmarks/RESULTS.md`` explains the method and the figures).

    python -m benchmarks.bench_propagation [--quick] [--runs N] [--lro-seconds S]

Everything is measured in *sandbox* time on the manual clock, so LRO durations of minutes and
the ARM token buckets' refill are exact and a run costs seconds of wall time; CPU (wall-clock
``time.process_time``) is reported separately.

- keysteward: the Key Vault event is handled, fanned out one work item per subscription, and
  every work item (and each confirm pass it re-enqueues) runs as the Functions host would run
  it: on its own instance as soon as its visibility delay has passed. Concurrent work items
  share one sandbox clock through a small discrete-event scheduler (:class:`Scheduler`):
  sandbox time moves only when every running work item is waiting (on the write budget or a
  retry), to the earliest wake-up or queue due time.
- lower bound: per subscription with N writes, bucket B and refill r, the last write can go
  out at ``max(0, (N - B) / r)``; it completes one LRO later. The bound is the worst
  subscription's.
- baseline: one cluster at a time, ``begin_update(...).result()`` with the SDK's default
  polling, as the Azure samples do.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import structlog
from azure.keyvault.keys import KeyClient
from azure.mgmt.kusto import KustoManagementClient
from azure.mgmt.kusto.models import ClusterProperties, ClusterUpdate, KeyVaultProperties

from sandbox import seeds
from sandbox.clock import SandboxClock
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.wire import Request, Response
from sandbox.world import World
from shared.app import Keysteward, build
from shared.config import load_settings
from shared.events import IgnoredEvent, KeyVaultEvent, parse_event
from shared.notify import LogNotifier
from shared.reconcile import ActionKind, PassResult, WriteBudget
from shared.workqueue import WorkItem

OUT = Path(__file__).resolve().parent / "out" / "propagation.json"

# Azure Resource Manager's documented per-subscription write budget (token bucket), which the
# sandbox enforces: 200 requests, refilled at 10 per second.
ARM_WRITE_BURST = 200
ARM_WRITES_PER_S = 10.0
# A customer-managed-key change on an Azure Data Explorer cluster is a long-running
# "ServiceConfigurationAlter" operation; two minutes is a conservative, realistic figure.
DEFAULT_LRO_S = 120.0
# The first confirm pass runs this long after the apply pass (then 2x, 4x ... capped at 10 min).
DEFAULT_CONFIRM_DELAY_S = 10.0
KEY_NAME = "cmk-fleet"
UNBOUND_KEY = "cmk-unbound"
GRID_CAPTURE = "https://bench-capture.test"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---- sandbox time for concurrent work items ----------------------------------------------------
class SimClock(SandboxClock):
    """The sandbox's manual clock; while a :class:`Scheduler` runs, ``sleep`` waits for it
    (the scheduler moves time when every work item waits) instead of moving time itself."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduler: Scheduler | None = None

    def sleep(self, seconds: float) -> None:
        scheduler = self.scheduler
        if scheduler is not None and seconds > 0:
            scheduler.sleep(seconds)
        else:
            super().sleep(seconds)


class Scheduler:
    """A discrete-event driver for tasks (work items) that run concurrently in sandbox time.

    Each task runs on its own thread, as on its own Functions instance. Sandbox time moves only
    when every running task is asleep on the clock: then to the earliest of the sleepers'
    wake-ups and the queue's due times. This is exact when each task has at most one thread
    that can act at a time, which is why the benchmark runs keysteward with
    ``KEYSTEWARD_MAX_CONCURRENCY=1`` (the sandbox answers in zero sandbox time, so parallel
    requests inside one work item would not change any sandbox-time figure).
    """

    STALL_S = 120.0  # wall seconds without any progress before the run is declared stuck

    def __init__(self, clock: SimClock, *, on_advance: Callable[[float], None] | None = None) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._sleepers: list[tuple[int, int, list[bool]]] = []  # (wake-up in us, order, woken)
        self._due: list[tuple[int, int, Callable[[], None]]] = []  # (due in us, order, task)
        self._running = 0
        self._on_advance = on_advance
        self.errors: list[BaseException] = []
        self.tasks_run = 0
        self.advances = 0

    def _now_us(self) -> int:
        return round(self._clock.timestamp() * 1_000_000)

    def sleep(self, seconds: float) -> None:
        with self._cond:
            # Sandbox time is kept in whole microseconds; a wait is at least one, so that a
            # caller polling a token bucket always sees time move.
            now = self._now_us()
            wake = max(now + 1, math.ceil(now + seconds * 1_000_000))
            woken = [False]
            heapq.heappush(self._sleepers, (wake, next(self._seq), woken))
            self._cond.notify_all()
            while not woken[0]:
                self._cond.wait()

    def submit(self, task: Callable[[], None], *, delay_s: float = 0.0) -> None:
        with self._cond:
            due = self._now_us() + math.ceil(max(0.0, delay_s) * 1_000_000)
            heapq.heappush(self._due, (due, next(self._seq), task))
            self._cond.notify_all()

    def _run(self, task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as err:  # noqa: BLE001 - reported by run() after the simulation
            self.errors.append(err)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def run(self) -> None:
        """Runs until no task is due, running or asleep; raises the first task error."""
        self._clock.scheduler = self
        last_progress = time.monotonic()
        try:
            with self._cond:
                while True:
                    now = self._now_us()
                    while self._due and self._due[0][0] <= now:
                        _, _, task = heapq.heappop(self._due)
                        self._running += 1
                        self.tasks_run += 1
                        threading.Thread(target=self._run, args=(task,), daemon=True).start()
                        last_progress = time.monotonic()
                    if self._running == 0 and not self._due and not self._sleepers:
                        break
                    if len(self._sleepers) >= self._running and (self._sleepers or self._due):
                        nxt = min(x[0][0] for x in (self._sleepers, self._due) if x)
                        if nxt > now:
                            self._clock.set(EPOCH + timedelta(microseconds=nxt))
                            self.advances += 1
                            if self._on_advance is not None:
                                self._on_advance(nxt / 1_000_000)
                            now = nxt
                        while self._sleepers and self._sleepers[0][0] <= now:
                            heapq.heappop(self._sleepers)[2][0] = True
                        self._cond.notify_all()
                        last_progress = time.monotonic()
                        continue
                    if not self._cond.wait(timeout=1.0) and time.monotonic() - last_progress > self.STALL_S:
                        raise RuntimeError(f"simulation stalled at {now} us: {self._running} running, "
                                           f"{len(self._sleepers)} asleep, {len(self._due)} due")
        finally:
            self._clock.scheduler = None
        if self.errors:
            raise self.errors[0]


class HostQueue:
    """The work queue as the Functions host plays it: a message becomes visible after its
    delay and then runs at once, on its own instance (a scheduler task)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.process: Callable[[WorkItem], None] | None = None
        self.put_count = 0

    def put(self, item: WorkItem, *, delay: timedelta = timedelta(0)) -> None:
        process = self.process
        if process is None:
            raise RuntimeError("HostQueue.process is not set")
        self.put_count += 1
        self._scheduler.submit(lambda: process(item), delay_s=delay.total_seconds())


class MeteredWorld(World):
    """The sandbox world, adding up the CPU time its own request handling takes, so the
    sandbox's share can be taken out of keysteward's CPU figures."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cpu_lock = threading.Lock()
        self.handle_cpu_s = 0.0

    def handle(self, req: Request) -> Response:
        started = time.thread_time()
        try:
            return super().handle(req)
        finally:
            spent = time.thread_time() - started
            with self._cpu_lock:
                self.handle_cpu_s += spent


# ---- the fleet ------------------------------------------------------------------------------------
@dataclass
class Fleet:
    world: MeteredWorld
    clock: SimClock
    subscriptions: list[str]
    vault_url: str
    clusters: list[str]  # lower-cased resource ids of the pinned clusters
    per_subscription: dict[str, int]
    seed_wall_s: float
    capture: GridCapture

    @property
    def cluster_set(self) -> frozenset[str]:
        return frozenset(self.clusters)

    def cluster_version(self, rid: str) -> tuple[str, str]:
        """(keyVersion, provisioningState) straight from the sandbox's state (no request)."""
        props = self.world.resources[rid].properties
        return str((props.get("keyVaultProperties") or {}).get("keyVersion") or ""), str(
            props.get("provisioningState") or ""
        )


class GridCapture:
    """An Event Grid subscription on the sandbox that keeps the raw events it receives."""

    def __init__(self, world: World) -> None:
        self.events: list[dict[str, Any]] = []
        world.eventgrid.register_local_endpoint(GRID_CAPTURE, self._receive)
        world.eventgrid.subscribe(endpoint=GRID_CAPTURE + "/events", schema="EventGridSchema")
        world.tick(world.clock.now())

    def _receive(
        self, _method: str, _path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        payload = json.loads(body) if body else []
        kind = {k.lower(): v for k, v in headers.items()}.get("aeg-event-type", "").lower()
        if kind == "subscriptionvalidation":
            code = payload[0]["data"]["validationCode"]
            return 200, {"Content-Type": "application/json"}, json.dumps({"validationResponse": code}).encode()
        self.events.extend(payload)
        return 200, {}, b""


def build_fleet(n_clusters: int, n_subscriptions: int, *, lro_s: float, unbound_key: bool = False) -> Fleet:
    """``n_clusters`` Kusto clusters pinned to v1 of one key, round-robin over the subscriptions,
    all through one user-assigned identity granted on the vault (``sandbox.seeds.generate_fleet``)."""
    started = time.perf_counter()
    doc = seeds.generate_fleet(n_clusters, 0, n_subscriptions, versions=1)
    keys = doc["vaults"][0]["keys"]
    # Data Explorer accepts RSA 2048 only (keysteward's default key sizes say the same).
    keys[0]["size"] = 2048
    if unbound_key:
        keys.append({"name": UNBOUND_KEY, "size": 2048, "versions": [{"label": "v1"}]})
    subs = [str(s["id"]).lower() for s in doc["subscriptions"]]
    clock = SimClock()
    world = MeteredWorld(subscriptions=subs, clock=clock)
    result = seeds.apply_seed(world, doc)
    world.lro.duration_s = lro_s
    world.throttle.reset()  # Azure's defaults, buckets full
    clusters = [rid.lower() for name, rid in result.resources.items() if name.startswith("adxfleet")]
    per_sub = Counter(rid.split("/")[2] for rid in clusters)
    fleet = Fleet(world, clock, subs, result.vault_urls["kv-fleet"], clusters, dict(per_sub),
                  time.perf_counter() - started, GridCapture(world))
    # An hour passes before the rotation: the seed's writes are long forgotten by the buckets.
    clock.advance(timedelta(hours=1))
    return fleet


def rotate(fleet: Fleet, key: str = KEY_NAME) -> tuple[str, KeyVaultEvent]:
    """Rotates ``key``; returns the new version and its KeyNewVersionCreated event, parsed."""
    client = KeyClient(fleet.vault_url, StaticTokenCredential(), transport=SandboxTransport(fleet.world))
    version = str(client.rotate_key(key).properties.version)
    fleet.world.tick(fleet.clock.now())
    return version, new_version_event(fleet, key, version)


def new_version_event(fleet: Fleet, key: str, version: str) -> KeyVaultEvent:
    for raw in fleet.capture.events:
        data = raw.get("data") or {}
        if str(raw.get("eventType", "")).endswith("KeyNewVersionCreated") and data.get("Version") == version \
                and data.get("ObjectName") == key:
            parsed = parse_event(event_id=raw["id"], event_type=raw["eventType"], data=data, source=raw.get("topic"),
                                 subject=raw.get("subject"), event_time=raw.get("eventTime"))
            if isinstance(parsed, IgnoredEvent):
                break
            return parsed
    raise RuntimeError(f"no KeyNewVersionCreated event for {key}/{version}")


@contextmanager
def quiet_logs() -> Iterator[None]:
    """keysteward's production logging (JSON lines, INFO) written to the null device, so its
    cost is in the CPU figures without flooding the terminal."""
    sink: TextIO = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.reset_defaults()
        sink.close()


def make_app(fleet: Fleet, queue: HostQueue, *, confirm_delay_s: float, burst: int, rate: float) -> Keysteward:
    settings = load_settings({
        "KEYSTEWARD_SUBSCRIPTIONS": ",".join(fleet.subscriptions),
        "KEYSTEWARD_VAULTS": fleet.vault_url,
        "KEYSTEWARD_ARM_WRITE_BURST": str(burst),
        "KEYSTEWARD_ARM_WRITES_PER_S": str(rate),
        "KEYSTEWARD_CONFIRM_DELAY_SECONDS": str(confirm_delay_s),
        "KEYSTEWARD_MAX_CONCURRENCY": "1",  # see Scheduler
    })
    clock = fleet.clock
    budget = WriteBudget(rate_per_s=settings.arm_writes_per_s, burst=settings.arm_write_burst,
                         sleep=clock.sleep, monotonic=clock.timestamp)
    return build(settings, clock=clock, transport_factory=lambda: SandboxTransport(fleet.world),
                 credential=StaticTokenCredential(), notifier=LogNotifier(), queue=queue, budget=budget)


# ---- figures ------------------------------------------------------------------------------------
def lower_bound_s(per_subscription: dict[str, int], *, burst: int, rate: float, lro_s: float) -> float:
    """max over subscriptions of max(0, (N - B) / r), plus one LRO for the last write."""
    return max(max(0.0, (n - burst) / rate) for n in per_subscription.values()) + lro_s


def lower_bound_completions(per_subscription: dict[str, int], *, burst: int, rate: float, lro_s: float) -> list[float]:
    """When each binding could at best be converged: write k (1-based) of a subscription goes
    out at max(0, (k - B) / r) and completes one LRO later."""
    out = [max(0.0, (k - burst) / rate) + lro_s for n in per_subscription.values() for k in range(1, n + 1)]
    return sorted(out)


@dataclass
class PassRecord:
    t: float  # sandbox seconds after the rotation, when the pass ended
    subscription: str
    phase: str
    attempt: int
    in_sync: int
    in_flight: int
    started: int
    failed: int


def count_requests(fleet: Fleet, since: int) -> dict[str, int]:
    c: Counter[str] = Counter()
    for e in fleet.world.requests_since(since):
        if e.service == "arm":
            parts = e.path.strip("/").split("/")
            # .../providers/{namespace}/{type} with no resource name: one page of a list call
            is_list = len(parts) >= 3 and parts[-3].lower() == "providers"
            if e.status == 429:
                c["arm_429"] += 1
            elif e.method == "GET":
                c["arm_list_pages" if is_list else "arm_gets"] += 1
            elif e.method in ("PATCH", "PUT", "POST", "DELETE"):
                c["arm_writes"] += 1
            else:
                c["arm_other"] += 1
        elif e.service == "vault":
            c["vault"] += 1
    return dict(c)


def write_counts(fleet: Fleet, since: int) -> Counter[str]:
    return Counter(e.path.lower() for e in fleet.world.requests_since(since)
                   if e.service == "arm" and e.method == "PATCH" and 200 <= e.status < 300)


def run_keysteward(
    fleet: Fleet, *, confirm_delay_s: float, burst: int = ARM_WRITE_BURST, rate: float = ARM_WRITES_PER_S,
    keep_curves: bool = False,
) -> dict[str, Any]:
    """Rotates the key, hands the event to keysteward, runs the queue to the end in sandbox time."""
    lro_s = fleet.world.lro.duration_s
    version, event = rotate(fleet)
    t0 = fleet.clock.timestamp()
    seq0 = fleet.world.last_seq
    passes: list[PassRecord] = []
    passes_lock = threading.Lock()
    scheduler = Scheduler(fleet.clock)
    queue = HostQueue(scheduler)
    app = make_app(fleet, queue, confirm_delay_s=confirm_delay_s, burst=burst, rate=rate)

    def record(item: WorkItem, result: PassResult) -> None:
        rec = PassRecord(
            t=round(fleet.clock.timestamp() - t0, 3), subscription=item.subscription, phase=item.phase,
            attempt=item.attempt, in_sync=result.count(ActionKind.IN_SYNC),
            in_flight=result.count(ActionKind.IN_FLIGHT), started=len(result.started), failed=len(result.failed),
        )
        with passes_lock:
            passes.append(rec)

    def process(item: WorkItem) -> None:
        record(item, app.process_work_item(item))

    handled: list[str] = []
    queue.process = process
    scheduler.submit(lambda: handled.append(app.handle_event(event).action))
    cpu0, wall0, sandbox0 = time.process_time(), time.perf_counter(), fleet.world.handle_cpu_s
    scheduler.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    sandbox_cpu = fleet.world.handle_cpu_s - sandbox0

    # keysteward's view: the latest pass of each subscription; converged once all are in sync.
    n = len(fleet.clusters)
    latest: dict[str, int] = dict.fromkeys(fleet.per_subscription, 0)
    observed_curve: list[tuple[float, int]] = [(0.0, 0)]
    observed_s: float | None = None
    for rec in sorted(passes, key=lambda r: r.t):
        latest[rec.subscription] = rec.in_sync
        total = sum(latest.values())
        if total != observed_curve[-1][1]:
            observed_curve.append((rec.t, total))
        if observed_s is None and total == n:
            observed_s = rec.t
    # The resources' view: when each cluster's update operation completed (sandbox state).
    members = fleet.cluster_set
    ops = [op for op in fleet.world.operations.values()
           if op.resource_id.lower() in members and op.started.timestamp() >= t0 and op.status == "Succeeded"]
    actual = sorted(op.due.timestamp() - t0 for op in ops)
    final = [fleet.cluster_version(rid) for rid in fleet.clusters]
    on_new = sum(1 for v, st in final if v == version and st.lower() == "succeeded")
    writes = write_counts(fleet, seq0)
    reqs = count_requests(fleet, seq0)
    bound = lower_bound_s(fleet.per_subscription, burst=ARM_WRITE_BURST, rate=ARM_WRITES_PER_S, lro_s=lro_s)
    reads = reqs.get("arm_list_pages", 0) + reqs.get("arm_gets", 0)
    out: dict[str, Any] = {
        "bindings": n,
        "subscriptions": len(fleet.subscriptions),
        "lro_s": lro_s,
        "confirm_delay_s": confirm_delay_s,
        "handler_action": handled[0] if handled else None,
        "lower_bound_s": round(bound, 3),
        "observed_convergence_s": observed_s,
        "actual_convergence_s": round(max(actual), 3) if len(actual) == n else None,
        "observed_over_bound": round(observed_s / bound, 4) if observed_s else None,
        "actual_over_bound": round(max(actual) / bound, 4) if len(actual) == n else None,
        "converged_clusters": on_new,
        "work_items": scheduler.tasks_run - 1,
        "passes": len(passes),
        "requests": reqs,
        "arm_writes_per_binding": round(sum(writes.values()) / n, 4),
        "max_writes_on_one_binding": max(writes.values(), default=0),
        "arm_reads_per_binding": round(reads / n, 4),
        "arm_calls_per_binding": round((reads + reqs.get("arm_writes", 0) + reqs.get("arm_429", 0)) / n, 4),
        "cpu_s": round(cpu, 3),
        "cpu_sandbox_s": round(sandbox_cpu, 3),
        "cpu_keysteward_s": round(cpu - sandbox_cpu, 3),
        "wall_s": round(wall, 3),
        "sim_advances": scheduler.advances,
    }
    if keep_curves:
        out["curves"] = {
            "observed": observed_curve,
            "actual": [round(t, 3) for t in actual],
            "lower_bound": lower_bound_completions(fleet.per_subscription, burst=ARM_WRITE_BURST,
                                                   rate=ARM_WRITES_PER_S, lro_s=lro_s),
            "passes": [asdict(p) for p in sorted(passes, key=lambda r: r.t)],
        }
    return out


def run_baseline(fleet: Fleet, *, sample: int) -> dict[str, Any]:
    """One cluster at a time, as the Azure samples do: ``begin_update(...).result()`` with the
    SDK's default polling (30 s, or the operation's Retry-After). Sequential by construction,
    so a sample extrapolates linearly to the fleet."""
    version, _ = rotate(fleet)
    t0, seq0 = fleet.clock.timestamp(), fleet.world.last_seq
    clients: dict[str, KustoManagementClient] = {}
    # Round-robin over subscriptions so that a sample looks like the fleet.
    order = sorted(fleet.clusters, key=lambda rid: (int(rid.rsplit("adxfleet", 1)[-1]), rid))[:sample]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for rid in order:
        sub, rg, name = rid.split("/")[2], rid.split("/")[4], rid.rsplit("/", 1)[-1]
        client = clients.get(sub)
        if client is None:
            client = clients[sub] = KustoManagementClient(StaticTokenCredential(), sub,
                                                          transport=SandboxTransport(fleet.world))
        kvp = fleet.world.resources[rid].properties["keyVaultProperties"]
        update = ClusterUpdate(properties=ClusterProperties(key_vault_properties=KeyVaultProperties(
            key_name=KEY_NAME, key_version=version, key_vault_uri=kvp["keyVaultUri"],
            user_identity=kvp.get("userIdentity") or None)))
        client.clusters.begin_update(rg, name, update).result()
    elapsed = fleet.clock.timestamp() - t0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = sum(1 for rid in order if fleet.cluster_version(rid)[0] == version)
    reqs = count_requests(fleet, seq0)
    n = len(fleet.clusters)
    calls = sum(v for k, v in reqs.items() if k.startswith("arm_"))
    return {
        "sample": len(order),
        "bindings": n,
        "converged_in_sample": done,
        "sample_sandbox_s": round(elapsed, 3),
        "per_cluster_s": round(elapsed / len(order), 3),
        "fleet_sandbox_s": round(elapsed / len(order) * n, 1),
        "extrapolated": len(order) < n,
        "arm_calls_per_binding": round(calls / len(order), 3),
        "requests": reqs,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
    }


def cpu_per_event(fleet: Fleet, *, repeats: int) -> dict[str, Any]:
    """Wall-clock CPU for one KeyNewVersionCreated event over a fleet: a key with no bindings
    (inventory + plan only) and a duplicate event for the already converged fleet (a no-op),
    the latter including the work items it fans out."""
    key_version = str(KeyClient(fleet.vault_url, StaticTokenCredential(), transport=SandboxTransport(fleet.world))
                      .get_key(KEY_NAME).properties.version)
    duplicate = new_version_event(fleet, KEY_NAME, key_version)
    _, unbound = rotate(fleet, UNBOUND_KEY)

    def measure(event: KeyVaultEvent) -> tuple[float, float, float, int, int]:
        scheduler = Scheduler(fleet.clock)
        queue = HostQueue(scheduler)
        app = make_app(fleet, queue, confirm_delay_s=DEFAULT_CONFIRM_DELAY_S, burst=ARM_WRITE_BURST,
                       rate=ARM_WRITES_PER_S)
        def process(item: WorkItem) -> None:
            app.process_work_item(item)

        queue.process = process
        handler_cpu = [0.0]

        def handle() -> None:
            c0 = time.thread_time()
            app.handle_event(event)
            handler_cpu[0] = time.thread_time() - c0

        seq0, sandbox0 = fleet.world.last_seq, fleet.world.handle_cpu_s
        scheduler.submit(handle)
        c0 = time.process_time()
        scheduler.run()
        total = time.process_time() - c0
        writes = sum(write_counts(fleet, seq0).values())
        return total, handler_cpu[0], fleet.world.handle_cpu_s - sandbox0, writes, len(fleet.world.requests_since(seq0))

    out: dict[str, Any] = {"bindings": len(fleet.clusters), "subscriptions": len(fleet.subscriptions),
                           "repeats": repeats}
    for label, event in (("no_bindings", unbound), ("duplicate", duplicate)):
        samples = [measure(event) for _ in range(repeats)]
        out[label] = {
            "cpu_s_median": round(statistics.median(s[0] for s in samples), 4),
            "handler_cpu_s_median": round(statistics.median(s[1] for s in samples), 4),
            "sandbox_cpu_s_median": round(statistics.median(s[2] for s in samples), 4),
            "keysteward_cpu_s_median": round(statistics.median(s[0] - s[2] for s in samples), 4),
            "writes": max(s[3] for s in samples),
            "requests": samples[0][4],
        }
    return out


# ---- the run ------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(), "python": platform.python_version(),
            "platform": platform.platform()}


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several runs: sandbox-time figures are deterministic (checked), CPU and
    wall are medians."""
    first = dict(runs[0])
    for k in ("cpu_s", "cpu_sandbox_s", "cpu_keysteward_s", "wall_s"):
        first[k] = round(statistics.median(r[k] for r in runs), 3)
        first[k + "_all"] = [r[k] for r in runs]
    first["runs"] = len(runs)
    first["sandbox_time_identical_across_runs"] = len({r["observed_convergence_s"] for r in runs}) == 1 and len(
        {r["actual_convergence_s"] for r in runs}) == 1
    return first


def fleet_case(n: int, subs: int, *, lro_s: float, confirm_delay_s: float, runs: int,
               keep_curves: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    results = []
    for i in range(runs):
        fleet = build_fleet(n, subs, lro_s=lro_s)
        r = run_keysteward(fleet, confirm_delay_s=confirm_delay_s, keep_curves=keep_curves and i == 0)
        r["seed_wall_s"] = round(fleet.seed_wall_s, 3)
        results.append(r)
        log(f"  {n:>6} bindings / {subs} subs, run {i + 1}/{runs}: observed {r['observed_convergence_s']} s, "
            f"actual {r['actual_convergence_s']} s, bound {r['lower_bound_s']} s, cpu {r['cpu_s']} s, "
            f"wall {r['wall_s']} s")
    return median_run(results)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small fleets, one run each (a smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="runs of the 1,000-binding case (default 5)")
    parser.add_argument("--lro-seconds", type=float, default=DEFAULT_LRO_S)
    parser.add_argument("--confirm-delay", type=float, default=DEFAULT_CONFIRM_DELAY_S)
    parser.add_argument("--baseline-sample", type=int, default=None,
                        help="clusters updated one at a time (default: all 1,000; --quick: 100)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    lro: float = args.lro_seconds
    confirm: float = args.confirm_delay
    runs: int = args.runs or (1 if quick else 5)
    big = 2000 if quick else 10_000
    big_runs = 1 if quick else 3
    sizes = [100, 1000] if quick else [100, 1000, 3000, 10_000]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "machine": machine(),
        "command": "python3 -m benchmarks.bench_propagation" + (" --quick" if quick else ""),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parameters": {"lro_s": lro, "confirm_delay_s": confirm, "arm_write_burst": ARM_WRITE_BURST,
                       "arm_writes_per_s": ARM_WRITES_PER_S, "max_concurrency": 1},
    }
    with quiet_logs():
        log(f"1,000 clusters over 5 subscriptions, {runs} run(s)")
        report["fleet_1000"] = fleet_case(1000, 5, lro_s=lro, confirm_delay_s=confirm, runs=runs,
                                          keep_curves=True, log=log)
        log(f"{big:,} clusters over 10 subscriptions, {big_runs} run(s)")
        report["fleet_big"] = fleet_case(big, 10, lro_s=lro, confirm_delay_s=confirm, runs=big_runs,
                                         keep_curves=True, log=log)
        log("baseline: one cluster at a time")
        sample = args.baseline_sample or (100 if quick else 1000)
        report["baseline_1000"] = run_baseline(build_fleet(1000, 5, lro_s=lro), sample=sample)
        log("confirm delay sensitivity (1,000 / 5)")
        report["confirm_delay_sweep"] = [
            {k: v for k, v in run_keysteward(build_fleet(1000, 5, lro_s=lro), confirm_delay_s=d).items()
             if k in ("confirm_delay_s", "observed_convergence_s", "actual_convergence_s", "lower_bound_s",
                      "observed_over_bound", "passes", "arm_reads_per_binding")}
            for d in (5.0, 10.0, 30.0, 60.0)
        ]
        log("cost vs fleet size (5 subscriptions)")
        report["cost_vs_size"] = []
        for n in sizes:
            if n == 1000:
                r = report["fleet_1000"]
            else:
                r = fleet_case(n, 5, lro_s=lro, confirm_delay_s=confirm, runs=1, log=log)
            report["cost_vs_size"].append({k: r[k] for k in (
                "bindings", "subscriptions", "lower_bound_s", "observed_convergence_s", "actual_convergence_s",
                "cpu_s", "cpu_keysteward_s", "cpu_sandbox_s", "wall_s", "arm_calls_per_binding",
                "arm_writes_per_binding", "arm_reads_per_binding")})
        log(f"CPU per event, {big:,}-binding inventory")
        fleet = build_fleet(big, 10, lro_s=lro, unbound_key=True)
        run_keysteward(fleet, confirm_delay_s=confirm)  # converge first
        report["cpu_per_event"] = cpu_per_event(fleet, repeats=3 if quick else 5)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1), encoding="utf-8")
    summary = summarize(report)
    for k, v in summary.items():
        print(f"{k:<48} {v}")
    print(f"wrote {OUT}")
    if not args.no_plots:
        try:
            from benchmarks import plots  # noqa: PLC0415 - matplotlib only when plotting

            for path in plots.plot_propagation(report):
                print(f"wrote {path}")
        except ImportError as err:
            print(f"plots skipped: {err}")
    return summary


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    f1, fb, base, ev = report["fleet_1000"], report["fleet_big"], report["baseline_1000"], report["cpu_per_event"]
    return {
        "1000/5 lower bound (s)": f1["lower_bound_s"],
        "1000/5 keysteward observed convergence (s)": f1["observed_convergence_s"],
        "1000/5 resources actually converged (s)": f1["actual_convergence_s"],
        "1000/5 observed / bound": f1["observed_over_bound"],
        "1000/5 baseline one-at-a-time (s)": base["fleet_sandbox_s"],
        "1000/5 ARM calls per binding": f1["arm_calls_per_binding"],
        "1000/5 ARM writes per binding": f1["arm_writes_per_binding"],
        "1000/5 CPU (s, median)": f1["cpu_s"],
        f"{fb['bindings']}/10 lower bound (s)": fb["lower_bound_s"],
        f"{fb['bindings']}/10 observed convergence (s)": fb["observed_convergence_s"],
        f"{fb['bindings']}/10 actually converged (s)": fb["actual_convergence_s"],
        f"{fb['bindings']}/10 ARM calls per binding": fb["arm_calls_per_binding"],
        f"{fb['bindings']}/10 CPU (s, median)": fb["cpu_s"],
        "CPU per event, key without bindings (s)": ev["no_bindings"]["cpu_s_median"],
        "CPU per event, duplicate (s)": ev["duplicate"]["cpu_s_median"],
    }


if __name__ == "__main__":
    main()
