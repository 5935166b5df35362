"""The dashboard in a real browser: Playwright driving Debian's Chromium against the live service.

A newcomer's path: open the dashboard, find the example model, Start it and watch it become
running, Infer and read the prediction, Stop it; search narrows the list. The screenshots in
docs/screenshots/ are taken here, at laptop (1280 px) and phone (390 px) widths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import ECHO, NEVER_HEALTHY
from playwright.sync_api import Page, expect, sync_playwright
from waiting import wait_for

from inference_app.cli import EXAMPLE

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent
# Screenshots go to test-artifacts/ on every run, and to docs/screenshots/ (committed, shown in
# the README) when UPDATE_SCREENSHOTS=1, so an ordinary test run leaves the work tree clean.
SHOTS = ROOT / ("docs/screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else "test-artifacts/screenshots")
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the browser tests need Debian's package "
            "(apt-get install -y chromium), which `make test` installs",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, live_server):
    contexts = []

    def _open(path: str = "/", viewport: dict = LAPTOP) -> Page:
        context = browser.new_context(base_url=live_server, viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(path)
        return page

    yield _open
    for context in contexts:
        context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_start_infer_and_stop_the_example_model(open_page, register):
    for name in ("sentiment", "summariser"):
        register(model_name=name, user_id="team-nlp", image=ECHO, version="2")
    iris = register(**EXAMPLE)
    page = open_page("/")
    page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    row = page.locator(f"#model-{iris['id']}")
    expect(row.get_by_role("link", name="iris")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("stopped")

    row.get_by_role("button", name="Start").click()
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.get_by_role("button", name="Stop")).to_be_visible()
    expect(row.locator("td[data-label='Idle shutdown']")).to_contain_text("in 4 min")

    row.get_by_role("link", name="Infer").click()
    panel = page.locator(f"#model-{iris['id']}-panel")
    editor = panel.get_by_label("Request body (JSON)")
    expect(editor).to_have_value(re.compile(r'"instances"'))
    panel.get_by_role("button", name="Send").click()
    answer = panel.locator("pre.response")
    expect(answer).to_contain_text('"predictions"')
    expect(answer).to_contain_text("setosa")
    expect(panel.locator(".answer-facts")).to_contain_text("200 OK")
    expect(panel.locator(".answer-facts")).to_contain_text("Cold start")
    shot(page, "infer-panel.png")

    page.goto("/")
    shot(page, "models.png")
    phone = open_page("/", PHONE)
    expect(phone.locator(f"#model-{iris['id']} .badge")).to_have_text("running")
    shot(phone, "models-phone.png")

    page.locator(f"#model-{iris['id']}").get_by_role("button", name="Stop").click()
    expect(page.locator(f"#model-{iris['id']} .badge")).to_have_text("stopped")
    page.evaluate("window.sameDocument = true")
    page.locator(f"#model-{iris['id']}").get_by_role("button", name="Start").click()
    expect(page.locator(f"#model-{iris['id']} .badge")).to_have_text("running")
    page.locator(f"#model-{iris['id']}").get_by_role("button", name="Stop").click()
    expect(page.locator(f"#model-{iris['id']} .badge")).to_have_text("stopped")
    assert page.evaluate("window.sameDocument") is True  # updated in place, never reloaded


def test_search_narrows_the_list_and_survives_a_reload(open_page, register):
    for name in ("iris", "iris-large", "embedder", "echo"):
        register(model_name=name)
    register(model_name="irregular", user_id="bob")
    page = open_page("/")
    rows = page.locator("tr.model-row")
    expect(rows).to_have_count(5)
    page.get_by_label("Model name starts with").fill("ir")
    expect(rows).to_have_count(3)
    expect(page).to_have_url(re.compile(r"\?q=ir$"))
    page.get_by_label("Owner").fill("bob")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("irregular")
    page.reload()
    expect(page.get_by_label("Model name starts with")).to_have_value("ir")
    expect(rows).to_have_count(1)
    page.get_by_label("Status").select_option("running")
    expect(page.locator("#models")).to_contain_text("No model matches this search")


@pytest.mark.settings(start_timeout_seconds=3.0)
def test_a_start_that_never_gets_ready_shows_progress_then_the_reason(open_page, register):
    model = register(model_name="stuck", image=NEVER_HEALTHY)
    page = open_page(f"/models/{model['id']}")
    page.get_by_role("button", name="Start").click()
    live = page.locator("#model-live")
    expect(live.locator(".progress")).to_contain_text("waiting for /health to answer")
    expect(live.locator(".badge").first).to_have_text("failed", timeout=15_000)
    expect(live.locator(".error-inline")).to_contain_text("3")
    expect(live.locator(".progress")).to_have_count(0)


@pytest.mark.settings(max_running_containers=2, max_running_per_owner=2)
def test_model_detail_and_running_views(open_page, client, register):
    first, second = register(model_name="echo-a"), register(model_name="echo-b")
    iris = register(**EXAMPLE)
    for model in (first, second):
        assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    body = EXAMPLE["metadata"]["example_request"]  # the first request evicts echo-a, the least recently used
    for _ in range(4):
        assert client.post(f"/api/models/{iris['id']}/infer", json=body).status_code == 200
    page = open_page(f"/models/{iris['id']}")
    expect(page.locator("#model-live .badge").first).to_have_text("running")
    expect(page.locator("#container-title")).to_be_visible()
    # the activity ledger flushes the counters twice a second: reload once they are in the chart
    charted = lambda: '<rect class="bar"' in client.get(f"/models/{iris['id']}").get_data(as_text=True)  # noqa: E731
    wait_for(charted, 10, "the requests never reached the chart", interval=0.2)
    page.reload()
    expect(page.locator(".chart rect.bar")).not_to_have_count(0)
    expect(page.locator("pre.log")).to_contain_text("loaded")
    shot(page, "model-detail.png")

    running = open_page("/running")
    expect(running.locator(".capacity-figure")).to_contain_text("2 of 2")
    expect(running.locator(f"#model-{iris['id']} .badge")).to_have_text("running")
    expect(running.locator(f"#model-{first['id']}")).to_have_count(0)
    evictions = running.get_by_role("region", name="Recent evictions and idle stops")
    expect(evictions).to_contain_text("alice/echo-a:1")
    expect(evictions).to_contain_text(f"made room for model {iris['id']}")
    shot(running, "running.png")
    phone = open_page(f"/models/{iris['id']}", PHONE)
    expect(phone.locator("#model-live .badge").first).to_have_text("running")
    shot(phone, "model-detail-phone.png")

    events = open_page("/events")
    expect(events.locator("#events")).to_contain_text("evicted")
    events.get_by_label("Kind").select_option("evicted")
    expect(events).to_have_url(re.compile(r"/events\?kind=evicted$"))
    expect(events.locator("#events .badge")).to_have_count(1)
    shot(events, "events.png")


@pytest.mark.settings(auth_disabled=False)
def test_sign_in_with_a_token_shows_only_the_users_models(app, open_page, register):
    from inference_app.services import auth

    register(user_id="alice", model_name="alices-model")
    register(user_id="bob", model_name="bobs-model")
    with app.app_context():
        _, token = auth.create_token("alice", "alice", False)
    page = open_page("/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("API token").fill("inf_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or has been revoked")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="alices-model")).to_be_visible()
    expect(page.get_by_role("link", name="bobs-model")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    auth.forget_cached_tokens()
