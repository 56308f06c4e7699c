"""Starts Azurite (npm) on free loopback ports for tests that need Storage queues and tables."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.stack import AZURITE_ACCOUNT, AZURITE_KEY, azurite_argv

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = AZURITE_ACCOUNT
ACCOUNT_KEY = AZURITE_KEY  # Azurite's well-known development key (public, documented); not a secret


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    scheme: str = "http"  # https when started with a certificate (and OAuth)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.scheme}://127.0.0.1:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={self.queue_uri};TableEndpoint={self.table_uri};"
        )

    @property
    def queue_uri(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def table_uri(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.table_port}/{ACCOUNT}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def azurite_binary() -> str | None:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    return shutil.which("azurite")


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"Azurite did not listen on port {port}")


@contextlib.contextmanager
def running_azurite(tls: tuple[Path, Path] | None = None) -> Iterator[tuple[Azurite, subprocess.Popen[bytes]]]:
    """Runs an in-memory Azurite for the duration of the block. With ``tls`` (certificate and
    key PEM files) it serves HTTPS and checks bearer tokens (``--oauth basic``: format,
    lifetime, issuer and audience; not the signature), besides the account key."""
    binary = azurite_binary()
    if binary is None:
        raise RuntimeError("Azurite is not installed: run `npm install` in the project folder")
    ports = Azurite(_free_port(), _free_port(), _free_port(), "https" if tls else "http")
    extra = ["--oauth", "basic", "--cert", str(tls[0]), "--key", str(tls[1])] if tls else []
    workdir = tempfile.mkdtemp(prefix="azurite-")  # debug log and any extent files
    proc = subprocess.Popen(
        azurite_argv(binary, (ports.blob_port, ports.queue_port, ports.table_port), *extra),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        for port in (ports.queue_port, ports.table_port):
            _wait_port(port, deadline)
        yield ports, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
