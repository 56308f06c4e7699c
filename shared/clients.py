"""Builds the Azure SDK clients, pointed at Azure or at the sandbox.

The one place that knows endpoints, credentials and transports. In Azure: the managed
identity and the public endpoints. With ``KEYSTEWARD_SANDBOX``: the connection file's ARM
URL, CA bundle and any bearer token. In-process tests pass a ``transport_factory``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import CustomHookPolicy, HTTPPolicy

from shared import metrics
from shared.config import Settings
from shared.pacing import Pacer, bucket_of, caps_from

if TYPE_CHECKING:
    # The SDK clients are imported when first built, not when the app is indexed (cold start).
    from azure.core.pipeline.transport import HttpTransport
    from azure.keyvault.keys import KeyClient
    from azure.mgmt.cosmosdb import CosmosDBManagementClient
    from azure.mgmt.keyvault import KeyVaultManagementClient
    from azure.mgmt.kusto import KustoManagementClient
    from azure.mgmt.resourcegraph import ResourceGraphClient

ARM_URL = "https://management.azure.com"
ARM_SCOPES = ("https://management.azure.com/.default",)


class StaticTokenCredential:
    """A fixed bearer token for the sandbox, which accepts any token. Never used against Azure."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ARG002 - any scope: the sandbox
        return AccessToken("sandbox-token", int(time.time()) + 3600)


class ArmCallMeter(CustomHookPolicy[Any, Any]):
    """The management clients' ``custom_hook_policy``: it sits after their retry policy, so every
    ARM request attempt (429s included) is counted, by subscription, method and status; the
    per-operation ``raw_response_hook`` of a caller still runs first, as with the stock policy.
    Requests outside a subscription count under ``none``."""

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        super().on_response(request, response)
        http = request.http_request
        metrics.current().arm_call(metrics.subscription_of(http.url), http.method, response.http_response.status_code)


class PacingPolicy(HTTPPolicy[Any, Any]):
    """Paces every management-plane request attempt through the shared :class:`Pacer` and
    hands it each response's throttling headers (``x-ms-ratelimit-remaining-subscription-*``,
    ``x-ms-user-quota-*``, ``Retry-After`` on 429). Placed per retry (after the SDK's
    RetryPolicy), so retries and long-running-operation polls are paced too."""

    def __init__(self, pacer: Pacer) -> None:
        super().__init__()
        self._pacer = pacer

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        scope, kind = bucket_of(http.method, http.url)
        ticket = self._pacer.acquire(scope, kind)
        try:
            response = self.next.send(request)
        except BaseException:
            self._pacer.release(scope, kind)
            raise
        answer = response.http_response
        self._pacer.observe(scope, kind, ticket, status=answer.status_code, headers=answer.headers)
        return response


@dataclass
class ClientFactory:
    """Creates and caches one client per (kind, subscription or vault)."""

    credential: TokenCredential
    arm_url: str = ARM_URL
    credential_scopes: tuple[str, ...] = ARM_SCOPES
    connection_verify: str | bool = True
    transport_factory: Callable[[], HttpTransport[Any, Any]] | None = None
    polling_interval: float = 30.0
    # Sandbox vaults listen on loopback ports, so the challenge resource cannot match the host.
    verify_challenge_resource: bool = True
    # Paces ARM and Resource Graph requests per subscription (shared by every client made here).
    pacer: Pacer = field(default_factory=Pacer)
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _common(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"connection_verify": self.connection_verify}
        if self.transport_factory is not None:
            kwargs["transport"] = self.transport_factory()
        return kwargs

    def _mgmt(self) -> dict[str, Any]:
        return {
            **self._common(),
            "base_url": self.arm_url,
            "credential_scopes": list(self.credential_scopes),
            "polling_interval": self.polling_interval,
            "custom_hook_policy": ArmCallMeter(),  # ARM calls and 429s per subscription (shared/metrics.py)
            "per_retry_policies": [PacingPolicy(self.pacer)],
        }

    def _cached(self, kind: str, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._cache.get((kind, key))
            if client is None:
                client = self._cache[(kind, key)] = make()
            return client

    def kusto(self, subscription: str) -> KustoManagementClient:
        from azure.mgmt.kusto import KustoManagementClient  # noqa: PLC0415 - on first use (cold start)

        client: KustoManagementClient = self._cached(
            "kusto", subscription, lambda: KustoManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def cosmos(self, subscription: str) -> CosmosDBManagementClient:
        from azure.mgmt.cosmosdb import CosmosDBManagementClient  # noqa: PLC0415 - on first use

        client: CosmosDBManagementClient = self._cached(
            "cosmos", subscription, lambda: CosmosDBManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def keyvault_mgmt(self, subscription: str) -> KeyVaultManagementClient:
        from azure.mgmt.keyvault import KeyVaultManagementClient  # noqa: PLC0415 - on first use

        client: KeyVaultManagementClient = self._cached(
            "kvmgmt", subscription, lambda: KeyVaultManagementClient(self.credential, subscription, **self._mgmt())
        )
        return client

    def resource_graph(self) -> ResourceGraphClient:
        from azure.mgmt.resourcegraph import ResourceGraphClient  # noqa: PLC0415 - on first use

        client: ResourceGraphClient = self._cached(
            "graph", "", lambda: ResourceGraphClient(self.credential, **self._mgmt())
        )
        return client

    def keys(self, vault_url: str) -> KeyClient:
        from azure.keyvault.keys import KeyClient  # noqa: PLC0415 - on first use

        client: KeyClient = self._cached(
            "keys",
            vault_url,
            lambda: KeyClient(
                vault_url,
                self.credential,
                verify_challenge_resource=self.verify_challenge_resource,
                **self._common(),
            ),
        )
        return client

    def arm_get_text(self, url: str, *, what: str) -> str:
        """GET ``url`` (an absolute ARM URL) through a paced ARM pipeline; the body as text.

        Raises TransientError for a throttled, failing or unreachable ARM (408, 429, 5xx,
        connection errors) and PermanentError for any other status but 200."""
        from azure.core.exceptions import AzureError  # noqa: PLC0415 - on first use
        from azure.core.rest import HttpRequest  # noqa: PLC0415

        from shared.errors import PermanentError, TransientError, translate  # noqa: PLC0415

        try:
            response = self._arm_reader().send_request(HttpRequest("GET", url, headers={"Accept": "application/json"}))
            status = response.status_code
            text = str(response.text())
        except AzureError as err:
            raise translate(err, what=what) from err
        if status == 200:
            return text
        if status in (408, 429) or status >= 500:
            raise TransientError(f"{what}: HTTP {status}")
        raise PermanentError(f"{what}: HTTP {status}", status=status)

    def _arm_reader(self) -> Any:
        def make() -> Any:
            from azure.core.pipeline.policies import (  # noqa: PLC0415 - on first use
                HeadersPolicy,
                RequestIdPolicy,
                RetryPolicy,
                UserAgentPolicy,
            )
            from azure.mgmt.core import ARMPipelineClient  # noqa: PLC0415
            from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy  # noqa: PLC0415

            policies = [RequestIdPolicy(), HeadersPolicy(), UserAgentPolicy(sdk_moniker="keysteward"), RetryPolicy(),
                        PacingPolicy(self.pacer),
                        ARMChallengeAuthenticationPolicy(self.credential, *self.credential_scopes)]
            extra = {k: v for k, v in self._common().items() if k in ("transport", "connection_verify")}
            return ARMPipelineClient(base_url=self.arm_url, policies=policies, **extra)

        return self._cached("arm-reader", "", make)

    def arm_pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments for a generic ARM pipeline client (read-only reads of other providers)."""
        return self._mgmt()


def pacer_for(settings: Settings, *, sleep: Callable[[float], None] = time.sleep,
              monotonic: Callable[[], float] = time.monotonic) -> Pacer:
    """The adaptive pacer for these settings: the reserve, and the old static write settings
    as optional caps (unset: no cap, the budget is learnt from ARM's answers)."""
    return Pacer(reserve=settings.arm_reserve,
                 caps=caps_from(write_burst=settings.arm_write_burst, writes_per_s=settings.arm_writes_per_s),
                 sleep=sleep, monotonic=monotonic)


def factory_for(settings: Settings, *, transport_factory: Callable[[], HttpTransport[Any, Any]] | None = None,
                credential: TokenCredential | None = None, polling_interval: float | None = None,
                pacer: Pacer | None = None) -> ClientFactory:
    """The composition root's client factory for these settings (``pacer``: one built by
    :func:`pacer_for` on real time when not given)."""
    pacer = pacer or pacer_for(settings)
    conn = settings.sandbox_connection
    if conn is not None:
        return ClientFactory(
            credential=credential or StaticTokenCredential(),
            arm_url=conn.arm_url,
            credential_scopes=conn.credential_scopes,
            connection_verify=conn.ca_bundle,
            transport_factory=transport_factory,
            polling_interval=1.0 if polling_interval is None else polling_interval,
            verify_challenge_resource=False,
            pacer=pacer,
        )
    if credential is None:
        from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - only needed in Azure

        credential = DefaultAzureCredential()
    return ClientFactory(
        credential=credential,
        transport_factory=transport_factory,
        polling_interval=30.0 if polling_interval is None else polling_interval,
        verify_challenge_resource=True,
        pacer=pacer,
    )
