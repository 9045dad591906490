"""`make test` runs the tests on several pytest-xdist workers with `--dist loadgroup`, and some
tests count on a group running on one worker: every Ray test on one cluster, a module fixture
built once. A pytest release once silently broke the grouping (pytest-xdist issue 1386; hence
the pin in requirements-dev.txt): this checks it holds with the versions installed."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")

@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open(f"grouped-{i}.txt", "w") as fh:
        fh.write(os.environ["PYTEST_XDIST_WORKER"])
"""

SPREAD = """
import os
import time
import pytest

@pytest.mark.parametrize("i", range(6))
def test_spread(i):
    time.sleep(0.5)
    with open(f"spread-{i}.txt", "w") as fh:
        fh.write(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_a_group_runs_on_one_worker_and_the_rest_spread(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_spread.py").write_text(SPREAD)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
        + ["--dist", "loadgroup", "-c", "pytest.ini", "--rootdir", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = {
        name: Counter(p.read_text() for p in tmp_path.glob(f"{name}-*.txt"))
        for name in ("grouped", "spread")
    }
    assert sum(workers["grouped"].values()) == sum(workers["spread"].values()) == 6
    assert len(workers["grouped"]) == 1, workers  # all six on one worker
    assert len(workers["spread"]) == 2, workers  # the run really had two workers to use
