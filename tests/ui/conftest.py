"""The local stack the on-call page is tested against: the development Functions host serving
function_app.py's HTTP functions, over the in-process sandbox seeded with the demo estate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import functions._root as root
from sandbox import seeds
from sandbox.host import DevHost, HostConfig, HostKeys, HttpTriggerSpec, load_functions
from sandbox.transport import SandboxTransport, StaticTokenCredential
from sandbox.world import World
from shared.app import Keysteward, build
from shared.auth import ROLE_READ, ROLE_RESTORE, ROLE_REVOKE, encode_principal
from shared.config import load_settings
from shared.notify import RecordingNotifier
from shared.workqueue import MemoryQueue
from tests.functionapp import fresh_function_app
from tests.memory_journal import MemoryJournal

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "ui-function-key-for-tests"
KEYS = HostKeys(function=FUNCTION_KEY, master="ui-master-key", eventgrid="ui-eventgrid-key")
ONCALL = encode_principal("11111111-2222-3333-4444-555555555555", name="oncall@contoso.example",
                          roles=(ROLE_READ, ROLE_REVOKE, ROLE_RESTORE))
# Only the HTTP functions are served; the others' binding settings just have to resolve.
TRIGGER_SETTINGS = {"KEYSTEWARD_WORK_QUEUE": "keysteward-work", "KEYSTEWARD_ROTATION_SCHEDULE": "0 0 3 * * *",
                    "KEYSTEWARD_RECONCILE_SCHEDULE": "0 */15 * * * *", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


@dataclass
class Stack:
    world: World
    app: Keysteward
    host: DevHost
    vaults: dict[str, str]

    def url(self, path: str) -> str:
        return f"{self.host.url}/api/{path}{'&' if '?' in path else '?'}code={FUNCTION_KEY}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WEBSITE_AUTH_ENABLED", raising=False)
        world = World(seed=1)
        world.service_settings.cosmos_recovery_s = 600.0  # Cosmos recovers within the verify deadline
        seeded = seeds.apply_seed(world, seeds.demo_seed())
        vaults = {name: url.rstrip("/") for name, url in seeded.vault_urls.items()}
        settings = load_settings({
            "KEYSTEWARD_SUBSCRIPTIONS": ",".join(world.subscriptions),
            "KEYSTEWARD_VAULTS": ",".join(vaults.values()),
            "KEYSTEWARD_TRUST_PRINCIPAL_HEADER": "true",
            "KEYSTEWARD_VERIFY_DEADLINE_MINUTES": "30",
        })
        app = build(settings, clock=world.clock, transport_factory=lambda: SandboxTransport(world),
                    credential=StaticTokenCredential(), notifier=RecordingNotifier(), queue=MemoryQueue(),
                    polling_interval=0, journal=MemoryJournal(world.clock))
        root.install(app)
        functions = [f for f in load_functions(fresh_function_app(), environ=TRIGGER_SETTINGS)
                     if isinstance(f.trigger, HttpTriggerSpec)]
        host = DevHost(functions, keys=KEYS, config=HostConfig(), port=0)
        with host:
            yield Stack(world, app, host, vaults)
        root.install(None)
