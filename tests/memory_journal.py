"""The runbook journal in process memory: a test double at the :class:`~shared.journal.Journal`
Protocol boundary, with the same semantics as :class:`~shared.journal.TableJournal` (ETags,
insert-if-absent, ordering, JSON truncation); one lock serialises every call, so threads racing
for a step or a lease behave as instances racing over Table storage. It lives under ``tests/``:
no production path journals in memory."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.errors import NotFoundError
from shared.journal import (
    ConflictError,
    Lease,
    Revocation,
    Run,
    Step,
    _check_index,
    _claim,
    _completed,
    _copy_json,
    _new_run,
    _now,
    _updated_run,
    _utc,
    normalise_key,
    run_row_key,
)


@dataclass
class _Memory:
    runs: dict[str, Run] = field(default_factory=dict)
    steps: dict[tuple[str, int], Step] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    revocations: dict[tuple[str, str], Revocation] = field(default_factory=dict)


class MemoryJournal:
    """:class:`~shared.journal.Journal` in process memory (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data = _Memory()
        self._etags = itertools.count(1)

    def _etag(self) -> str:
        return f'W/"{next(self._etags)}"'

    @staticmethod
    def _out_run(run: Run) -> Run:
        return dataclasses.replace(run, params=_copy_json(run.params), result=_copy_json(run.result))

    @staticmethod
    def _out_step(step: Step) -> Step:
        return dataclasses.replace(step, result=_copy_json(step.result))

    def create_run(
        self,
        *,
        kind: str,
        key: str,
        caller_oid: str,
        caller_name: str,
        reason: str,
        ticket: str,
        params: Mapping[str, Any],
        status: str = "running",
    ) -> Run:
        run = _new_run(
            _now(self._clock), kind=kind, key=key, caller_oid=caller_oid, caller_name=caller_name,
            reason=reason, ticket=ticket, params=params, status=status,
        )
        with self._lock:
            run = dataclasses.replace(run, etag=self._etag())
            self._data.runs[run.run_id] = run
        return self._out_run(run)

    def get_run(self, run_id: str) -> Run:
        with self._lock:
            run = self._data.runs.get(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id!r}", code="RunNotFound", status=404)
        return self._out_run(run)

    def list_runs(
        self, *, key: str | None = None, statuses: set[str] | None = None, limit: int = 100
    ) -> list[Run]:
        with self._lock:
            runs = list(self._data.runs.values())
        wanted = None if key is None else normalise_key(key)
        chosen = [
            r for r in runs
            if (wanted is None or normalise_key(r.key) == wanted)
            and (statuses is None or r.status in statuses)
        ]
        chosen.sort(key=lambda r: run_row_key(r.run_id) or "")
        return [self._out_run(r) for r in chosen[: max(limit, 0)]]

    def update_run(
        self,
        run: Run,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        updated = _updated_run(run, self._clock, status=status, result=result, params=params)
        with self._lock:
            stored = self._data.runs.get(run.run_id)
            if stored is None:
                raise NotFoundError(f"update run {run.run_id}: not found", code="RunNotFound", status=404)
            if stored.etag != run.etag:
                raise ConflictError(f"run {run.run_id} changed since it was read")
            updated = dataclasses.replace(updated, etag=self._etag())
            self._data.runs[run.run_id] = updated
        return self._out_run(updated)

    def list_unfinished(self, older_than: datetime | None = None) -> list[Run]:
        before = None if older_than is None else _utc(older_than)
        with self._lock:
            runs = [
                r for r in self._data.runs.values()
                if r.status == "running" and (before is None or r.updated < before)
            ]
        runs.sort(key=lambda r: run_row_key(r.run_id) or "", reverse=True)
        return [self._out_run(r) for r in runs]

    def steps(self, run_id: str) -> list[Step]:
        with self._lock:
            found = [s for (rid, _), s in self._data.steps.items() if rid == run_id]
        return [self._out_step(s) for s in sorted(found, key=lambda s: s.index)]

    def claim_step(
        self, run_id: str, index: int, name: str, *, owner: str, stale_after: timedelta
    ) -> Step | None:
        _check_index(index)
        now = _now(self._clock)
        with self._lock:
            current = self._data.steps.get((run_id, index))
            claimed = _claim(current, run_id, index, name, owner=owner, stale_after=stale_after, now=now)
            if claimed is None:
                return None
            claimed = dataclasses.replace(claimed, etag=self._etag())
            self._data.steps[(run_id, index)] = claimed
        return self._out_step(claimed)

    def complete_step(
        self, step: Step, *, status: str, result: Mapping[str, Any], error: str | None = None
    ) -> Step:
        done = _completed(step, self._clock, status=status, result=result, error=error)
        what = f"complete step {step.index} ({step.name}) of run {step.run_id}"
        with self._lock:
            stored = self._data.steps.get((step.run_id, step.index))
            if stored is None:
                raise NotFoundError(f"{what}: not found", code="StepNotFound", status=404)
            if stored.etag != step.etag:
                raise ConflictError(f"{what}: another owner took the step over")
            done = dataclasses.replace(done, etag=self._etag())
            self._data.steps[(step.run_id, step.index)] = done
        return self._out_step(done)

    def acquire_lease(self, key: str, *, owner: str, ttl: timedelta) -> Lease | None:
        now = _now(self._clock)
        slot = normalise_key(key)
        with self._lock:
            held = self._data.leases.get(slot)
            if held is not None and held.owner != owner and held.expires > now:
                return None
            lease = Lease(key=key, owner=owner, expires=now + ttl, etag=self._etag())
            self._data.leases[slot] = lease
        return lease

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease:
        now = _now(self._clock)
        slot = normalise_key(lease.key)
        with self._lock:
            held = self._data.leases.get(slot)
            if held is None:
                raise ConflictError(f"renew lease on {lease.key}: the lease was released")
            if held.etag != lease.etag:
                raise ConflictError(f"renew lease on {lease.key}: the lease was lost")
            renewed = dataclasses.replace(lease, expires=now + ttl, etag=self._etag())
            self._data.leases[slot] = renewed
        return renewed

    def release_lease(self, lease: Lease) -> None:
        slot = normalise_key(lease.key)
        with self._lock:
            held = self._data.leases.get(slot)
            if held is not None and held.etag == lease.etag:
                del self._data.leases[slot]

    def put_revocation(self, *, key: str, run_id: str, mode: str) -> Revocation:
        slot = (normalise_key(key), run_id)
        with self._lock:
            held = self._data.revocations.get(slot)
            if held is None:
                held = Revocation(key=key, run_id=run_id, mode=mode, created=_now(self._clock), restoring=None,
                                  etag=self._etag())
                self._data.revocations[slot] = held
        return held

    def revocations(self, key: str | None = None) -> list[Revocation]:
        wanted = None if key is None else normalise_key(key)
        with self._lock:
            found = [r for (k, _), r in self._data.revocations.items() if wanted is None or k == wanted]
        return sorted(found, key=lambda r: (r.created, r.run_id))

    def update_revocation(self, revocation: Revocation, *, restoring: str | None) -> Revocation:
        slot = (normalise_key(revocation.key), revocation.run_id)
        with self._lock:
            held = self._data.revocations.get(slot)
            if held is None or held.etag != revocation.etag:
                raise ConflictError(f"update revocation {revocation.run_id}: it changed or was ended")
            updated = dataclasses.replace(held, restoring=restoring, etag=self._etag())
            self._data.revocations[slot] = updated
        return updated

    def end_revocation(self, *, key: str, run_id: str) -> None:
        with self._lock:
            self._data.revocations.pop((normalise_key(key), run_id), None)


__all__ = ["MemoryJournal"]
