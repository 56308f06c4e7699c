"""Key Vault data plane for keys, as the official SDK (azure-keyvault-keys) sees it.

Entry points used by the world: :func:`handle` answers one request for a vault host and
:func:`tick` brings time-driven behaviour up to a moment (near-expiry / expired events,
auto-rotation by rotation policy, purge of soft-deleted keys whose retention ended).

Wire behaviour follows Key Vault (api-version 7.x and 2025-07-01): the bearer challenge,
``{"error": {"code", "message", "innererror"?}}`` errors with Key Vault's codes and messages,
paged lists with an absolute ``nextLink``, unix-second attributes, soft delete with
``recoveryId`` / ``scheduledPurgeDate``, purge protection, per-vault throttling (429 +
``Retry-After``) and Event Grid's ``Microsoft.KeyVault.Key*`` events on the world's bus.

Helpers for other parts of the sandbox (seeds, ARM, admin):

- :func:`create_version` adds a key version exactly as a data-plane create would (event
  included), so keys made elsewhere behave like keys made through the SDK.
- :func:`track` re-reads one key's due times after its state was changed directly;
  :func:`reindex` does so for everything (the index also rebuilds itself when the number of
  keys changes behind its back).
- :func:`key_id` builds a key identifier from the world's vault URL mapping.

The package follows the data plane's seams: ``common`` (constants, errors, codecs, JSON shapes,
request validation and the router), ``lifecycle`` (the due-time index, :func:`tick`, key
versions), the route modules ``policy``, ``keys``, ``crypto`` and ``deleted``, and ``front``
(:func:`handle`, the front door). Routes are matched in registration order, which is the import
order below.
"""

from __future__ import annotations

# Routes register on import and are matched in registration order: keep this order
# (``/keys/{name}/rotationpolicy`` before ``/keys/{name}/{version}``).
# isort: off
from sandbox.keyvault import policy  # noqa: F401
from sandbox.keyvault import keys  # noqa: F401
from sandbox.keyvault import crypto  # noqa: F401
from sandbox.keyvault import deleted  # noqa: F401

# isort: on
from sandbox.keyvault.common import (
    DEFAULT_KEY_OPS,
    DEFAULT_RETENTION_DAYS,
    KEY_EXPIRED,
    KEY_NEAR_EXPIRY,
    KEY_NEW_VERSION,
    MAX_PAGE,
    RSA_KTYS,
    RSA_SIZES,
    KeyVaultError,
    key_id,
    parse_duration,
)
from sandbox.keyvault.front import handle
from sandbox.keyvault.lifecycle import create_version, reindex, tick, track

__all__ = [
    "DEFAULT_KEY_OPS",
    "DEFAULT_RETENTION_DAYS",
    "KEY_EXPIRED",
    "KEY_NEAR_EXPIRY",
    "KEY_NEW_VERSION",
    "MAX_PAGE",
    "RSA_KTYS",
    "RSA_SIZES",
    "KeyVaultError",
    "create_version",
    "handle",
    "key_id",
    "parse_duration",
    "reindex",
    "tick",
    "track",
]
