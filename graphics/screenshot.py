"""Drive the page in headless Chromium (Playwright): analyse an example and
save a screenshot. Used by the browser test and to refresh the README's
picture::

    python -m graphics.screenshot --url http://127.0.0.1:5000 [--out graphics/app-screenshot.png]

(start the server first, with the models you want to show). Needs the
``playwright`` Python package and a Chromium (Debian: apt-get install chromium).
"""
from __future__ import annotations

import argparse
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent


def launch_browser(playwright, executable: str = CHROMIUM):
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)


def analyse_example(page, url: str, example: str = "ball", timeout_ms: float = 60_000) -> None:
    """Open the page, click an example, wait for the result with its mask drawn."""
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("document.getElementById('models-status').textContent.startsWith('Finds')",
                           timeout=timeout_ms)
    page.click(f"button.example[data-src$='/{example}.jpg']")
    page.wait_for_selector("#result:not([hidden])", timeout=timeout_ms)
    page.wait_for_function("(() => { const m = document.getElementById('mask');"
                           " return m.hidden || (m.complete && m.naturalWidth > 0); })()", timeout=timeout_ms)


def compact_png(src: Path, dst: Path) -> Path:
    """Copy a screenshot as a 256-colour PNG (a third of the size, for the repository)."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").quantize(256).save(dst, optimize=True)
    return dst


def screenshot(url: str, out: Path, *, example: str = "ball", width: int = 900) -> Path:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1,
                                    bypass_csp=True)  # its waits are evaluated strings, which the CSP refuses
            analyse_example(page, url, example)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            compact_png(out, out)
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:5000")
    ap.add_argument("--out", type=Path, default=REPO / "graphics" / "app-screenshot.png")
    ap.add_argument("--example", default="ball", choices=["brick", "ball", "cylinder"])
    a = ap.parse_args()
    print(screenshot(a.url, a.out, example=a.example))


if __name__ == "__main__":
    main()
