"""What the steps of a runbook use, passed in once (keyword-only at the facade), and the
bounded, retried per-item execution the acting steps share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from shared.clock import Clock
from shared.config import Settings
from shared.errors import PermanentError, TransientError
from shared.inventory import Inventory
from shared.journal import Journal
from shared.keyuri import parse_key_uri
from shared.keyvault import KeyStore
from shared.model import KeyRef, ServiceType
from shared.notify import Notifier
from shared.runbooks.model import ITEM_ATTEMPTS, ITEM_BACKOFF_S
from shared.targets.base import Target
from shared.usage import UsageSource
from shared.vaultaccess import VaultAccess


@dataclass(frozen=True)
class Deps:
    settings: Settings
    clock: Clock
    keys: KeyStore
    targets: Mapping[ServiceType, Target]
    inventory: Inventory
    notifier: Notifier
    journal: Journal
    vaults: VaultAccess
    # Usage evidence from Key Vault audit logs (shared/usage.py): unknown callers in the blast
    # radius, audit proofs in verification. None: the inventory and resource state only.
    usage: UsageSource | None = None

    def check_key(self, key: KeyRef) -> KeyRef:
        """``key`` re-parsed against KEYSTEWARD_VAULTS (raises ValidationError outside it)."""
        return parse_key_uri(key.uri, allowed_vaults=self.settings.vaults)


log = structlog.get_logger("keysteward.runbooks")


def with_retries(clock: Clock, what: str, action: Callable[[], str]) -> str:
    """Runs one item with bounded retries on transient errors; a permanent error is raised."""
    for attempt in range(ITEM_ATTEMPTS):
        try:
            return action()
        except TransientError as err:
            if attempt + 1 == ITEM_ATTEMPTS:
                raise
            wait = err.retry_after if err.retry_after else ITEM_BACKOFF_S * 2**attempt
            log.info("item-retry", item=what, attempt=attempt + 1, wait_s=wait, error=str(err))
            clock.sleep(wait)
    raise AssertionError("unreachable")


def parallel(deps: Deps, items: Sequence[str], one: Callable[[str], str]) -> tuple[dict[str, str], dict[str, str]]:
    """Runs ``one`` per item with bounded concurrency: (item -> outcome, item -> permanent error).

    A transient error that outlasts the retries is raised (after every item ran), so the
    step is handed back and repeated: items already done are then skipped.
    """
    outcomes: dict[str, str] = {}
    failed: dict[str, str] = {}
    transient: list[TransientError] = []

    def run(item: str) -> None:
        try:
            outcomes[item] = with_retries(deps.clock, item, lambda: one(item))
        except TransientError as err:
            transient.append(err)
        except PermanentError as err:
            failed[item] = str(err)

    workers = max(1, min(deps.settings.max_concurrency, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keysteward-runbook") as pool:
        for future in [pool.submit(run, item) for item in items]:
            future.result()  # re-raises anything unexpected
    if transient:
        raise TransientError(f"{len(transient)} item(s) failed transiently, e.g. {transient[0]}")
    return outcomes, failed
