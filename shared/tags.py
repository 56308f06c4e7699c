"""Key Vault tag names keysteward writes and reads: the shared safety vocabulary, each defined once.

Revocation, restore, rotation and retention agree on these names; a version's tags are how one
run tells another what it did (for instance, retention's drift repair leaves a version carrying
:data:`REVOKED_BY_TAG` alone). The hold tag's name is a setting (``KEYSTEWARD_HOLD_TAG``, see
``shared.config``), not a constant.
"""

from __future__ import annotations

from typing import Final

ROTATE_TAG: Final = "keysteward-rotate"
"""On a key's current version: rotate this key (its value is the policy)."""
RETIRE_TAG: Final = "keysteward-retire"
"""On a key's current version: retire the key's old versions."""
RETIRED_AT_TAG: Final = "keysteward-retired-at"
"""On a version retention disabled: when (ISO-8601 UTC)."""
RETIRED_BY_TAG: Final = "keysteward-retired-by"
"""On a version retention disabled: the run that did it."""
REVOKED_BY_TAG: Final = "keysteward-revoked-by"
"""Tag on every version a revocation disabled: the run id. Retention's drift repair leaves
versions carrying it alone; restore removes it when it re-enables the version."""
REVOKED_AT_TAG: Final = "keysteward-revoked-at"
"""Tag beside :data:`REVOKED_BY_TAG`: when the version was disabled (ISO-8601 UTC)."""
HELD_TAG: Final = "keysteward-held"
"""Tag beside :data:`REVOKED_BY_TAG` on a version the hold disabled (one enabled after the
revocation acted, e.g. created by a rotation policy): tells its restore the version came
during the revocation."""
POLICY_TAGS: Final = (ROTATE_TAG, RETIRE_TAG)
"""Tags that carry keysteward's policy from one version to the next on rotation."""
