"""The `regions` detector: LOF in each region of the view, a frame as rare as its rarest region;
the region projections analyze fits for a model with a grid, and score-new's use of them."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import LocalOutlierFactor

import store
from pipeline.analyze import analyze
from pipeline.detectors import FrameBatch, make_detector
from pipeline.neighbors import NeighborIndex
from pipeline.projection import RegionProjection, region_count
from pipeline.score_new import load_fitted_run, score_frames
from pipeline.settings import Settings
from store import analysis as sa
from tests.pipeline.test_analyze import FAST, synthetic_store
from tests.pipeline.test_detectors import _batch

N, DIMS, PLANTED = 400, 4, 123


def _sky_and_quay(seed: int = 0, shift: float = 2.0) -> list[np.ndarray]:
    """Nine regions' points: six of sky that vary together with a heavy tail (banks of cloud,
    a low sun) and three of quay that barely vary; frame PLANTED has something new on the
    quay (region 7) only."""
    rng = np.random.default_rng(seed)
    weather = rng.standard_t(2, size=(N, 1)) * 3
    regions = [
        weather * rng.normal(size=(1, DIMS)) + rng.normal(scale=0.5, size=(N, DIMS))
        for _ in range(6)
    ] + [rng.normal(scale=0.5, size=(N, DIMS)) for _ in range(3)]
    regions[7][PLANTED] += shift
    return [r.astype(np.float32) for r in regions]


def _region_batch(regions: list[np.ndarray], first_id: int = 1) -> FrameBatch:
    n = len(regions[0])
    times = np.datetime64("2024-05-01T00:00", "ns") + np.timedelta64(30, "m") * np.arange(n)
    batch = FrameBatch(
        np.arange(first_id, first_id + n, dtype=np.int64),
        np.hstack(regions),
        times,
        times,
        pd.DataFrame(index=range(n)),
    )
    batch.regions = regions
    return batch


def _lof(points: np.ndarray) -> np.ndarray:
    return -LocalOutlierFactor(n_neighbors=20).fit(points).negative_outlier_factor_


def test_each_region_is_lof_on_its_own_points_and_a_frame_scores_its_rarest():
    regions = _sky_and_quay()
    det = make_detector("regions").fit(_region_batch(regions))
    ranks = []
    for points in regions:
        lof = _lof(points)
        ranks.append(np.searchsorted(np.sort(lof), lof, side="right") / len(lof))
    np.testing.assert_allclose(det.decision_scores_, np.max(ranks, axis=0), rtol=1e-6)
    assert len(det.indexes_) == 9


def test_something_new_on_the_quay_is_as_rare_as_the_rarest_sky():
    """A frame rare in a small still region tops the ranking; over the whole frame the sky's
    heavy tail buries it below its top 5% (Kat Kam's lof: its top tenth is the sky)."""
    regions = _sky_and_quay()
    det = make_detector("regions").fit(_region_batch(regions))
    assert det.decision_scores_[PLANTED] == det.decision_scores_.max() == 1.0
    whole = _lof(np.hstack(regions))
    assert (whole <= whole[PLANTED]).mean() < 0.95


def test_without_regions_it_ranks_frames_as_lof_does():
    batch = _batch()
    assert batch.regions is None
    regions = make_detector("regions").fit(batch)
    lof = make_detector("lof").fit(batch)
    assert regions.indexes_ is None
    np.testing.assert_array_equal(
        regions.percentile(regions.decision_scores_), lof.percentile(lof.decision_scores_)
    )
    new = _batch(seed=5)  # other frames: their nearest fit frames from the fit's index
    new.frame_ids = new.frame_ids + 10_000
    NeighborIndex().fit(batch.z, batch.frame_ids).attach(new, 20)
    np.testing.assert_array_equal(
        regions.percentile(regions.decision_function(new)),
        lof.percentile(lof.decision_function(new)),
    )


def test_new_frames_are_ranked_against_the_fit_regions_and_survive_pickling():
    regions = _sky_and_quay()
    det = make_detector("regions").fit(_region_batch(regions))
    again = pickle.loads(pickle.dumps(det))
    fit_batch = _region_batch(regions)
    np.testing.assert_allclose(again.decision_function(fit_batch), det.decision_scores_)
    rng = np.random.default_rng(9)
    new = [r[:5] + rng.normal(scale=0.05, size=r[:5].shape).astype(np.float32) for r in regions]
    new[8][0] += 50  # far from every fit frame in one region
    scores = again.decision_function(_region_batch(new, first_id=10_000))
    assert scores[0] == 1.0
    np.testing.assert_allclose(scores, det.decision_function(_region_batch(new, 10_000)))


def test_frames_without_their_region_points_are_refused_with_the_reason():
    det = make_detector("regions").fit(_region_batch(_sky_and_quay()))
    batch = _region_batch(_sky_and_quay(seed=1), first_id=10_000)
    batch.regions = None
    with pytest.raises(ValueError, match="fitted on 9 regions"):
        det.decision_function(batch)


def test_region_projection_splits_the_vector_and_projects_each_block_alone():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 9 * 40)).astype(np.float32)
    vectors[:, 40:80] *= 10  # one region varies far more: it must not shape the others
    proj = RegionProjection(9).fit(vectors, len(vectors), Settings())
    parts = proj.transform(vectors)
    assert len(parts) == 9 and all(p.dtype == np.float32 for p in parts)
    assert max(proj.dims) <= 32
    alone = RegionProjection(1, max_dims=32).fit(vectors[:, 80:120], 300, Settings())
    np.testing.assert_allclose(parts[2], alone.transform(vectors[:, 80:120])[0], atol=1e-5)
    with pytest.raises(ValueError, match="do not split into 9 regions"):
        RegionProjection(9).fit(vectors[:, :100], 300, Settings())


def test_region_count_comes_from_the_model_grid():
    assert region_count("vgg16-hed-grid") == 9
    assert region_count("vgg16-hed") == 1
    assert region_count("pixels") == 1
    assert region_count("not-a-model") == 1


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """A store whose vectors are a 3x3-grid model's (9 regions of 16 values), analysed."""
    db = tmp_path_factory.mktemp("grid") / "store.duckdb"
    made = synthetic_store(db, dim=9 * 16, model="vgg16-hed-grid")
    settings = Settings(model="vgg16-hed-grid", detectors=FAST, n_clusters="2", workers=1)
    return db, analyze(db, settings, progress=False), settings, made


def test_analyze_projects_a_grid_model_by_region_and_score_new_agrees(grid_run, tmp_path):
    db, result, _, made = grid_run
    copy = tmp_path / "store.duckdb"
    shutil.copy(db, copy)
    fitted, _ = load_fitted_run(copy)
    assert fitted.regions is not None and fitted.regions.n_regions == 9
    with store.connect(copy, read_only=True) as con:
        params = sa.get_run(con, result.run_id)["params"]
    assert params["region_dims"] == fitted.regions.dims and params["region_recall"] == 1.0
    assert params["region_index"] == "exact"  # a small run: every region searched exactly
    assert fitted.detectors["regions"].indexes_ is not None
    assert "regions" in fitted.consensus.keys  # the rarity cause's detector by default
    with store.connect(copy, read_only=True) as con:
        stored = sa.run_scores(con, result.run_id)
        ids = sa.run_frame_ids(con, result.run_id)
    report, skipped = score_frames(copy, fitted, ids, write=False)
    assert skipped == 0
    part = stored[stored.detector == "regions"].set_index("frame_id").loc[report["frame_id"]]
    np.testing.assert_allclose(report["regions"].to_numpy(float), part["score"], rtol=1e-6)
    # the planted anomalies are pushed off in every region: each is in the top 5%
    pct = stored[stored.detector == "regions"].set_index("frame_id")["score_pct"]
    assert pct.loc[made["anomalies"]].min() >= 0.95


def test_a_run_without_the_regions_detector_fits_no_region_projection(grid_run, tmp_path):
    db, _, settings, _ = grid_run
    copy = tmp_path / "store.duckdb"
    shutil.copy(db, copy)
    analyze(copy, settings.replace(detectors=["lof", "dark"]), progress=False)
    fitted, _ = load_fitted_run(copy)
    assert fitted.regions is None and "regions" not in fitted.detectors


def test_the_neighbour_index_setting_reaches_the_detectors_with_indexes_of_their_own():
    assert make_detector("regions", index_kind="exact").index_kind == "exact"
    assert make_detector("regions").index_kind == "auto"
    # `lof` keeps an index of its own only where a burst leaves frames out of its density
    assert make_detector("lof", index_kind="exact").index_kind == "exact"
    assert "index_kind" not in make_detector("knn", index_kind="exact").get_params()


def test_above_exact_search_the_regions_keep_half_floats_and_rank_as_exact_search_does():
    """Past `exact_max` frames each region's IVF index keeps its points as half floats (half
    the bytes the fitted run keeps): the planted quay still tops the ranking, and the ranks
    stay close to exact search's."""
    regions = _sky_and_quay()
    exact = make_detector("regions").fit(_region_batch(regions))
    coded = make_detector("regions", index_kind="ivf").fit(_region_batch(regions))
    assert {(ix.kind_, ix.codes) for ix in coded.indexes_} == {("ivf", "fp16")}
    assert min(ix.recall_ for ix in coded.indexes_) >= 0.95
    assert coded.decision_scores_[PLANTED] == coded.decision_scores_.max()
    assert np.corrcoef(coded.decision_scores_, exact.decision_scores_)[0, 1] > 0.9
