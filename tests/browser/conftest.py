"""Browser-test fixtures: a running dashboard over the demo store (tests/conftest.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.conftest import REPO, dashboard_server

ARTIFACTS = REPO / "test-artifacts"


def choose(page, selectbox, option: str, tries: int = 3) -> None:
    """Open the Streamlit `selectbox` (a locator) and pick `option`. A click that lands while
    the page is still drawing the widget (a loaded machine) opens no list: it is opened again,
    up to `tries` clicks in all."""
    wanted = page.get_by_role("option", name=option, exact=True)
    for _ in range(tries - 1):
        selectbox.click()
        try:
            wanted.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        selectbox.click()
    wanted.click()


@pytest.fixture(scope="session")
def dashboard_url(demo_store, chromium_path):
    """`streamlit run dashboard/app.py -- --db STORE` on a free 127.0.0.1 port."""
    with dashboard_server(demo_store, demo_store.parent / "streamlit.log", timeout=60) as url:
        yield url
