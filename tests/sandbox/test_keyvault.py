"""The sandbox's Key Vault data plane (keys), driven only through azure-keyvault-keys.

Every test talks to an in-process world through the official KeyClient / CryptographyClient
over SandboxTransport, and checks outcomes the SDK reports, the world's request log and the
events the vault published.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.rest import HttpRequest
from azure.keyvault.keys import (
    JsonWebKey,
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox import keyvault
from sandbox.state import Key, KeyVersion, Vault
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World

DAY = 86_400
API = "2025-07-01"

# One RSA key shared by tests that only need "some valid key material" (import is cheap,
# generation is not).
SHARED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ---- fixtures and helpers -------------------------------------------------------------------


class KvEventRecorder:
    """Wraps the world's Event Grid bus: records what the vault publishes, forwards everything."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self.events: list[dict[str, Any]] = []

    def publish(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)
        self._bus.publish(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    def of_type(self, suffix: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["eventType"] == f"Microsoft.KeyVault.{suffix}"]


class RecordingCredential(StaticTokenCredential):
    """A static token that remembers which scopes and tenant the SDK asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append((scopes, kwargs))
        return super().get_token(*scopes, **kwargs)


def kv_add_vault(
    world: World,
    name: str | None = None,
    *,
    purge_protection: bool = False,
    retention_days: int = 90,
) -> Vault:
    """Adds a vault directly to the world's state (ARM's job in real use)."""
    # Unique names keep the SDK's process-wide challenge cache from hiding the handshake.
    vault_name = name or f"kv{uuid.uuid4().hex[:12]}"
    vault = Vault(
        name=vault_name,
        subscription=world.subscriptions[0],
        resource_group="rg-keys",
        location="westeurope",
        properties={
            "enableSoftDelete": True,
            "enablePurgeProtection": purge_protection,
            "softDeleteRetentionInDays": retention_days,
            "accessPolicies": [],
            "tenantId": world.tenant_id,
            "vaultUri": world.vault_url_for(vault_name) + "/",
        },
    )
    world.vaults[vault_name.lower()] = vault
    return vault


def kv_client(world: World, vault: Vault, **kwargs: Any) -> KeyClient:
    return KeyClient(
        f"https://{vault.name}.vault.azure.net",
        kwargs.pop("credential", StaticTokenCredential()),
        transport=SandboxTransport(world),
        verify_challenge_resource=False,
        **kwargs,
    )


def kv_crypto(world: World, key_id: str) -> CryptographyClient:
    return CryptographyClient(
        key_id, StaticTokenCredential(), transport=SandboxTransport(world), verify_challenge_resource=False
    )


def kv_jwk(private_key: rsa.RSAPrivateKey = SHARED_KEY, **kwargs: Any) -> JsonWebKey:
    """A JWK with private parts, as import_key expects."""
    numbers = private_key.private_numbers()

    def b(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    pub = numbers.public_numbers
    return JsonWebKey(
        kty="RSA",
        n=b(pub.n),
        e=b(pub.e),
        d=b(numbers.d),
        p=b(numbers.p),
        q=b(numbers.q),
        dp=b(numbers.dmp1),
        dq=b(numbers.dmq1),
        qi=b(numbers.iqmp),
        **kwargs,
    )


def kv_error_code(err: HttpResponseError) -> str | None:
    return err.error.code if err.error else None


@pytest.fixture
def kv_world() -> World:
    return World()


@pytest.fixture
def kv_events(kv_world: World) -> KvEventRecorder:
    recorder = KvEventRecorder(kv_world.eventgrid)
    kv_world.eventgrid = recorder  # type: ignore[assignment]  # a recording wrapper with the bus's interface
    return recorder


@pytest.fixture
def kv_vault(kv_world: World) -> Vault:
    return kv_add_vault(kv_world)


@pytest.fixture
def kv(kv_world: World, kv_vault: Vault) -> Iterator[KeyClient]:
    client = kv_client(kv_world, kv_vault)
    yield client
    client.close()


# ---- the front door -------------------------------------------------------------------------


def test_challenge_handshake_then_any_bearer_token(kv_world: World, kv_vault: Vault) -> None:
    credential = RecordingCredential()
    client = kv_client(kv_world, kv_vault, credential=credential)

    key = client.create_rsa_key("first")

    assert key.name == "first"
    statuses = [(e.method, e.path, e.status) for e in kv_world.requests]
    assert statuses == [("POST", "/keys/first/create", 401), ("POST", "/keys/first/create", 200)]
    scopes, kwargs = credential.calls[0]
    assert scopes == ("https://vault.azure.net/.default",)
    assert kwargs.get("tenant_id") == kv_world.tenant_id


def test_unknown_vault_fails_like_dns(kv_world: World) -> None:
    client = KeyClient(
        "https://nowhere.vault.azure.net",
        StaticTokenCredential(),
        transport=SandboxTransport(kv_world),
        verify_challenge_resource=False,
        retry_total=0,
    )
    with pytest.raises(ServiceRequestError):
        client.get_key("anything")


def test_unknown_key_is_404_with_key_vaults_message(kv: KeyClient) -> None:
    with pytest.raises(ResourceNotFoundError) as info:
        kv.get_key("missing")
    assert kv_error_code(info.value) == "KeyNotFound"
    assert "A key with (name/id) missing was not found in this key vault" in str(info.value)


def test_unknown_method_is_405_and_bad_requests_are_400(kv: KeyClient) -> None:
    kv.create_rsa_key("k")
    not_allowed = kv.send_request(HttpRequest("DELETE", "/keys/k/versions"))
    assert not_allowed.status_code == 405
    assert not_allowed.json()["error"]["code"] == "MethodNotAllowed"

    bad_name = kv.send_request(HttpRequest("POST", "/keys/bad_name/create", json={"kty": "RSA"}))
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["code"] == "BadParameter"

    no_json = kv.send_request(HttpRequest("POST", "/keys/k2/create", content=b"{not json"))
    assert no_json.status_code == 400

    old_api = kv.send_request(HttpRequest("GET", "/keys/k", params={"api-version": "7.4"}))
    assert old_api.status_code == 200
    bogus_api = kv.send_request(HttpRequest("GET", "/keys/k", params={"api-version": "1999"}))
    assert bogus_api.status_code == 400


# ---- create / import / get / list -------------------------------------------------------------


@pytest.mark.parametrize(("hsm", "size"), [(False, 2048), (True, 2048), (False, 3072)])
def test_create_rsa_key_with_real_material(kv_world: World, kv: KeyClient, hsm: bool, size: int) -> None:
    key = kv.create_rsa_key("cmk", size=size, hardware_protected=hsm)

    assert key.key_type == ("RSA-HSM" if hsm else "RSA")
    assert key.key.n is not None
    assert len(key.key.n) * 8 == size
    assert key.key.e == b"\x01\x00\x01"
    assert key.key_operations == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
    assert key.properties.enabled is True
    assert key.properties.created_on == datetime.fromtimestamp(kv_world.now_ts(), UTC)
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    assert key.properties.recoverable_days == 90
    assert key.id == f"https://{key.properties.vault_url.split('//')[1]}/keys/cmk/{key.properties.version}"


def test_recovery_level_follows_vault_settings(kv_world: World) -> None:
    protected = kv_add_vault(kv_world, purge_protection=True)
    short = kv_add_vault(kv_world, retention_days=7)
    assert kv_client(kv_world, protected).create_rsa_key("a").properties.recovery_level == "Recoverable"
    made = kv_client(kv_world, short).create_rsa_key("a")
    assert made.properties.recovery_level == "CustomizedRecoverable+Purgeable"
    assert made.properties.recoverable_days == 7


def test_create_refuses_other_sizes_and_types_without_side_effects(
    kv_world: World, kv_vault: Vault, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    with pytest.raises(HttpResponseError) as size:
        kv.create_rsa_key("k", size=1024)
    assert size.value.status_code == 400
    assert kv_error_code(size.value) == "BadParameter"
    with pytest.raises(HttpResponseError) as ec:
        kv.create_ec_key("k")
    assert ec.value.status_code == 400
    with pytest.raises(HttpResponseError) as ops:
        kv.create_rsa_key("k", key_operations=["wrapKey", "fly"])
    assert ops.value.status_code == 400
    with pytest.raises(HttpResponseError) as tags:
        kv.create_rsa_key("k", tags={f"t{i}": "v" for i in range(16)})
    assert tags.value.status_code == 400

    assert kv_vault.keys == {}
    assert kv_events.events == []


def test_import_keeps_the_given_material(kv: KeyClient, kv_world: World) -> None:
    imported = kv.import_key("byo", kv_jwk(key_ops=["wrapKey", "unwrapKey"]), tags={"owner": "ops"})

    assert imported.key.n == SHARED_KEY.public_key().public_numbers().n.to_bytes(256, "big")
    assert imported.key_operations == ["wrapKey", "unwrapKey"]
    assert imported.properties.tags == {"owner": "ops"}
    # Wrap locally with the public half; only the vault's private half can unwrap it.
    wrapped = SHARED_KEY.public_key().encrypt(
        b"k" * 32, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    assert imported.id is not None
    crypto = kv_crypto(kv_world, imported.id)
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"k" * 32


def test_import_refuses_public_only_or_broken_keys(kv_vault: Vault, kv: KeyClient) -> None:
    jwk = kv_jwk()
    public_only = JsonWebKey(kty="RSA", n=jwk.n, e=jwk.e)
    with pytest.raises(HttpResponseError) as info:
        kv.import_key("pub", public_only)
    assert info.value.status_code == 400
    broken = kv_jwk()
    broken.q = b"\x07"
    with pytest.raises(HttpResponseError):
        kv.import_key("broken", broken)
    assert kv_vault.keys == {}


def test_get_latest_and_specific_versions(kv: KeyClient) -> None:
    first = kv.create_rsa_key("cmk")
    second = kv.create_rsa_key("cmk")

    assert kv.get_key("cmk").properties.version == second.properties.version
    old = kv.get_key("cmk", first.properties.version)
    assert old.key.n == first.key.n
    assert old.key.n != second.key.n
    with pytest.raises(ResourceNotFoundError):
        kv.get_key("cmk", "0" * 32)


def test_list_keys_pages_with_next_links(kv_world: World, kv: KeyClient) -> None:
    names = [f"key-{i}" for i in range(7)]
    for name in names:
        kv.import_key(name, kv_jwk())
    before = kv_world.last_seq

    listed = [p.name for p in kv.list_properties_of_keys(max_page_size=3)]

    assert sorted(listed) == names
    pages = [e for e in kv_world.requests_since(before) if e.path == "/keys"]
    assert len(pages) == 3
    assert "maxresults=3" in pages[0].query
    assert "$skiptoken" in pages[1].query


def test_list_keys_refuses_page_sizes_above_25(kv: KeyClient) -> None:
    with pytest.raises(HttpResponseError) as info:
        list(kv.list_properties_of_keys(max_page_size=26))
    assert info.value.status_code == 400


def test_list_versions_pages_and_is_empty_for_unknown_keys(kv_world: World, kv: KeyClient) -> None:
    versions = [kv.import_key("cmk", kv_jwk()).properties.version for _ in range(4)]
    before = kv_world.last_seq

    listed = [p.version for p in kv.list_properties_of_key_versions("cmk", max_page_size=3)]

    assert listed == versions
    assert len([e for e in kv_world.requests_since(before) if e.path == "/keys/cmk/versions"]) == 2
    assert list(kv.list_properties_of_key_versions("nothing-here")) == []


# ---- update / rotate / rotation policy ----------------------------------------------------------


def test_update_properties_per_version(kv_world: World, kv: KeyClient) -> None:
    first = kv.create_rsa_key("cmk")
    second = kv.create_rsa_key("cmk")
    exp = datetime.fromtimestamp(kv_world.now_ts() + 90 * DAY, UTC)
    nbf = datetime.fromtimestamp(kv_world.now_ts() - DAY, UTC)
    kv_world.clock.advance(timedelta(minutes=5))

    updated = kv.update_key_properties(
        "cmk",
        first.properties.version,
        enabled=False,
        tags={"state": "retired"},
        expires_on=exp,
        not_before=nbf,
    )
    latest = kv.update_key_properties("cmk", key_operations=["wrapKey", "unwrapKey"])

    assert updated.properties.enabled is False
    assert updated.properties.tags == {"state": "retired"}
    assert updated.properties.expires_on == exp
    assert updated.properties.not_before == nbf
    assert updated.properties.updated_on == kv_world.clock.now().replace(microsecond=0)
    assert latest.properties.version == second.properties.version
    assert latest.key_operations == ["wrapKey", "unwrapKey"]
    by_version = {p.version: p for p in kv.list_properties_of_key_versions("cmk")}
    assert by_version[first.properties.version].enabled is False
    assert by_version[second.properties.version].enabled is True
    # Key Vault refuses to read a disabled version.
    with pytest.raises(HttpResponseError) as info:
        kv.get_key("cmk", first.properties.version)
    assert info.value.status_code == 403
    assert "Operation get is not allowed on a disabled key" in str(info.value)


def test_malformed_update_changes_nothing(kv_vault: Vault, kv: KeyClient) -> None:
    key = kv.create_rsa_key("cmk", tags={"a": "1"})
    bad = kv.send_request(
        HttpRequest("PATCH", "/keys/cmk/", json={"attributes": {"enabled": False}, "tags": {"a": 5}})
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "BadParameter"
    version = kv_vault.keys["cmk"].versions[key.properties.version or ""]
    assert version.enabled is True
    assert version.tags == {"a": "1"}


def test_rotate_makes_a_like_version_with_policy_expiry(
    kv_world: World, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    original = kv.create_rsa_key("cmk", size=3072, key_operations=["wrapKey", "unwrapKey"], tags={"t": "1"})
    kv.update_key_rotation_policy("cmk", KeyRotationPolicy(), expires_in="P90D")

    rotated = kv.rotate_key("cmk")

    assert rotated.properties.version != original.properties.version
    assert rotated.key.n is not None
    assert len(rotated.key.n) * 8 == 3072
    assert rotated.key_operations == ["wrapKey", "unwrapKey"]
    assert rotated.properties.expires_on == datetime.fromtimestamp(kv_world.now_ts() + 90 * DAY, UTC)
    assert [e["data"]["Version"] for e in kv_events.of_type("KeyNewVersionCreated")] == [
        original.properties.version,
        rotated.properties.version,
    ]


def test_rotation_policy_default_then_roundtrip(kv: KeyClient) -> None:
    kv.create_rsa_key("cmk")
    default = kv.get_key_rotation_policy("cmk")
    assert default.id is None
    assert [(a.action, a.time_before_expiry) for a in default.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, "P30D")
    ]

    actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P60D")]
    stored = kv.update_key_rotation_policy(
        "cmk", KeyRotationPolicy(), lifetime_actions=actions, expires_in="P1Y"
    )

    assert stored.id is not None
    assert stored.id.endswith("/keys/cmk/rotationpolicy")
    assert stored.expires_in == "P1Y"
    fetched = kv.get_key_rotation_policy("cmk")
    assert {(a.action, a.time_after_create, a.time_before_expiry) for a in fetched.lifetime_actions} == {
        (KeyRotationPolicyAction.rotate, "P60D", None),
        (KeyRotationPolicyAction.notify, None, "P30D"),
    }


@pytest.mark.parametrize(
    ("actions", "expires_in"),
    [
        ([], "P27D"),
        ([("rotate", "P6D", None)], None),
        ([("rotate", "P80D", None)], "P84D"),
        ([("rotate", None, "P80D")], "P84D"),
        ([("notify", "P30D", None)], None),
        ([("notify", None, "P3D")], None),
        ([("rotate", "P30D", None), ("rotate", "P60D", None)], None),
        ([("rotate", "P30X", None)], None),
        ([], "soon"),
    ],
)
def test_rotation_policy_validation(
    kv: KeyClient, kv_vault: Vault, actions: list[tuple[str, str | None, str | None]], expires_in: str | None
) -> None:
    kv.create_rsa_key("cmk")
    lifetime = [
        KeyRotationLifetimeAction(a, time_after_create=tac, time_before_expiry=tbe) for a, tac, tbe in actions
    ]
    with pytest.raises(HttpResponseError) as info:
        kv.update_key_rotation_policy(
            "cmk", KeyRotationPolicy(), lifetime_actions=lifetime, expires_in=expires_in
        )
    assert info.value.status_code == 400
    assert kv_error_code(info.value) == "BadParameter"
    assert kv_vault.keys["cmk"].rotation_policy is None


# ---- delete / recover / purge -------------------------------------------------------------------


def test_delete_and_recover_pollers_complete(kv_world: World, kv_vault: Vault, kv: KeyClient) -> None:
    key = kv.create_rsa_key("cmk")
    deleted_at = kv_world.now_ts()

    deleted = kv.begin_delete_key("cmk")
    deleted.wait()
    result = deleted.result()

    assert result.recovery_id == f"https://{kv_vault.name}.vault.azure.net/deletedkeys/cmk"
    assert result.deleted_date == datetime.fromtimestamp(deleted_at, UTC)
    assert result.scheduled_purge_date == datetime.fromtimestamp(deleted_at + 90 * DAY, UTC)
    with pytest.raises(ResourceNotFoundError):
        kv.get_key("cmk")
    assert [d.name for d in kv.list_deleted_keys()] == ["cmk"]
    assert kv.get_deleted_key("cmk").properties.version == key.properties.version
    with pytest.raises(ResourceExistsError) as conflict:
        kv.create_rsa_key("cmk")
    assert "deleted but recoverable state" in str(conflict.value)
    assert "ObjectIsDeletedButRecoverable" in str(conflict.value)

    recovered = kv.begin_recover_deleted_key("cmk")
    recovered.wait()

    assert recovered.result().properties.version == key.properties.version
    assert kv.get_key("cmk").key.n == key.key.n
    with pytest.raises(ResourceNotFoundError) as gone:
        kv.get_deleted_key("cmk")
    assert "Deleted Key not found: cmk" in str(gone.value)


def test_purge_without_protection(kv: KeyClient, kv_vault: Vault) -> None:
    kv.create_rsa_key("cmk")
    kv.begin_delete_key("cmk").wait()

    kv.purge_deleted_key("cmk")

    assert kv_vault.deleted_keys == {}
    kv.create_rsa_key("cmk")  # the name is free again


def test_purge_refused_under_purge_protection(kv_world: World) -> None:
    vault = kv_add_vault(kv_world, purge_protection=True)
    client = kv_client(kv_world, vault)
    client.create_rsa_key("cmk")
    client.begin_delete_key("cmk").wait()

    with pytest.raises(HttpResponseError) as info:
        client.purge_deleted_key("cmk")

    assert info.value.status_code == 403
    assert "purge protection is enabled" in str(info.value)
    assert client.get_deleted_key("cmk").name == "cmk"


def test_soft_deleted_keys_are_purged_when_retention_ends(kv_world: World) -> None:
    vault = kv_add_vault(kv_world, retention_days=7)
    client = kv_client(kv_world, vault)
    client.create_rsa_key("cmk")
    client.begin_delete_key("cmk").wait()

    kv_world.clock.advance(timedelta(days=6))
    assert client.get_deleted_key("cmk").name == "cmk"
    kv_world.clock.advance(timedelta(days=1, seconds=1))

    assert vault.deleted_keys == {}
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("cmk")


# ---- cryptography ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256])
def test_wrap_unwrap_round_trip(kv_world: World, kv: KeyClient, alg: KeyWrapAlgorithm) -> None:
    key = kv.create_rsa_key("cmk")
    assert key.id is not None
    crypto = kv_crypto(kv_world, key.id)
    secret = os.urandom(32)

    wrapped = crypto.wrap_key(alg, secret)
    unwrapped = crypto.unwrap_key(alg, wrapped.encrypted_key)

    assert unwrapped.key == secret
    assert unwrapped.key_id == key.id
    assert any(e.path.endswith("/unwrapkey") and e.status == 200 for e in kv_world.requests)


def test_server_side_wrap_and_encrypt_round_trip(kv: KeyClient, kv_world: World) -> None:
    key = kv.create_rsa_key("cmk")
    version = key.properties.version
    wrapped = kv.send_request(
        HttpRequest("POST", f"/keys/cmk/{version}/wrapkey", json={"alg": "RSA-OAEP-256", "value": "c2VjcmV0"})
    )
    assert wrapped.status_code == 200
    assert wrapped.json()["kid"] == key.id
    assert key.id is not None
    crypto = kv_crypto(kv_world, key.id)
    encrypted = crypto.encrypt(EncryptionAlgorithm.rsa_oaep, b"hello")
    assert crypto.decrypt(EncryptionAlgorithm.rsa_oaep, encrypted.ciphertext).plaintext == b"hello"


def test_wrap_and_unwrap_refused_on_a_disabled_version(kv_world: World, kv: KeyClient) -> None:
    key = kv.create_rsa_key("cmk")
    assert key.id is not None
    wrapped = kv_crypto(kv_world, key.id).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"x" * 32)
    kv.update_key_properties("cmk", key.properties.version, enabled=False)
    crypto = kv_crypto(kv_world, key.id)

    with pytest.raises(HttpResponseError) as wrap:
        crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"x" * 32)
    with pytest.raises(HttpResponseError) as unwrap:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)

    assert wrap.value.status_code == 403
    assert "Operation wrapKey is not allowed on a disabled key" in str(wrap.value)
    assert unwrap.value.status_code == 403
    assert "Operation unwrapKey is not allowed on a disabled key" in str(unwrap.value)


def test_expiry_blocks_wrap_but_not_unwrap(kv_world: World, kv: KeyClient) -> None:
    exp = datetime.fromtimestamp(kv_world.now_ts() + DAY, UTC)
    key = kv.create_rsa_key("cmk", expires_on=exp)
    assert key.id is not None
    wrapped = kv_crypto(kv_world, key.id).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"y" * 32)
    kv_world.clock.advance(timedelta(days=2))
    wrap_path = f"/keys/cmk/{key.properties.version}/wrapkey"

    refused = kv.send_request(HttpRequest("POST", wrap_path, json={"alg": "RSA-OAEP-256", "value": "eHh4"}))
    unwrapped = kv_crypto(kv_world, key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)

    assert refused.status_code == 403
    assert refused.json()["error"]["innererror"]["code"] == "KeyExpired"
    assert unwrapped.key == b"y" * 32


def test_not_yet_valid_blocks_wrap(kv_world: World, kv: KeyClient) -> None:
    nbf = datetime.fromtimestamp(kv_world.now_ts() + DAY, UTC)
    key = kv.create_rsa_key("cmk", not_before=nbf)
    path = f"/keys/cmk/{key.properties.version}/wrapkey"
    refused = kv.send_request(HttpRequest("POST", path, json={"alg": "RSA-OAEP", "value": "eHh4"}))
    assert refused.status_code == 403
    kv_world.clock.advance(timedelta(days=1))
    allowed = kv.send_request(HttpRequest("POST", path, json={"alg": "RSA-OAEP", "value": "eHh4"}))
    assert allowed.status_code == 200


def test_unwrap_refused_when_not_in_key_ops_or_key_deleted(kv_world: World, kv: KeyClient) -> None:
    key = kv.create_rsa_key("cmk", key_operations=["wrapKey"])
    assert key.id is not None
    wrapped = kv_crypto(kv_world, key.id).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"z" * 16)
    with pytest.raises(HttpResponseError) as ops:
        kv_crypto(kv_world, key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
    assert ops.value.status_code == 403

    kv.begin_delete_key("cmk").wait()
    with pytest.raises(ResourceNotFoundError) as gone:
        kv_crypto(kv_world, key.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
    assert kv_error_code(gone.value) == "KeyNotFound"


def test_bad_crypto_requests_are_400(kv: KeyClient) -> None:
    key = kv.create_rsa_key("cmk")
    path = f"/keys/cmk/{key.properties.version}"
    bad_alg = kv.send_request(HttpRequest("POST", f"{path}/wrapkey", json={"alg": "A256KW", "value": "eHh4"}))
    garbage = kv.send_request(
        HttpRequest("POST", f"{path}/unwrapkey", json={"alg": "RSA-OAEP", "value": "eHh4"})
    )
    too_long = kv.send_request(
        HttpRequest("POST", f"{path}/wrapkey", json={"alg": "RSA-OAEP", "value": "eA" * 300})
    )
    assert [r.status_code for r in (bad_alg, garbage, too_long)] == [400, 400, 400]


# ---- throttling -----------------------------------------------------------------------------------


def test_throttled_creates_get_429_and_the_sdk_retries_after_the_wait(kv_world: World, kv: KeyClient) -> None:
    kv_world.throttle.configure(kv_creates_per_10s=2)
    started = kv_world.clock.now()

    for i in range(3):
        kv.import_key(f"k{i}", kv_jwk())

    throttled = [e for e in kv_world.requests if e.status == 429]
    assert len(throttled) == 1
    assert kv_world.clock.now() > started  # the Retry-After wait ran on the sandbox clock
    assert len(list(kv.list_properties_of_keys())) == 3


def test_throttling_error_shape_when_not_retried(kv_world: World, kv_vault: Vault) -> None:
    kv_world.throttle.configure(kv_ops_per_10s=1)
    client = kv_client(kv_world, kv_vault, retry_total=0)
    with pytest.raises(ResourceNotFoundError):
        client.get_key("a")  # the one token in the bucket
    with pytest.raises(HttpResponseError) as info:
        client.get_key("a")
    assert info.value.status_code == 429
    assert kv_error_code(info.value) == "Throttled"
    assert info.value.response is not None
    assert int(info.value.response.headers["Retry-After"]) >= 1


# ---- events and time ------------------------------------------------------------------------------


def test_every_new_version_publishes_key_new_version_created(
    kv_world: World, kv_vault: Vault, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    exp = kv_world.now_ts() + 120 * DAY
    created = kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(exp, UTC))
    imported = kv.import_key("cmk", kv_jwk())
    rotated = kv.rotate_key("cmk")

    events = kv_events.of_type("KeyNewVersionCreated")
    assert [e["data"]["Version"] for e in events] == [
        created.properties.version,
        imported.properties.version,
        rotated.properties.version,
    ]
    first = events[0]
    assert first["topic"] == kv_vault.id
    assert first["subject"] == "cmk"
    assert first["eventTime"] == "2026-01-05T09:00:00Z"
    assert first["data"] == {
        "Id": created.id,
        "VaultName": kv_vault.name,
        "ObjectType": "Key",
        "ObjectName": "cmk",
        "Version": created.properties.version,
        "NBF": None,
        "EXP": exp,
    }
    assert first["dataVersion"] == "1"


def test_near_expiry_and_expired_fire_once_per_current_version(
    kv_world: World, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    exp = kv_world.now_ts() + 40 * DAY
    key = kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(exp, UTC))

    kv_world.clock.advance(timedelta(days=9, hours=23))
    assert kv_events.of_type("KeyNearExpiry") == []
    kv_world.clock.advance(timedelta(hours=1))
    kv_world.clock.advance(timedelta(days=1))
    near = kv_events.of_type("KeyNearExpiry")
    assert len(near) == 1
    assert near[0]["data"]["Version"] == key.properties.version
    assert near[0]["eventTime"] == "2026-01-15T09:00:00Z"
    assert kv_events.of_type("KeyExpired") == []

    kv_world.clock.advance(timedelta(days=31))
    kv.get_key_rotation_policy("cmk")  # a request also catches the world up
    expired = kv_events.of_type("KeyExpired")
    assert len(expired) == 1
    assert expired[0]["data"]["EXP"] == exp
    assert len(kv_events.of_type("KeyNearExpiry")) == 1


def test_a_version_created_inside_the_warning_window_warns_at_once(
    kv_world: World, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    key = kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(kv_world.now_ts() + 10 * DAY, UTC))
    kv_world.clock.advance(timedelta(seconds=1))
    near = kv_events.of_type("KeyNearExpiry")
    assert [e["data"]["Version"] for e in near] == [key.properties.version]
    assert near[0]["eventTime"] == "2026-01-05T09:00:00Z"


def test_notify_action_moves_near_expiry(kv_world: World, kv: KeyClient, kv_events: KvEventRecorder) -> None:
    exp = kv_world.now_ts() + 100 * DAY
    kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(exp, UTC))
    notify = [KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P60D")]
    kv.update_key_rotation_policy("cmk", KeyRotationPolicy(), lifetime_actions=notify)

    kv_world.clock.advance(timedelta(days=41))

    assert len(kv_events.of_type("KeyNearExpiry")) == 1


def test_only_the_current_version_warns(kv_world: World, kv: KeyClient, kv_events: KvEventRecorder) -> None:
    soon = datetime.fromtimestamp(kv_world.now_ts() + 40 * DAY, UTC)
    kv.create_rsa_key("cmk", expires_on=soon)
    kv.create_rsa_key("cmk")  # the new current version has no expiry

    kv_world.clock.advance(timedelta(days=45))

    assert kv_events.of_type("KeyNearExpiry") == []
    assert kv_events.of_type("KeyExpired") == []


def test_auto_rotation_after_create_catches_up_in_time_order(
    kv_world: World, kv_vault: Vault, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    kv.create_rsa_key("cmk", key_operations=["wrapKey", "unwrapKey"])
    start = kv_world.now_ts()
    rotate = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")]
    kv.update_key_rotation_policy("cmk", KeyRotationPolicy(), lifetime_actions=rotate, expires_in="P90D")

    kv_world.clock.advance(timedelta(days=29))
    assert len(kv_vault.keys["cmk"].versions) == 1
    kv_world.clock.advance(timedelta(days=62))

    versions = list(kv.list_properties_of_key_versions("cmk"))
    assert len(versions) == 4
    created = sorted(int(v.created_on.timestamp()) for v in versions if v.created_on)
    assert created == [start, start + 30 * DAY, start + 60 * DAY, start + 90 * DAY]
    latest = kv.get_key("cmk")
    assert latest.key_operations == ["wrapKey", "unwrapKey"]
    assert latest.properties.expires_on == datetime.fromtimestamp(start + 180 * DAY, UTC)
    assert len(kv_events.of_type("KeyNewVersionCreated")) == 4


def test_auto_rotation_before_expiry(kv_world: World, kv_vault: Vault, kv: KeyClient) -> None:
    exp = kv_world.now_ts() + 60 * DAY
    kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(exp, UTC))
    rotate = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P14D")]
    kv.update_key_rotation_policy("cmk", KeyRotationPolicy(), lifetime_actions=rotate, expires_in="P60D")

    kv_world.clock.advance(timedelta(days=45))
    assert len(kv_vault.keys["cmk"].versions) == 1
    kv_world.clock.advance(timedelta(days=1))

    assert len(kv_vault.keys["cmk"].versions) == 2
    assert kv_vault.keys["cmk"].current.created == exp - 14 * DAY


def test_deleted_keys_do_not_warn_or_rotate(
    kv_world: World, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    kv.create_rsa_key("cmk", expires_on=datetime.fromtimestamp(kv_world.now_ts() + 40 * DAY, UTC))
    rotate = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")]
    kv.update_key_rotation_policy("cmk", KeyRotationPolicy(), lifetime_actions=rotate)
    kv.begin_delete_key("cmk").wait()
    kv_world.clock.advance(timedelta(days=45))
    assert len(kv_events.of_type("KeyNewVersionCreated")) == 1
    assert kv_events.of_type("KeyNearExpiry") == []
    assert kv_events.of_type("KeyExpired") == []


def test_identifiers_follow_the_worlds_vault_url_mapping(kv_world: World, kv: KeyClient) -> None:
    kv_world.vault_url_for = lambda _name: "https://127.0.0.1:8443"
    key = kv.create_rsa_key("cmk")
    kv.begin_delete_key("cmk").wait()
    assert key.id == f"https://127.0.0.1:8443/keys/cmk/{key.properties.version}"
    assert kv.get_deleted_key("cmk").recovery_id == "https://127.0.0.1:8443/deletedkeys/cmk"


def test_tick_stays_cheap_with_ten_thousand_keys(kv_world: World, kv_vault: Vault, kv: KeyClient) -> None:
    # Seeded through the module's own helper: 10,000 SDK round trips would dominate the test.
    far = kv_world.now_ts() + 365 * DAY
    for i in range(10_000):
        keyvault.create_version(kv_world, kv_vault, f"bulk-{i}", private_key=SHARED_KEY, exp=far)
    kv_world.tick(kv_world.clock.now())

    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        keyvault.tick(kv_world, kv_world.clock.now())
    per_tick = (time.perf_counter() - started) / rounds

    assert per_tick < 200e-6, f"tick took {per_tick * 1e6:.0f} us with nothing due"
    assert kv.get_key("bulk-9999").properties.expires_on == datetime.fromtimestamp(far, UTC)


def test_keys_placed_directly_in_state_are_noticed(
    kv_world: World, kv_vault: Vault, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    now = kv_world.now_ts()
    kv.create_rsa_key("via-sdk")
    kv_vault.keys["direct"] = Key(
        name="direct",
        versions={
            "0" * 32: KeyVersion(
                version="0" * 32,
                kty="RSA",
                private_key=SHARED_KEY,
                key_ops=["wrapKey", "unwrapKey"],
                enabled=True,
                created=now,
                updated=now,
                exp=now + 40 * DAY,
            )
        },
    )

    kv_world.clock.advance(timedelta(days=11))

    assert [e["subject"] for e in kv_events.of_type("KeyNearExpiry")] == ["direct"]
    assert kv.get_key("direct").properties.version == "0" * 32


def test_a_direct_change_to_expiry_is_picked_up_by_track(
    kv_world: World, kv_vault: Vault, kv: KeyClient, kv_events: KvEventRecorder
) -> None:
    kv.create_rsa_key("cmk")
    kv_vault.keys["cmk"].current.exp = kv_world.now_ts() + 5 * DAY

    keyvault.track(kv_world, kv_vault.name, "cmk")
    kv_world.clock.advance(timedelta(days=6))

    assert len(kv_events.of_type("KeyNearExpiry")) == 1
    assert len(kv_events.of_type("KeyExpired")) == 1
