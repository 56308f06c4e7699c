"""What Key Vault's audit logs add to the retention rule: blockers for versions called within the
lookback, and the usage fields of a key's status. Core: it reads evidence only through a
:class:`~shared.usage.UsageSource` (the Log Analytics adapter, or none).

A key's usage is asked once per :class:`~shared.retention.KeyFacts` (one question per key read);
a version's own query is asked only when the key's answer was cut.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.model import Binding
from shared.retention import Blocker, KeyFacts
from shared.usage import EVIDENCE_UNAVAILABLE, IN_USE, CallerUsage, Usage, UsageSource, UsageState


@dataclass
class _Cached:
    usage: Usage
    per_version: dict[str, Usage] = field(default_factory=dict)


_BY_FACTS: dict[int, tuple[weakref.ref[Any], _Cached]] = {}


def usage_for_facts(source: UsageSource, facts: KeyFacts) -> Usage:
    """The key's usage, asked once per :class:`~shared.retention.KeyFacts` (one question per key read)."""
    return _cached(source, facts).usage


def _cached(source: UsageSource, facts: KeyFacts) -> _Cached:
    entry = _BY_FACTS.get(id(facts))
    if entry is not None and entry[0]() is facts:
        return entry[1]
    cached = _Cached(source.key_usage(facts.key.versionless()))
    key = id(facts)

    def forget(_ref: weakref.ref[Any]) -> None:
        _BY_FACTS.pop(key, None)

    _BY_FACTS[key] = (weakref.ref(facts, forget), cached)
    return cached


def version_usage(source: UsageSource, facts: KeyFacts, version: str) -> Usage:
    """Usage of one version: the key's answer, or (when that answer was cut) the version's own query."""
    cached = _cached(source, facts)
    if not cached.usage.truncated or not cached.usage.available:
        return cached.usage
    if version not in cached.per_version:
        cached.per_version[version] = source.key_usage(facts.key.with_version(version))
    return cached.per_version[version]


def _known(bindings: Sequence[Binding]) -> dict[str, Binding]:
    return {b.principal_id.lower(): b for b in bindings if b.principal_id}


def _caller_text(c: CallerUsage) -> str:
    app = f", app {c.app_id}" if c.app_id and c.app_id != c.object_id else ""
    last = c.last_success or c.last_seen
    return f"{c.object_id}{app} ({c.succeeded} successful calls, last {last.isoformat() if last else 'unknown'})"


def usage_blockers(source: UsageSource, facts: KeyFacts, version: str) -> tuple[Blocker, ...]:
    """Blockers from audit evidence for disabling ``version`` (none when evidence is not configured).

    A version called successfully by any identity within the lookback is in use; the blocker
    names the identities and says which a binding in the inventory accounts for. Evidence that
    is configured but unavailable blocks, with its reason (fail closed).
    """
    usage = version_usage(source, facts, version)
    if usage.state is UsageState.NOT_CONFIGURED:
        return ()
    if not usage.available:
        return (Blocker(EVIDENCE_UNAVAILABLE, f"usage evidence is unavailable, so {version} cannot be shown "
                        f"unused: {usage.reason}"),)
    users = [c for c in usage.for_version(version) if c.succeeded > 0]
    if not users:
        return ()
    known = _known(facts.bindings)
    unknown = [c for c in users if c.object_id not in known]
    days = usage.since and usage.until and (usage.until - usage.since)
    window = f"{days.total_seconds() / 86400:g} days" if days else "the lookback"
    out = []
    if unknown:
        out.append(Blocker(IN_USE, f"{version} was used in the last {window} by identities keysteward does not "
                           "know (no binding in its inventory): " + "; ".join(_caller_text(c) for c in unknown)))
    for c in users:
        b = known.get(c.object_id)
        if b is not None:
            out.append(Blocker(IN_USE, f"{version} was used in the last {window} by {b.service.value} {b.name}: "
                               f"{_caller_text(c)}", b.resource_id))
    return tuple(out)


def status_fields(source: UsageSource, facts: KeyFacts, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds ``knownUsers``, ``unknownCallers`` and ``lastCall`` to each version entry of a key's
    status and returns the key-level ``usageEvidence`` (state, reason, window, truncation)."""
    usage = usage_for_facts(source, facts)
    known = _known(facts.bindings)
    for entry in versions:
        callers = usage.for_version(str(entry["version"]))
        entry["knownUsers"] = [
            {"resourceId": known[c.object_id].resource_id, "service": known[c.object_id].service.value,
             **c.as_dict()} for c in callers if c.object_id in known]
        entry["unknownCallers"] = [c.as_dict() for c in callers if c.object_id not in known]
        seen = [c.last_seen for c in callers if c.last_seen is not None]
        entry["lastCall"] = max(seen).isoformat() if seen else None
    return {**usage.evidence(), "workspace": getattr(source, "workspace_id", None)}


def status_lines(status: dict[str, Any], version: dict[str, Any]) -> list[str]:
    """Console lines for one version's usage evidence (empty when the status has none)."""
    evidence = status.get("usageEvidence") or {}
    if evidence.get("state") != UsageState.AVAILABLE.value:
        return []
    lines = []
    for u in version.get("knownUsers") or []:
        lines.append(f"      known user {u['service']} {u['resourceId'].rsplit('/', 1)[-1]}: {u['succeeded']} ok, "
                     f"{u['failed']} failed, last {u['lastSeen']}")
    for u in version.get("unknownCallers") or []:
        lines.append(f"      UNKNOWN caller {u['objectId']}: {u['succeeded']} ok, {u['failed']} failed, "
                     f"last {u['lastSeen']}")
    return lines


def evidence_line(status: dict[str, Any]) -> str | None:
    evidence = status.get("usageEvidence")
    if not evidence:
        return None
    if evidence["state"] == UsageState.AVAILABLE.value:
        cut = " (cut to the newest rows)" if evidence.get("truncated") else ""
        return f"  usage evidence: {evidence.get('table')} since {evidence.get('since')}{cut}"
    return f"  usage evidence: {evidence['state']}: {evidence['reason']}"


__all__ = ["evidence_line", "status_fields", "status_lines", "usage_blockers", "usage_for_facts", "version_usage"]
