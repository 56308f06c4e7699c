"""Services whose customer-managed key is fixed at creation: Cosmos DB for PostgreSQL clusters
and Azure Data Manager for Energy instances. keysteward never writes to them; it reads them
through a generic ARM list so the versions they use are protected and reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from azure.core.pipeline.policies import (
    HeadersPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from shared.clients import ClientFactory
from shared.errors import NotFoundError, PermanentError
from shared.model import Binding, ServiceType
from shared.targets.base import Health, UpdateStart, parse_key_uri_loose, resource_group_of, sdk, subscription_of

JsonObj = dict[str, Any]


def _postgres_key(props: JsonObj) -> tuple[str | None, str | None]:
    enc = props.get("dataEncryption") or props.get("dataencryption") or {}
    return enc.get("primaryKeyUri"), enc.get("primaryUserAssignedIdentityId")


def _energy_key(props: JsonObj) -> tuple[str | None, str | None]:
    enc = (props.get("encryption") or {}).get("customerManagedKeyEncryption") or {}
    ident = enc.get("keyEncryptionKeyIdentity") or {}
    return enc.get("keyEncryptionKeyUrl"), ident.get("userAssignedIdentityResourceId")


class ReadOnlyArmTarget:
    """A CMK consumer read through ``GET /subscriptions/{sub}/providers/{type}``."""

    updatable = False

    def __init__(
        self,
        clients: ClientFactory,
        *,
        service: ServiceType,
        resource_type: str,
        api_version: str,
        key_of: Callable[[JsonObj], tuple[str | None, str | None]],
    ) -> None:
        self.service = service
        self._clients = clients
        self._type = resource_type
        self._api = api_version
        self._key_of = key_of
        self._client: ARMPipelineClient[Any, Any] | None = None

    @classmethod
    def postgres(cls, clients: ClientFactory) -> ReadOnlyArmTarget:
        return cls(clients, service=ServiceType.POSTGRES, resource_type="Microsoft.DBforPostgreSQL/serverGroupsv2",
                   api_version="2022-11-08", key_of=_postgres_key)

    @classmethod
    def energy(cls, clients: ClientFactory) -> ReadOnlyArmTarget:
        return cls(clients, service=ServiceType.ENERGY, resource_type="Microsoft.OpenEnergyPlatform/energyServices",
                   api_version="2022-12-01-preview", key_of=_energy_key)

    def _pipeline(self) -> ARMPipelineClient[Any, Any]:
        if self._client is None:
            kw = self._clients.arm_pipeline_kwargs()
            policies = [
                RequestIdPolicy(),
                HeadersPolicy(),
                UserAgentPolicy(sdk_moniker="keysteward"),
                RetryPolicy(),
                ARMChallengeAuthenticationPolicy(self._clients.credential, *kw["credential_scopes"]),
            ]
            extra = {k: v for k, v in kw.items() if k in ("transport", "connection_verify")}
            self._client = ARMPipelineClient(base_url=kw["base_url"], policies=policies, **extra)
        return self._client

    def _get(self, url: str) -> JsonObj:
        request = HttpRequest("GET", url, headers={"Accept": "application/json"})
        with sdk(f"read {self._type}"):
            response = self._pipeline().send_request(request)
        if response.status_code == 404:
            raise NotFoundError(f"{url}: not found", status=404)
        if response.status_code >= 400:
            from shared.errors import TransientError  # noqa: PLC0415

            if response.status_code in (408, 429) or response.status_code >= 500:
                raise TransientError(f"read {self._type}: HTTP {response.status_code}")
            raise PermanentError(f"read {self._type}: HTTP {response.status_code}", status=response.status_code)
        body = json.loads(response.text() or "{}")
        return body if isinstance(body, dict) else {}

    def _pages(self, subscription: str) -> Iterator[JsonObj]:
        base = self._clients.arm_pipeline_kwargs()["base_url"].rstrip("/")
        url: str | None = f"{base}/subscriptions/{subscription}/providers/{self._type}?api-version={self._api}"
        while url:
            page = self._get(url)
            yield from page.get("value") or []
            url = page.get("nextLink")

    def _binding(self, res: JsonObj) -> Binding | None:
        uri, uid = self._key_of(res.get("properties") or {})
        parsed = parse_key_uri_loose(uri)
        if parsed is None:
            return None
        key, version = parsed
        rid = str(res.get("id", ""))
        principal = None
        for ident_id, info in ((res.get("identity") or {}).get("userAssignedIdentities") or {}).items():
            if uid and ident_id.lower() == uid.lower():
                principal = (info or {}).get("principalId")
        return Binding(
            resource_id=rid,
            service=self.service,
            subscription=subscription_of(rid),
            resource_group=resource_group_of(rid),
            name=str(res.get("name", "")),
            location=str(res.get("location", "")),
            key=key,
            pinned_version=version,
            in_use_version=version,
            updatable=False,
            principal_id=principal,
            user_identity=uid,
            provisioning_state=(res.get("properties") or {}).get("provisioningState"),
            tags=dict(res.get("tags") or {}),
        )

    def list_bindings(self, subscription: str) -> list[Binding]:
        return [b for r in self._pages(subscription) if (b := self._binding(r)) is not None]

    def get_binding(self, resource_id: str) -> Binding | None:
        base = self._clients.arm_pipeline_kwargs()["base_url"].rstrip("/")
        try:
            res = self._get(f"{base}{resource_id}?api-version={self._api}")
        except NotFoundError:
            return None
        return self._binding(res)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:  # noqa: ARG002 - Protocol signature
        raise PermanentError(
            f"{self.service.value} resource {binding.name}: its customer-managed key cannot be changed after creation"
        )

    def health(self, binding: Binding) -> str:  # noqa: ARG002 - Protocol signature
        return Health.UNKNOWN


__all__ = ["ReadOnlyArmTarget", "resource_group_of", "subscription_of"]
