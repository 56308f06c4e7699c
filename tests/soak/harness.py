"""The in-process soak's world: a small estate over two subscriptions, the app wired to it
through a recording transport, the triggers' user functions, and observation of the sandbox
state for the invariants (tests/soak/invariants.py).

Key material: RSA generation costs ~0.2 s per key on a CI core, so new versions are mostly
made by importing pre-generated material (``KeyClient.import_key``: a real BYOK new version,
which Key Vault announces with ``KeyNewVersionCreated`` like a rotation). Some rotations use
``rotate_key`` so that path is soaked too.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import requests
import structlog
from azure.keyvault.keys import JsonWebKey, KeyClient
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.transport import SandboxAdapter, SandboxTransport, StaticTokenCredential, sandbox_session
from sandbox.world import World
from shared.model import BackupRetention, Binding, KeyRef, KeyVersion, ServiceType
from shared.targets.cosmos import backup_retention
from tests.app.estate import RG, kv_mgmt, make_account, make_cluster, make_vault
from tests.soak.invariants import Snapshot

ADMIN = "https://sandbox.local"
POOL_SIZE = 6
HOLD_TAG = "keysteward-hold"


@functools.cache
def key_pool() -> tuple[rsa.RSAPrivateKey, ...]:
    """Key material shared by every seed of the process (generated once)."""
    return tuple(rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(POOL_SIZE))


def _b(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def jwk_of(key: rsa.RSAPrivateKey) -> JsonWebKey:
    n = key.private_numbers()
    return JsonWebKey(kty="RSA", n=_b(n.public_numbers.n), e=_b(n.public_numbers.e), d=_b(n.d), p=_b(n.p),
                      q=_b(n.q), dp=_b(n.dmp1), dq=_b(n.dmq1), qi=_b(n.iqmp),
                      key_ops=["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"])


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The app logs one line per binding per pass; thousands of passes need no console output."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
                        cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**saved)


# ---- the app's requests, recorded at the transport ------------------------------------------
class RecordingAdapter(SandboxAdapter):
    """Answers from the world like SandboxAdapter and records every request the app sends,
    including those to hosts the sandbox does not serve (they fail like DNS would)."""

    def __init__(self, world: World, log: list[dict[str, Any]]) -> None:
        super().__init__(world)
        self.log = log

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        from urllib.parse import urlsplit

        url = urlsplit(request.url or "")
        entry: dict[str, Any] = {"method": request.method, "host": url.netloc.lower(), "path": url.path,
                                 "status": 0, "time": self.world.clock.now().isoformat(),
                                 "service": _service_of(url.netloc.lower())}
        self.log.append(entry)
        response = super().send(request, *args, **kwargs)
        entry["status"] = response.status_code
        return response


def _service_of(host: str) -> str:
    if host == "management.azure.com":
        return "arm"
    if host.endswith(".vault.azure.net"):
        return "vault"
    return "other"


def recording_transport(world: World, log: list[dict[str, Any]]) -> SandboxTransport:
    session = requests.Session()
    adapter = RecordingAdapter(world, log)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return SandboxTransport(world, session=session)


def admin(world: World, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = sandbox_session(world).request(method, ADMIN + path, json=body)
    if r.status_code >= 300:
        raise AssertionError(f"admin {method} {path}: {r.status_code} {r.text}")
    return r.json() if r.content else None


# ---- the estate ---------------------------------------------------------------------------------
@dataclass
class SoakEstate:
    world: World
    subs: list[str]
    vaults: dict[str, str]  # name -> URL, configured vaults
    foreign: str  # URL of a vault keysteward must never call
    keys: list[KeyRef]  # configured keys (versionless)
    foreign_key: KeyRef
    resources: list[tuple[str, str, str, str]] = field(default_factory=list)  # (service, sub, name, key uri)

    def key_client(self, vault_url: str) -> KeyClient:
        return KeyClient(vault_url, StaticTokenCredential(), transport=SandboxTransport(self.world))

    @property
    def all_keys(self) -> list[KeyRef]:
        return [*self.keys, self.foreign_key]


def build_estate(world: World, rng: random.Random) -> SoakEstate:
    """Two configured vaults (one per subscription) with one or two keys each, one foreign vault;
    Kusto clusters pinned to them and (versionless) Cosmos DB accounts across both
    subscriptions, one more account on the first key, a held cluster, and a cluster on the
    foreign key."""
    subs = list(world.subscriptions[:2])
    pool = key_pool()
    vaults = {f"kv-soak-{i}": make_vault(world, subs[i], f"kv-soak-{i}") for i in range(2)}
    foreign = make_vault(world, subs[0], "kv-foreign")
    keys: list[KeyRef] = []
    for i, (_name, url) in enumerate(vaults.items()):
        for j in range(1 + (rng.random() < 0.5 if i == 0 else 0)):
            kc = KeyClient(url, StaticTokenCredential(), transport=SandboxTransport(world))
            kc.import_key(f"cmk{i}{j}", jwk_of(pool[rng.randrange(POOL_SIZE)]))
            keys.append(KeyRef(url, f"cmk{i}{j}"))
    KeyClient(foreign, StaticTokenCredential(), transport=SandboxTransport(world)).import_key(
        "cmkx", jwk_of(pool[0]))
    foreign_key = KeyRef(foreign, "cmkx")
    estate = SoakEstate(world, subs, vaults, foreign, keys, foreign_key)
    held = rng.random() < 0.5
    n = 0
    for key in [*keys, foreign_key]:
        vault_name = key.vault_name
        vault_sub = subs[0] if vault_name in ("kv-soak-0", "kv-foreign") else subs[1]
        version = current_version(world, key)
        per_key = 1 if key is foreign_key else 2
        for _ in range(per_key):
            sub = subs[rng.randrange(2)]
            name = f"adx{n}"
            n += 1
            tags = {HOLD_TAG: "true"} if held and n == 2 else None
            make_cluster(world, sub, name, vault_url=key.vault_url, key=key.name, version=version,
                         grant_in=(vault_sub, vault_name), tags=tags)
            estate.resources.append(("kusto", sub, name, key.uri))
        if key is foreign_key:
            continue
        sub = subs[rng.randrange(2)]
        name = f"cosmos{n}"
        n += 1
        # Cosmos DB takes only versionless key URIs: the account follows the key itself.
        make_account(world, sub, name, key_uri=key.uri, grant_in=(vault_sub, vault_name))
        estate.resources.append(("cosmos", sub, name, key.uri))
    # One versionless account on the first key: the in-use hazard the retention rule guards.
    make_account(world, subs[0], "cosmosvl", key_uri=keys[0].uri, grant_in=(subs[0], "kv-soak-0"))
    estate.resources.append(("cosmos", subs[0], "cosmosvl", keys[0].uri))
    return estate


def current_version(world: World, key: KeyRef) -> str:
    return world.vaults[key.vault_name].keys[key.name.lower()].current.version


# ---- observation (no request: read the sandbox's state model) -------------------------------------
def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def snapshot(world: World, estate: SoakEstate) -> Snapshot:
    """Every version of every key of the estate and every CMK binding, read from the state model."""
    with world.lock:
        versions: dict[str, list[KeyVersion]] = {}
        for key in estate.all_keys:
            vault = world.vaults[key.vault_name]
            live = vault.keys.get(key.name.lower())
            if live is None:
                continue
            versions[key.key_id] = [
                KeyVersion(ref=key.with_version(v.version), enabled=v.enabled, created=_ts(v.created),
                           not_before=_ts(v.nbf), expires_on=_ts(v.exp), key_type=v.kty, key_size=v.size,
                           tags=dict(v.tags))
                for v in live.versions.values()
            ]
        bindings: list[Binding] = []
        busy: set[str] = set()
        for res in world.resources.values():
            binding = _binding_of(res)
            if binding is not None:
                bindings.append(binding)
                pending = res.sim.get("pendingOperation")
                op = world.operations.get(str(pending)) if pending else None
                if op is not None and op.status == "InProgress":
                    busy.add(res.id.lower())
        return Snapshot(world.clock.now(), versions, bindings, frozenset(busy))


def _binding_of(res: Any) -> Binding | None:
    rtype = res.type.lower()
    props = res.properties
    if rtype == "microsoft.kusto/clusters":
        kvp = props.get("keyVaultProperties")
        if not isinstance(kvp, dict) or not kvp.get("keyName"):
            return None
        ref = KeyRef(str(kvp["keyVaultUri"]).rstrip("/").lower(), str(kvp["keyName"]))
        pinned = kvp.get("keyVersion") or None
        return _binding(res, ServiceType.KUSTO, ref, pinned, pinned or res.sim.get("versionInUse"))
    if rtype == "microsoft.documentdb/databaseaccounts":
        uri = props.get("keyVaultKeyUri")
        if not uri:
            return None
        base, _, rest = str(uri).partition("/keys/")
        parts = rest.strip("/").split("/")
        ref = KeyRef(base.rstrip("/").lower(), parts[0])
        in_use = str(props.get("keyVaultKeyUriVersion") or "").rstrip("/").rsplit("/", 1)[-1] or None
        return _binding(res, ServiceType.COSMOS, ref, None, in_use,
                        backup=backup_retention(_attrs(props.get("backupPolicy"))))
    return None


def _attrs(raw: Any) -> Any:
    """A JSON object as attributes with the SDK's snake_case names (what backup_retention reads)."""
    if not isinstance(raw, dict):
        return raw
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): _attrs(v) for k, v in raw.items()}
    return SimpleNamespace(**snake)


def _binding(res: Any, service: ServiceType, ref: KeyRef, pinned: str | None, in_use: str | None,
             backup: BackupRetention | None = None) -> Binding:
    return Binding(resource_id=res.id, service=service, subscription=res.subscription,
                   resource_group=res.resource_group, name=res.name, location=res.location, key=ref,
                   pinned_version=pinned, in_use_version=in_use, updatable=True,
                   provisioning_state=str(res.properties.get("provisioningState") or ""), tags=dict(res.tags),
                   backup=backup)


def world_requests(world: World, since: int) -> list[dict[str, Any]]:
    return [e.as_dict() for e in world.requests_since(since)]


class Inbox:
    """The Event Grid webhook of the soak: what the sandbox delivers (with its duplicates and
    shuffling) waits here until a step hands it to the trigger."""

    URL = "https://soak-inbox.test"

    def __init__(self, world: World, *, duplicate_rate: float, shuffle: bool) -> None:
        self.pending: list[dict[str, Any]] = []
        self.seen: dict[str, dict[str, Any]] = {}
        world.eventgrid.register_local_endpoint(self.URL, self._receive)
        world.eventgrid.subscribe(endpoint=self.URL + "/events", schema="EventGridSchema",
                                  duplicate_rate=duplicate_rate, shuffle=shuffle)
        world.tick(world.clock.now())

    def _receive(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        payload = json.loads(body) if body else []
        if headers.get("aeg-event-type", "").lower() == "subscriptionvalidation":
            code = payload[0]["data"]["validationCode"]
            return 200, {"Content-Type": "application/json"}, json.dumps({"validationResponse": code}).encode()
        for event in payload:
            self.pending.append(event)
            self.seen.setdefault(str(event["id"]), event)
        return 200, {}, b""

    def take(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out


__all__ = [
    "RG",
    "Inbox",
    "SoakEstate",
    "admin",
    "build_estate",
    "key_pool",
    "kv_mgmt",
    "quiet_logs",
    "recording_transport",
    "snapshot",
    "world_requests",
]
