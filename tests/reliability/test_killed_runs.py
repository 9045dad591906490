"""Scenario 1: `kill -9` of `python -m pipeline run` during ingest and embed (one pass: each
file is embedded as it is ingested) and analyze, several times in a row, then a run to
completion.

Each child's stderr (tqdm bars and analyze's step lines) tells which stage it is in; the test
sends SIGKILL a seeded-random moment after the stage it aims at has started. Afterwards the
store must hold every readable frame once, one vector per frame, one complete run that scores
every frame, no run left 'running', and each bad file recorded once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.reliability.conftest import CHILD_ENV, make_frames, one, pipeline_cmd, query, run_ok

N_GOOD = 60
DETECTORS = "iforest,lof,hbos"
# Marker on stderr that a stage has started: the one pass's progress bar (ingest and embed
# together), analyze's line.
STAGE_MARKERS = {"ingest": "ingest+embed pixels:", "analyze": "analysis run "}
pytestmark = pytest.mark.slow


class _Child:
    """`python -m pipeline run ...` with its stderr collected by a thread as it arrives."""

    def __init__(self, args: list):
        self.proc = subprocess.Popen(
            pipeline_cmd(*args),
            cwd=REPO,
            env=CHILD_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, 4096):
            self.err += chunk

    def text(self) -> str:
        return self.err.decode(errors="replace")

    def kill_during(self, stage: str, delay: float, timeout: float = 120) -> str:
        """SIGKILL `delay` s after `stage` started; returns the last stage seen when killed."""
        deadline = time.monotonic() + timeout
        while STAGE_MARKERS[stage] not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the run ended before {stage} (exit {self.proc.returncode})"
                    f":\n{self.text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {stage} stage within {timeout} s:\n{self.text()[-2000:]}")
            time.sleep(0.01)
        time.sleep(delay)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        seen = [s for s, marker in STAGE_MARKERS.items() if marker in self.text()]
        return seen[-1]


def test_repeated_kills_then_a_complete_run(tmp_path: Path, slow_config: Path):
    folder = tmp_path / "frames"
    make_frames(folder, N_GOOD)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is text, not a JPEG\n")
    db = tmp_path / "store.duckdb"
    args = [
        "--config",
        slow_config,
        "run",
        folder,
        "--db",
        db,
        "--model",
        "pixels",
        "--detectors",
        DETECTORS,
    ]
    rng = random.Random(7)
    killed_in = []
    running_left = 0
    for stage in ("ingest", "ingest", "analyze", "analyze"):
        child = _Child(args)
        killed_in.append(child.kill_during(stage, rng.uniform(0.0, 0.4)))
        assert child.proc.returncode == -signal.SIGKILL
        # the store survives every kill: it opens, and no stage left duplicates behind
        assert one(db, "SELECT count(*) - count(DISTINCT path) FROM frames") == 0
        assert (
            one(
                db,
                "SELECT count(*) FROM (SELECT frame_id FROM embeddings "
                "GROUP BY frame_id, model HAVING count(*) > 1)",
            )
            == 0
        )
        running_left = max(
            running_left, one(db, "SELECT count(*) FROM analysis_runs WHERE status = 'running'")
        )
    # the kills hit the stages they aimed at (a stage may finish before the kill lands)
    assert killed_in[0] == "ingest" and killed_in[-2:] == ["analyze", "analyze"]
    assert running_left >= 1  # a killed analyze leaves its run 'running' ...
    from pipeline.info import describe_store

    assert "interrupted (its process is gone; the next analyze marks it failed)" in describe_store(
        db
    )  # ... which info reports as interrupted ...

    done = run_ok(*args)
    # ... and the next run marks failed, and says so
    n_killed_runs = one(db, "SELECT count(*) FROM analysis_runs WHERE status = 'failed'")
    assert n_killed_runs >= 1
    assert "marked 'failed'" in done.stdout

    assert one(db, "SELECT count(*) FROM frames") == N_GOOD
    assert one(db, "SELECT count(DISTINCT path) FROM frames") == N_GOOD
    assert one(db, "SELECT count(*) FROM thumbnails") == N_GOOD
    assert query(
        db, "SELECT count(*), count(DISTINCT frame_id) FROM embeddings WHERE model = 'pixels'"
    ) == [(N_GOOD, N_GOOD)]
    assert one(db, "SELECT count(*) FROM embeddings e ANTI JOIN frames f USING (frame_id)") == 0
    assert one(db, "SELECT count(DISTINCT len(vector)) FROM embeddings") == 1

    statuses = query(db, "SELECT status, count(*) FROM analysis_runs GROUP BY 1 ORDER BY 1")
    assert dict(statuses).get("running") is None
    final = query(db, "SELECT run_id, n_frames FROM analysis_runs WHERE status = 'complete'")
    assert len(final) == 1 and final[0][1] == N_GOOD
    run_id = final[0][0]
    assert one(db, "SELECT max(run_id) FROM analysis_runs") == run_id
    per_detector = dict(
        query(
            db,
            "SELECT detector, count(DISTINCT frame_id) FROM outlier_scores "
            "WHERE run_id = ? GROUP BY 1",
            [run_id],
        )
    )
    causes = [d for d in per_detector if d.startswith("cause:")]  # one per cause scored
    assert causes and per_detector == {
        d: N_GOOD for d in DETECTORS.split(",") + ["consensus", *causes]
    }
    assert one(db, "SELECT count(*) FROM clusters WHERE run_id = ?", [run_id]) == N_GOOD
    # failed runs left no rows behind
    assert one(db, "SELECT count(*) FROM outlier_scores WHERE run_id <> ?", [run_id]) == 0
    assert one(db, "SELECT count(*) FROM clusters WHERE run_id <> ?", [run_id]) == 0
    errors = query(db, "SELECT error FROM analysis_runs WHERE status = 'failed'")
    assert all(e[0].startswith("interrupted: the process") for e in errors)

    # bad files: recorded once each, and only they
    bad = query(db, "SELECT path, stage, count(*) FROM ingest_errors GROUP BY 1, 2 ORDER BY 1")
    assert [(p, s) for p, s, _ in bad] == [("notes.jpg", "ingest"), ("zero.jpg", "ingest")]
    assert all(n == 1 for *_, n in bad)


def test_only_runs_whose_process_is_gone_are_marked_failed(tmp_path: Path):
    """Liveness rules: a dead PID and a reused PID are stale; this live process, a run from
    another host and a run without a PID are left alone."""
    import socket

    import store
    from pipeline.analyze import process_alive
    from store import analysis as sa

    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    db = tmp_path / "s.duckdb"
    with store.connect(db) as con:
        con.execute(
            "INSERT INTO analysis_runs (run_id, model, params, status, pid, host, "
            "started_at) VALUES "
            "(1, 'pixels', '{}', 'running', ?, ?, now()),"  # dead PID
            "(2, 'pixels', '{}', 'running', ?, ?, now()),"  # this process
            "(3, 'pixels', '{}', 'running', ?, 'elsewhere', now()),"  # other host
            "(4, 'pixels', '{}', 'running', NULL, NULL, now()),"  # no PID recorded
            "(5, 'pixels', '{}', 'running', 1, ?, now())",  # PID reused by init
            [dead.pid, host, os.getpid(), host, dead.pid, host],
        )
        # PID 1 is alive but started long after run 5 began: the PID was reused
        con.execute(
            "UPDATE analysis_runs SET started_at = TIMESTAMPTZ '2000-01-01 00:00:00+00' "
            "WHERE run_id = 5"
        )
        assert sa.fail_stale_runs(con, process_alive) == [1, 5]
    assert query(db, "SELECT run_id, status FROM analysis_runs ORDER BY 1") == [
        (1, "failed"),
        (2, "running"),
        (3, "running"),
        (4, "running"),
        (5, "failed"),
    ]


def _descendants(pid: int) -> set[int]:
    """PIDs of every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_parallel_ingest_leaves_no_worker_processes(tmp_path: Path):
    """With two decode workers (a forkserver pool), SIGKILL of the main process: the pool's
    processes exit by themselves, and the next run completes."""
    folder = tmp_path / "frames"
    make_frames(folder, 120, size=(640, 360))
    toml = tmp_path / "pool.toml"
    toml.write_text("workers = 2\ningest_batch_size = 8\n")
    db = tmp_path / "store.duckdb"
    args = [
        "--config",
        toml,
        "run",
        folder,
        "--db",
        db,
        "--model",
        "pixels",
        "--detectors",
        "iforest,hbos",
    ]
    child = _Child(args)
    deadline = time.monotonic() + 120
    helpers: set[int] = set()
    while len(helpers) < 3 and child.proc.poll() is None:  # forkserver + two workers at least
        assert time.monotonic() < deadline, "the pool never started"
        helpers = _descendants(child.proc.pid)
        time.sleep(0.05)
    assert child.kill_during("ingest", 0.0) == "ingest"
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in helpers if _alive(p)], "worker processes outlived the killed run"
    run_ok(*args)
    assert query(db, "SELECT count(*), count(DISTINCT path) FROM frames") == [(120, 120)]
    assert one(db, "SELECT count(*) FROM embeddings") == 120
