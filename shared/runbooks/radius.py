"""The blast radius, computed without I/O: which bindings a revocation of a key (or one
version of it) reaches, and, for ``remove-access``, the collateral: bindings of other keys or
versions in the same vault whose identity loses its vault access too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from shared.inventory import for_key
from shared.model import Binding, KeyRef
from shared.runbooks.model import JsonDict, Mode
from shared.runbooks.results import BindingDoc, Radius


def affected(binding: Binding, version: str | None) -> str:
    """``yes``/``maybe``/``no``: whether revoking ``version`` (None: the whole key) reaches it."""
    if version is None:
        return "yes"
    if binding.pinned_version is not None:
        return "yes" if binding.pinned_version == version else "no"
    if binding.in_use_version is None:
        return "maybe"  # versionless and the service does not say which version it uses
    return "yes" if binding.in_use_version == version else "no"


def binding_doc(binding: Binding, *, reach: str, health: str, key: str | None = None) -> BindingDoc:
    return BindingDoc(
        resource_id=binding.resource_id, service=binding.service.value, subscription=binding.subscription,
        name=binding.name, version=binding.effective_version, versionless=binding.versionless,
        principal_id=binding.principal_id, affected=reach, health=health, key=key,
    )


def summary(docs: Iterable[BindingDoc]) -> JsonDict:
    hit = [b for b in docs if b.affected != "no"]
    return {
        "affected": len(hit),
        "byVersion": dict(Counter(str(b.version or "versionless") for b in hit)),
        "bySubscription": dict(Counter(b.subscription for b in hit)),
        "byService": dict(Counter(b.service for b in hit)),
    }


def blast_radius(everything: Sequence[Binding], key: KeyRef, mode: Mode,
                 health: Callable[[Binding], str]) -> Radius:
    """The blast radius of revoking ``key`` in ``mode`` over the estate's bindings ``everything``;
    ``health`` says what a binding's service reports about its key."""
    docs = [binding_doc(b, reach=affected(b, key.version), health=health(b)) for b in for_key(everything, key)]
    collateral: list[BindingDoc] = []
    if mode == Mode.REMOVE_ACCESS:
        principals = {d.principal_id.lower() for d in docs if d.affected != "no" and d.principal_id}
        listed = {d.resource_id.lower() for d in docs if d.affected != "no"}
        collateral = [
            binding_doc(b, reach="collateral", health=health(b), key=b.key.uri)
            for b in everything
            if b.principal_id and b.principal_id.lower() in principals
            and b.key.vault_url == key.vault_url and b.resource_id.lower() not in listed
        ]
    unresolved = tuple(d.resource_id for d in docs
                       if d.affected != "no" and not d.principal_id and mode == Mode.REMOVE_ACCESS)
    return Radius(key=key.uri, mode=mode, bindings=tuple(docs), collateral=tuple(collateral),
                  unresolved_identities=unresolved, summary=summary(docs))
