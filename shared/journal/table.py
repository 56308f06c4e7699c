"""The journal over Azure Table storage: :class:`TableJournal` and the ways to open one.

:class:`TableJournal` composes one collaborator per table (:mod:`~shared.journal.table_runs`,
:mod:`~shared.journal.table_steps`, :mod:`~shared.journal.table_keys`) and delegates each Protocol
call to the one that owns the data. The storage layout is described in :mod:`shared.journal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials import TokenCredential
from azure.data.tables import TableServiceClient

from shared.clock import Clock
from shared.errors import ConfigError
from shared.journal.model import Lease, Revocation, Run, Step
from shared.journal.rules import _new_run, _now, _updated_run
from shared.journal.storage import LazyTable
from shared.journal.table_keys import LeaseTable, RevocationTable
from shared.journal.table_runs import RunTable
from shared.journal.table_steps import StepTable


class TableJournal:
    """:class:`~shared.journal.Journal` over Azure Table storage; see :mod:`shared.journal` for the layout.

    Construction does no I/O: each of the four tables is created, if missing, by the first call
    that uses it (once, thread-safe); that call raises TransientError or PermanentError if the
    creation fails, and a later call tries again. Thread-safe to the extent the SDK client is; the
    record guards (ETags, insert-if-absent) also hold across processes and instances.
    """

    def __init__(
        self, service: TableServiceClient, *, clock: Clock, table_prefix: str = "keysteward"
    ) -> None:
        self._clock = clock
        self._runs = RunTable(LazyTable(service, f"{table_prefix}runs"))
        self._steps = StepTable(LazyTable(service, f"{table_prefix}steps"), clock=clock)
        self._leases = LeaseTable(LazyTable(service, f"{table_prefix}leases"), clock=clock)
        self._revocations = RevocationTable(LazyTable(service, f"{table_prefix}revocations"), clock=clock)

    # runs -------------------------------------------------------------------------------

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
        return self._runs.insert(_new_run(
            _now(self._clock), kind=kind, key=key, caller_oid=caller_oid, caller_name=caller_name,
            reason=reason, ticket=ticket, params=params, status=status,
        ))

    def get_run(self, run_id: str) -> Run:
        return self._runs.get_run(run_id)

    def list_runs(
        self, *, key: str | None = None, statuses: set[str] | None = None, limit: int = 100
    ) -> list[Run]:
        return self._runs.list_runs(key=key, statuses=statuses, limit=limit)

    def update_run(
        self,
        run: Run,
        *,
        status: str | None = None,
        result: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Run:
        return self._runs.replace(run, _updated_run(run, self._clock, status=status, result=result, params=params))

    def list_unfinished(self, older_than: datetime | None = None) -> list[Run]:
        return self._runs.list_unfinished(older_than)

    # steps ------------------------------------------------------------------------------

    def steps(self, run_id: str) -> list[Step]:
        return self._steps.steps(run_id)

    def claim_step(
        self, run_id: str, index: int, name: str, *, owner: str, stale_after: timedelta
    ) -> Step | None:
        return self._steps.claim_step(run_id, index, name, owner=owner, stale_after=stale_after)

    def complete_step(
        self, step: Step, *, status: str, result: Mapping[str, Any], error: str | None = None
    ) -> Step:
        return self._steps.complete_step(step, status=status, result=result, error=error)

    # leases -----------------------------------------------------------------------------

    def acquire_lease(self, key: str, *, owner: str, ttl: timedelta) -> Lease | None:
        return self._leases.acquire_lease(key, owner=owner, ttl=ttl)

    def renew_lease(self, lease: Lease, ttl: timedelta) -> Lease:
        return self._leases.renew_lease(lease, ttl)

    def release_lease(self, lease: Lease) -> None:
        self._leases.release_lease(lease)

    # revocations in force ---------------------------------------------------------------

    def put_revocation(self, *, key: str, run_id: str, mode: str) -> Revocation:
        return self._revocations.put_revocation(key=key, run_id=run_id, mode=mode)

    def revocations(self, key: str | None = None) -> list[Revocation]:
        return self._revocations.revocations(key)

    def update_revocation(self, revocation: Revocation, *, restoring: str | None) -> Revocation:
        return self._revocations.update_revocation(revocation, restoring=restoring)

    def end_revocation(self, *, key: str, run_id: str) -> None:
        self._revocations.end_revocation(key=key, run_id=run_id)


def table_service(conn: str) -> TableServiceClient:
    """A ``TableServiceClient`` for a Storage connection string (no I/O).

    ``UseDevelopmentStorage=true`` (any case, optional trailing ``;``) means Azurite at its
    default address (``http://127.0.0.1:10002``, account ``devstoreaccount1``).
    Raises :class:`~shared.errors.ConfigError` for an empty or malformed connection string.
    """
    text = conn.strip().rstrip(";").strip()
    if text.replace(" ", "").lower() == "usedevelopmentstorage=true":
        text = "UseDevelopmentStorage=true"  # the SDK expands exactly this form to Azurite's defaults
    if not text:
        raise ConfigError("the journal's storage connection string is empty")
    try:
        return TableServiceClient.from_connection_string(text)
    except ValueError as err:
        raise ConfigError(f"the journal's storage connection string is malformed: {err}") from err


def from_connection_string(conn: str, *, clock: Clock, table_prefix: str = "keysteward") -> TableJournal:
    """A :class:`TableJournal` for a Storage connection string (see :func:`table_service`).

    No Storage I/O: the connection string is only parsed (ConfigError if it is malformed); the
    tables are created on first use, when a call raises TransientError/PermanentError if Storage
    cannot be reached. An identity-based account (no connection string): :func:`from_identity`.
    """
    return TableJournal(table_service(conn), clock=clock, table_prefix=table_prefix)


def from_identity(table_service_uri: str, credential: TokenCredential, *, clock: Clock,
                  table_prefix: str = "keysteward") -> TableJournal:
    """A :class:`TableJournal` for an identity-based account: its table service URI
    (``https://{account}.table.core.windows.net``) and a token credential. No Storage I/O (and
    no token request) until the first call, which raises as :func:`from_connection_string`
    describes."""
    return TableJournal(TableServiceClient(endpoint=table_service_uri, credential=credential), clock=clock,
                        table_prefix=table_prefix)
