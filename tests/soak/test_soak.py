"""The in-process fault-injection soak: one test per seed (see docs/soak.md).

Each seed builds a small estate in an in-process sandbox World, plays a seeded random
schedule of rotations, event deliveries (duplicated, shuffled, failed and redelivered),
fault rules (429 with and without Retry-After, 500, 503, dropped connections, latency),
slow and failing LROs, ARM and Key Vault throttling, clock jumps, timer passes, queue runs
with retries and poison, lost queues, hand-made drift, retirement tags, and revoke/restore
runs killed at random steps; then recovers and checks invariants I1-I6
(tests/soak/invariants.py). A failure names its seed and the command that replays it.
"""

from __future__ import annotations

import pytest

from shared.journal import from_connection_string
from tests.soak.conftest import CI_SEEDS, soak_seeds
from tests.soak.scenario import Soak, SoakFailure

# Every TABLE_EVERY-th seed journals its runs in Azure Table storage (Azurite) instead of memory.
TABLE_EVERY = 25


def _params() -> list[object]:
    out: list[object] = []
    for seed in soak_seeds("KEYSTEWARD_SOAK_SEEDS", CI_SEEDS):
        marks = [pytest.mark.soak]
        if seed % TABLE_EVERY == TABLE_EVERY - 1:
            marks.append(pytest.mark.azurite)
        out.append(pytest.param(seed, id=f"seed{seed}", marks=marks))
    return out


@pytest.mark.parametrize("seed", _params())
def test_soak_seed(seed: int, request: pytest.FixtureRequest) -> None:
    factory = None
    if seed % TABLE_EVERY == TABLE_EVERY - 1:
        conn = request.getfixturevalue("azurite").connection_string
        def factory(world):
            return from_connection_string(conn, clock=world.clock, table_prefix=f"soak{seed}")
    soak = Soak(seed, journal_factory=factory)
    try:
        soak.run()
    except SoakFailure as err:
        pytest.fail(f"soak seed {seed} failed: {err}\n(replay: KEYSTEWARD_SOAK_SEED={seed} "
                    f"python -m pytest tests/soak/test_soak.py)", pytrace=False)
