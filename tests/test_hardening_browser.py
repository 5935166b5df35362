"""Hostile pages and hostile model answers, in a real browser (Chromium through Playwright).

- the dashboard runs under its Content-Security-Policy (script-src 'self', no eval) without a
  single violation, htmx and the Dismiss/Close buttons included;
- a page on another site cannot register a model with a text/plain form POST (AUTH_DISABLED=true);
- a model answering text/html with a script cannot run it on the service's origin;
- the containerized service (the Dockerfile's image) serves the dashboard with htmx and its stylesheet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import docker.errors
import pytest
from conftest import ECHO, INSTANCE, PG_URL
from deployment_support import ServiceContainers, build_service_image, wait_http_ok
from playwright.sync_api import Page, expect
from service_process import free_port
from sqlalchemy import func, select
from test_browser import browser  # noqa: F401  (the fixture: Debian's Chromium through Playwright)

from inference_app.extensions import db
from inference_app.models import ServedModel

ROOT = Path(__file__).resolve().parent.parent
HTML_ANSWER = "inference-test/html-answer:1"
CSP_WORDS = "Content Security Policy"


@pytest.fixture(scope="session")
def html_answer_image(docker_client) -> str:
    """tests/images/html-answer on top of the echo test image; rebuilt only when its sources change."""
    folder = ROOT / "tests" / "images" / "html-answer"
    digest = hashlib.sha256(docker_client.images.get(ECHO).id.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + oct(path.stat().st_mode).encode() + path.read_bytes())
    source_hash = digest.hexdigest()[:16]
    try:
        if docker_client.images.get(HTML_ANSWER).labels.get("inference.src-hash") == source_hash:
            return HTML_ANSWER
    except docker.errors.ImageNotFound:
        pass
    docker_client.images.build(
        path=str(folder), tag=HTML_ANSWER, rm=True, forcerm=True, labels={"inference.src-hash": source_hash}
    )
    return HTML_ANSWER


@pytest.fixture
def new_page(browser):  # noqa: F811
    contexts = []

    def _open(base_url: str) -> tuple[Page, list[str]]:
        context = browser.new_context(base_url=base_url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        return page, console

    yield _open
    for context in contexts:
        context.close()


def test_the_dashboard_works_under_its_csp_without_a_violation(live_server, new_page, register):
    model = register(model_name="echo")
    page, console = new_page(live_server)
    response = page.goto("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.evaluate("typeof window.htmx") == "object"
    row = page.locator(f"#model-{model['id']}")
    row.get_by_role("link", name="Infer").click()  # htmx swaps the panel in
    panel = page.locator(f"#model-{model['id']}-panel")
    expect(panel.get_by_role("button", name="Send")).to_be_visible()
    panel.get_by_role("button", name="Close").click()  # was an hx-on attribute: eval, refused by the CSP
    expect(panel.locator(".infer-panel")).to_have_count(0)
    page.evaluate("htmx.ajax('GET', '/models/999999/row', {target: '#notices'})")  # a 404 becomes a notice
    notice = page.locator("#notices .alert")
    expect(notice).to_contain_text("no model with id 999999")
    notice.get_by_role("button", name="Dismiss").click()
    expect(notice).to_have_count(0)
    for path in ("/running", "/events", f"/models/{model['id']}", f"/models/{model['id']}/infer", "/api/docs"):
        page.goto(path)
        expect(page.locator("body")).not_to_be_empty()
    assert [text for text in console if CSP_WORDS in text] == []


def test_a_page_on_another_site_cannot_register_a_model_with_a_text_plain_form(app, live_server, new_page):
    """AUTH_DISABLED=true (the suite's default): the API itself must refuse what a cross-site form sends."""
    attacker = "http://attacker.test"
    page, _console = new_page(attacker)
    name = '{"user_id": "mallory", "model_name": "planted", "image": "' + ECHO + '", "pad": "'
    html = f"""<!doctype html><form method="post" enctype="text/plain" action="{live_server}/api/models">
      <input type="hidden" name='{name}' value='"}}'></form>
      <script>document.forms[0].submit();</script>"""
    page.route(f"{attacker}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    with page.expect_navigation(url=f"{live_server}/api/models") as navigation:
        page.goto(f"{attacker}/")
    answer = navigation.value
    assert answer.status == 415, answer.text()
    assert "application/json" in answer.json()["error"]["message"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ServedModel)) == 0
        db.session.rollback()


def test_a_model_answering_html_cannot_run_script_on_the_services_origin(
    live_server, new_page, register, html_answer_image
):
    model = register(model_name="htmlish", image=html_answer_image)
    url = f"{live_server}/api/models/{model['id']}/infer"
    page, _console = new_page(live_server)
    page.goto("/")  # a page of ours first: the answer would share its origin, cookies and API
    # The browser opens the model's answer as a document on our origin (as a link or a form would):
    # the navigation is turned into the POST an API client sends.
    page.route(
        url,
        lambda route: route.continue_(
            method="POST", post_data="{}", headers={**route.request.headers, "content-type": "application/json"}
        ),
    )
    response = page.goto(url)
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#answer")).to_have_text("prediction: setosa")  # the HTML is shown...
    assert page.locator("#ran").count() == 0  # ...but its script never ran
    assert page.title() == "model answer"
    assert page.evaluate("window.origin") == "null"  # sandboxed: an opaque origin, not the service's


@pytest.mark.timeout(600)
def test_the_containerized_dashboard_loads_htmx_and_its_stylesheet(database, docker_client, new_page):
    """The image built by the Dockerfile (scripts/build-service-image.sh), run as the web role, in Chromium."""
    containers = ServiceContainers(docker_client, build_service_image())
    try:
        port = free_port()
        env = {
            "DATABASE_URL": PG_URL,
            "INSTANCE_NAME": INSTANCE,
            "CONTAINER_PREFIX": "itest",
            "RUN_BACKGROUND": "worker",
            "AUTH_DISABLED": "true",
            "DATABASE_WAIT_SECONDS": "30",
            "WEB_CONCURRENCY": "1",
            "BIND_HOST": "127.0.0.1",
            "PORT": str(port),
        }
        web = containers.run("dashboard", ["web"], env, network_mode="host")
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(web, f"{base}/healthz")
        page, console = new_page(base)
        assets: dict[str, int] = {}
        page.on("response", lambda response: assets.update({response.url.removeprefix(base): response.status}))
        page.goto("/")
        expect(page.get_by_role("link", name="Inference service")).to_be_visible()
        assert assets.get("/static/vendor/htmx.min.js") == 200 and assets.get("/static/dashboard.css") == 200, assets
        assert page.evaluate("typeof window.htmx") == "object"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(245, 246, 248)"
        assert page.evaluate("getComputedStyle(document.querySelector('.skip-link')).left") == "-999px"
        assert [text for text in console if CSP_WORDS in text or "404" in text] == []
    finally:
        containers.remove_all()
