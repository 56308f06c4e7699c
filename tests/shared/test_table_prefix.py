"""KEYSTEWARD_TABLE_PREFIX is checked when the settings load, not at the first table creation."""

from __future__ import annotations

import pytest

from shared.config import MAX_TABLE_PREFIX, load_settings
from shared.errors import ConfigError
from shared.idempotency import TABLE_SUFFIX

BASE = {"KEYSTEWARD_SUBSCRIPTIONS": "s", "KEYSTEWARD_VAULTS": "https://v.vault.azure.net"}


@pytest.mark.parametrize("value", ["1abc", "key-steward", "key_steward", "kéysteward", "a" * (MAX_TABLE_PREFIX + 1)])
def test_a_prefix_azure_tables_would_refuse_fails_at_load_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="KEYSTEWARD_TABLE_PREFIX"):
        load_settings({**BASE, "KEYSTEWARD_TABLE_PREFIX": value})


def test_the_longest_accepted_prefix_makes_table_names_of_at_most_63_characters() -> None:
    longest = "k" * MAX_TABLE_PREFIX
    assert load_settings({**BASE, "KEYSTEWARD_TABLE_PREFIX": longest}).table_prefix == longest
    assert len(longest + TABLE_SUFFIX) == 63
    assert all(len(longest + t) <= 63 for t in ("runs", "steps", "leases", "revocations", TABLE_SUFFIX))
    assert load_settings(BASE).table_prefix == "keysteward"
