"""The screenshots in docs/img, taken as a user sees the pages: a dashboard on STORE, headless
Chromium (/usr/bin/chromium), the pictures written to OUT.

    .venv/bin/python -m pipeline demo --no-serve --model pixels --out /tmp/demo   # 1,200 frames
    .venv/bin/python -m tests.browser.docs_screenshots /tmp/demo/garden.duckdb docs/img [NAME ...]

NAME: overview (also the mosaic), gallery, incidents, causes (the sidebar's Junk causes with
quality and camera chosen, on the Incidents page), suggested (the sidebar's Junk causes on
Review & export's daylight frames with the causes the store's reviews suggest: a store with
reviews, else no suggestion shows), overview-causes (Overview's mosaic with
quality and camera chosen: the hours their incidents fill outlined), video (Review & export's Export tab with
an MP4 made), learned (the Gallery ranked by `learned`, with the sidebar's word on what the run
learned: a store analysed after reviews, else the sidebar says how to get it), teach (Review &
export's "One by one" in the order to teach learned), doubt (the order where learned is least
sure: a store analysed after reviews, else it says learned is not in the run yet); all of them
by default. Look at each picture before committing it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from tests.browser.conftest import choose
from tests.conftest import CHROMIUM, dashboard_server

NAMES = (
    "overview",
    "gallery",
    "incidents",
    "causes",
    "suggested",
    "overview-causes",
    "video",
    "learned",
    "teach",
    "doubt",
)


def settle(page, title: str) -> None:
    """Wait until the page's title is drawn, the script run has finished and every Plotly
    chart on it is drawn (Plotly's script loads lazily: the first page a fresh server sends
    shows empty boxes for a while)."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=120_000)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=120_000
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                 .every(c => c.querySelector('.main-svg'))""",
        timeout=120_000,
    )
    page.wait_for_timeout(1500)  # let Plotly finish its transitions


def shoot_mosaic(page, path: Path) -> None:
    """The Overview's archive mosaic alone."""
    mosaic = page.locator('[data-testid="stPlotlyChart"]').filter(
        has_text="The archive, an hour per cell"
    )
    mosaic.first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    mosaic.first.screenshot(path=str(path))


def main(store_path: Path, out: Path, names: set[str]) -> list[str]:
    """Take the pictures; returns the page errors the browser saw (none expected)."""
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with dashboard_server(store_path, out / "streamlit.log", timeout=120) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
            )

            def open_page(path: str, title: str, width: int, height: int):
                ctx = browser.new_context(viewport={"width": width, "height": height})
                page = ctx.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url + path)
                settle(page, title)
                return ctx, page

            if "overview" in names:
                ctx, page = open_page("/", "Overview", 1400, 1500)
                page.screenshot(path=str(out / "dashboard-overview.png"))
                shoot_mosaic(page, out / "dashboard-mosaic.png")
                ctx.close()
            if "gallery" in names:
                ctx, page = open_page("/gallery", "Gallery", 1400, 1500)
                page.locator('[data-testid="stImage"] img').first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-gallery.png"))
                ctx.close()
            if "incidents" in names:
                ctx, page = open_page("/incidents", "Incidents", 1400, 2100)
                page.get_by_role(
                    "button", name=re.compile(r"^Mark all \d+ frames junk$")
                ).first.wait_for(timeout=60_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-incidents.png"))
                ctx.close()
            if "causes" in names:
                ctx, page = open_page("/incidents?causes=quality,camera", "Incidents", 1400, 1250)
                page.get_by_text("Junk causes").first.scroll_into_view_if_needed()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-junk-causes.png"))
                ctx.close()
            if "suggested" in names:
                ctx, page = open_page("/review?daylight=day", "Review & export", 1400, 1100)
                count = page.get_by_role("button", name=re.compile(r"^Count ")).first
                try:
                    count.wait_for(timeout=60_000)
                except PlaywrightTimeout:  # no reviews, or none that suggest: the causes alone
                    count = page.get_by_text("Junk causes").first
                count.scroll_into_view_if_needed()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-suggested-causes.png"))
                ctx.close()
            if "overview-causes" in names:
                ctx, page = open_page("/?causes=quality,camera", "Overview", 1400, 1500)
                shoot_mosaic(page, out / "dashboard-mosaic-causes.png")
                ctx.close()
            if "video" in names:
                ctx, page = open_page("/review?daylight=day", "Review & export", 1400, 1300)
                page.get_by_role("tab", name="Export").click()
                width = page.locator('[data-testid="stSelectbox"]').filter(has_text="Video width")
                choose(page, width, "640")
                page.locator('[data-testid="stCheckbox"]').filter(
                    has_text="Deflicker the video"
                ).locator("label").click()
                page.get_by_role("button", name="Make MP4 video").click()
                page.locator('[data-testid="stDownloadButton"]').filter(
                    has_text="MP4 video"
                ).wait_for(timeout=300_000)
                settle(page, "Review & export")
                page.screenshot(path=str(out / "dashboard-review-export-video.png"))
                ctx.close()
            if "learned" in names:
                ctx, page = open_page("/gallery?det=learned", "Gallery", 1400, 1000)
                said = page.get_by_text("ranks by your reviews").first
                said.wait_for(timeout=60_000)
                said.scroll_into_view_if_needed()  # the sidebar, down to what it says
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / "dashboard-learned.png"))
                ctx.close()
            if "teach" in names:
                ctx, page = open_page("/review", "Review & export", 1400, 1000)
                page.locator('[data-testid="stRadio"]').filter(has_text="Offer frames").get_by_text(
                    "to teach learned"
                ).click()
                page.get_by_text("take turns").first.wait_for(timeout=60_000)
                settle(page, "Review & export")
                page.screenshot(path=str(out / "dashboard-review-teach.png"))
                ctx.close()
            if "doubt" in names:
                ctx, page = open_page("/review", "Review & export", 1400, 1000)
                page.locator('[data-testid="stRadio"]').filter(has_text="Offer frames").get_by_text(
                    "where learned is least sure"
                ).click()
                page.get_by_text(re.compile("least sure of|not in this run yet")).first.wait_for(
                    timeout=60_000
                )
                settle(page, "Review & export")
                page.screenshot(path=str(out / "dashboard-review-doubt.png"))
                ctx.close()
            browser.close()
    (out / "streamlit.log").unlink(missing_ok=True)
    return errors


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    chosen = set(sys.argv[3:]) or set(NAMES)
    unknown = chosen - set(NAMES)
    if unknown:
        sys.exit(f"unknown pictures {sorted(unknown)}; choose from {', '.join(NAMES)}")
    seen = main(Path(sys.argv[1]), Path(sys.argv[2]), chosen)
    if seen:
        sys.exit(f"the browser saw page errors: {seen}")
