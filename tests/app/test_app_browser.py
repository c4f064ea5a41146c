"""The page in headless Chromium: analyse an example (label, box, mask overlay),
show an error for a text file, fit a phone's width.

Screenshots go to $BBC1K_SCREENSHOT_DIR (default: the test's tmp dir). To
refresh the README's picture run ``python -m graphics.screenshot`` against a server
with real models, or set BBC1K_REFRESH_SCREENSHOT=1 here (tiny test models)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import REPO

from graphics.screenshot import CHROMIUM, analyse_example, compact_png, launch_browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing (Debian: apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("BBC1K_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_example_shows_label_box_and_mask(browser, server, shots):
    # bypass_csp: analyse_example polls with string predicates, which Playwright
    # evaluates with eval(), and the page's CSP refuses eval (test_page_runs_under_its_csp)
    page = browser.new_page(viewport={"width": 900, "height": 900}, bypass_csp=True)
    analyse_example(page, server.url, "ball")
    label = page.text_content("#label")
    assert any(c in label for c in ("brick", "ball", "cylinder")), label
    assert len(page.query_selector_all("#bars .bar")) == 3
    box = page.query_selector("#box")
    assert box.is_visible()
    b = box.bounding_box()
    photo = page.query_selector("#photo").bounding_box()
    assert b["width"] > 10 and b["height"] > 10
    assert photo["x"] - 4 <= b["x"] and b["x"] + b["width"] <= photo["x"] + photo["width"] + 4
    mask = page.query_selector("#mask")
    assert mask.is_visible() and mask.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('mask').naturalWidth") > 0
    assert len(page.query_selector_all("#legend li")) == 3
    assert page.query_selector("#error").is_hidden()
    shot = shots / "app-example.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("BBC1K_REFRESH_SCREENSHOT") == "1":
        compact_png(shot, REPO / "graphics" / "app-screenshot.png")
    page.fill("#opacity", "20")
    assert page.evaluate("getComputedStyle(document.getElementById('mask')).opacity") == "0.2"
    page.close()


def test_page_runs_under_its_csp(browser, server):
    """The page, its script and style, the photo (blob:) and the mask (data:) all
    pass the Content-Security-Policy: the browser refuses nothing. Waits without
    Playwright's eval-based polling, which the policy (rightly) refuses."""
    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(server.url, wait_until="networkidle")
    page.wait_for_selector("#models-status:has-text('Finds')")
    page.click("button.example[data-src$='/ball.jpg']")
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_selector("#mask[src^='data:image/png']")
    deadline = time.monotonic() + 30
    while not page.evaluate("(() => { const m = document.getElementById('mask');"
                            " return m.complete && m.naturalWidth > 0; })()"):
        assert time.monotonic() < deadline, f"the mask never loaded; console: {console}"
        time.sleep(0.1)
    assert page.evaluate("document.getElementById('photo').naturalWidth") > 0  # the blob: URL
    assert not [m for m in console if "Content Security Policy" in m or "Refused to" in m], console
    page.close()


def test_text_file_shows_an_error(browser, server, shots):
    page = browser.new_page(bypass_csp=True)
    page.goto(server.url, wait_until="networkidle")
    page.set_input_files("#file-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                               "buffer": b"this is not a picture\n"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.text_content("#error")
    assert page.query_selector("#result").is_hidden()
    page.screenshot(path=str(shots / "app-error.png"))
    page.close()


def test_page_fits_a_phone(browser, server, shots):
    page = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True,
                            bypass_csp=True)
    analyse_example(page, server.url, "cylinder")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.is_visible("#mask-controls")
    # Every control has an accessible name.
    assert page.get_by_label("Mask opacity").count() == 1
    assert page.get_by_label("Choose a file", exact=True).count() == 1
    page.screenshot(path=str(shots / "app-phone.png"), full_page=True)
    page.close()
