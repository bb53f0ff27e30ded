"""The web search page in a real browser: Debian's chromium driven by playwright, against the app on a free port.

Set MATSEARCH_WEB_SCREENSHOT=docs/web-page.png to keep the screenshot the README shows.
"""

import os
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from conftest import load_vectors, shared
from matsearch import Collection
from matsearch.service.app import create_app

CHROMIUM = Path(os.environ.get("MATSEARCH_CHROMIUM", "/usr/bin/chromium"))
QUERY = "heat transfer in hypersonic boundary layers"
HOSTILE = '<img src=x onerror="window.injected = 1">heat shield <b>bold</b>'
KEY = "page-test-key"


@pytest.fixture(scope="module")
def root(tmp_path_factory, calibrated_cranfield):
    """Calibrated Cranfield, and a small collection whose texts and metadata are HTML that must stay text."""
    root = tmp_path_factory.mktemp("web")
    shutil.copytree(calibrated_cranfield, root / "cranfield")
    with Collection.create(root / "hostile", transform="none") as col:
        col.add(["<i>a</i>", "b", "c"], texts=[HOSTILE, "plain heat", "nothing"],
                vectors=load_vectors(shared("cranfield") / "corpus.minilm.f16.npy")[:3],
                metadata=[{"note": "<script>window.injected = 2</script>"}, None, None])
    return root


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium), as "
                    ".ci/run does, or point MATSEARCH_CHROMIUM at a Chromium binary", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@contextmanager
def serving(app):
    """Run `app` with uvicorn in a thread on a free loopback port, for the length of the block: its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(root):
    with serving(create_app(root)) as url:
        yield url


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def _wait_for_results(page, count: int) -> None:
    """Wait (the first text query loads the encoder) for `count` results; on a timeout, say what the page says."""
    try:
        expect(page.locator("#results li")).to_have_count(count, timeout=30_000)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe page's status line: {page.locator('#status').inner_text()!r}") from None


def _run_fact(page, term: str) -> str:
    """The value shown beside `term` in the page's account of the last search."""
    return page.locator("#run dt", has_text=term).locator("xpath=following-sibling::dd[1]").inner_text()


def test_search_then_move_the_recall_slider_with_the_keyboard(page, url, tmp_path):
    page.goto(url)
    expect(page.get_by_label("Collection")).to_have_value("cranfield")
    expect(page.locator("#frontier svg circle").first).to_be_visible()  # calibrated: the frontier is drawn

    page.get_by_role("spinbutton", name="Results").fill("5")
    page.get_by_label("Collection").focus()
    page.keyboard.press("Tab")  # focus order: collection, query
    page.keyboard.type(QUERY)
    page.keyboard.press("Enter")
    _wait_for_results(page, 5)
    first = page.locator("#results li").first
    assert first.locator("mark").count() > 0, "no query word is highlighted in the top result"
    marked = {text.lower() for text in first.locator("mark").all_inner_texts()}
    assert marked & {"heat", "transfer", "hypersonic", "boundary", "layer", "layers"}, marked
    expect(first.locator(".score")).to_contain_text("score 0.")
    expect(first.locator(".metadata")).to_contain_text("title")
    expect(page.locator("#run")).to_contain_text("target_recall=0.95")
    expect(page.locator("#frontier circle.used")).to_have_count(1)  # the plan that served is marked

    for _ in range(4):  # search button, results, mode, then the slider
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "recall"
    served = {}  # target → (plan, multiply-adds) shown
    for key, presses, target in (("ArrowRight", 5, "1.00"), ("ArrowLeft", 20, "0.80")):
        for _ in range(presses):  # each press re-runs the query; the page shows the last one's answer
            page.keyboard.press(key)
        expect(page.locator("#recall-value")).to_have_text(target)
        expect(page.locator("#run")).to_contain_text(re.compile(rf"target_recall={float(target)}(?!\d)"))
        served[target] = _run_fact(page, "plan"), _run_fact(page, "multiply-adds")
        _wait_for_results(page, 5)
    assert served["1.00"][0] != served["0.80"][0] and served["1.00"][1] != served["0.80"][1], served
    expect(page.locator("#stages tbody tr").first).to_be_visible()

    shot = tmp_path / "web-page.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MATSEARCH_WEB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MATSEARCH_WEB_SCREENSHOT"])


def test_document_text_and_metadata_are_shown_as_text_not_html(page, url):
    page.goto(url)
    page.get_by_label("Collection").select_option("hostile")
    page.get_by_label("Mode").select_option("lexical")
    page.get_by_label("Query", exact=True).fill("heat")
    page.get_by_label("Query", exact=True).press("Enter")
    _wait_for_results(page, 2)
    expect(page.locator("#results")).to_contain_text(HOSTILE)
    expect(page.locator("#results")).to_contain_text("<script>window.injected = 2</script>")
    expect(page.locator("#results")).to_contain_text("<i>a</i>")
    assert page.locator("#results img, #results script, #results b, #results i").count() == 0
    assert page.evaluate("window.injected") is None
    expect(page.locator("#recall")).to_be_disabled()  # not calibrated
    expect(page.locator("#frontier")).to_contain_text("not calibrated")


def test_a_private_server_asks_for_the_key_and_the_page_sends_it(page, root):
    with serving(create_app(root, api_key=KEY, private=True)) as url:
        page.goto(url)
        expect(page.locator("#status")).to_contain_text("401")
        expect(page.locator("#key-box")).to_have_attribute("open", "")
        page.get_by_label("Key for a private server").fill(KEY)
        with page.expect_request(lambda r: r.url.endswith("/v1/collections")) as sent:
            page.get_by_label("Key for a private server").press("Enter")
        assert sent.value.headers["authorization"] == f"Bearer {KEY}"
        expect(page.get_by_label("Collection")).to_have_value("cranfield")
        assert page.evaluate("sessionStorage.getItem('matsearch-api-key')") == KEY
