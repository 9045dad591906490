"""Browser-test fixtures: the demo store (made once by the pipeline) and a running dashboard."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, dashboard_server
from tests.dashboard.conftest import demo_store  # noqa: F401  (the same session fixture)

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def dashboard_url(demo_store, chromium_path):  # noqa: F811
    """`streamlit run dashboard/app.py -- --db STORE` on a free 127.0.0.1 port."""
    with dashboard_server(demo_store, demo_store.parent / "streamlit.log", timeout=60) as url:
        yield url
