"""Services whose customer-managed key keysteward reads but never writes, through a generic ARM
pipeline (their management SDKs are not in the stack): the shared base of :mod:`shared.targets.postgres`
and :mod:`shared.targets.energy`. A subclass declares its ARM type, the api-version it reads at (cited
from the REST spec) and where its key sits in ``properties``.

Errors go through :func:`shared.errors.azure_errors`: an HTTP error answer is raised as the azure-core
error a generated client would raise (404 not found, 409 conflict, 401 authentication) and translated
there, so transient and permanent mean the same here as for every other adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.pipeline.policies import (
    HeadersPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

from shared.clients import ClientFactory
from shared.errors import NotFoundError, PermanentError
from shared.model import Binding, ServiceType
from shared.targets.base import (
    CMK_PERMISSIONS,
    RSA_SIZES,
    Health,
    JsonObj,
    UpdateStart,
    parse_key_uri_loose,
    resource_group_of,
    sdk,
    subscription_of,
)

# What a generated management client maps (azure-mgmt-* ``error_map``).
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
}


class ReadOnlyArmTarget:
    """A CMK consumer read through ``GET /subscriptions/{sub}/providers/{type}`` at ``api_version``."""

    service: ServiceType
    updatable = False
    arm_type: ClassVar[str]  # as ARM spells it in paths
    api_version: ClassVar[str]
    arm_types: ClassVar[tuple[str, ...]]
    reports_key_status: ClassVar[bool] = False  # neither service documents a key-status field
    key_sizes: ClassVar[frozenset[int]] = RSA_SIZES
    recommended_key_size: ClassVar[int | None] = None
    vault_permissions: ClassVar[tuple[str, ...]] = CMK_PERMISSIONS
    vault_same_region: ClassVar[bool] = False
    vault_retention_days: ClassVar[int | None] = None

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients
        self._client: ARMPipelineClient[Any, Any] | None = None

    def key_of(self, properties: JsonObj) -> tuple[str | None, str | None]:
        """(key URI, user-assigned identity resource id) from the resource's ``properties``."""
        raise NotImplementedError

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
        with sdk(f"read {self.arm_type}"):
            response = self._pipeline().send_request(request)
            if response.status_code >= 400:
                map_error(status_code=response.status_code, response=response, error_map=_ERROR_MAP)
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = json.loads(response.text() or "{}")
        return body if isinstance(body, dict) else {}

    def _pages(self, subscription: str) -> Iterator[JsonObj]:
        base = self._clients.arm_pipeline_kwargs()["base_url"].rstrip("/")
        url: str | None = (
            f"{base}/subscriptions/{subscription}/providers/{self.arm_type}?api-version={self.api_version}"
        )
        while url:
            page = self._get(url)
            yield from page.get("value") or []
            url = page.get("nextLink")

    def _binding(self, res: JsonObj) -> Binding | None:
        uri, uid = self.key_of(res.get("properties") or {})
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

    def bindings_from_row(self, row: JsonObj, rows: Mapping[str, JsonObj]) -> list[Binding]:  # noqa: ARG002
        b = self._binding(row)
        return [b] if b is not None else []

    def get_binding(self, resource_id: str) -> Binding | None:
        base = self._clients.arm_pipeline_kwargs()["base_url"].rstrip("/")
        try:
            res = self._get(f"{base}{resource_id}?api-version={self.api_version}")
        except NotFoundError:
            return None
        return self._binding(res)

    def start_update(self, binding: Binding, version: str) -> UpdateStart:  # noqa: ARG002 - Protocol signature
        raise PermanentError(
            f"{self.service.value} resource {binding.name}: its customer-managed key cannot be changed after creation"
        )

    def health(self, binding: Binding) -> str:  # noqa: ARG002 - Protocol signature
        return Health.UNKNOWN


__all__ = ["ReadOnlyArmTarget"]
