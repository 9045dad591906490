"""The shared neighbour index: an approximate (IVF) index measures its recall against exact
search and probes more lists until it reaches the target; the exact kinds say 1.0."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.neighbors import IVF_NPROBE, NeighborIndex


@pytest.fixture(scope="module")
def points():
    """3,000 frames spread evenly in 16 dims: no clusters for the IVF lists to follow, so 24
    of its 76 lists miss some neighbours."""
    z = np.random.default_rng(3).normal(size=(3000, 16))
    return z.astype(np.float32), np.arange(100, 3100)


def _exact(z, k):
    from scipy.spatial.distance import cdist

    d = cdist(z, z)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k]


def test_ivf_recall_is_measured_against_exact_search(points):
    z, ids = points
    index = NeighborIndex("ivf").fit(z, ids).calibrate(z, ids, 20, target=0.0, sample=300)
    assert index.nprobe_ == IVF_NPROBE and index.recall_frames_ == 300
    rows = np.sort(np.random.default_rng(0).choice(len(z), 300, replace=False))
    dist, _ = index.query(z[rows], ids[rows], 20)
    kth = _exact(z, 20)[rows, -1]
    expected = (dist <= kth[:, None] * (1 + 1e-5)).sum(axis=1).mean() / 20
    assert index.recall_ == pytest.approx(expected, abs=1e-9)
    assert 0.3 < index.recall_ < 0.95


def test_ivf_probes_more_lists_until_it_reaches_the_target(points):
    z, ids = points
    index = NeighborIndex("ivf").fit(z, ids).calibrate(z, ids, 20, target=1.0)
    assert index.nprobe_ > IVF_NPROBE and index.recall_ == 1.0
    dist, _ = index.query(z, ids, 20)
    np.testing.assert_allclose(dist, _exact(z, 20), rtol=1e-4)
    again = pickle.loads(pickle.dumps(index))  # the fitted run keeps the calibrated probes
    assert again.index_.nprobe == index.nprobe_ and again.recall_ == 1.0
    np.testing.assert_array_equal(
        again.query(z[:50], ids[:50], 20)[1], index.query(z[:50], ids[:50], 20)[1]
    )


@pytest.mark.parametrize("kind", ["exact", "kdtree"])
def test_exact_kinds_find_every_neighbour_without_a_sample(points, kind):
    z, ids = points
    index = NeighborIndex(kind).fit(z, ids).calibrate(z, ids, 20)
    assert (index.recall_, index.recall_frames_, index.nprobe_) == (1.0, 0, None)
    np.testing.assert_allclose(index.query(z, ids, 20)[0], _exact(z, 20), rtol=1e-4)


def test_an_index_pickled_before_calibration_probes_as_it_did(points):
    z, ids = points
    index = NeighborIndex("ivf").fit(z, ids)
    state = index.__getstate__()
    for name in ("nprobe_", "recall_", "recall_frames_"):
        del state[name]
    state["_format"] = 1
    old = NeighborIndex.__new__(NeighborIndex)
    old.__setstate__(state)
    assert old.index_.nprobe == IVF_NPROBE and old.recall_ is None


def test_ivf_with_half_float_codes_keeps_half_the_bytes_and_counts_recall_exactly(points):
    z, ids = points
    flat = NeighborIndex("ivf").fit(z, ids)
    half = NeighborIndex("ivf", codes="fp16").fit(z, ids).calibrate(z, ids, 20, target=0.95)
    assert half.index_.code_size * 2 == flat.index_.code_size == 16 * 4  # bytes a frame
    assert len(pickle.dumps(half)) < 0.7 * len(pickle.dumps(flat))  # with the ids of both
    # its recall counts a neighbour found by the exact distance, not the coded one
    rows = np.sort(np.random.default_rng(0).choice(len(z), 1000, replace=False))
    dist, idx = half.query(z[rows], ids[rows], 20)
    exact = np.linalg.norm(z[rows][:, None, :] - z[idx], axis=2)
    kth = _exact(z, 20)[rows, -1]
    expected = (exact <= kth[:, None] * (1 + 1e-5)).sum(axis=1).mean() / 20
    assert half.recall_ == pytest.approx(expected, abs=1e-9) and half.recall_ >= 0.95
    np.testing.assert_allclose(dist, exact, rtol=1e-3)  # half floats: within about 1e-4
    again = pickle.loads(pickle.dumps(half))
    assert again.codes == "fp16" and again.index_.nprobe == half.nprobe_
    np.testing.assert_array_equal(
        again.query(z[:50], ids[:50], 20)[1], half.query(z[:50], ids[:50], 20)[1]
    )


def test_an_index_pickled_before_codes_keeps_its_points_flat(points):
    z, ids = points
    state = NeighborIndex("ivf").fit(z, ids).__getstate__()
    del state["codes"]
    state["_format"] = 2
    old = NeighborIndex.__new__(NeighborIndex)
    old.__setstate__(state)
    assert old.codes == "flat" and old.query(z[:5], ids[:5], 20)[0].shape == (5, 20)


def test_unknown_codes_are_refused_by_name(points):
    z, ids = points
    with pytest.raises(ValueError, match="codes 'sq8'"):
        NeighborIndex("ivf", codes="sq8").fit(z, ids)
