"""The runbook journal: runs, their steps, and one lease per key, in Azure Table storage.

A *run* is one revoke or restore runbook invocation; its *steps* are recorded before and
after they act, so an interrupted run can be resumed (by ``resume`` or by the timer's sweep)
and finishes with the same result as an uninterrupted one. A *lease* per key keeps two
runbooks on one key from interleaving.

Every write that changes a record is guarded by the record's ETag (optimistic concurrency):

- :meth:`Journal.update_run`, :meth:`Journal.complete_step` and :meth:`Journal.renew_lease`
  raise :class:`ConflictError` when the record changed since it was read;
- :meth:`Journal.claim_step` and :meth:`Journal.acquire_lease` use insert-if-absent or an
  ETag-guarded replace, so two instances racing for the same step or lease never both win:
  the loser gets ``None``.

Two implementations share one behaviour (and one test suite): :class:`TableJournal` over
``azure-data-tables`` (Azurite locally and in CI, the Functions storage account in Azure),
and a test double in memory (``tests/memory_journal.py``) for fast tests of the runbook logic at
this Protocol boundary. Runbooks never fall back to memory: a revocation journaled where no
other instance sees it, and gone when the process exits, could never be restored.

Storage layout (:class:`TableJournal`), four tables named ``{prefix}runs``, ``{prefix}steps``,
``{prefix}leases`` and ``{prefix}revocations``. Each is created, if missing, by the first call that
uses it, never when the journal is built, so building one at a cold start does no Storage I/O:

``{prefix}runs``
    One *run entity* per run in partition ``run``, RowKey ``<inverted ms>-<run id>`` so a
    partition query returns the newest first (the RowKey is derived from the run id, so
    :meth:`~Journal.get_run` is a point read). One *key index entity* per run in partition
    ``key-<sha256 of the normalised key URI>`` with the same RowKey: listing a key's runs
    reads that small partition, then fetches the runs by RowKey, never scanning the table.
    The index entity is written first; a crash before the run entity is written leaves a
    dangling index entry, which listings skip.
``{prefix}steps``
    PartitionKey = run id, RowKey = the step index zero-padded to 4 digits, so a partition
    query returns a run's steps in order.
``{prefix}leases``
    PartitionKey = sha256 of the normalised key URI (Table keys forbid ``/ \\ # ?``), RowKey
    ``lease``.
``{prefix}revocations``
    The revocations in force: PartitionKey = sha256 of the normalised versionless key URI,
    RowKey = the revocation's run id. A key's partition answers "is it revoked, by which run,
    in which mode" in one read, however many runs the journal holds.

Dict columns (``params``, ``result``) are stored as JSON text. A Table string property holds
at most 64 KiB (32 K UTF-16 code units), so the JSON is written ASCII-only and split over
``Name``, ``Name1``, ``Name2`` ... properties of 32,000 characters; at most
:data:`JSON_MAX_CHARS` characters are kept per run column (an entity holds at most 1 MiB).

A step result may be far larger (the blast radius of a key bound to thousands of services):
up to :data:`STEP_RESULT_MAX_CHARS` characters. One larger than :data:`JSON_MAX_CHARS` goes to
*page rows* in the step's partition, RowKey ``<index>.<token>.<page>``, each holding
:data:`PAGE_MAX_CHARS` characters; the step entity names the token (the SHA-256 of the JSON
text, so a reader checks what it reassembles) and the page count. Pages are written
(idempotently: same text, same rows) before the ETag-guarded write of the step entity that
refers to them, so a reader never sees a step whose pages are missing; pages left behind by a
writer that lost the race are never referenced (and never read).

(Size: a package along its seams. :mod:`~shared.journal.model` holds the record types, the
Protocol and the limits; :mod:`~shared.journal.rules` the behaviour both implementations share
(run ids, row keys, JSON limits, how a run or step changes). The Table backend is
:mod:`~shared.journal.table` (:class:`TableJournal`, which delegates each call to the collaborator
owning that table: :mod:`~shared.journal.table_runs`, :mod:`~shared.journal.table_steps`,
:mod:`~shared.journal.table_keys` for leases and revocations) over
:mod:`~shared.journal.storage` (tables created on first use, split JSON columns, ETags). Other
modules import from ``shared.journal``, never from a submodule.)

A value larger than its limit is replaced by ``{"truncated": true, "originalChars": n,
"preview": "..."}`` rather than refused, because a step result is written after the step has
acted and must not be lost. Both implementations apply the same rules.
"""

from shared.journal.model import (
    COMPLETE_STEP_STATUSES,
    FINAL_STEP_STATUSES,
    FINISHED_RUN_STATUSES,
    JSON_MAX_CHARS,
    JSON_MAX_PARTS,
    PAGE_MAX_CHARS,
    PAGE_PARTS,
    PROPERTY_MAX_CHARS,
    RUN_KINDS,
    RUN_STATUSES,
    STEP_RESULT_MAX_CHARS,
    STEP_STATUSES,
    TRUNCATED_PREVIEW_CHARS,
    ConflictError,
    Journal,
    JsonDict,
    Lease,
    Revocation,
    Run,
    Step,
)

# The test double (tests/memory_journal.py) applies the same rules through these.
from shared.journal.rules import _check as _check
from shared.journal.rules import _check_index as _check_index
from shared.journal.rules import _claim as _claim
from shared.journal.rules import _clip as _clip
from shared.journal.rules import _completed as _completed
from shared.journal.rules import _copy_json as _copy_json
from shared.journal.rules import _new_run as _new_run
from shared.journal.rules import _now as _now
from shared.journal.rules import _require_text as _require_text
from shared.journal.rules import _updated_run as _updated_run
from shared.journal.rules import _utc as _utc
from shared.journal.rules import dump_json, key_hash, load_json, new_run_id, normalise_key, run_row_key
from shared.journal.table import TableJournal, from_connection_string, from_identity, table_service

__all__ = [
    "COMPLETE_STEP_STATUSES",
    "FINAL_STEP_STATUSES",
    "FINISHED_RUN_STATUSES",
    "JSON_MAX_CHARS",
    "JSON_MAX_PARTS",
    "PAGE_MAX_CHARS",
    "PAGE_PARTS",
    "PROPERTY_MAX_CHARS",
    "RUN_KINDS",
    "RUN_STATUSES",
    "STEP_RESULT_MAX_CHARS",
    "STEP_STATUSES",
    "TRUNCATED_PREVIEW_CHARS",
    "ConflictError",
    "Journal",
    "JsonDict",
    "Lease",
    "Revocation",
    "Run",
    "Step",
    "TableJournal",
    "dump_json",
    "from_connection_string",
    "from_identity",
    "key_hash",
    "load_json",
    "new_run_id",
    "normalise_key",
    "run_row_key",
    "table_service",
]
