"""The Ray executor's failures, each with a clear message: Ray not installed, a cluster that
cannot be reached, a node that cannot see the frames, a run that makes no progress; and a driver
killed with SIGKILL, after which the next run finishes the job with nothing stored twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline.errors import InputError
from pipeline.ray_executor import RayExecutor
from tests.conftest import REPO
from tests.ray.test_ray_run import make_folder, table

ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO),
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def cli(*args, preamble: str = "pass") -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in a child process (with `preamble` run first)."""
    code = (
        f"import runpy, sys; {preamble}; sys.argv = ['pipeline', *{list(map(str, args))}]; "
        "runpy.run_module('pipeline', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120
    )


def test_without_ray_installed_the_command_says_how_to_install_it(tmp_path):
    folder = make_folder(tmp_path, n=2)
    proc = cli(
        "ingest",
        folder,
        "--db",
        tmp_path / "s.duckdb",
        "--executor",
        "ray",
        preamble="sys.modules['ray'] = None",
    )  # `import ray` fails, as when absent
    assert proc.returncode == 1, proc.stderr
    assert "needs Ray" in proc.stderr
    assert "-m pip install -r requirements-ray.txt" in proc.stderr
    assert not (tmp_path / "s.duckdb").exists()  # refused before anything was done


def test_an_unreachable_cluster_is_refused_at_once(tmp_path):
    folder = make_folder(tmp_path, n=2)
    started = time.monotonic()
    proc = cli(
        "run",
        folder,
        "--db",
        tmp_path / "s.duckdb",
        "--model",
        "pixels",
        "--executor",
        "ray",
        "--ray-address",
        "127.0.0.1:1",
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert "ray start --head" in proc.stderr
    assert time.monotonic() - started < 60  # not Ray's minutes of retries


def test_a_node_that_cannot_see_the_frames_is_named(ray_cluster, tmp_path):
    paths = [str(tmp_path / f"gone_{i}.jpg") for i in range(4)]  # not on the shared folder
    executor = RayExecutor(batch_size=2, paths=str)
    with pytest.raises(InputError, match=r"node .* cannot read .*gone_0\.jpg .*same path"):
        list(executor.map_batches([paths], len, sum))


def slow_item(item: int) -> int:
    """Well past the 3 s allowed. The task runs on after the error and the next test waits
    for its CPU, so the test sends one item, and not for long."""
    time.sleep(9)
    return item


def test_a_run_without_progress_stops_with_an_error(ray_cluster):
    executor = RayExecutor(batch_size=2, stall_seconds=3)
    started = time.monotonic()
    with pytest.raises(InputError, match="made no progress for 3 s"):
        list(executor.map_batches([[1]], slow_item, sum))
    assert time.monotonic() - started < 15


def test_a_killed_driver_loses_only_uncommitted_batches_and_the_next_run_finishes(
    ray_cluster, tmp_path
):
    n = 40
    folder = make_folder(tmp_path, n=n)
    db = tmp_path / "s.duckdb"
    config = tmp_path / "slow.toml"
    config.write_text("batch_size = 2\n")
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "--config",
        str(config),
        "run",
        str(folder),
        "--db",
        str(db),
        "--model",
        "pixels",
        "--detectors",
        "iforest",
        "--executor",
        "ray",
        "--ray-address",
        ray_cluster.address,
    ]
    child = subprocess.Popen(
        args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    err = bytearray()
    reader = threading.Thread(target=read_into, args=(child.stderr, err), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not _progress(err.decode(errors="replace")) >= 6:
        assert child.poll() is None, err.decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, err.decode(errors="replace")[-2000:]
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    frames = "SELECT path, frame_id FROM frames"
    vectors = "SELECT f.path, e.frame_id FROM embeddings e JOIN frames f USING (frame_id)"
    n_before = len(table(db, frames))
    assert 0 < n_before < n + 1  # killed mid-run, after some commits

    done = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(table(db, frames)) == n + 1  # `table` fails on a path stored twice
    assert len(table(db, vectors)) == n + 1
    errors = table(db, "SELECT path, count(*) FROM ingest_errors GROUP BY path")
    assert errors == {"empty.jpg": (1,), "notes.jpg": (1,)}


def read_into(stream, into: bytearray) -> None:
    while chunk := os.read(stream.fileno(), 4096):
        into.extend(chunk)


def _progress(text: str) -> int:
    """Frames the one pass's progress bar says are committed."""
    done = re.findall(r"ingest\+embed pixels:.*?(\d+)/\d+", text)
    return int(done[-1]) if done else 0
