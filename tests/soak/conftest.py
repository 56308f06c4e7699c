"""Soak settings: how many seeds, or the one seed to replay.

``KEYSTEWARD_SOAK_SEEDS`` (default :data:`CI_SEEDS`): seeds 0..N-1 of the in-process soak;
``KEYSTEWARD_SOAK_FIRST`` (default 0) shifts the range; ``KEYSTEWARD_SOAK_SEED=N`` runs seed N
alone (the replay of a failure). ``KEYSTEWARD_SOAK_PROCESS_SEEDS`` (default
:data:`CI_PROCESS_SEEDS`): seeds of the process-level soak (subprocesses, real sockets).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.soak.harness import key_pool, quiet_logs

# Seeds in CI: 260 keeps the soak's share of CI time where 300 seeds were before the I7 schedules
# (outside rotations, policy firings, junk bursts) made a seed about 16% dearer.
CI_SEEDS = 260
CI_PROCESS_SEEDS = 2


def process_default() -> int:
    """A few process seeds in CI; one per 200 in-process seeds under ``make soak``."""
    return max(CI_PROCESS_SEEDS, int(os.environ.get("KEYSTEWARD_SOAK_SEEDS", "") or 0) // 200)


def soak_seeds(count_var: str, default: int) -> list[int]:
    one = os.environ.get("KEYSTEWARD_SOAK_SEED", "").strip()
    if one:
        return [int(one)]
    first = int(os.environ.get("KEYSTEWARD_SOAK_FIRST", "0") or 0)
    count = int(os.environ.get(count_var, "") or default)
    return list(range(first, first + count))


@pytest.fixture(scope="module", autouse=True)
def _soak_quiet() -> Iterator[None]:
    """Logs quiet per module (not per session: a worker runs other files afterwards, and the
    fuzz suites read the log)."""
    key_pool()  # generated once, before the first seed's clock starts
    with quiet_logs():
        yield
