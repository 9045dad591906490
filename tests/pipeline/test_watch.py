"""`watch`: a real `python -m pipeline watch` child process on a copy of the demo store: files
copied in while it runs, a half-written file, a refit, SIGTERM and SIGKILL in the middle of a
pass, and the store readable (as the dashboard reads it) between passes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import store
from pipeline.imagestats import FrameResult
from pipeline.ingest import walk
from pipeline.watch import Settling
from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO), "TIMELAPSE_LOCK_TIMEOUT_S": "20"}


class WatchProcess:
    """`python -m pipeline watch` in a child process, its lines collected as they come."""

    def __init__(self, folder: Path, db: Path, config: Path, *args: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "--config",
                str(config),
                "watch",
                str(folder),
                "--db",
                str(db),
                "--interval",
                "0.3",
                *args,
            ],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 90) -> str:
        """The next line that matches `pattern` (fails with everything seen so far)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"no line matching {pattern!r} in {timeout} s:\n" + "\n".join(self.seen[-30:])
                )
            self.seen.append(line)
            assert "Traceback" not in line, "\n".join(self.seen[-30:])
            if re.search(pattern, line):
                return line

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return rc


def _config(tmp_path: Path, **values) -> Path:
    path = tmp_path / "watch.toml"
    path.write_text(
        'model = "pixels"\nworkers = 1\n' + "".join(f"{k} = {v}\n" for k, v in values.items())
    )
    return path


def _count(db: Path, sql: str, params: list | None = None) -> int:
    """One number from the store through a read-only connection, as the dashboard reads."""
    with store.connect(db, read_only=True, timeout=20) as con:
        return con.execute(sql, params or []).fetchall()[0][0]


def test_a_file_is_held_while_it_may_still_be_written(tmp_path):
    clock = [1_000_000.0]
    settling = Settling(60, clock=lambda: clock[0])
    path = tmp_path / "late.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 half a jpeg")
    os.utime(path, (clock[0] - 5, clock[0] - 5))  # written 5 s ago
    (entry,), _ = walk(str(tmp_path))
    broken = FrameResult(entry.name, entry.size, entry.mtime_ns, error="truncated image")
    assert settling.hold(entry, broken)  # young: it may still grow
    clock[0] += 56
    assert not settling.hold(entry, broken)  # unchanged for 61 s: an error now
    path.write_bytes(b"\xff\xd8\xff\xe0 more of the jpeg")  # changed since the listing
    assert settling.hold(entry, FrameResult(entry.name, entry.size, entry.mtime_ns))
    old = tmp_path / "old"
    old.mkdir()
    (old / "bad.jpg").write_bytes(b"broken long ago")
    os.utime(old / "bad.jpg", (clock[0] - 3600, clock[0] - 3600))
    (entry,), _ = walk(str(old))
    assert not settling.hold(
        entry, FrameResult(entry.name, entry.size, entry.mtime_ns, error="not an image")
    )


def test_watch_scores_new_files_waits_for_half_written_ones_and_refits(serving_store, tmp_path):
    db = serving_store.copy(tmp_path / "store")
    folder = tmp_path / "camera"
    folder.mkdir()
    watch = WatchProcess(
        folder, db, _config(tmp_path, watch_settle_seconds=30), "--refit-every", "4"
    )
    try:
        watch.wait_for(r"0 new, 0 scored, 0 flagged, 0 errors \(run 1\)")
        for path in serving_store.new[:3]:
            (folder / path.name).write_bytes(path.read_bytes())
        watch.wait_for(r": 3 new, 3 scored, \d flagged, 0 errors \(run 1\)$")
        # between passes the store reads as the dashboard reads it
        assert _count(db, "SELECT count(*) FROM clusters WHERE run_id = 1") == _count(
            db, "SELECT count(*) FROM frames"
        )

        whole = serving_store.new[3].read_bytes()
        late = folder / "late.jpg"
        late.write_bytes(whole[: len(whole) // 2])
        watch.wait_for(r"0 new, 0 scored, 0 flagged, 0 errors, 1 still being written")
        assert _count(db, "SELECT count(*) FROM ingest_errors WHERE path = 'late.jpg'") == 0
        assert _count(db, "SELECT count(*) FROM frames WHERE path = 'late.jpg'") == 0
        late.write_bytes(whole)
        line = watch.wait_for(r": 1 new, 1 scored")
        assert "refitted: analysis run 2" in line  # 4 new frames since the fit
        assert _count(db, "SELECT count(*) FROM ingest_errors WHERE path = 'late.jpg'") == 0
        assert (
            _count(
                db,
                "SELECT count(*) FROM clusters c JOIN frames f USING (frame_id) "
                "WHERE f.path = 'late.jpg' AND c.run_id = 1",
            )
            == 1
        )
        watch.wait_for(r"0 new, 0 scored, 0 flagged, 0 errors \(run 2\)")
        (folder / serving_store.new[4].name).write_bytes(serving_store.new[4].read_bytes())
        watch.wait_for(r": 1 new, 1 scored, \d flagged, 0 errors \(run 2\)")
        assert _count(db, "SELECT count(*) FROM clusters WHERE run_id = 2") == _count(
            db, "SELECT count(*) FROM frames"
        )
    finally:
        rc = watch.stop(signal.SIGTERM)
    assert rc == 0 and "watch stopped after" in watch.seen[-1], watch.seen[-10:]


def test_sigterm_stops_between_batches_and_sigkill_loses_at_most_one(serving_store, tmp_path):
    db = serving_store.copy(tmp_path / "store")
    folder = tmp_path / "camera"
    folder.mkdir()
    config = _config(tmp_path, ingest_batch_size=4, batch_size=4, watch_settle_seconds=0)
    sources = sorted(serving_store.frames.rglob("*.jpg"))[:24]
    for path in sources:
        (folder / path.name).write_bytes(path.read_bytes())
    in_folder = "SELECT count(*) FROM frames WHERE root = ?"
    root = [str(folder)]

    def when_some(sql: str, params: list) -> None:
        deadline = time.monotonic() + 90
        while _count(db, sql, params) == 0:
            assert time.monotonic() < deadline, "watch wrote nothing"
            time.sleep(0.05)

    first = WatchProcess(folder, db, config)
    when_some(in_folder, root)
    rc = first.stop(signal.SIGTERM)
    assert rc == 0, first.seen
    assert "stopping after the batch being written" in "\n".join(first.seen)
    n_ingested = _count(db, in_folder, root)
    assert 0 < n_ingested and n_ingested % 4 == 0  # whole batches only

    second = WatchProcess(folder, db, config)
    when_some(
        "SELECT count(*) FROM embeddings e JOIN frames f USING (frame_id) "
        "WHERE f.root = ? AND e.model = 'pixels'",
        root,
    )
    second.stop(signal.SIGKILL)

    third = WatchProcess(folder, db, config)
    try:
        third.wait_for(r"0 new, 0 scored, 0 flagged, 0 errors \(run 1\)")
    finally:
        assert third.stop(signal.SIGTERM) == 0
    # every file is a frame or one error (the demo renders some truncated files on purpose)
    n_frames = _count(db, in_folder, root)
    n_errors = _count(
        db, "SELECT count(*) FROM ingest_errors WHERE stage = 'watch' AND root = ?", root
    )
    assert n_frames + n_errors == len(sources) and n_frames >= len(sources) - 2
    # every frame of the folder scored exactly once in the run, by every detector
    assert (
        _count(
            db,
            "SELECT count(*) FROM clusters c JOIN frames f USING (frame_id) "
            "WHERE f.root = ? AND c.run_id = 1",
            root,
        )
        == n_frames
    )
    n_detectors = _count(db, "SELECT count(DISTINCT detector) FROM outlier_scores WHERE run_id = 1")
    assert (
        _count(
            db,
            "SELECT count(*) FROM outlier_scores o JOIN frames f USING (frame_id) "
            "WHERE f.root = ? AND o.run_id = 1",
            root,
        )
        == n_frames * n_detectors
    )


def test_a_folder_that_goes_away_is_waited_for_not_a_crash(serving_store, tmp_path):
    db = serving_store.copy(tmp_path / "store")
    folder = tmp_path / "camera"
    folder.mkdir()
    watch = WatchProcess(folder, db, _config(tmp_path))
    try:
        watch.wait_for(r"0 new, 0 scored, 0 flagged, 0 errors \(run 1\)")
        away = folder.rename(tmp_path / "unmounted")  # a share that went away
        line = watch.wait_for(r"is not there")
        assert line.endswith(
            f"(run 1); the folder {folder} is not there (removed, renamed or a share not "
            "mounted?); looked for again next pass"
        )
        (away / serving_store.new[0].name).write_bytes(serving_store.new[0].read_bytes())
        away.rename(folder)
        watch.wait_for(r": 1 new, 1 scored, \d flagged, 0 errors \(run 1\)$")
    finally:
        rc = watch.stop(signal.SIGTERM)
    assert rc == 0 and "watch stopped after" in watch.seen[-1], watch.seen[-10:]
