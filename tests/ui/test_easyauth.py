"""scripts/easyauth.py: the local stand-in for App Service Authentication in front of the host."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from scripts.easyauth import make_server
from scripts.stack import principal_header
from tests.ui.conftest import FUNCTION_KEY, Stack


@pytest.fixture
def front(stack: Stack) -> Iterator[str]:
    principal = principal_header("rita@contoso.example", "33333333-cccc-4000-8000-000000000003", ["KeySteward.Read"])
    server = make_server(stack.host.url, principal, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_browser_without_easy_auth_gets_401_and_through_the_stand_in_the_page(stack: Stack, front: str) -> None:
    direct = requests.get(f"{stack.host.url}/api/ui", params={"code": FUNCTION_KEY}, timeout=30)
    assert direct.status_code == 401
    page = requests.get(f"{front}/api/ui", params={"code": FUNCTION_KEY}, timeout=60)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert ">cmk-adx</a>" in page.text
    # A principal sent by the client is replaced, as Easy Auth does: no role escalation through it.
    forged = principal_header("mallory", "66666666-0000-4000-8000-000000000006", ["KeySteward.Revoke"])
    answer = requests.post(f"{front}/api/revoke", params={"code": FUNCTION_KEY}, timeout=60,
                           headers={"X-MS-CLIENT-PRINCIPAL": forged},
                           json={"key": f"{stack.vaults['kv-contoso-dev-weu']}/keys/cmk-dev", "mode": "disable",
                                 "reason": "r", "ticket": "t", "dryRun": False})
    assert answer.status_code == 403
    assert requests.get(f"{front}/api/ui", timeout=30).status_code == 401  # the function key is still required
