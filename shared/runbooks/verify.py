"""Verification and outcome publishing, shared by both kinds of run.

``verify`` polls the affected services until each reports the change (Cosmos DB
``customerManagedKeyStatus``, Kusto ``state``/``stateReason``), or until
``settings.verify_deadline`` after ``act`` finished. Services that report no key status
(PostgreSQL, Energy: their key is fixed at creation) are listed as unverifiable. When the
drive's budget runs out first, the step is handed back with its progress.

``publish`` sends one outcome event (``KeyRevoked``/``KeyRestored``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog

from shared.errors import TransientError
from shared.journal import Journal
from shared.keyuri import parse_key_uri
from shared.model import ServiceType
from shared.notify import Outcome
from shared.runbooks.deps import Deps
from shared.runbooks.engine import Ctx, HandBack, final_status
from shared.runbooks.model import LEASE_TTL, RunKind, StepName, iso, sampled
from shared.runbooks.results import Acted, BindingDoc, Published, Radius, RestorePlan, Verified
from shared.targets.base import Health, Target
from shared.usage import proof_kind, runbook_proofs

log = structlog.get_logger("keysteward.runbooks")


def reports_key_status(target: Target) -> bool:
    """Whether a service reports key access in its resource (Cosmos DB, Kusto). The services
    whose key is fixed at creation (PostgreSQL, Energy; ``updatable`` False) document no such
    field, so a runbook cannot confirm them and lists them as unverifiable."""
    return target.updatable


class Verifier:
    """The verify and publish steps."""

    def __init__(self, deps: Deps, *, interval: timedelta) -> None:
        self._d = deps
        self._interval = interval

    def _expected(self, ctx: Ctx) -> list[BindingDoc]:
        raw = ctx.results[StepName.RESOLVE]
        if ctx.run.kind == RunKind.REVOKE:
            radius = Radius.from_journal(raw)
            bindings, collateral = radius.bindings, radius.collateral
        else:
            plan = RestorePlan.from_journal(raw)
            bindings, collateral = plan.bindings, plan.collateral
        expected = [b for b in bindings if b.affected == "yes"] + list(collateral)
        held = {p.lower() for p in ctx.acted().held or {}}
        return [d for d in expected if (d.principal_id or "").lower() not in held]

    def verify(self, ctx: Ctx) -> Verified:
        journal: Journal = self._d.journal
        clock = self._d.clock
        want = Health.REVOKED if ctx.run.kind == RunKind.REVOKE else Health.OK
        acted_at = ctx.finished.get(StepName.ACT) or clock.now()
        deadline = acted_at + self._d.settings.verify_deadline
        ctx.hold_until = deadline
        previous = next((s.result for s in journal.steps(ctx.run.run_id) if s.name == StepName.VERIFY), {})
        progress = Verified.from_journal(previous)
        confirmed: dict[str, str] = dict(progress.confirmed)
        gone: list[str] = list(progress.gone)
        unverifiable: list[str] = []
        pending: set[str] = set()
        last: dict[str, str] = {}
        services = {d.resource_id: ServiceType(d.service) for d in self._expected(ctx)}
        for rid, service in services.items():
            target = self._d.targets.get(service)
            if target is None or not reports_key_status(target):
                unverifiable.append(rid)
            elif rid not in confirmed and rid not in gone:
                pending.add(rid)
        while True:
            for rid, seen in self._observe(sorted(pending), services).items():
                if seen is None:
                    gone.append(rid)
                    pending.discard(rid)
                    continue
                health, text = seen
                last[rid] = text
                if health == want:
                    confirmed[rid] = iso(clock.now())
                    pending.discard(rid)
            ctx.lease = journal.renew_lease(ctx.lease, LEASE_TTL)
            now = clock.now()
            result = Verified(expected=want, deadline=iso(deadline), confirmed=confirmed, gone=tuple(gone),
                              unverifiable=tuple(unverifiable),
                              unconfirmed={r: last.get(r, "") for r in sorted(pending)})
            if not pending or now >= deadline:
                return dataclasses.replace(result, proofs=self._proofs(ctx, result, acted_at))
            wait = min(self._interval, deadline - now)
            if now + wait > ctx.budget_end:
                raise HandBack(dataclasses.replace(result, unconfirmed={}, pending=tuple(sorted(pending))))
            clock.sleep(wait.total_seconds())

    def _proofs(self, ctx: Ctx, result: Verified, acted_at: datetime) -> dict[str, str]:
        """Per expected binding, the proof it got: its resource state, audit evidence (its identity
        seen failing with the key since ``act`` after a revocation, succeeding after a restore), both,
        or none. One usage query for the run; without usage evidence, resource state only."""
        docs = self._expected(ctx)
        audit: dict[str, dict[str, object]] = {}
        if self._d.usage is not None:
            key = parse_key_uri(ctx.run.key, allowed_vaults=None)
            audit = runbook_proofs(self._d.usage, key, {d.resource_id: d.principal_id for d in docs},
                                   revoked=ctx.run.kind == RunKind.REVOKE, since=acted_at)
        return {d.resource_id: proof_kind(d.resource_id in result.confirmed,
                                          bool(audit.get(d.resource_id, {}).get("auditEvidence")))
                for d in docs}

    def _observe(self, ids: Sequence[str],
                 services: Mapping[str, ServiceType]) -> dict[str, tuple[str, str] | None]:
        """One read of each resource, with bounded concurrency: id -> (health, what the service
        says), or None when the resource is gone. A resource that cannot be read now (transient
        error) is left out: it is read again at the next poll."""
        seen: dict[str, tuple[str, str] | None] = {}

        def read(rid: str) -> None:
            target = self._d.targets[services[rid]]
            try:
                binding = target.get_binding(rid)
            except TransientError as err:
                log.info("verify-read-failed", resource_id=rid, error=str(err))
                return
            if binding is None:
                seen[rid] = None
            else:
                health = target.health(binding)
                seen[rid] = (health, binding.health or binding.state or health)

        workers = max(1, min(self._d.settings.max_concurrency, len(ids)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysteward-verify") as pool:
            for future in [pool.submit(read, rid) for rid in ids]:
                future.result()
        return seen

    def publish(self, ctx: Ctx) -> Published:
        acted: Acted = ctx.acted()
        verified = ctx.verified()
        status = final_status(acted, verified)
        run = ctx.run
        if run.kind == RunKind.REVOKE:
            kind, severity = "KeyRevoked", "incident"
        else:
            kind, severity = "KeyRestored", "warning"
        data = {
            "run": run.run_id, "key": run.key, "mode": run.params.get("mode"), "status": str(status),
            "reason": run.reason, "ticket": run.ticket, "caller": run.caller_oid,
            "emergency": bool(run.params.get("emergency")), "revokeRun": run.params.get("revokeRun"),
            **sampled("changed", acted.done), **sampled("failed", acted.failed),
            **sampled("untagged", acted.untagged or ()),
            **sampled("confirmed", list(verified.confirmed) if verified else []),
            **sampled("unconfirmed", list(verified.unconfirmed) if verified else []),
            **sampled("unverifiable", verified.unverifiable if verified else ()),
            **sampled("held", acted.held or {}),
        }
        self._d.notifier.publish([Outcome(kind, run.key, data, severity, event_id=f"{run.run_id}.{kind}")])
        return Published(published=kind, status=str(status))
