"""The on-call page driven as a person would, in headless Chromium (Debian's package, driven by
Playwright over its pipe: no browser download), against the development Functions host serving
function_app.py and the sandbox seeded with the demo estate.

It loads the estate, opens a key, asks for a dry run, and watches a revoke run progress to
``succeeded`` while the timer's resume sweep drives it; the screenshots it takes go to docs/
(README, "On-call page"). App Service Authentication is played by the browser context adding
the ``X-MS-CLIENT-PRINCIPAL`` header to every request, as Easy Auth does in front of the app.

Without /usr/bin/chromium (``apt-get install -y chromium chromium-driver``) the module is
skipped with that message, unless ``KEYSTEWARD_REQUIRE_BROWSER=1`` (CI) makes it a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.runbooks import resume_unfinished
from tests.ui.conftest import FUNCTION_KEY, ONCALL, Stack

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SHOTS = Path(tempfile.gettempdir()) / "keysteward-ui-shots"
CHROMIUM = "/usr/bin/chromium"
# The flags the page is tested with: no sandboxing a container cannot offer, no GPU, nothing
# that talks to the network on its own (the page must work in a locked-down network).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
    return None


_MISSING = _browser_missing()
if _MISSING and os.environ.get("KEYSTEWARD_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"the browser suite must run here: {_MISSING}")
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"browser tests skipped: {_MISSING}")


@pytest.fixture(scope="module")
def browser(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900}, extra_http_headers={"X-MS-CLIENT-PRINCIPAL": ONCALL},
        )
        try:
            yield context
        finally:
            context.close()


def shot(page: Any, name: str) -> Path:
    """Saves a screenshot: into docs/ (what README shows) with KEYSTEWARD_UPDATE_SCREENSHOTS=1,
    else beside the browser profile, so a test run leaves the checkout as it was."""
    folder = DOCS if os.environ.get("KEYSTEWARD_UPDATE_SCREENSHOTS") == "1" else SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_a_person_opens_the_estate_a_key_and_a_dry_run(stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(stack.host.url) else outside.append(req.url))

    page.goto(stack.url("ui"))
    assert page.title() == "Estate · keysteward"
    table = page.get_by_role("table", name="Keys in scope")
    for name in ("cmk-adx", "cmk-cosmos", "cmk-pg", "cmk-energy", "cmk-dev"):
        assert table.get_by_role("link", name=name, exact=True).is_visible()
    shot(page, "ui-estate.png")
    # Keyboard: the first Tab reaches the skip link.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"

    # Open a key by keyboard: focus its link and press Enter (the script gave the link the page's key).
    link = table.get_by_role("link", name="cmk-adx", exact=True)
    assert f"code={FUNCTION_KEY}" in (link.get_attribute("href") or "")
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/api/ui/key\?"))
    assert page.get_by_role("heading", name="Key cmk-adx", level=1).is_visible()
    timeline = page.get_by_role("list", name=re.compile("Versions of cmk-adx"))
    assert timeline.get_by_text("current").count() >= 1
    assert page.get_by_text("Retention: kept").count() >= 1
    assert page.get_by_text("adxcontosoprod1").count() >= 1
    shot(page, "ui-key.png")

    # The dry run: choose the mode by its label, submit, read the blast radius.
    page.get_by_label("Revocation mode").select_option("disable")
    page.get_by_role("button", name="Show the dry run").click()
    page.wait_for_url(re.compile(r"/api/ui/blast-radius\?"))
    status = page.get_by_role("status")
    assert re.search(r"\d+ binding\(s\) reached", status.inner_text())
    for name in ("adxcontosoprod1", "adxcontosoprod2"):
        assert page.get_by_role("row", name=re.compile(name)).count() == 1
    assert page.get_by_text("Nothing was changed").is_visible()
    shot(page, "ui-blast-radius.png")
    assert errors == []
    assert outside == []  # nothing fetched from anywhere but the app


def test_a_person_watches_a_revoke_run_progress_to_succeeded(stack: Stack, browser: Any) -> None:
    key = f"{stack.vaults['kv-contoso-prod-weu']}/keys/cmk-cosmos"
    answer = requests.post(f"{stack.host.url}/api/revoke", params={"code": FUNCTION_KEY}, timeout=60,
                           headers={"X-MS-CLIENT-PRINCIPAL": ONCALL},
                           json={"key": key, "mode": "disable", "reason": "drill", "ticket": "T-2", "dryRun": False})
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run"]
    assert answer.json()["status"] == "running"  # the key is revoked; verification goes on

    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(stack.url(f"ui/runs/{run_id}"))
    run_status = page.locator("#run-status")
    assert run_status.inner_text() == "running"
    assert page.get_by_role("row", name=re.compile(r"^3 act succeeded")).count() == 1
    shot(page, "ui-run-running.png")

    # The reconcile timer's resume sweep goes on verifying while the page watches.
    stop = threading.Event()

    def timer() -> None:
        books = stack.app.runbooks
        while not stop.is_set() and not books.get(run_id).run.finished:
            stack.world.clock.advance(timedelta(minutes=1))
            resume_unfinished(stack.app.runbooks, budget=timedelta(minutes=1))
            time.sleep(0.3)

    sweeper = threading.Thread(target=timer, daemon=True)
    sweeper.start()
    try:
        # The page's CSP forbids evaluating strings: wait through the locator, as a reader would look.
        expect(run_status).to_have_text("succeeded", timeout=90_000)
    finally:
        stop.set()
        sweeper.join(timeout=30)
    # The page refreshed itself: every step reads succeeded, and it stopped asking.
    for step in ("resolve", "snapshot", "act", "verify", "publish"):
        assert page.get_by_role("row", name=re.compile(rf"{step} succeeded")).count() == 1
    assert page.locator("[data-live]").get_attribute("data-finished") == "true"
    shot(page, "ui-run-succeeded.png")
