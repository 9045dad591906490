"""Real browser (Playwright + Debian's Chromium): on Review & export, set the video controls,
make the MP4, download it as a user does and decode it back; a screenshot of the Export tab with
the video ready goes to test-artifacts/dashboard-review-export-video.png."""

from __future__ import annotations

import av
import pytest

import store
from store import facts
from tests.browser.conftest import ARTIFACTS, choose
from tests.browser.test_dashboard_browser import settle

pytestmark = pytest.mark.browser


def test_make_and_download_the_mp4(browser, dashboard_url, demo_store, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with store.connect(demo_store, read_only=True) as con:
        flt = facts.FrameFilter(run_id=facts.latest_run_id(con), daylight=("day",))
        n_frames = facts.export_count(con, flt)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1300}, accept_downloads=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{dashboard_url}/review?daylight=day")
    settle(page, "Review & export")
    page.get_by_role("tab", name="Export").click()
    choose(page, page.locator('[data-testid="stSelectbox"]').filter(has_text="Video width"), "640")
    page.locator('[data-testid="stCheckbox"]').filter(has_text="Deflicker the video").locator(
        "label"
    ).click()
    page.get_by_role("button", name="Make MP4 video").click()
    download_button = page.locator('[data-testid="stDownloadButton"]').filter(has_text="MP4 video")
    download_button.wait_for(timeout=180_000)
    settle(page, "Review & export")
    summary = page.get_by_text(f"exported {n_frames:,} of", exact=False)
    assert "640x360" in summary.inner_text() and "deflicker over 15" in summary.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-review-export-video.png"), full_page=True)
    with page.expect_download(timeout=60_000) as info:
        download_button.locator("button").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "timelapse.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 640, 360)
        assert sum(1 for _ in container.decode(stream)) == n_frames
    assert not errors, errors
    ctx.close()
