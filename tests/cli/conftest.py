"""A local stack for the CLI's tests: Azurite and the sandbox (demo estate) over loopback,
on free ports and in a folder of its own, so that `make run` or other tests can run beside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.stack import Stack
from tests.azurite import azurite_binary


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if azurite_binary() is None:
        pytest.fail("Azurite is not installed: `make test` installs it (npm install)")
    run_dir: Path = tmp_path_factory.mktemp("stack")
    s = Stack.on_free_ports(run_dir=run_dir, with_host=False, quiet=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


