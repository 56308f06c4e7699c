"""Fixtures for the sandbox's own tests. Each area adds its fixtures under its own prefix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from sandbox import seeds
from sandbox.server import SandboxServer
from sandbox.transport import sandbox_session
from sandbox.world import World
from tests.sandbox.webhook import Webhook

# ---- Event Grid and admin API (eventgrid_*, admin_*) --------------------------------------------
EVENTGRID_LOCAL_HOST = "https://local-host.test"


@pytest.fixture
def eventgrid_world() -> World:
    """A fresh world with a fixed random seed (duplicates and shuffles are reproducible)."""
    return World(seed=7)


@pytest.fixture
def eventgrid_webhook(eventgrid_world: World) -> Webhook:
    """A recording webhook registered in-process at ``https://local-host.test``."""
    hook = Webhook()
    eventgrid_world.eventgrid.register_local_endpoint(EVENTGRID_LOCAL_HOST, hook)
    return hook


@pytest.fixture
def admin_session(eventgrid_world: World) -> Iterator[requests.Session]:
    """A requests session that answers from ``eventgrid_world`` (admin host https://sandbox.local)."""
    session = sandbox_session(eventgrid_world)
    yield session
    session.close()


# ---- ARM and simulated services (arm_*) ---------------------------------------------------------
ARM_SUB = "00000000-0000-0000-0000-00000000a001"
ARM_OTHER_SUB = "00000000-0000-0000-0000-00000000b002"


@pytest.fixture
def arm_world() -> World:
    """A fresh world with a fixed seed and ARM throttling off (tests that need it turn it on)."""
    world = World(seed=11)
    world.throttle.configure(enabled=False)
    return world


# ---- loopback server (loopback_*) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    """A world served over loopback HTTPS on free ports, seeded with the demo estate after the
    listeners are up (so vault URLs are loopback URLs). One per test module."""
    workdir = tmp_path_factory.mktemp("loopback")
    world = World(seed=3)
    server = SandboxServer(world, workdir=workdir, connection_file=workdir / "connection.json")
    server.start()
    try:
        seeds.apply_seed(world, seeds.demo_seed())
        yield server
    finally:
        server.stop()
