"""The fleet page in a real browser (Playwright driving Debian's /usr/bin/chromium, never a download):
log in, watch the counts follow an agent that connects and is killed (within grace + 2 s, no reload),
filter by status, open an agent's history, and check the screenshots are not blank.

AGENTPULSE_SCREENSHOTS=docs/img saves the screenshots of the main views there (for the README).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentpulse.keysfile import read_keys_file
from tests.e2e.api_tools import ADMIN, Api
from tests.e2e.harness import AgentFactory, ManagerProcess
from tests.e2e.test_api import WireFleet, start
from tests.events.natsserver import NatsServer

CHROMIUM = os.environ.get("AGENTPULSE_CHROMIUM", "/usr/bin/chromium")
GRACE = 1.0  # the harness's connection_grace

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)", allow_module_level=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


def not_blank(page: Any, path: Path, blank_size: int) -> None:
    page.screenshot(path=str(path), full_page=False)
    size = path.stat().st_size
    assert size > 8 * blank_size, f"{path.name}: {size} bytes, a blank page of that size is {blank_size}"


def count(page: Any, status: str) -> str:
    return str(page.text_content(f"#count-{status}")).strip()


def test_the_page_follows_the_fleet_live(
    manager: ManagerProcess, agent_process: AgentFactory, browser: Any, tmp_path: Path
) -> None:
    api = start(manager)
    keys = list(read_keys_file(manager.home.client_keys).active())
    api.call("POST", "/groups", body=b'{"group_id":"web"}')
    api.call("PUT", "/agents/group?group_id=web&agents_list=002,003,004")

    # bypass_csp: Playwright evaluates its waiting functions as strings, which our CSP refuses
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, bypass_csp=True)
    page.goto("about:blank")
    blank = tmp_path / "blank.png"
    page.screenshot(path=str(blank))
    blank_size = blank.stat().st_size
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"http://127.0.0.1:{manager.api_port}/")
    page.fill("#user", ADMIN[0])
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    page.fill("#password", ADMIN[1])
    page.click("button[type=submit]")
    page.wait_for_selector("#app:not(.hidden)")
    page.wait_for_function("document.getElementById('live').textContent === 'live'")
    assert count(page, "never_connected") == "12" and count(page, "active") == "0"
    assert page.is_hidden("#nats")  # no NATS configured: no NATS pill

    with WireFleet(manager):
        page.wait_for_function("document.getElementById('count-active').textContent === '6'", timeout=20000)
        python_agent = agent_process(keys[0])
        python_agent.start()
        page.wait_for_function("document.getElementById('count-active').textContent === '7'", timeout=20000)
        assert page.text_content("#rows tr[data-id='001'] td.status") == "Active"
        shots = tmp_path / "shots"
        shots.mkdir()
        time.sleep(1.5)  # an age or two ticks in the table
        not_blank(page, shots / "fleet.png", blank_size)

        python_agent.kill()
        killed = time.monotonic()
        page.wait_for_function(
            "document.getElementById('count-disconnected').textContent === '1'", timeout=(GRACE + 2) * 1000
        )
        took = time.monotonic() - killed
        assert took <= GRACE + 2, took
        assert count(page, "active") == "6"
        assert page.text_content("#rows tr[data-id='001'] td.status") == "Disconnected"
        assert page.url.endswith("/")  # never reloaded

        page.select_option("#status-filter", "disconnected")
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 1")
        assert page.text_content("#rows tr td") == "001"
        page.click("#rows tr[data-id='001']")
        page.wait_for_selector("#detail:not(.hidden)")
        timeline = str(page.text_content("#timeline"))
        assert "Active → Disconnected" in timeline and "connection lost" in timeline
        not_blank(page, shots / "agent-history.png", blank_size)
        page.click("#detail-close")

        page.select_option("#status-filter", "")
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 12")
        page.click("#theme")
        time.sleep(0.3)
        not_blank(page, shots / "fleet-dark.png", blank_size)
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        groups = str(page.text_content("#groups"))
        assert "web" in groups and "default" in groups

    assert errors == []
    target = os.environ.get("AGENTPULSE_SCREENSHOTS")
    if target:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(target) / shot.name)
    assert Api(manager).call("GET", "/agents", token="").status == 401


def test_the_page_shows_that_nats_and_its_streams_are_healthy(
    manager: ManagerProcess, browser: Any, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "nats" / "store")
    server.start()
    try:
        start(manager, nats=f"<nats><enabled>yes</enabled><url>{server.url}</url></nats>")
        page = browser.new_page(viewport={"width": 1200, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{manager.api_port}/")
        page.fill("#user", ADMIN[0])
        page.fill("#password", ADMIN[1])
        page.click("button[type=submit]")
        # The manager reads its streams back once connected, the page asks every 10 s.
        # Connected before the first read is "NATS ok" too, titled "NATS connected": wait for the read.
        page.wait_for_function(
            "document.getElementById('nats').textContent === 'NATS ok'"
            " && document.getElementById('nats').title.includes('AGENT_STATUS: 1 of 1 replicas current')",
            timeout=30000,
        )
        assert "on" in str(page.get_attribute("#nats", "class")).split()
        server.stop()  # NATS away: the pill says so at its next look
        page.wait_for_function("document.getElementById('nats').textContent === 'NATS away'", timeout=30000)
        assert "warn" in str(page.get_attribute("#nats", "class")).split()
        assert errors == []
    finally:
        server.stop()
