"""One in-process soak scenario: a seeded random schedule of steps over a small estate, then
recovery, then the invariant checks. Everything random comes from ``random.Random(seed)`` and
the World's own seeded generators, so a seed replays the same schedule.

The triggers are driven through their user functions (``on_key_vault_event``,
``reconcile_schedule``, ``process_work_item``) as the Functions host would call them; runbooks
through :mod:`shared.runbooks` with a step hook that plays the process dying mid-run.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy

import functions._root as root
from functions.key_events import on_key_vault_event
from functions.schedules import reconcile_schedule, rotation_schedule
from functions.work_items import process_work_item
from sandbox.faults import ThrottleSettings
from sandbox.world import World
from shared.app import Keysteward, build
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, Principal
from shared.config import load_settings
from shared.journal import Journal
from shared.model import KeyRef
from shared.notify import RecordingNotifier
from shared.runbooks import PHASES, STEPS, RestoreRequest, RevokeRequest, Runbooks
from shared.tags import RETIRE_TAG
from shared.workqueue import MemoryQueue
from tests.app.estate import grid_event
from tests.memory_journal import MemoryJournal
from tests.soak import invariants as inv
from tests.soak.harness import (
    HOLD_TAG,
    POOL_SIZE,
    Inbox,
    SoakEstate,
    admin,
    build_estate,
    current_version,
    jwk_of,
    key_pool,
    recording_transport,
    snapshot,
    world_requests,
)

ONCALL = Principal("11111111-aaaa-4000-8000-000000000001", "soak on-call",
                   frozenset({ROLE_READ, ROLE_REVOKE, ROLE_RESTORE}))
MAX_DEQUEUE = 5  # the host's maxDequeueCount: then the message goes to the poison queue
RECOVERY_ROUNDS = 14
RETENTION = timedelta(hours=24)


class Killed(BaseException):
    """The process dies here: nothing in the service catches it."""


class SoakFailure(AssertionError):
    pass


@dataclass
class Soak:
    seed: int
    journal_factory: Callable[[World], Journal] | None = None
    rng: random.Random = field(init=False)
    world: World = field(init=False)
    estate: SoakEstate = field(init=False)
    app: Keysteward = field(init=False)
    queue: MemoryQueue = field(init=False)
    inbox: Inbox = field(init=False)
    app_log: list[dict[str, Any]] = field(default_factory=list)
    trail: list[str] = field(default_factory=list)
    external: set[tuple[str, str]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    dequeues: dict[str, int] = field(default_factory=dict)
    retry_events: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    two_person: bool = False  # the two-person rule is on in this seed (junk runs wait for approval)
    timer_ok: bool = False  # the last timer pass ran to completion

    # ---- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        self.rng = random.Random(self.seed)
        self.world = World(seed=self.seed)
        self.world.service_settings.cosmos_recovery_s = 600.0  # recovers inside the verify deadline
        self.estate = build_estate(self.world, self.rng)
        self.two_person = self.rng.random() < 0.5
        settings = load_settings({
            "KEYSTEWARD_SUBSCRIPTIONS": ",".join(self.estate.subs),
            "KEYSTEWARD_VAULTS": ",".join(self.estate.vaults.values()),
            "KEYSTEWARD_ARM_WRITE_BURST": "1000",
            "KEYSTEWARD_ARM_WRITES_PER_S": "100",
            "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "60",
            "KEYSTEWARD_TWO_PERSON_RULE": "true" if self.two_person else "false",
        })
        self.queue = MemoryQueue()
        journal = self.journal_factory(self.world) if self.journal_factory else MemoryJournal(self.world.clock)
        self.app = build(settings, clock=self.world.clock,
                         transport_factory=lambda: recording_transport(self.world, self.app_log),
                         credential=inv_credential(), notifier=RecordingNotifier(), queue=self.queue,
                         polling_interval=0, journal=journal)
        root.install(self.app)
        self.inbox = Inbox(self.world, duplicate_rate=self.rng.choice([0.0, 0.3, 1.0]),
                           shuffle=self.rng.random() < 0.5)

    # ---- the schedule ---------------------------------------------------------------------------
    def run(self) -> None:
        self.setup()
        try:
            steps: list[tuple[str, Callable[[], None], float]] = [
                ("rotate", self.rotate, 3.0),
                ("deliver", self.deliver, 3.0),
                ("faults", self.faults, 2.0),
                ("lro", self.lro, 1.0),
                ("throttle", self.throttle, 1.0),
                ("advance", self.advance, 2.5),
                ("timer", self.timer, 2.0),
                ("queue", self.run_queue, 2.5),
                ("drift", self.drift, 0.7),
                ("retire-tag", self.retire_tag, 0.8),
                ("revoke", self.revoke, 1.0),
                ("restore", self.restore, 0.8),
                ("lose-queue", self.lose_queue, 0.3),
                ("rotation-timer", self.rotation_timer, 0.2),
                ("outside-rotate", self.outside_rotate, 1.0),
                ("policy-fire", self.policy_fire, 0.4),
                ("junk-burst", self.junk_burst, 0.4),
            ]
            names = [s[0] for s in steps]
            actions = {s[0]: s[1] for s in steps}
            weights = [s[2] for s in steps]
            for _ in range(self.rng.randint(6, 16)):
                name = self.rng.choices(names, weights)[0]
                self.step(name, actions[name])
            self.recover()
            self.check_end()
        finally:
            root.install(None)
        if self.problems:
            raise SoakFailure(self.report())

    def report(self) -> str:
        head = "\n  ".join(self.problems[:10])
        return f"{len(self.problems)} violation(s):\n  {head}\nsteps: {' | '.join(self.trail)}"

    def step(self, name: str, action: Callable[[], None]) -> None:
        """Runs one step and checks I1 over what it disabled."""
        before = snapshot(self.world, self.estate)
        seq = self.world.last_seq
        self.external = set()  # what the soak itself disables in this step
        self.trail.append(name)
        self.counts[name] = self.counts.get(name, 0) + 1
        held_before = self.in_force()
        mark = len(self.app_log)
        self.timer_ok = False
        action()
        after = snapshot(self.world, self.estate)
        held_after = {r.run_id for r in self.in_force()}
        self.problems += inv.check_i7([r for r in held_before if r.run_id in held_after], before=before, after=after,
                                      requests=self.app_log[mark:], versions_settled=name == "timer" and self.timer_ok)
        disables = inv.disables_between(before, after, world_requests(self.world, seq))
        if disables:
            self.problems += inv.check_i1(disables, after, retention=RETENTION,
                                          revocation_runs=self.revocation_ids(), external=self.external)
            # A tag copied from an older version is no proof of a revocation: flag those too, unless
            # the hold of that revocation disabled the version (its run records the act).
            old = before.version_map()
            for d in disables:
                by = d.tags.get(inv.REVOKED_BY_TAG)
                prior = old[(d.key, d.version)].tags.get(inv.REVOKED_BY_TAG)
                if by is not None and by == prior and (d.key, d.version) not in self.external \
                        and d.version not in self.held_by(by):
                    self.problems.append(f"I1: {d.key}/{d.version} disabled while carrying an old "
                                         f"{inv.REVOKED_BY_TAG}={by} tag (no revocation disabled it now)")

    def in_force(self) -> list[inv.InForce]:
        """The revocations in force with no restore of theirs under way (I7 exempts a restore)."""
        return [inv.InForce(r.run_id, KeyRef(*_split_key(r.key)).key_id, r.mode)
                for r in self.app.journal.revocations() if not r.restoring]

    def held_by(self, run_id: str) -> set[str]:
        """The versions the hold of revocation ``run_id`` disabled (its ``hold`` steps)."""
        return {str(v) for s in self.app.journal.steps(run_id) if s.name == "hold"
                for v in s.result.get("disabled", [])}

    def revocation_ids(self) -> list[str]:
        return [r.run_id for r in self.app.journal.list_runs(limit=1000) if r.kind == "revoke"]

    # ---- steps ------------------------------------------------------------------------------------
    def pick_key(self, *, foreign: float = 0.15) -> KeyRef:
        if self.rng.random() < foreign:
            return self.estate.foreign_key
        return self.rng.choice(self.estate.keys)

    def rotate(self) -> None:
        key = self.pick_key()
        kc = self.estate.key_client(key.vault_url)
        if self.rng.random() < 0.1:
            self.operator(lambda: kc.rotate_key(key.name))
        else:
            material = jwk_of(key_pool()[self.rng.randrange(POOL_SIZE)])
            self.operator(lambda: kc.import_key(key.name, material))
        self.world.tick(self.world.clock.now())

    def operator(self, action: Callable[[], object]) -> bool:
        """A person's call through the SDK: fault rules hit it too; an injected fault is answered
        before anything changes, so a failed call changed nothing. Tried a few times."""
        for _ in range(3):
            try:
                action()
                return True
            except Exception:
                self.counts["operator-retry"] = self.counts.get("operator-retry", 0) + 1
        return False

    def deliver(self) -> None:
        """Hands what Event Grid delivered to the trigger: in the order it came, shuffled, with
        extra duplicates. A failed invocation is redelivered later (or lost: the timer heals)."""
        events = self.retry_events + self.inbox.take()
        self.retry_events = []
        if self.rng.random() < 0.3:
            self.rng.shuffle(events)
        if events and self.rng.random() < 0.3:
            events.insert(self.rng.randrange(len(events) + 1), self.rng.choice(events))
        for raw in events:
            try:
                on_key_vault_event(grid_event(raw))
            except Exception:
                if self.rng.random() < 0.8:
                    self.retry_events.append(raw)

    def faults(self) -> None:
        rules = []
        for _ in range(self.rng.randint(1, 3)):
            path = self.rng.choice(["Microsoft.Kusto/clusters", "Microsoft.DocumentDB", "/keys/", "/keys$",
                                    "/versions", "/clusters/", "/databaseAccounts/", "Microsoft.KeyVault", ".*"])
            rule: dict[str, Any] = {"path": path}
            if self.rng.random() < 0.6:
                rule["method"] = self.rng.choice(["GET", "PATCH", "PUT", "POST"])
            kind = self.rng.choice(["429", "429-ra", "500", "503", "drop", "latency"])
            if kind == "429":
                rule["status"] = 429
            elif kind == "429-ra":
                rule.update(status=429, retry_after=self.rng.choice([1, 2, 5, 30]))
            elif kind == "drop":
                rule["drop"] = True
            elif kind == "latency":
                rule["latency_ms"] = self.rng.choice([1, 3])
            else:
                rule["status"] = int(kind)
            if self.rng.random() < 0.7:
                rule["times"] = self.rng.randint(1, 12)
            else:
                rule["probability"] = self.rng.choice([0.1, 0.3, 0.5])
            rules.append(rule)
        admin(self.world, "POST", "/sandbox/faults", {"rules": rules, "append": self.rng.random() < 0.5})

    def lro(self) -> None:
        admin(self.world, "POST", "/sandbox/lro", {"duration_s": self.rng.choice([0, 5, 30, 120, 900]),
                                                   "fail_rate": self.rng.choice([0.0, 0.0, 0.2, 0.5, 1.0])})

    def throttle(self) -> None:
        body = self.rng.choice([
            {"arm_writes_per_s": 0.5, "arm_write_burst": 3},
            {"arm_reads_per_s": 1, "arm_read_burst": 5},
            {"kv_ops_per_10s": 10},
            {"kv_ops_per_10s": 3, "arm_write_burst": 2, "arm_writes_per_s": 0.2},
        ])
        admin(self.world, "POST", "/sandbox/throttle", body)

    def advance(self) -> None:
        delta = self.rng.choice([
            timedelta(minutes=self.rng.randint(1, 30)),
            timedelta(hours=self.rng.randint(1, 6)),
            timedelta(hours=23, minutes=59),
            timedelta(hours=24, minutes=1),
            timedelta(days=self.rng.randint(2, 4)),
        ])
        self.world.clock.advance(delta)

    def timer(self) -> None:
        try:
            reconcile_schedule(TimerRequest(past_due=self.rng.random() < 0.2))
            self.timer_ok = True
        except Exception:
            self.counts["timer-failed"] = self.counts.get("timer-failed", 0) + 1

    def rotation_timer(self) -> None:
        try:
            rotation_schedule(TimerRequest(past_due=False))
        except Exception:
            self.counts["rotation-timer-failed"] = self.counts.get("rotation-timer-failed", 0) + 1

    def run_queue(self, *, limit: int = 60) -> None:
        """The host's queue trigger: delays in sandbox time, a failed message becomes visible
        again and is retried up to MAX_DEQUEUE times, then goes to the poison queue."""
        for n in range(limit):
            popped = self.queue.pop()
            if popped is None:
                return
            item, delay = popped
            self.world.clock.advance(delay)
            body = item.to_json()
            count = self.dequeues.get(body, 0) + 1
            self.dequeues[body] = count
            try:
                process_work_item(QueueMessage(id=f"m{n}", body=body.encode(), dequeue_count=count))
            except Exception:
                if count < MAX_DEQUEUE:
                    self.queue.put(item, delay=timedelta(seconds=30))
                else:
                    self.counts["poisoned"] = self.counts.get("poisoned", 0) + 1

    def lose_queue(self) -> None:
        """In-memory Azurite restarted: queued work items are gone (the timer must heal)."""
        while self.queue.pop() is not None:
            pass

    def revoked_key(self) -> KeyRef:
        """A key under a revocation in force when there is one (mostly), else any of the estate."""
        held = list(self.app.journal.revocations())
        if held and self.rng.random() < 0.8:
            return KeyRef(*_split_key(self.rng.choice(held).key))
        return self.pick_key(foreign=0.0)

    def outside_rotate(self) -> None:
        """Someone rotates a key outside keysteward (portal, script): during a revocation, the
        hold must disable the new version and no binding may follow it."""
        key = self.revoked_key()
        self.operator(lambda: self.estate.key_client(key.vault_url).rotate_key(key.name))
        self.world.tick(self.world.clock.now())

    def policy_fire(self) -> None:
        """Someone gives a key a rotation policy, and Key Vault fires it a week later."""
        key = self.revoked_key()
        policy = KeyRotationPolicy(lifetime_actions=[KeyRotationLifetimeAction("Rotate", time_after_create="P7D")])
        self.operator(lambda: self.estate.key_client(key.vault_url).update_key_rotation_policy(key.name, policy))
        self.world.clock.advance(timedelta(days=7, hours=1))
        self.world.tick(self.world.clock.now())

    def junk_burst(self) -> None:
        """A burst of revocations that wait for a second person forever (two-person rule on), or
        that are refused (off): none of them may hide a revocation in force."""
        key = self.pick_key(foreign=0.0)
        books = self.app.runbooks
        for n in range(self.rng.randint(5, 25)):
            try:
                books.revoke(RevokeRequest(key=key, mode="disable", reason=f"junk {n}", ticket="JUNK"), ONCALL)
            except Exception:
                self.counts["junk-error"] = self.counts.get("junk-error", 0) + 1
            if not self.two_person:
                return  # without the rule a revoke acts: one is enough

    def drift(self) -> None:
        """Someone disables a non-current version by hand (drift repair must undo it when the
        rule forbids it)."""
        key = self.pick_key(foreign=0.0)
        live = self.world.vaults[key.vault_name].keys[key.name.lower()]
        old = [v for v in list(live.versions.values())[:-1] if v.enabled]
        if not old:
            return
        target = self.rng.choice(old)
        self.external.add((key.key_id, target.version))
        self.operator(lambda: self.estate.key_client(key.vault_url).update_key_properties(
            key.name, target.version, enabled=False))

    def retire_tag(self) -> None:
        key = self.pick_key(foreign=0.0)
        live = self.world.vaults[key.vault_name].keys[key.name.lower()]
        cur = live.current
        self.operator(lambda: self.estate.key_client(key.vault_url).update_key_properties(
            key.name, cur.version, tags={**cur.tags, RETIRE_TAG: "true"}))

    def _hook(self) -> Callable[[str, str, str], None] | None:
        if self.rng.random() < 0.5:
            return None
        at = (self.rng.choice(STEPS), self.rng.choice(PHASES))

        def hook(_run: str, step: str, phase: str) -> None:
            if (step, phase) == at:
                raise Killed(f"killed at {step}/{phase}")

        return hook

    def revoke(self) -> None:
        key = self.pick_key(foreign=0.0)
        choice = self.rng.random()
        if choice < 0.3:
            target = key.with_version(current_version(self.world, key))
        elif choice < 0.5:
            versions = list(self.world.vaults[key.vault_name].keys[key.name.lower()].versions)
            target = key.with_version(self.rng.choice(versions))
        else:
            target = key
        books = Runbooks(self.app.runbooks.deps, hook=self._hook())
        budget = self.rng.choice([timedelta(0), timedelta(0), timedelta(hours=2)])
        emergency = self.two_person and self.rng.random() < 0.7
        try:
            books.revoke(RevokeRequest(key=target, mode="disable", reason="soak", ticket=f"SOAK-{self.seed}",
                                       emergency=emergency), ONCALL, budget=budget)
        except Killed:
            self.counts["killed"] = self.counts.get("killed", 0) + 1
        except Exception:
            self.counts["revoke-error"] = self.counts.get("revoke-error", 0) + 1

    def restore(self) -> None:
        done = [r for r in self.app.journal.list_runs(limit=1000)
                if r.kind == "revoke" and r.finished and r.status != "canceled"]
        if not done:
            return
        run = self.rng.choice(done)
        books = Runbooks(self.app.runbooks.deps, hook=self._hook())
        try:
            books.restore(RestoreRequest(run_id=run.run_id, reason="soak over", ticket=f"SOAK-{self.seed}"),
                          ONCALL, budget=self.rng.choice([timedelta(0), timedelta(hours=2)]))
        except Killed:
            self.counts["killed"] = self.counts.get("killed", 0) + 1
        except Exception:
            self.counts["restore-error"] = self.counts.get("restore-error", 0) + 1

    # ---- recovery and the end checks ------------------------------------------------------------------
    def recover(self) -> None:
        """Faults cleared, throttling and LROs back to defaults; then timer passes (with the
        queue and whatever Event Grid still delivers) until a pass writes nothing."""
        admin(self.world, "DELETE", "/sandbox/faults")
        admin(self.world, "POST", "/sandbox/throttle", dataclasses.asdict(ThrottleSettings()))
        admin(self.world, "POST", "/sandbox/lro", {"duration_s": 0, "fail_rate": 0.0})
        quiet = 0
        for _ in range(RECOVERY_ROUNDS):
            self.step("advance", lambda: self.world.clock.advance(timedelta(minutes=20)))
            mark = len(self.app_log)
            self.step("deliver", self.deliver)
            self.step("timer", self.timer)
            self.step("queue", self.run_queue)
            wrote = any(inv.is_write(r, accepted_only=True) for r in self.app_log[mark:])
            running = self.app.journal.list_unfinished()
            busy = snapshot(self.world, self.estate).busy
            quiet = quiet + 1 if not wrote and not running and not busy and not self.queue.items else 0
            if quiet >= 2:
                return
        self.problems.append(f"recovery: no quiet pass after {RECOVERY_ROUNDS} rounds "
                             f"(running runs: {[r.run_id for r in self.app.journal.list_unfinished()]})")

    def check_end(self) -> None:
        end = snapshot(self.world, self.estate)
        vaults = list(self.estate.vaults.values())
        self.problems += inv.check_i2(end, vaults=vaults, hold_tag=HOLD_TAG)
        self.problems += inv.check_i3(self.app.journal.list_runs(limit=1000))
        self.problems += inv.check_i7(self.in_force(), before=end, after=end, requests=[], versions_settled=True)
        # I4: every event again (each once, in a shuffled order), the timer and the queue again.
        mark = len(self.app_log)
        seq = self.world.last_seq
        events = list(self.inbox.seen.values())
        self.rng.shuffle(events)
        for raw in events:
            try:
                on_key_vault_event(grid_event(raw))
            except Exception as err:
                self.problems.append(f"I4: re-delivering {raw['id']} failed: {err}")
        self.timer()
        self.run_queue()
        self.problems += inv.check_i4(self.app_log[mark:])
        after = snapshot(self.world, self.estate)
        if inv.disables_between(end, after, world_requests(self.world, seq)):
            self.problems.append("I4: the repeated passes disabled a version")
        self.problems += inv.check_i5(world_requests(self.world, 0))
        self.problems += inv.check_i5(self.app_log)
        self.problems += inv.check_i6(self.app_log, vaults=vaults)


def _split_key(uri: str) -> tuple[str, str]:
    """(vault URL, key name) of a versionless key URI."""
    vault, _, name = uri.rstrip("/").partition("/keys/")
    return vault, name.split("/", 1)[0]


def inv_credential() -> Any:
    from sandbox.transport import StaticTokenCredential

    return StaticTokenCredential()
