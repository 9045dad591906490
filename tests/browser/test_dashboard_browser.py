"""Real browser (Playwright + Debian's Chromium): change a filter, reopen the resulting URL in a
fresh context and see the same view; a screenshot of every page goes to test-artifacts/."""

from __future__ import annotations

import re

import pytest

import store
from store.db import scalar
from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

PAGES = {
    "": "Overview",
    "incidents": "Incidents",
    "gallery": "Gallery",
    "map": "Map",
    "clusters": "Clusters",
    "compare": "Compare detectors",
    "frame": "Frame",
    "review": "Review & export",
    "runs": "Runs & errors",
}


def settle(page, title: str) -> None:
    """Wait until the page's title is drawn and the script run has finished."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=90_000)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=90_000
    )
    page.wait_for_timeout(600)  # let Plotly finish drawing before a screenshot


def frames_metric(page) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Frames").first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def test_filter_survives_a_copied_link(browser, dashboard_url, demo_store):
    ARTIFACTS.mkdir(exist_ok=True)
    with store.connect(demo_store, read_only=True) as con:
        n_all = scalar(con, "SELECT count(*) FROM frames")
        n_night = scalar(con, "SELECT count(*) FROM frames WHERE daylight = 'night'")
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(dashboard_url)
    settle(page, "Overview")
    assert frames_metric(page) == f"{n_all:,}"
    daylight = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
        has_text="Daylight"
    )
    daylight.locator("input").click()
    page.get_by_role("option", name="night", exact=True).click()
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r"daylight=night"), timeout=90_000)
    settle(page, "Overview")
    assert frames_metric(page) == f"{n_night:,}"
    link = page.url
    page.screenshot(path=str(ARTIFACTS / "dashboard-filtered-overview.png"), full_page=True)
    ctx.close()

    fresh = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = fresh.new_page()
    page.goto(link)
    settle(page, "Overview")
    assert frames_metric(page) == f"{n_night:,}"
    chips = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
        has_text="Daylight"
    )
    assert "night" in chips.inner_text()
    assert "daylight=night" in page.url
    fresh.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshot_of_every_page(browser, dashboard_url, scheme):
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800}, color_scheme=scheme)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(dashboard_url)
    settle(page, "Overview")
    for path, title in PAGES.items():
        if title != "Overview":  # in-app navigation, as a user clicks
            page.locator('[data-testid="stSidebarNav"] a').filter(
                has_text=re.compile(f"^{re.escape(title)}$")
            ).click()
            page.wait_for_url(re.compile(f"/{path}(\\?|$)"), timeout=90_000)
        settle(page, title)
        assert page.locator('[data-testid="stException"]').count() == 0, title
        name = path or "overview"
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{scheme}.png"), full_page=True)
    assert not errors, errors
    ctx.close()


def test_gallery_thumbnails_at_each_size(browser, dashboard_url):
    """Small, medium and large cards (from the URL): each size draws wider pictures, large at
    least 320 pixels wide in a 1,400-pixel window."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = ctx.new_page()
    widths = {}
    for size in ("small", "medium", "large"):
        page.goto(f"{dashboard_url}/gallery?size={size}")
        settle(page, "Gallery")
        picture = page.locator('[data-testid="stImage"] img').first
        picture.wait_for(timeout=90_000)
        widths[size] = picture.bounding_box()["width"]
        page.screenshot(path=str(ARTIFACTS / f"dashboard-gallery-{size}.png"), full_page=True)
    ctx.close()
    assert widths["small"] < widths["medium"] < widths["large"], widths
    assert widths["large"] >= 320, widths


def test_overview_draws_the_mosaic_and_incidents_their_timeline(browser, dashboard_url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = ctx.new_page()
    page.goto(dashboard_url)
    settle(page, "Overview")
    charts = page.locator('[data-testid="stPlotlyChart"]')
    mosaic = charts.filter(has_text="The archive, an hour per cell")
    mosaic.locator("image").first.wait_for(timeout=90_000)
    assert mosaic.locator("image").count() == 1  # one picture, whatever the archive's size
    assert mosaic.locator("image").first.bounding_box()["width"] > 600
    page.goto(f"{dashboard_url}/incidents")
    settle(page, "Incidents")
    timeline = charts.filter(has_text="Incidents over the archive")
    timeline.first.wait_for(timeout=90_000)
    assert timeline.count() == 1
    mark = page.get_by_role("button", name=re.compile(r"^Mark all \d+ frames junk$"))
    mark.first.wait_for(timeout=90_000)  # drawn below the strip, after the timeline
    assert mark.count() == 1
    ctx.close()


def test_the_open_incident_survives_sidebar_navigation_and_a_reload(
    browser, dashboard_url, demo_store
):
    """Open an incident that is not the default (the longest), go to another page with the
    sidebar and come back, then reload: the same incident each time, in the URL too."""
    with store.connect(demo_store, read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT incident_id FROM incidents WHERE run_id = (SELECT run_id FROM latest_run) "
                "ORDER BY n_frames DESC, peak_score DESC"
            ).fetchall()
        ]
    assert len(ids) > 1, "the demo store has several incidents"
    other = ids[-1]
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{dashboard_url}/incidents?incident={other}")
    settle(page, "Incidents")
    chosen = page.get_by_role("combobox", name="Incident", exact=True)
    assert chosen.input_value().startswith(f"#{other} ·")
    for away, path in (("Gallery", "gallery"), ("Overview", "")):
        page.locator('[data-testid="stSidebarNav"] a').filter(
            has_text=re.compile(f"^{away}$")
        ).click()
        page.wait_for_url(re.compile(f"/{path}(\\?|$)"), timeout=90_000)
        settle(page, away)
        page.locator('[data-testid="stSidebarNav"] a').filter(
            has_text=re.compile("^Incidents$")
        ).click()
        page.wait_for_url(re.compile(rf"/incidents\?(.*&)?incident={other}(&|$)"), timeout=90_000)
        settle(page, "Incidents")
        assert chosen.input_value().startswith(f"#{other} ·")
    page.reload()
    settle(page, "Incidents")
    assert f"incident={other}" in page.url
    assert chosen.input_value().startswith(f"#{other} ·")
    ctx.close()


def test_junk_causes_chosen_in_the_sidebar_go_into_the_link(browser, dashboard_url):
    """Removing causes from the sidebar's Junk causes writes them into the URL, the incidents
    are named by the causes left, and the copied link opens the same choice."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{dashboard_url}/incidents")
    settle(page, "Incidents")
    control = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
        has_text="Junk causes"
    )
    control.get_by_text("rarity", exact=True).wait_for(timeout=90_000)  # drawn: every chip
    for cause in ("quality", "camera", "scene", "rarity"):
        assert control.get_by_text(cause, exact=True).count() == 1
    for cause in ("camera", "rarity"):  # each chip's remove button, as a user clicks it
        control.get_by_role("button", name=f"Remove {cause}").click()
        control.get_by_text(cause, exact=True).wait_for(state="detached", timeout=90_000)
        settle(page, "Incidents")
    page.wait_for_url(re.compile(r"causes=quality%2Cscene|causes=quality,scene"), timeout=90_000)
    settle(page, "Incidents")
    page.screenshot(path=str(ARTIFACTS / "dashboard-junk-causes.png"))
    link = page.url
    ctx.close()
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(link)
    settle(page, "Incidents")
    control = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(
        has_text="Junk causes"
    )
    control.get_by_text("scene", exact=True).wait_for(timeout=90_000)
    assert control.get_by_text("quality", exact=True).count() == 1
    assert control.get_by_text("camera", exact=True).count() == 0
    ctx.close()


def test_a_lasso_or_a_box_on_the_map_selects_frames(browser, dashboard_url, demo_store):
    """The map's default tool (lasso) and the box, dragged round every point, select every
    drawn frame (the selection event's customdata was not a list: the page crashed) and offer
    the gallery, which then shows the selection."""
    ARTIFACTS.mkdir(exist_ok=True)
    with store.connect(demo_store, read_only=True) as con:
        n = scalar(
            con,
            "SELECT count(*) FROM clusters WHERE run_id = (SELECT run_id FROM latest_run) "
            "AND map_x IS NOT NULL",
        )
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    main = page.locator('[data-testid="stMain"]')
    selected = main.locator('[data-testid="stAlert"]').filter(has_text="frames selected")
    for tool in ("lasso", "box"):
        page.goto(f"{dashboard_url}/map")
        settle(page, "Map")
        chart = main.locator('[data-testid="stPlotlyChart"]').first
        area = chart.locator(".nsewdrag").first
        area.wait_for(timeout=90_000)
        if tool == "box":
            chart.hover()
            chart.locator('.modebar-btn[data-title="Box Select"]').click()
        box = area.bounding_box()
        x0, y0 = box["x"] + 2, box["y"] + 2
        x1, y1 = box["x"] + box["width"] - 2, box["y"] + box["height"] - 2
        page.mouse.move(x0, y0)
        page.mouse.down()
        corners = [(x1, y0), (x1, y1), (x0, y1), (x0, y0)] if tool == "lasso" else [(x1, y1)]
        for x, y in corners:
            page.mouse.move(x, y, steps=8)
        page.mouse.up()
        selected.wait_for(timeout=90_000)
        settle(page, "Map")
        assert page.locator('[data-testid="stException"]').count() == 0, tool
        assert selected.inner_text().strip() == f"{n:,} frames selected.", tool
        page.screenshot(path=str(ARTIFACTS / f"dashboard-map-{tool}-selection.png"))
    main.get_by_text("Open the selection in the gallery").click()
    page.wait_for_url(re.compile(r"/gallery(\?|$)"), timeout=90_000)
    settle(page, "Gallery")
    caption = main.locator('[data-testid="stCaptionContainer"]').first.inner_text()
    assert caption.startswith(f"{n:,} frames ({n} selected frames)"), caption
    assert not errors, errors
    ctx.close()


def test_clicking_a_heatmap_cell_opens_that_hour_in_the_gallery(browser, dashboard_url, demo_store):
    """A click on a cell of the Overview's day x hour heatmap opens the gallery on that day and
    hour (a heatmap sends no selection event by itself: its cells carry invisible markers)."""
    with store.connect(demo_store, read_only=True) as con:
        days = [
            r[0]
            for r in con.execute("SELECT DISTINCT taken_at::DATE FROM frames ORDER BY 1").fetchall()
        ]
        hour = 10
        n = scalar(
            con,
            "SELECT count(*) FROM frames WHERE taken_at::DATE = ? AND hour(taken_at) = ?",
            [days[0], hour],
        )
    assert n > 0 and len(days) == 2, "the demo store's first day has frames at 10:00"
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(dashboard_url)
    settle(page, "Overview")
    heatmap = page.locator(".st-key-overview_cal")
    heatmap.scroll_into_view_if_needed()
    area = heatmap.locator(".nsewdrag").first
    area.wait_for(timeout=90_000)
    box = area.bounding_box()  # the x axis spans -0.5 to 23.5; a row per day, first on top
    x = box["x"] + box["width"] * (hour + 0.5) / 24
    y = box["y"] + box["height"] * 0.5 / len(days)
    page.mouse.move(x, y)
    hover = page.locator(".hoverlayer .hovertext")
    hover.first.wait_for(timeout=30_000)
    assert f"{hour}:00 — {n} frame" in (hover.first.text_content() or "")
    heatmap.screenshot(path=str(ARTIFACTS / "dashboard-overview-heatmap-hover.png"))
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(r"/gallery\?"), timeout=90_000)
    settle(page, "Gallery")
    assert f"from={days[0]}" in page.url and f"to={days[0]}" in page.url
    assert f"hours={hour}-{hour}" in page.url
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first
    assert caption.inner_text().startswith(f"{n:,} frames (dates {days[0]} to {days[0]}; hours")


# Text the page cut short: badges, metric values, button labels and expander headers whose
# content is wider than their box (they end in "..."); and the columns holding the cards.
_CUT_JS = """async () => {
  const boxes = ['[data-testid="stMain"] .stMarkdownBadge',
    '[data-testid="stMain"] [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"]',
    '[data-testid="stMain"] button div:has(> p)',
    '[data-testid="stMain"] [data-testid="stExpander"] summary'];
  const cut = () => boxes.flatMap(s => [...document.querySelectorAll(s)])
    .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.innerText);
  for (let i = 0; i < 25 && cut().length; i++)  // up to 5 s for the layout to settle
    await new Promise(done => setTimeout(done, 200));
  return cut();
}"""
_CARDS_JS = """() => [...document.querySelectorAll(
    '[data-testid="stMain"] [data-testid="stColumn"]:has(.stMarkdownBadge)')]
  .filter(c => !c.querySelector('[data-testid="stColumn"]'))
  .map(c => c.getBoundingClientRect()).map(r => [r.width, Math.round(r.top)])"""


@pytest.mark.parametrize("width", [1400, 800])
def test_cards_badges_metrics_and_buttons_fit_wide_and_narrow(browser, dashboard_url, width):
    """Six cards a row cut their badge ("consensus 100...."), and an 800-pixel window squeezed
    the Incidents strip and the Frame page's neighbours to slivers (badges "c...", buttons
    "Mark a...", "Longest 30 fr..."): nothing is cut at 1,400 or 800 pixels, no card is
    narrower than 120 pixels, and at 1,400 pixels a row of 6 cards still sits on one line."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": width, "height": 1000})
    page = ctx.new_page()
    for path, title in (
        ("clusters", "Clusters"),
        ("incidents", "Incidents"),
        ("compare", "Compare detectors"),
        ("frame", "Frame"),
    ):
        page.goto(f"{dashboard_url}/{path}")
        settle(page, title)
        page.locator('[data-testid="stMain"] .stMarkdownBadge').first.wait_for(timeout=90_000)
        cut = page.evaluate(_CUT_JS)
        cards = page.evaluate(_CARDS_JS)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{path}-{width}px.png"), full_page=True)
        assert not cut, (path, cut)
        widths, tops = [w for w, _ in cards], [t for _, t in cards]
        assert widths and min(widths) >= 119, (path, widths)
        if len(tops) >= 6:  # a row of 6: one line wide, two lines narrow
            assert len(set(tops[:6])) == (1 if width == 1400 else 2), (path, tops)
    ctx.close()


_FRAME_FIT_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const box = el => el.getBoundingClientRect();
  const chart = main.querySelector('[data-testid="stPlotlyChart"]');
  const title = chart.querySelector('.gtitle');
  const image = main.querySelector('[data-testid="stImage"]');
  return {
    title_over: box(title).right - box(chart).right,
    tables_cut: [...main.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
      .map(s => s.scrollWidth - s.clientWidth),
    chart_width: box(chart).width,
    beside: Math.abs(box(chart).top - box(image).top) < 40 && box(chart).left > box(image).right - 1,
  };
}"""


@pytest.mark.parametrize("width", [1400, 800])
def test_frame_page_scores_fit_wide_and_narrow(browser, dashboard_url, width):
    """At 800 pixels the Frame page's score column was 187 pixels wide: its chart title and
    its score table were cut. Under `ui.NARROW` the picture and its scores stack (and the
    metadata beside the weather), so nothing is cut; at 1,400 pixels they stay side by side."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = browser.new_context(viewport={"width": width, "height": 2400})
    page = ctx.new_page()
    page.goto(f"{dashboard_url}/frame")
    settle(page, "Frame")
    page.locator('[data-testid="stMain"] .gtitle').first.wait_for(timeout=90_000)
    page.locator('[data-testid="stDataFrame"] .dvn-scroller').nth(2).wait_for(timeout=90_000)
    page.wait_for_timeout(1000)  # the tables size their columns once drawn
    fit = page.evaluate(_FRAME_FIT_JS)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-frame-scores-{width}px.png"), full_page=True)
    assert fit["title_over"] <= 1, fit  # "Score percentile per detector" whole
    assert len(fit["tables_cut"]) == 3 and max(fit["tables_cut"]) <= 1, fit  # no table scrolls
    assert fit["beside"] == (width == 1400), fit
    ctx.close()
