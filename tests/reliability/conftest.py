"""Helpers for the reliability scenarios: the CLI as a real child process, store queries, frames.

Every scenario does the bad thing for real (SIGKILL, broken files, a second writer, a full
file system); these helpers keep each test module short.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import store
from tests.conftest import REPO, write_jpeg

# A child waits this long for the store lock before giving up (the default is 10 s).
CHILD_ENV = {
    **os.environ,
    "TIMELAPSE_LOCK_TIMEOUT_S": "3",
    "PYTHONPATH": str(REPO),
    "TF_CPP_MIN_LOG_LEVEL": "3",
}

# Small batches and one worker: each stage takes long enough to be interrupted in the middle.
SLOW_TOML = "workers = 1\ningest_batch_size = 4\nbatch_size = 4\n"


def pipeline_cmd(*args: str | os.PathLike) -> list[str]:
    """`python -m pipeline ARGS` as an argv list."""
    return [sys.executable, "-m", "pipeline", *map(str, args)]


def run_pipeline(*args: str | os.PathLike, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the CLI to its end in a child process; returns the completed process (text)."""
    return subprocess.run(
        pipeline_cmd(*args),
        cwd=REPO,
        env=CHILD_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_ok(*args: str | os.PathLike, timeout: float = 180) -> subprocess.CompletedProcess:
    """`run_pipeline` that must succeed: fails the test with the end of stderr otherwise."""
    proc = run_pipeline(*args, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """All rows of a query on a short read-only connection."""
    with store.connect(db, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def one(db: Path, sql: str, params: list | None = None):
    """The single value of a one-row, one-column query."""
    return query(db, sql, params)[0][0]


def make_frames(
    folder: Path, n: int, size=(160, 90), start=datetime(2024, 4, 10, 6, 0), step_minutes: int = 15
) -> list[Path]:
    """`n` EXIF-dated noisy frames, `step_minutes` apart, named f_000.jpg..."""
    return [
        write_jpeg(
            folder / f"f_{i:03d}.jpg",
            when=start + timedelta(minutes=step_minutes * i),
            size=size,
            seed=i,
            colour=(60 + i % 7 * 20, 120, 60 + i % 5 * 25),
        )
        for i in range(n)
    ]


@pytest.fixture
def slow_config(tmp_path: Path) -> Path:
    """A settings TOML with one worker and small batches (see SLOW_TOML)."""
    path = tmp_path / "slow.toml"
    path.write_text(SLOW_TOML)
    return path
