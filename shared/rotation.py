"""Rotation: keys managed by keysteward are rotated on schedule (maximum age) and near expiry.

A key is managed when its current version carries the tag ``keysteward-rotate`` (``true`` for
the default maximum age, or an ISO-8601 duration such as ``P90D``, or a number of days), or
when its URI is listed in ``KEYSTEWARD_MANAGED_KEYS``. Every decision re-reads the key: a
duplicate or stale NearExpiry event finds the key already rotated and does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from shared.clock import Clock
from shared.config import Settings
from shared.errors import PermanentError
from shared.keyvault import KeyStore
from shared.model import KeyRef, KeyVersion
from shared.notify import Notifier, Outcome
from shared.tags import POLICY_TAGS, ROTATE_TAG

# Key Vault's NearExpiry event fires 30 days before exp (unless a Notify action says otherwise).
NEAR_EXPIRY_WINDOW = timedelta(days=30)


def _duration(text: str, default: timedelta) -> timedelta | None:
    value = text.strip().upper()
    if value in ("", "TRUE", "YES", "1"):
        return default
    if value in ("FALSE", "NO", "0"):
        return None
    if value.isdigit():
        return timedelta(days=int(value))
    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?", value)
    if m is None or value == "P":
        return default
    years, months, weeks, days = (int(g or 0) for g in m.groups())
    return timedelta(days=years * 365 + months * 30 + weeks * 7 + days)


def managed_max_age(key: KeyRef, current: KeyVersion, settings: Settings) -> timedelta | None:
    """The maximum age keysteward enforces for ``key``; ``None`` when it does not manage it."""
    for name, value in current.tags.items():
        if name.lower() == ROTATE_TAG:
            return _duration(value, settings.rotation_max_age)
    listed = {k.rstrip("/").lower() for k in settings.managed_keys}
    if key.versionless().uri.lower() in listed:
        return settings.rotation_max_age
    return None


@dataclass(frozen=True)
class RotationResult:
    key: KeyRef
    rotated: bool
    new_version: str | None
    reason: str


class Rotator:
    """Rotates keys; ``revoked_by`` answers, per key, the run id of a revocation in force
    (``None``: not revoked). While one is, no path rotates the key: a new version would be
    enabled, and the data the revocation took offline would come back."""

    def __init__(self, *, settings: Settings, keys: KeyStore, notifier: Notifier, clock: Clock,
                 revoked_by: Callable[[KeyRef], str | None] | None = None) -> None:
        self._settings = settings
        self._keys = keys
        self._notifier = notifier
        self._clock = clock
        self._revoked_by = revoked_by
        self._log = structlog.get_logger("keysteward.rotation")

    def _refused(self, key: KeyRef) -> str | None:
        run = self._revoked_by(key) if self._revoked_by is not None else None
        if run is None:
            return None
        reason = f"rotation refused: the key is revoked by run {run}; restore that run first"
        self._log.warning("rotation-refused", key=str(key), run=run, reason=reason)
        return reason

    def _rotate(self, key: KeyRef, current: KeyVersion, reason: str) -> RotationResult:
        refused = self._refused(key)
        if refused is not None:
            return RotationResult(key, False, None, refused)
        new = self._keys.rotate(key)
        # Tags are per version: carry keysteward's policy tags to the new version.
        carried = {k: v for k, v in current.tags.items() if k.lower() in POLICY_TAGS}
        if carried and any(new.tags.get(k) != v for k, v in carried.items()):
            new = self._keys.set_tags(new.ref, {**new.tags, **carried})
        self._log.info("rotated", key=str(key), from_version=current.version, to_version=new.version, reason=reason)
        self._notifier.publish([Outcome("KeyRotated", key.uri, {
            "key": key.uri, "fromVersion": current.version, "toVersion": new.version, "reason": reason})])
        return RotationResult(key, True, new.version, reason)

    def rotate_now(self, key: KeyRef, *, reason: str = "requested") -> RotationResult:
        """Rotates now (CLI ``rotate``). Raises PermanentError (409, ``KeyRevoked``) while a
        revocation is in force on the key."""
        key = key.versionless()
        refused = self._refused(key)
        if refused is not None:
            raise PermanentError(refused, code="KeyRevoked", status=409)
        return self._rotate(key, self._keys.current(key), reason)

    def on_near_expiry(self, key: KeyRef, *, event_version: str | None, event_id: str | None) -> RotationResult:
        """Rotates a managed key whose current version nears expiry; otherwise notifies."""
        key = key.versionless()
        current = self._keys.current(key)
        now = self._clock.now()
        if event_version and current.version != event_version:
            return self._skip(key, f"already rotated: current version is {current.version}")
        if current.expires_on is None or current.expires_on - now > NEAR_EXPIRY_WINDOW:
            return self._skip(key, "current version is not near expiry")
        if managed_max_age(key, current, self._settings) is None:
            self._notifier.publish([Outcome("KeyNearExpiry", key.uri, {
                "key": key.uri, "version": current.version, "expiresOn": current.expires_on.isoformat(),
                "eventId": event_id, "action": "notify-only: key is not managed by keysteward"}, "warning")])
            return RotationResult(key, False, None, "not managed: notified")
        return self._rotate(key, current, "near expiry")

    def on_expired(self, key: KeyRef, *, event_version: str | None, event_id: str | None) -> RotationResult:
        """Always an incident; rotates too when the key is managed and that is allowed."""
        key = key.versionless()
        current = self._keys.current(key)
        self._notifier.publish([Outcome("KeyExpired", key.uri, {
            "key": key.uri, "version": event_version or current.version, "eventId": event_id,
            "expiresOn": current.expires_on.isoformat() if current.expires_on else None}, "incident")])
        if event_version and current.version != event_version:
            return self._skip(key, f"already rotated: current version is {current.version}")
        now = self._clock.now()
        if current.expires_on is not None and current.expires_on > now:
            return self._skip(key, "current version has not expired")
        if not self._settings.rotate_on_expired or managed_max_age(key, current, self._settings) is None:
            return RotationResult(key, False, None, "expired: incident raised, rotation not allowed")
        return self._rotate(key, current, "expired")

    def rotate_if_old(self, key: KeyRef, *, now: datetime | None = None) -> RotationResult:
        """Scheduled rotation: rotates a managed key whose current version exceeds its maximum age."""
        key = key.versionless()
        current = self._keys.current(key)
        max_age = managed_max_age(key, current, self._settings)
        if max_age is None:
            return RotationResult(key, False, None, "not managed")
        now = now or self._clock.now()
        if current.created is not None and now - current.created < max_age:
            return RotationResult(key, False, None, f"current version younger than {max_age}")
        return self._rotate(key, current, f"older than {max_age}")

    def _skip(self, key: KeyRef, reason: str) -> RotationResult:
        self._log.info("rotation-skipped", key=str(key), reason=reason)
        return RotationResult(key, False, None, reason)
