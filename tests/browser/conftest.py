"""Browser-test fixtures: a running dashboard over the demo store (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, dashboard_server

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def dashboard_url(demo_store, chromium_path):
    """`streamlit run dashboard/app.py -- --db STORE` on a free 127.0.0.1 port."""
    with dashboard_server(demo_store, demo_store.parent / "streamlit.log", timeout=60) as url:
        yield url
