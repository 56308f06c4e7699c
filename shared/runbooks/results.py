"""Typed step results: what each step hands the next ones (and a restore), as frozen values
with explicit (de)serialisation to the journal's JSON (camelCase keys, as the API shows a run's
steps). ``to_journal`` writes what ``from_journal`` reads back; unknown keys are ignored so a
record written by an older build still reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.runbooks.model import JsonDict, Mode
from shared.vaultaccess import AccessEntry, VaultRef


class StepResult(Protocol):
    """What a step body returns: a value the engine records with ``to_journal``."""

    def to_journal(self) -> JsonDict: ...


def _strs(raw: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in (raw or []))


def _str_map(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw or {}).items()}


@dataclass(frozen=True)
class BindingDoc:
    """One binding in a blast radius: where it is, which version it uses, whether the
    revocation reaches it (``yes``/``maybe``/``no``/``collateral``)."""

    resource_id: str
    service: str
    subscription: str
    name: str
    version: str | None
    versionless: bool
    principal_id: str | None
    affected: str
    health: str
    key: str | None = None  # set on collateral: the other key the binding uses

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {
            "resourceId": self.resource_id, "service": self.service, "subscription": self.subscription,
            "name": self.name, "version": self.version, "versionless": self.versionless,
            "principalId": self.principal_id, "affected": self.affected, "health": self.health,
        }
        if self.key is not None:
            doc["key"] = self.key
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> BindingDoc:
        return BindingDoc(
            resource_id=str(raw["resourceId"]), service=str(raw["service"]),
            subscription=str(raw.get("subscription") or ""), name=str(raw.get("name") or ""),
            version=str(raw["version"]) if raw.get("version") else None,
            versionless=bool(raw.get("versionless")),
            principal_id=str(raw["principalId"]) if raw.get("principalId") else None,
            affected=str(raw.get("affected") or "yes"), health=str(raw.get("health") or "unknown"),
            key=str(raw["key"]) if raw.get("key") else None,
        )


def _docs(raw: Any) -> tuple[BindingDoc, ...]:
    return tuple(BindingDoc.from_journal(d) for d in (raw or []))


@dataclass(frozen=True)
class VaultDoc:
    """Where the vault of a remove-access revocation lives in ARM."""

    url: str
    subscription: str
    resource_group: str
    name: str

    def to_journal(self) -> JsonDict:
        return {"url": self.url, "subscription": self.subscription, "resourceGroup": self.resource_group,
                "name": self.name}

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> VaultDoc:
        return VaultDoc(url=str(raw["url"]), subscription=str(raw["subscription"]),
                        resource_group=str(raw["resourceGroup"]), name=str(raw["name"]))

    @staticmethod
    def of(vault: VaultRef) -> VaultDoc:
        return VaultDoc(vault.url, vault.subscription, vault.resource_group, vault.name)

    def ref(self) -> VaultRef:
        return VaultRef(url=self.url, subscription=self.subscription, resource_group=self.resource_group,
                        name=self.name, rbac=False)


@dataclass(frozen=True)
class Radius:
    """``resolve`` of a revocation (and the dry run): the blast radius."""

    key: str
    mode: Mode
    bindings: tuple[BindingDoc, ...]
    collateral: tuple[BindingDoc, ...]
    unresolved_identities: tuple[str, ...]
    summary: JsonDict

    def targeted_principals(self) -> set[str]:
        """The identities (lower-case object ids) whose access a remove-access revocation with
        this blast radius takes away: every affected binding's and the collateral's."""
        return {d.principal_id.lower() for d in (*self.bindings, *self.collateral)
                if d.affected != "no" and d.principal_id}

    def to_journal(self) -> JsonDict:
        return {"key": self.key, "mode": str(self.mode), "bindings": [b.to_journal() for b in self.bindings],
                "collateral": [b.to_journal() for b in self.collateral],
                "unresolvedIdentities": list(self.unresolved_identities), "summary": self.summary}

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> Radius:
        return Radius(key=str(raw.get("key") or ""), mode=Mode(raw.get("mode") or Mode.DISABLE),
                      bindings=_docs(raw.get("bindings")), collateral=_docs(raw.get("collateral")),
                      unresolved_identities=_strs(raw.get("unresolvedIdentities")),
                      summary=dict(raw.get("summary") or {}))


@dataclass(frozen=True)
class VersionState:
    """``snapshot`` of a disable revocation: the versions enabled now, and those already
    disabled; ``rotation_policy`` is the key's rotation policy as it was (whole-key revocations
    take it out of play; their restore puts it back), ``None`` when not taken."""

    enabled: tuple[str, ...]
    already_disabled: tuple[str, ...]
    rotation_policy: JsonDict | None = None

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {"enabled": list(self.enabled), "alreadyDisabled": list(self.already_disabled)}
        if self.rotation_policy is not None:
            doc["rotationPolicy"] = self.rotation_policy
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> VersionState:
        policy = raw.get("rotationPolicy")
        return VersionState(_strs(raw.get("enabled")), _strs(raw.get("alreadyDisabled")),
                            dict(policy) if isinstance(policy, Mapping) else None)


@dataclass(frozen=True)
class AccessState:
    """``snapshot`` of a remove-access revocation: the targeted identities' entries now."""

    vault: VaultDoc
    entries: tuple[AccessEntry, ...]
    rotation_policy: JsonDict | None = None

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {"vault": self.vault.to_journal(), "entries": [e.as_dict() for e in self.entries]}
        if self.rotation_policy is not None:
            doc["rotationPolicy"] = self.rotation_policy
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> AccessState:
        policy = raw.get("rotationPolicy")
        return AccessState(VaultDoc.from_journal(raw["vault"]),
                           tuple(AccessEntry.from_dict(e) for e in raw.get("entries") or []),
                           dict(policy) if isinstance(policy, Mapping) else None)


@dataclass(frozen=True)
class Acted:
    """``act`` of any run: what changed. The common fields drive the outcome; the others are
    what one kind and mode records (``None``: not part of this act's record).

    - revoke/disable: ``done`` versions, ``already_disabled``, ``missing``, ``untagged``;
    - revoke/remove-access: ``done`` object ids, ``removed`` entries, ``vault``;
    - restore/disable: ``done`` versions, ``not_ours``, ``missing``, ``held_versions`` (those the
      hold disabled during the revocation, re-enabled too);
    - restore/remove-access: ``done`` object ids, ``added`` entries, ``held`` (identity -> the
      other revocation that keeps it).
    """

    done: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    already_disabled: tuple[str, ...] | None = None
    missing: tuple[str, ...] | None = None
    untagged: tuple[str, ...] | None = None
    not_ours: tuple[str, ...] | None = None
    removed: tuple[AccessEntry, ...] | None = None
    added: tuple[AccessEntry, ...] | None = None
    vault: VaultDoc | None = None
    held: Mapping[str, str] | None = None
    held_versions: tuple[str, ...] | None = None
    policy: str | None = None  # what happened to the rotation policy: "paused", "restored", ...

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {"done": list(self.done)}
        for name, value in (("alreadyDisabled", self.already_disabled), ("missing", self.missing),
                            ("untagged", self.untagged), ("notOurs", self.not_ours),
                            ("heldVersions", self.held_versions)):
            if value is not None:
                doc[name] = list(value)
        if self.removed is not None:
            doc["removed"] = [e.as_dict() for e in self.removed]
        if self.added is not None:
            doc["added"] = [e.as_dict() for e in self.added]
        if self.vault is not None:
            doc["vault"] = self.vault.to_journal()
        doc["failed"] = dict(self.failed)
        if self.held is not None:
            doc["held"] = dict(self.held)
        if self.policy is not None:
            doc["rotationPolicy"] = self.policy
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> Acted:
        def opt(name: str) -> tuple[str, ...] | None:
            return _strs(raw[name]) if name in raw else None

        def entries(name: str) -> tuple[AccessEntry, ...] | None:
            return tuple(AccessEntry.from_dict(e) for e in raw[name]) if name in raw else None

        vault = raw.get("vault")
        return Acted(
            done=_strs(raw.get("done")), failed=_str_map(raw.get("failed")),
            already_disabled=opt("alreadyDisabled"), missing=opt("missing"), untagged=opt("untagged"),
            not_ours=opt("notOurs"), removed=entries("removed"), added=entries("added"),
            vault=VaultDoc.from_journal(vault) if isinstance(vault, Mapping) else None,
            held=_str_map(raw["held"]) if "held" in raw else None, held_versions=opt("heldVersions"),
            policy=str(raw["rotationPolicy"]) if raw.get("rotationPolicy") else None,
        )


@dataclass(frozen=True)
class RestorePlan:
    """``resolve`` of a restore: what its revocation took, read from that run's steps."""

    revoke_run: str
    mode: Mode
    versions: tuple[str, ...]
    untagged: tuple[str, ...]
    entries: tuple[AccessEntry, ...]
    vault: VaultDoc | None
    bindings: tuple[BindingDoc, ...]
    collateral: tuple[BindingDoc, ...]
    held_versions: tuple[str, ...] = ()
    rotation_policy: JsonDict | None = None

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {
            "revokeRun": self.revoke_run, "mode": str(self.mode), "versions": list(self.versions),
            "untagged": list(self.untagged), "entries": [e.as_dict() for e in self.entries],
            "vault": self.vault.to_journal() if self.vault else None,
            "bindings": [b.to_journal() for b in self.bindings],
            "collateral": [b.to_journal() for b in self.collateral],
            "heldVersions": list(self.held_versions),
        }
        if self.rotation_policy is not None:
            doc["rotationPolicy"] = self.rotation_policy
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> RestorePlan:
        vault = raw.get("vault")
        policy = raw.get("rotationPolicy")
        return RestorePlan(
            revoke_run=str(raw["revokeRun"]), mode=Mode(raw.get("mode") or Mode.DISABLE),
            versions=_strs(raw.get("versions")), untagged=_strs(raw.get("untagged")),
            entries=tuple(AccessEntry.from_dict(e) for e in raw.get("entries") or []),
            vault=VaultDoc.from_journal(vault) if isinstance(vault, Mapping) else None,
            bindings=_docs(raw.get("bindings")), collateral=_docs(raw.get("collateral")),
            held_versions=_strs(raw.get("heldVersions")),
            rotation_policy=dict(policy) if isinstance(policy, Mapping) else None,
        )


@dataclass(frozen=True)
class VersionMark:
    enabled: bool
    revoked_by: str | None


@dataclass(frozen=True)
class RestoreState:
    """``snapshot`` of a restore: the versions' state (disable) or the entries present (remove-access)."""

    versions: Mapping[str, VersionMark] | None = None
    entries: tuple[AccessEntry, ...] | None = None

    def to_journal(self) -> JsonDict:
        if self.versions is not None:
            return {"versions": {v: {"enabled": m.enabled, "revokedBy": m.revoked_by}
                                 for v, m in self.versions.items()}}
        return {"entries": [e.as_dict() for e in self.entries or ()]}

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> RestoreState:
        if "versions" in raw:
            return RestoreState(versions={
                str(v): VersionMark(bool(m.get("enabled")), str(m["revokedBy"]) if m.get("revokedBy") else None)
                for v, m in dict(raw["versions"]).items()})
        return RestoreState(entries=tuple(AccessEntry.from_dict(e) for e in raw.get("entries") or []))


@dataclass(frozen=True)
class Verified:
    """``verify``: which services confirmed the change, which did not (yet), which cannot say.
    ``pending`` is set only on a handed-back (partial) record: polling goes on."""

    expected: str
    deadline: str
    confirmed: Mapping[str, str]
    gone: tuple[str, ...]
    unverifiable: tuple[str, ...]
    unconfirmed: Mapping[str, str]
    pending: tuple[str, ...] | None = None
    # resource id -> "resource-state", "audit-evidence", "both" or "none" (shared/usage.py)
    proofs: Mapping[str, str] | None = None

    def to_journal(self) -> JsonDict:
        doc: JsonDict = {"expected": self.expected, "deadline": self.deadline, "confirmed": dict(self.confirmed),
                         "gone": list(self.gone), "unverifiable": list(self.unverifiable),
                         "unconfirmed": dict(self.unconfirmed)}
        if self.proofs is not None:
            doc["proofs"] = dict(self.proofs)
        if self.pending is not None:
            doc["pending"] = list(self.pending)
        return doc

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> Verified:
        return Verified(
            expected=str(raw.get("expected") or ""), deadline=str(raw.get("deadline") or ""),
            confirmed=_str_map(raw.get("confirmed")), gone=_strs(raw.get("gone")),
            unverifiable=_strs(raw.get("unverifiable")), unconfirmed=_str_map(raw.get("unconfirmed")),
            pending=_strs(raw["pending"]) if "pending" in raw else None,
            proofs=_str_map(raw["proofs"]) if "proofs" in raw else None,
        )


@dataclass(frozen=True)
class Published:
    """``publish``: the outcome event sent and the run's final status."""

    published: str
    status: str

    def to_journal(self) -> JsonDict:
        return {"published": self.published, "status": self.status}

    @staticmethod
    def from_journal(raw: Mapping[str, Any]) -> Published:
        return Published(str(raw.get("published") or ""), str(raw.get("status") or ""))


def sorted_tuple(items: Sequence[str] | set[str]) -> tuple[str, ...]:
    return tuple(sorted(items))
