"""A burst of frames (a camera that takes one an hour taking one a minute for an hour) does not
teach the density detectors that the frames beside it are rare (`usual_pace`).

The growlab windowsill camera (bench/cameras/growlab) took 117 frames in 100 minutes one morning
while its owner set it up again; learned from every frame, `lof`'s top 15 were the ordinary
frames of the days around it, whose nearest neighbours the burst's near-copies became."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from pipeline.detectors import FrameBatch, make_detector
from pipeline.detectors.batch import usual_pace
from pipeline.detectors.embedding import lof_fit, lof_scores
from pipeline.neighbors import NeighborIndex
from pipeline.versioned import FORMAT_KEY

DAYS, DIM, K = 12, 8, 20
BURST_DAY, BURST_HOUR, BURST = 6, 9, 60  # one a minute from 09:00, on top of the hourly frame


def _ns(values) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[ns]")


def test_usual_pace_keeps_a_steady_camera_whole_and_thins_a_burst_to_its_pace():
    start = np.datetime64("2021-06-01T00:00", "ns")
    hourly = start + np.timedelta64(1, "h") * np.arange(48)
    jitter = hourly + np.timedelta64(1, "m") * np.tile([0, 7, -5, 3], 12)  # and gaps
    assert usual_pace(_ns(np.delete(jitter, [5, 6, 30]))).all()

    # an hour-a-frame camera that took one every 2 minutes from 10:00 to 11:30 (fewer frames
    # than its steady ones: where most frames come minutes apart, that is its pace)
    burst = start + np.timedelta64(10, "h") + np.timedelta64(2, "m") * np.arange(1, 46)
    times = _ns(np.concatenate([hourly, burst, [np.datetime64("NaT")]]))
    keep = usual_pace(times)
    outside = (hourly < burst[0]) | (hourly > burst[-1])
    assert keep[:48][outside].all() and keep[-1]  # the steady frames, and the one without a time
    gaps = np.diff(np.sort(times[:-1]))
    kept = np.sort(times[:-1][keep[:-1]])
    assert (np.diff(kept) >= np.median(gaps) / 2).all()  # a frame each half of the pace
    assert 30 <= (~keep).sum() <= 45
    assert usual_pace(_ns([start, start, start])).all()  # one time for all: nothing to keep to


def _burst_batch() -> tuple[FrameBatch, np.ndarray, int]:
    """An hourly camera over `DAYS` days whose vectors follow the hour, a burst of near-copies
    of one morning's frame, and one frame unlike any other."""
    rng = np.random.default_rng(4)
    hourly = np.datetime64("2021-06-01T00:00", "ns") + np.timedelta64(1, "h") * np.arange(24 * DAYS)
    hours = (hourly - hourly.astype("datetime64[D]")) / np.timedelta64(1, "h")
    phase = 2 * np.pi * hours / 24
    z = np.column_stack([np.sin(phase), np.cos(phase)]) @ rng.normal(size=(2, DIM)) * 2
    z += rng.normal(scale=0.3, size=z.shape)
    odd = 24 * 3 + 14
    z[odd] += 5
    at = 24 * BURST_DAY + BURST_HOUR
    burst_t = hourly[at] + np.timedelta64(1, "m") * np.arange(1, BURST + 1)
    burst_z = z[at] + rng.normal(scale=0.01, size=(BURST, DIM))
    times = np.concatenate([hourly, burst_t])
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(len(times)) + 1,
            "taken_at": times,
            "taken_at_utc": pd.to_datetime(times).tz_localize("UTC"),
            "daylight": "day",
        }
    )
    batch = FrameBatch.from_frames(
        frames["frame_id"].to_numpy(), np.vstack([z, burst_z]).astype(np.float32), frames
    )
    NeighborIndex().fit(batch.z, batch.frame_ids).attach(batch, K)
    # the ordinary frames at the burst's hour on the other days
    beside = np.array([24 * d + BURST_HOUR for d in range(DAYS) if d != BURST_DAY])
    return batch, beside, odd


def _rank(scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return (scores[None, :] <= scores[rows, None]).mean(axis=1)


@pytest.mark.parametrize("key", ["lof", "regions"])
def test_a_burst_does_not_make_the_frames_beside_it_rare(key):
    batch, beside, odd = _burst_batch()
    every = lof_scores(batch.nn_dist, batch.nn_idx, K, *lof_fit(batch.nn_dist, batch.nn_idx, K))
    assert np.median(_rank(every, beside)) > 0.9  # learned from every frame: the pathology

    det = make_detector(key).fit(batch)
    scores = det.decision_scores_
    assert np.isfinite(scores).all()  # the burst's frames are scored too
    assert np.median(_rank(scores, beside)) < 0.8
    assert _rank(scores, np.array([odd]))[0] == 1.0  # what is rare stays the rarest
    assert det.paced_index_ is not None and det.paced_index_.n_ == len(batch) - BURST + 1

    # a new frame, or a fit frame scored again, is scored against the same frames
    np.testing.assert_allclose(det.decision_function(batch), scores)
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_allclose(again.decision_function(batch), scores)


@pytest.mark.parametrize("key", ["lof", "regions"])
def test_a_steady_camera_is_learned_from_the_shared_neighbours_as_before(key):
    """Without a burst nothing changes: no index of its own, the run's shared neighbours, and
    a detector pickled before `paced_index_` (format 2) scores as it did."""
    batch, _, _ = _burst_batch()
    steady = batch.take(np.arange(24 * DAYS))
    NeighborIndex().fit(steady.z, steady.frame_ids).attach(steady, K)
    det = make_detector(key).fit(steady)
    assert det.paced_index_ is None
    every = lof_scores(steady.nn_dist, steady.nn_idx, K, *lof_fit(steady.nn_dist, steady.nn_idx, K))
    if key == "lof":
        np.testing.assert_allclose(det.decision_scores_, every)
    state = {k: v for k, v in det.__getstate__().items() if k != "paced_index_"}
    state[FORMAT_KEY] = 2
    old = type(det).__new__(type(det))
    old.__setstate__(state)
    assert old.paced_index_ is None
    np.testing.assert_allclose(old.decision_function(steady), det.decision_scores_)
