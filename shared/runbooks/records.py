"""The revocation record: "is this key revoked, by which run, in which mode", answered by one
lookup per key from the journal's Table storage (see :meth:`shared.journal.Journal.revocations`).

A whole-key revocation (a versionless key URI, or ``remove-access``) writes its record before
it acts (before it even waits for the key's lease); only a successful restore of that run
removes it. Every path that could make the key usable again or move a binding asks
:meth:`Records.in_force` and stands down while it answers.

Without a journal (a CLI run with no storage configured: runbooks refuse to run there) the
records cannot be read; the vault-side mark is consulted instead: any version of the key
tagged :data:`~shared.tags.REVOKED_BY_TAG` holds the key. That mark is a second,
weaker signal (a ``remove-access`` revocation leaves none), which is why the runbooks
themselves require storage.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from shared.journal import Journal, Revocation
from shared.keyvault import KeyStore
from shared.model import KeyRef
from shared.runbooks.model import Mode
from shared.tags import REVOKED_BY_TAG

log = structlog.get_logger("keysteward.runbooks")


@dataclass(frozen=True)
class InForce:
    """A revocation in force on a key: its run, its mode, and where the answer came from
    (``journal``, or ``vault-tag`` when no journal is configured)."""

    run_id: str
    mode: str
    source: str = "journal"

    def refusal(self, what: str) -> str:
        """The message of a path that stands down because of this revocation."""
        return f"{what} refused: the key is revoked by run {self.run_id} ({self.mode}); restore that run first"


class Records:
    """Reads the revocation records; ``journal`` is ``None`` when no durable journal is configured."""

    def __init__(self, *, journal: Journal | None, keys: KeyStore) -> None:
        self._journal = journal
        self._keys = keys

    def in_force(self, key: KeyRef) -> InForce | None:
        """The oldest revocation in force on ``key`` (any version of it), or ``None``."""
        if self._journal is None:
            return self._from_tags(key)
        found = self._journal.revocations(key.versionless().uri)
        return InForce(found[0].run_id, found[0].mode) if found else None

    def run_in_force(self, key: KeyRef) -> str | None:
        """The run id of the revocation in force on ``key``; ``None`` when none.

        While one is in force, reconcile moves no binding of the key, rotation creates no
        version, and retention neither re-enables nor retires: a revoked key stays dark until
        its own restore.
        """
        found = self.in_force(key)
        return found.run_id if found is not None else None

    def _from_tags(self, key: KeyRef) -> InForce | None:
        """The vault-side mark: the key's newest version carries the revoked-by tag (a whole-key
        revocation disabled it, or it was created from a revoked one and inherited the tag).
        An older version's tag is a per-version revocation, which holds only that version."""
        versions = self._keys.versions(key.versionless())
        mark = versions[-1].tags.get(REVOKED_BY_TAG) if versions else None
        if not mark:
            return None
        log.info("revocation-from-vault-tag", key=key.versionless().uri, run=mark)
        return InForce(mark, Mode.DISABLE, source="vault-tag")

    def all(self) -> list[Revocation]:
        """Every revocation in force (empty without a journal: the hold needs the records)."""
        return [] if self._journal is None else self._journal.revocations()


__all__ = ["InForce", "Records"]
