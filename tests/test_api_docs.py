"""The API docs at `/docs` render in Chromium with no network beyond the edge itself: Swagger UI's
script and styles come from the edge, and the request bodies are shown from `/openapi.json`."""

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect, sync_playwright
from ui_helpers import CHROMIUM

from tests.conftest import EdgeServer


@pytest.fixture
def offline_page(edge: EdgeServer) -> Iterator[tuple[Page, list[str]]]:
    """A Chromium page for which every host but the edge's is unreachable; yields it and the
    URLs it tried to reach elsewhere."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-liberation")
    edge_host = urlsplit(edge.url).netloc
    outside: list[str] = []

    def only_the_edge(route: Route) -> None:
        if urlsplit(route.request.url).netloc == edge_host:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context()
        context.route("**/*", only_the_edge)
        page = context.new_page()
        errors: list[object] = []
        page.on("pageerror", lambda error: errors.append(error))
        yield page, outside
        browser.close()
    assert not errors, f"script errors in the page: {errors}"


def test_docs_render_offline_with_request_bodies(edge: EdgeServer, offline_page: tuple[Page, list[str]]) -> None:
    page, outside = offline_page
    page.goto(f"{edge.url}/docs")
    transcriptions = page.locator(".opblock-post", has_text="/v1/audio/transcriptions").first
    expect(transcriptions).to_be_visible(timeout=30_000)
    expect(page.locator(".opblock-post", has_text="/v1/chat/completions")).to_be_visible()
    transcriptions.locator(".opblock-summary").click()
    body = transcriptions.locator(".opblock-section-request-body")
    expect(body).to_be_visible()
    expect(body.locator("select")).to_contain_text("multipart/form-data")
    for field in ("file", "url", "response_format", "chunking_strategy"):
        expect(body.get_by_text(field, exact=True).first).to_be_visible()
    assert not outside, f"the docs page reached beyond the edge: {outside}"
