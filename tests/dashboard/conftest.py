"""Dashboard fixtures: one small real store made by the pipeline from demo frames (session),
and per-test copies for tests that write reviews."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import store

from tests.conftest import REPO

DEMO_FRAMES = 150
_BUILT: list[Path] = []  # tests/browser reuses this fixture: build the store once per session


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> Path:
    """`python -m pipeline demo --frames 150 --no-serve --model pixels`, run once per session.
    Tests must not write to it (use `store_copy`)."""
    if _BUILT:
        return _BUILT[0]
    out = tmp_path_factory.mktemp("demo")
    cmd = [sys.executable, "-m", "pipeline", "demo", "--frames", str(DEMO_FRAMES), "--no-serve",
           "--model", "pixels", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    db = out / "garden.duckdb"
    if proc.returncode != 0 or not db.exists():
        pytest.fail(f"the demo store could not be made ({' '.join(cmd)}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    _BUILT.append(db)
    return db


@pytest.fixture
def store_copy(demo_store: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store (same frames folder) for tests that write."""
    db = tmp_path / "garden.duckdb"
    shutil.copy(demo_store, db)
    return db


@pytest.fixture
def con(demo_store):
    """A read-only connection to the demo store."""
    with store.connect(demo_store, read_only=True) as con:
        yield con


@pytest.fixture
def run_id(con):
    """The demo store's latest complete analysis run."""
    from store import facts

    return facts.latest_run_id(con)
