"""`analyze --executor ray`: the pixel detectors fit on the driver and score every frame on a
real two-node Ray cluster, in tasks of whole days that read the store's thumbnails read-only;
the scores are the local ones, every frame once (also when a task's worker dies mid-task), and
where a node cannot see the store the driver scores instead and says why."""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import store
from pipeline import ray_executor
from pipeline.analyze import PIXEL_CHUNK, analyze
from pipeline.detectors import make_detector
from pipeline.detectors.batch import FrameBatch
from pipeline.pixels import ThumbnailReader
from pipeline.ray_executor import RayFrameSpread
from pipeline.settings import Settings
from store import analysis as sa


def demo_batch(db: Path, days_apart: bool = False) -> FrameBatch:
    """The demo store's frames as detectors see them; with `days_apart`, each frame moved to a
    day of its own (same time of day), so that a pass splits them into many groups of days."""
    with store.connect(db, read_only=True) as con:
        frames = sa.load_frames(con)
    ids = frames["frame_id"].to_numpy(np.int64)
    batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 2), np.float32), frames)
    if days_apart:
        local = batch.local_time
        first = np.datetime64("2024-01-01", "ns")
        batch.local_time = (
            first
            + (local - local.astype("datetime64[D]"))
            + np.arange(len(ids)) * np.timedelta64(1, "D")
        )
    batch.pixels = ThumbnailReader(db, chunk=PIXEL_CHUNK, read_only=True)
    return batch


@pytest.mark.parametrize("key", ["alignment", "background"])
def test_a_pixel_detector_scores_on_both_nodes_what_it_scores_here(
    ray_cluster, demo_store, monkeypatch, key
):
    """Each of the demo's frames on a day of its own, in groups of at most 20 frames: the fit
    frames' scores and a second scoring of them are the local ones, and both nodes scored."""
    monkeypatch.setattr(ray_executor, "MIN_SPREAD_FRAMES", 1)
    monkeypatch.setattr(ray_executor, "MAX_SPREAD_FRAMES", 20)
    params = {"max_view_frames": 60} if key == "alignment" else {}  # > 60 frames: a scan
    here = make_detector(key).set_params(**params).fit(demo_batch(demo_store, days_apart=True))
    batch = demo_batch(demo_store, days_apart=True)
    spread = batch.spread = RayFrameSpread(demo_store, PIXEL_CHUNK)
    there = make_detector(key).set_params(**params).fit(batch)
    assert np.isfinite(here.decision_scores_).sum() > 100
    np.testing.assert_array_equal(there.decision_scores_, here.decision_scores_)
    np.testing.assert_array_equal(there.decision_function(batch), here.decision_scores_)
    # every frame twice (the fit's pass, then decision_function), in groups of 20 frames
    assert sum(spread.frames_per_node.values()) == 2 * len(batch)
    assert spread.tasks == 2 * -(-len(batch) // 20)
    assert len(spread.frames_per_node) == 2, spread.frames_per_node  # both nodes scored
    assert spread.tasks >= 2 * len(batch) // 20


def test_analyze_on_ray_writes_the_local_run(ray_cluster, demo_store, tmp_path, monkeypatch):
    """The whole `analyze` with `executor = "ray"` on a copy of the demo store writes the same
    scores for every detector and cause as the local executor on another copy, and says where
    the pixel detectors scored."""
    monkeypatch.setattr(ray_executor, "MIN_SPREAD_FRAMES", 1)
    scores = {}
    for executor in ("local", "ray"):
        db = tmp_path / executor / "garden.duckdb"
        db.parent.mkdir()
        shutil.copy(demo_store, db)
        result = analyze(db, Settings(model="pixels", executor=executor), progress=False)
        noted = [n for n in result.notes if "on Ray" in n]
        assert len(noted) == (executor == "ray"), result.notes
        with store.connect(db, read_only=True) as con:
            scores[executor] = con.execute(
                "SELECT detector, frame_id, score FROM outlier_scores WHERE run_id = ? "
                "ORDER BY detector, frame_id",
                [result.run_id],
            ).df()
    local, ray = scores["local"], scores["ray"]
    assert len(local) > 0 and set(local["detector"]) >= {"alignment", "background", "consensus"}
    assert (
        local[["detector", "frame_id"]].to_numpy() == ray[["detector", "frame_id"]].to_numpy()
    ).all()
    np.testing.assert_array_equal(ray["score"].to_numpy(), local["score"].to_numpy())


def test_where_a_node_cannot_see_the_store_the_driver_scores_and_says_why(
    ray_cluster, demo_store, tmp_path
):
    """A store the nodes cannot read (here: a copy at a path that is not the one the tasks are
    sent) costs the run nothing: the pixel detectors score on the driver, with the local
    scores, and the note names the node and says to move the store."""
    here = make_detector("background").fit(demo_batch(demo_store))
    batch = demo_batch(demo_store)
    spread = batch.spread = RayFrameSpread(tmp_path / "elsewhere.duckdb", PIXEL_CHUNK)
    there = make_detector("background").fit(batch)
    np.testing.assert_array_equal(there.decision_scores_, here.decision_scores_)
    assert spread.tasks == 0 and not spread.frames_per_node
    assert re.fullmatch(
        r"node .* cannot read .*elsewhere\.duckdb, so the pixel detectors scored their frames "
        r"on this machine: .*keep the store on the shared folder.*",
        spread.unseen,
    ), spread.unseen


def die_once(part: FrameBatch, fn, marker: str):
    """`fn(part)`, but the first task to get here kills its worker process mid-task."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(part)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


class DyingSpread(RayFrameSpread):
    """A spread whose first task's worker dies before it returns."""

    def __init__(self, *args, marker: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = str(marker)

    def run(self, fn, batch):
        return super().run(functools.partial(die_once, fn=fn, marker=self.marker), batch)


def test_a_task_whose_worker_dies_is_redone_and_every_frame_comes_back_once(
    ray_cluster, demo_store, tmp_path, monkeypatch
):
    monkeypatch.setattr(ray_executor, "MIN_SPREAD_FRAMES", 1)
    monkeypatch.setattr(ray_executor, "MAX_SPREAD_FRAMES", 20)
    here = make_detector("background").fit(demo_batch(demo_store, days_apart=True))
    batch = demo_batch(demo_store, days_apart=True)
    marker = tmp_path / "died"
    spread = batch.spread = DyingSpread(demo_store, PIXEL_CHUNK, marker=marker)
    there = make_detector("background").fit(batch)
    assert int(marker.read_text()) != os.getpid()  # a worker died, not this process
    np.testing.assert_array_equal(there.decision_scores_, here.decision_scores_)
    assert sum(spread.frames_per_node.values()) == len(batch)  # each frame once
    assert spread.tasks == -(-len(batch) // 20)
