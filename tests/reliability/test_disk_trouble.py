"""Scenario 5: the store's disk is read-only or full.

The tests run as root, so a chmod'ed folder would not stop a write; instead the store lives on
a small tmpfs mounted by the test (`mount -t tmpfs -o size=...`), remounted read-only for the
first case and filled to the last byte for the second, and unmounted in a `finally`. Each case
checks: one clear `error:` line and exit 1 (no traceback), the store still opens with the rows
committed before, and once the disk is writable / has space again the next run completes.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

import store
from tests.reliability.conftest import make_frames, one, query, run_ok, run_pipeline

pytestmark = pytest.mark.slow

N_FIRST = 24
N_MORE = 40
FAST = ("--detectors", "iforest,hbos")  # the stages matter here, not the detectors


@contextmanager
def tmpfs(where: Path, size: str):
    """A fresh tmpfs of `size` at `where` (needs root, as the tests run here and in CI)."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs ({proc.stderr.strip()}): this scenario needs root "
            "(see docs/RELIABILITY.md)"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def _fill(where: Path) -> Path:
    """Write a filler file until the file system says it is full."""
    filler = where / "filler"
    with open(filler, "wb") as fh:
        block = b"\0" * 65536
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last partial blocks too
        try:
            with open(filler, "ab") as fh:
                while True:
                    fh.write(b"\0" * size)
                    fh.flush()
        except OSError:
            pass
    return filler


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _intact(db: Path) -> int:
    """The store opens read-only and for writing, its tables agree; returns the frame count."""
    n = one(db, "SELECT count(*) FROM frames")
    assert one(db, "SELECT count(*) FROM thumbnails") == n
    assert one(db, "SELECT count(*) FROM frames f ANTI JOIN thumbnails t USING (frame_id)") == 0
    with store.connect(db) as con:
        con.execute("CHECKPOINT")
    return n


def test_read_only_store_is_a_clear_error_and_works_once_writable(tmp_path):
    folder = tmp_path / "frames"
    make_frames(folder, N_FIRST)
    with tmpfs(tmp_path / "disk", "64m") as disk:
        db = disk / "garden.duckdb"
        run_ok("run", folder, "--db", db, "--model", "pixels", *FAST)
        make_frames(folder / "more", 6, start=datetime(2024, 4, 11, 6))
        _remount(disk, "ro")
        try:
            line = _one_line_error(
                run_pipeline("run", folder, "--db", db, "--model", "pixels", *FAST)
            )
            assert "Read-only file system" in line and "writable" in line, line
            line = _one_line_error(run_pipeline("embed", "--db", db, "--model", "pixels"))
            assert "Read-only file system" in line, line
            # reading still works: info and a read-only connection
            info = run_pipeline("info", "--db", db)
            assert info.returncode == 0 and f"frames: {N_FIRST} from" in info.stdout, info.stderr
            assert one(db, "SELECT count(*) FROM frames") == N_FIRST
        finally:
            _remount(disk, "rw")
        assert _intact(db) == N_FIRST
        run_ok("run", folder, "--db", db, "--model", "pixels", *FAST)
        assert _intact(db) == N_FIRST + 6
        assert one(db, "SELECT count(*) FROM embeddings") == N_FIRST + 6


def test_full_disk_is_a_clear_error_and_the_next_run_with_space_works(tmp_path):
    folder = tmp_path / "frames"
    make_frames(folder, N_FIRST)
    with tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "garden.duckdb"
        run_ok("run", folder, "--db", db, "--model", "pixels", *FAST)
        runs_before = query(db, "SELECT run_id, status FROM analysis_runs ORDER BY 1")
        make_frames(folder / "more", N_MORE, size=(320, 180), start=datetime(2024, 4, 11, 6))
        filler = _fill(disk)
        line = _one_line_error(run_pipeline("run", folder, "--db", db, "--model", "pixels", *FAST))
        assert "the disk is full" in line and "No space left on device" in line, line
        assert "free some space" in line and "run the command again" in line, line
        line = _one_line_error(run_pipeline("analyze", "--db", db, "--model", "pixels", *FAST))
        assert "the disk is full" in line, line
        os.remove(filler)  # space again
        n_kept = _intact(db)
        assert N_FIRST <= n_kept <= N_FIRST + N_MORE
        assert (
            query(
                db,
                "SELECT run_id, status FROM analysis_runs WHERE run_id <= ? ORDER BY 1",
                [runs_before[-1][0]],
            )
            == runs_before
        )
        run_ok("run", folder, "--db", db, "--model", "pixels", *FAST)
        assert _intact(db) == N_FIRST + N_MORE
        assert one(db, "SELECT count(*) FROM embeddings") == N_FIRST + N_MORE
        assert one(db, "SELECT count(*) FROM analysis_runs WHERE status = 'running'") == 0
        latest = query(
            db, "SELECT status, n_frames FROM analysis_runs ORDER BY run_id DESC LIMIT 1"
        )
        assert latest == [("complete", N_FIRST + N_MORE)]
        shutil.rmtree(folder / "more")


def test_dashboard_review_on_a_full_or_read_only_disk_is_a_notice(tmp_path, monkeypatch):
    """The dashboard's one write (a verdict) on a full, then read-only, disk: a clear error on
    the page, nothing saved, pages still readable; saved once the disk is writable again."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    folder = tmp_path / "frames"
    make_frames(folder, N_FIRST)
    built = tmp_path / "built.duckdb"
    run_ok("run", folder, "--db", built, "--model", "pixels", "--detectors", "iforest,hbos")
    monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "2")

    def review(db: Path) -> AppTest:
        monkeypatch.setenv("TIMELAPSE_DB", str(db))
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=90).run()
        at.switch_page("views/review.py").run()
        assert not at.exception and not at.error
        at.button(key="review_junk").click().run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    with tmpfs(tmp_path / "disk", "16m") as disk:
        db = disk / "garden.duckdb"
        shutil.copy(built, db)
        filler = _fill(disk)
        at = review(db)
        message = " ".join(e.value for e in at.error)
        assert "Not saved" in message and "the disk is full" in message, message
        os.remove(filler)
        assert one(db, "SELECT count(*) FROM reviews") == 0
        _remount(disk, "ro")
        try:
            at = review(db)
            message = " ".join(e.value for e in at.error)
            assert "Not saved" in message and "Read-only file system" in message, message
            assert one(db, "SELECT count(*) FROM reviews") == 0
        finally:
            _remount(disk, "rw")
        at = review(db)
        assert not at.error
        assert one(db, "SELECT count(*) FROM reviews WHERE verdict = 'junk'") == 1
