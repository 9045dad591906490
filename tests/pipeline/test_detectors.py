"""Detector contract tests over the whole registry, PyOD equivalence, time-lapse behaviour."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from pipeline.detectors import (
    CONSENSUS_RULES,
    DETECTORS,
    Consensus,
    FrameBatch,
    consensus_scores,
    make_detector,
)
from pipeline.detectors import batch as batch_module
from pipeline.detectors.background.eigen import less_surroundings, stand_out
from pipeline.neighbors import NeighborIndex
from pipeline.pixels import ArrayReader
from pipeline.versioned import FORMAT_KEY, FittedFormatError

N_DAYS, PER_DAY, DIM = 5, 48, 12
PLANTED = np.array([100, 150, 170, 200])  # daytime frames on days 2-4

# Stats that make a planted frame bad for each quality check (normal frames: see _batch).
QUALITY_PLANT = {
    key: cls.example_bad for key, cls in DETECTORS.items() if "frame_stats" in cls.needs
}
# Detectors whose planted frames differ from the generic batch's (see _batch).
OWN_BATCH = [*QUALITY_PLANT, "alignment"]


def _garden(hours: np.ndarray, seed: int, planted: np.ndarray) -> dict[int, np.ndarray]:
    """Tiny images of one fixed scene: a daylight level and a shadow whose depth follow the
    hour, sensor noise, and a small yellow figure (lit, or holding a torch at night) in front of
    the scene in `planted` frames."""
    rng = np.random.default_rng(seed + 100)
    scene = rng.uniform(60, 200, size=(36, 64, 3))
    in_shadow = (np.arange(64)[None, :, None] < 24) & (np.arange(36)[:, None, None] > 20)
    images = {}
    for i, hour in enumerate(hours):
        sun = max(0.0, np.sin(np.pi * (hour - 6) / 12))
        shade = np.where(in_shadow, 1 - 0.5 * sun, 1.0)
        image = scene * (0.15 + 0.85 * sun) * shade + rng.normal(0, 2, scene.shape)
        if i in planted:
            y, x = rng.integers(4, 26), rng.integers(4, 56)
            image[y : y + 8, x : x + 4] = (250, 235, 60)
        images[i + 10] = np.clip(image, 0, 255)
    return images


def _batch(seed: int = 0, key: str | None = None) -> FrameBatch:
    """Five days of a smooth daily cycle, every 30 min, with planted abnormal frames."""
    rng = np.random.default_rng(seed)
    n = N_DAYS * PER_DAY
    times = np.datetime64("2024-05-01T00:00") + np.timedelta64(30, "m") * np.arange(n)
    hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(float)
    phase = 2 * np.pi * hours / 24
    basis = rng.normal(size=(2, DIM))
    z = np.column_stack([np.sin(phase), np.cos(phase)]) @ basis * 2
    z += rng.normal(scale=0.2, size=z.shape)
    z[PLANTED] += rng.normal(size=DIM) * 3 + 4
    stats = pd.DataFrame(
        {
            "mean_luma": rng.uniform(90, 140, n),
            "contrast": rng.uniform(35, 50, n),
            "sharpness": rng.uniform(200, 400, n),
            "colorfulness": rng.uniform(20, 40, n),
            "local_contrast": rng.uniform(8, 14, n),
        }
    )
    cells = rng.uniform(200, 400, (n, batch_module.N_CELLS))
    for column, value in QUALITY_PLANT.get(key, {}).items():
        if column in batch_module.CELL_STATS:
            cells[PLANTED, batch_module.CELL_STATS.index(column)] = value
        else:
            stats.loc[PLANTED, column] = value
    stats["sharpness_cells"] = list(cells)
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(n) + 10,
            "taken_at": times,
            "taken_at_utc": pd.to_datetime(times).tz_localize("UTC"),
            "daylight": np.where((hours >= 7) & (hours < 19), "day", "night"),
        }
    )
    frames = pd.concat([frames, stats], axis=1)
    images = _garden(hours, seed, set(PLANTED.tolist()))
    if key == "alignment":  # the camera cause: a scene with edges, knocked in the planted frames
        scene = _textured_scene(seed)
        images = {
            i + 10: np.clip(
                scene * (0.15 + 0.85 * max(0.0, np.sin(np.pi * (h - 6) / 12)))
                + rng.normal(0, 2, scene.shape),
                0,
                255,
            )
            for i, h in enumerate(hours)
        }
        for i in PLANTED:
            images[int(i) + 10] = _moved(images[int(i) + 10], 3, 2)
    pixels = ArrayReader(images)
    batch = FrameBatch.from_frames(
        frames["frame_id"].to_numpy(), z.astype(np.float32), frames, pixels=pixels
    )
    NeighborIndex().fit(batch.z, batch.frame_ids).attach(batch, 20)
    return batch


@pytest.fixture(scope="module")
def batches():
    return {key: _batch(key=key) for key in [None, *OWN_BATCH]}


@pytest.mark.parametrize("key", list(DETECTORS))
def test_fit_returns_self_and_sets_state(key, batches):
    det = make_detector(key, contamination=0.05)
    batch = batches[key if key in OWN_BATCH else None]
    assert det.fit(batch) is det
    n = len(batch)
    assert det.decision_scores_.shape == (n,)
    assert np.isfinite(det.decision_scores_).all()
    assert det.labels_.dtype == bool and 0 < det.labels_.sum() <= 0.05 * n + 1
    assert np.isfinite(det.threshold_)


@pytest.mark.parametrize("key", list(DETECTORS))
def test_planted_outliers_outrank_inliers(key, batches):
    batch = batches[key if key in OWN_BATCH else None]
    scores = make_detector(key).fit(batch).decision_scores_
    inliers = np.delete(scores, PLANTED)
    assert scores[PLANTED].min() > np.quantile(inliers, 0.95), key


@pytest.mark.parametrize("key", list(DETECTORS))
def test_deterministic_and_clone(key, batches):
    batch = batches[key if key in OWN_BATCH else None]
    a = make_detector(key, random_state=3).fit(batch)
    b = make_detector(key, random_state=3).fit(batch)
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    c = clone(a)
    assert c.get_params() == a.get_params() and not hasattr(c, "decision_scores_")
    np.testing.assert_array_equal(c.fit(batch).decision_scores_, a.decision_scores_)


@pytest.mark.parametrize("key", list(DETECTORS))
def test_rescoring_the_fit_frames_gives_the_fit_scores(key, batches):
    batch = batches[key if key in OWN_BATCH else None]
    det = make_detector(key).fit(batch)
    np.testing.assert_allclose(det.decision_function(batch), det.decision_scores_, rtol=1e-9)
    pct = det.percentile(det.decision_scores_)
    assert pct.max() == 1.0 and pct.min() > 0


def test_unknown_key_lists_the_registry():
    with pytest.raises(KeyError, match="iforest"):
        make_detector("nope")


@pytest.mark.parametrize(
    "key, pyod_name, params",
    [
        ("lof", "lof.LOF", {"n_neighbors": 20}),
        ("knn", "knn.KNN", {"n_neighbors": 5}),
        ("ecod", "ecod.ECOD", {}),
        ("copod", "copod.COPOD", {}),
        ("hbos", "hbos.HBOS", {"n_bins": 20}),
        ("iforest", "iforest.IForest", {"random_state": 0, "contamination": 0.05}),
    ],
)
def test_embedding_detectors_equal_pyod_on_the_fit(key, pyod_name, params, batches):
    import importlib

    module, cls = pyod_name.split(".")
    ref = getattr(importlib.import_module(f"pyod.models.{module}"), cls)(**params)
    batch = batches[None]
    ref.fit(batch.z)
    ours = make_detector(key).fit(batch).decision_scores_
    np.testing.assert_allclose(ours, ref.decision_scores_, rtol=1e-4, atol=1e-5)


def test_ecdf_tails_count_the_fit_values_on_each_side(batches):
    """`ecod`'s and `copod`'s tails are, per dimension, how many fit values lie at or below and
    at or above each value, counted here one by one: for the fit frames and for new values in
    any order, with ties (values rounded to a tenth repeat many times) and beyond either end."""
    batch = batches[None]
    det = make_detector("ecod")
    det._fit(replace(batch, z=np.round(batch.z, 1)))
    fit = det.sorted_
    rng = np.random.default_rng(3)
    new = np.vstack([fit[rng.permutation(len(fit))[:40]], fit[:3] - 9, fit[-3:] + 9])
    u_l, u_r, _ = det._tails(new)
    n = len(fit)
    at_or_below = (fit[None, :, :] <= new[:, None, :]).sum(axis=1)
    at_or_above = (fit[None, :, :] >= new[:, None, :]).sum(axis=1)
    np.testing.assert_allclose(u_l, -np.log(np.maximum(at_or_below, 0.5) / n))
    np.testing.assert_allclose(u_r, -np.log(np.maximum(at_or_above, 0.5) / n))
    assert (at_or_below[-3:] == n).all() and (at_or_above[-6:-3] == n).all()


def test_new_frames_are_scored_without_refitting(batches):
    batch = batches[None]
    det = make_detector("ecod").fit(batch)
    far = FrameBatch(
        np.array([99999]),
        np.full((1, DIM), 50, np.float32),
        np.array(["2024-05-09T12:00"], dtype="datetime64[ns]"),
        np.array(["2024-05-09T12:00"], dtype="datetime64[ns]"),
        batch.stats.iloc[:1].reset_index(drop=True),
    )
    score = det.decision_function(far)
    assert np.isfinite(score).all() and score[0] > det.decision_scores_.max()
    assert det.percentile(score)[0] == 1.0


def test_neighbor_index_excludes_self_and_matches_brute_force(batches):
    batch = batches[None]
    d = np.linalg.norm(batch.z[:, None, :] - batch.z[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(batch.nn_idx[:, 0], d.argmin(axis=1))
    np.testing.assert_allclose(batch.nn_dist[:, 0], d.min(axis=1), rtol=1e-4)
    tree = NeighborIndex("kdtree").fit(batch.z, batch.frame_ids)
    dist, idx = tree.query(batch.z, batch.frame_ids, 20)
    np.testing.assert_array_equal(idx[:, 0], d.argmin(axis=1))
    np.testing.assert_allclose(dist, batch.nn_dist, rtol=1e-4)
    ivf = NeighborIndex("ivf").fit(batch.z, batch.frame_ids)
    dist, idx = ivf.query(batch.z, batch.frame_ids, 5)
    assert (idx != np.arange(len(batch))[:, None]).all()
    assert (idx[:, 0] == d.argmin(axis=1)).mean() > 0.9


def _dusk_and_jump(jump_at: int | None):
    """Two weeks of frames every 10 min; at dusk the scene changes fast but smoothly."""
    rng = np.random.default_rng(1)
    n = 14 * 144
    times = np.datetime64("2024-06-01T00:00") + np.timedelta64(10, "m") * np.arange(n)
    hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(float)
    light = 1 / (1 + np.exp(-(hours - 6) * 3)) - 1 / (1 + np.exp(-(hours - 20) * 3))
    basis = rng.normal(size=(2, 16))
    z = np.column_stack([light * 6, np.sin(2 * np.pi * hours / 24)]) @ basis
    z += rng.normal(scale=0.15, size=z.shape)
    if jump_at is not None:
        z[jump_at] += rng.normal(size=16) * 1.5
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(n),
            "taken_at": times,
            "mean_luma": 100.0,
            "contrast": 40.0,
            "sharpness": 300.0,
            "colorfulness": 30.0,
        }
    )
    frames["taken_at_utc"] = pd.NaT
    batch = FrameBatch.from_frames(np.arange(n), z.astype(np.float32), frames)
    return batch, hours


@pytest.mark.parametrize("key", ["temporal", "same_time"])
def test_dusk_is_not_flagged_but_a_sudden_change_is(key):
    batch, hours = _dusk_and_jump(jump_at=7 * 144 + 12 * 6)  # day 7, 12:00
    det = make_detector(key, contamination=0.02).fit(batch)
    dusk = (hours >= 19) & (hours <= 21)
    assert det.labels_[dusk].mean() < 0.05
    assert det.labels_[7 * 144 + 72]
    pct = det.percentile(det.decision_scores_)
    assert pct[7 * 144 + 72] >= 0.99


def test_background_fits_one_model_per_daylight_class_and_needs_pixels(batches):
    daylit = batches[None]
    det = make_detector("background").fit(daylit)
    assert set(det.models_) == {"day", "night"}
    # a class too small for its own background is scored by one fitted over all frames
    dusk = replace(
        daylit, daylight=np.where(np.arange(len(daylit)) % 24 == 0, "twilight", daylit.daylight)
    )
    mixed = make_detector("background").fit(dusk)
    assert set(mixed.models_) == {"all", "day", "night"}
    assert np.isfinite(mixed.decision_scores_).all()
    # new frames of a daylight class the fit had no model for still get a score
    unseen = replace(daylit, daylight=np.full(len(daylit), None, dtype=object))
    assert np.isfinite(det.decision_function(unseen)).all()
    assert det.size_ == (64, 36)  # the images' 16:9, at the default width
    inliers = np.delete(det.decision_scores_, PLANTED)
    assert det.decision_scores_[PLANTED].min() > np.quantile(inliers, 0.95)
    # a frame without an image gets no score; a batch without pixels gets none at all
    partial = replace(
        daylit, pixels=ArrayReader({i: im for i, im in daylit.pixels.images.items() if i != 10})
    )
    scores = det.decision_function(partial)
    assert np.isnan(scores[0]) and np.isfinite(scores[1:]).all()
    blind = make_detector("background").fit(replace(daylit, pixels=None))
    assert np.isnan(blind.decision_scores_).all() and blind.models_ == {}
    few = daylit.pixels.images
    sample = replace(
        daylit,
        frame_ids=daylit.frame_ids[:20],
        daylight=daylit.daylight[:20],
        pixels=ArrayReader({i: few[i] for i in daylit.frame_ids[:20]}),
    )
    assert make_detector("background").fit(sample).models_ == {}  # 20 frames: no background


def test_consensus_rules_and_percentiles():
    rng = np.random.default_rng(0)
    pcts = {
        "iforest": rng.uniform(size=200),
        "lof": rng.uniform(size=200),
        "dark": rng.uniform(size=200),
    }
    pcts["iforest"][0] = pcts["lof"][0] = pcts["dark"][0] = 1.0
    for rule in CONSENSUS_RULES:
        s = consensus_scores(pcts, rule)
        assert s.shape == (200,) and np.isfinite(s).all()
        assert s[0] >= np.quantile(s, 0.95), rule
    cons = Consensus(["iforest", "lof", "dark"], "family_tail", 0.05)
    assert cons.fit(pcts) is cons
    fit = cons.decision_scores_
    np.testing.assert_allclose(cons.decision_function(pcts), fit)
    assert cons.predict_scores(fit)[0] and cons.labels_[0]
    assert cons.threshold_ == np.quantile(fit, 0.95)
    with pytest.raises(KeyError):
        consensus_scores(pcts, "median-of-nothing")
    # a detector with no opinion (NaN) is left out for that frame
    pcts["dark"][5] = np.nan
    assert np.isfinite(consensus_scores(pcts, "family_tail")[5])
    # the top rank is evidence in proportion to how many frames it was ranked among
    top = {"lof": np.array([1.0, 0.5])}
    assert consensus_scores(top, "tail", n_reference=13)[0] == pytest.approx(np.log(14))
    assert consensus_scores(top, "tail", n_reference=99_999)[0] == pytest.approx(np.log(100_000))
    assert Consensus(["lof"], "tail", 0.05).fit({"lof": np.linspace(0.1, 1, 10)}).decision_scores_[
        -1
    ] == pytest.approx(np.log(11))


def test_consensus_scores_each_cause_and_sums_the_junk_causes():
    """Each cause is scored from its own detectors; the consensus sums the causes the user
    counts as junk, so a building-site camera that does not count `scene` or `rarity` ranks a
    digger (background, lof) below a blurred frame (soft)."""
    n = 100
    pcts = {k: np.full(n, 0.5) for k in ("soft", "flat", "background", "lof", "alignment")}
    pcts["background"][0] = pcts["lof"][0] = 0.99  # a digger: new in the scene and rare
    pcts["soft"][1] = 0.99  # a blurred frame
    every = Consensus(list(pcts), "family_tail", 0.05).fit(pcts)
    assert set(every.causes_) == {"quality", "camera", "scene", "rarity"}
    np.testing.assert_allclose(
        every.decision_scores_, sum(c.decision_scores_ for c in every.causes_.values())
    )
    assert every.decision_scores_[0] > every.decision_scores_[1]
    site = Consensus(list(pcts), "family_tail", 0.05, junk_causes=["quality", "camera"]).fit(pcts)
    assert site.decision_scores_[1] > site.decision_scores_[0]
    np.testing.assert_allclose(
        site.decision_scores_,
        site.causes_["quality"].decision_scores_ + site.causes_["camera"].decision_scores_,
    )
    causes, total = site.score_causes(pcts)
    np.testing.assert_allclose(total, site.decision_scores_)
    np.testing.assert_allclose(causes["scene"], every.causes_["scene"].decision_scores_)
    with pytest.raises(ValueError, match="junk causes"):
        Consensus(["lof"], "family_tail", 0.05, junk_causes=["camera"]).fit({"lof": pcts["lof"]})


def test_a_detector_that_sees_nothing_brings_no_evidence():
    """A dim indoor camera with no edges to line up: `alignment` scores every frame it can 0
    (nothing moved) and the black frames NaN (nothing to line up). Those 0s tie at its lowest
    score; ranked as the top of their block (1.0) they brought every normal frame the most
    evidence there is and the black junk none, so the camera cause ranked the junk last.
    Ranked as the lowest frame, they bring none."""
    from pipeline.detectors import cause_scores, counted_ranks

    rng = np.random.default_rng(3)
    batch = _batch()
    black = np.isin(np.arange(len(batch)), PLANTED)
    flat = {
        int(i): np.full((36, 64, 3), 3.0) if dark else 120 + rng.normal(0, 2, (36, 64, 3))
        for i, dark in zip(batch.frame_ids, black)
    }
    batch.pixels = ArrayReader(flat)
    det = make_detector("alignment").fit(batch)
    scores = det.decision_scores_
    assert np.isnan(scores[black]).all() and (scores[~black] == 0).all()
    n, lowest = len(scores) + 1, 1 / (~black).sum()
    # without the rule a percentile counts the frames <= a score: the tied block's top, 1.0
    for lowest_ties, rank, normal_evidence in ((False, 1.0, np.log(n)), (True, lowest, 0.0)):
        pcts = {"alignment": det.percentile(scores, lowest_ties)}
        assert (pcts["alignment"][~black] == rank).all()
        assert np.isnan(pcts["alignment"][black]).all()
        counted = counted_ranks({"alignment": det}, {"alignment": scores}, pcts, batch)
        camera = cause_scores(counted, "family_tail", len(scores))["camera"]
        np.testing.assert_allclose(camera[~black], normal_evidence)
        assert np.isnan(camera[black]).all()
    # a score above the tie ranks as before, one below the fit's lowest (a new frame) at 0
    moved = scores.copy()
    moved[0], moved[1] = 5.0, -1.0
    pct = det.percentile(moved)
    assert pct[0] == 1.0 and pct[1] == 0.0 and pct[2] == lowest


def test_percentiles_rank_ties_only_at_the_lowest_score_low():
    """Ties above the lowest score rank as the share of fit frames <= them, as before; an
    untied lowest score is 1 / n either way."""
    from pipeline.detectors.base import Scorer

    scorer = Scorer()
    scorer.decision_scores_ = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 3.0, np.nan])
    scorer._process_decision_scores()
    got = scorer.percentile(np.array([0.0, 1.0, 2.0, 3.0, 2.5, -1.0, np.nan]))
    np.testing.assert_array_equal(got, [1 / 7, 4 / 7, 6 / 7, 1.0, 6 / 7, 0.0, np.nan])
    old = scorer.percentile(np.array([0.0, 1.0]), lowest_ties=False)
    np.testing.assert_array_equal(old, [3 / 7, 4 / 7])
    scorer.decision_scores_ = np.array([0.5, 1.0, 2.0])
    scorer._process_decision_scores()
    np.testing.assert_array_equal(scorer.percentile(np.array([0.5])), [1 / 3])
    np.testing.assert_array_equal(scorer.percentile(np.array([0.5]), False), [1 / 3])


def test_a_consensus_fitted_before_lowest_ties_keeps_the_highest_rank():
    """A consensus pickled before ties at a detector's lowest score ranked low (format 2) loads
    with `lowest_ties_` off, so a stored run scores new frames as its fit counted them."""
    pcts = {"alignment": np.linspace(0.1, 1, 10)}
    cons = Consensus(["alignment"], "family_tail", 0.05).fit(pcts)
    assert cons.lowest_ties_
    state = cons.__getstate__()
    state[FORMAT_KEY] = 2
    old = type(cons).__new__(type(cons))
    old.__setstate__(state)
    assert not old.lowest_ties_
    assert pickle.loads(pickle.dumps(cons)).lowest_ties_


def test_a_consensus_scores_with_the_evidence_starts_it_was_fitted_with(monkeypatch):
    """The starts are the consensus's own: a run fitted when `exposure` counted from its 95th
    percentile scores new frames from the 95th after the class moved on (to its 97th), and a
    consensus pickled before it kept its starts (format 3) loads with the 95th."""
    from pipeline.detectors.own import ExposureDetector

    ranks = np.linspace(0.5, 1, 101)
    pcts = {"exposure": ranks, "flat": ranks[::-1]}
    monkeypatch.setattr(ExposureDetector, "evidence_from", 0.95)
    then = Consensus(["exposure", "flat"], "family_tail", 0.05).fit(pcts)
    assert then.starts_ == {"exposure": 0.95, "flat": 0.0}
    monkeypatch.setattr(ExposureDetector, "evidence_from", 0.97)
    np.testing.assert_array_equal(then.decision_function(pcts), then.decision_scores_)
    now = Consensus(["exposure", "flat"], "family_tail", 0.05).fit(pcts)
    at = np.flatnonzero(np.isclose(ranks, 0.96))  # counted from the 95th, not from the 97th
    assert len(at) == 1
    assert (
        then.causes_["quality"].decision_scores_[at] > now.causes_["quality"].decision_scores_[at]
    )

    state = {k: v for k, v in now.__getstate__().items() if k != "starts_"}
    state[FORMAT_KEY] = 3
    old = type(now).__new__(type(now))
    old.__setstate__(state)
    assert old.starts_ == {"exposure": 0.95, "flat": 0.0}
    np.testing.assert_array_equal(old.decision_function(pcts), then.decision_scores_)
    assert pickle.loads(pickle.dumps(now)).starts_ == {"exposure": 0.97, "flat": 0.0}


def test_alignment_detector_flags_a_knocked_camera_and_not_a_person():
    """The camera cause: a knocked camera lines up better shifted; a person in front of the
    lens (the scene cause) does not move the view."""
    batch, _ = _shadowed_garden()
    knocked = np.arange(4 * 72 + 36, 4 * 72 + 40)
    person = np.arange(3 * 72 + 36, 3 * 72 + 40)
    images = batch.pixels.images
    for i in knocked:
        images[int(batch.frame_ids[i])] = _moved(images[int(batch.frame_ids[i])], 2, 1)
    for i in person:
        image = images[int(batch.frame_ids[i])].copy()
        image[20:50, 60:70] = (200, 60, 40)
        images[int(batch.frame_ids[i])] = image
    det = make_detector("alignment").fit(batch)
    day = batch.daylight == "day"
    normal = day & ~np.isin(np.arange(len(batch)), knocked)
    scores = det.decision_scores_
    assert scores[knocked].min() > np.nanmax(scores[normal])
    assert (scores[person] == 0).all()


def test_alignment_maps_are_each_frames_own_and_correlations_exact(monkeypatch):
    """The `alignment` detector maps and correlates a chunk in pieces that threads share. A
    frame's map is its own: four times `ndimage.sobel` of that frame alone, glare cut out,
    the same whichever frames it is read and mapped with (a new frame scored alone gets the
    map it gets among others); its correlations are those computed directly, shift by shift."""
    from scipy import ndimage

    from pipeline.detectors import camera

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(40, 72, 128, 3)).astype(np.uint8)
    images[3:6, 10:20, 30:50] = 255  # glare
    images[20:30] = images[20]  # still frames
    n = len(images)
    times = np.datetime64("2024-05-01T12:00") + np.timedelta64(10, "m") * np.arange(n)
    batch = FrameBatch(
        np.arange(n) + 1, np.zeros((n, 2), np.float32), times, times, pd.DataFrame(index=range(n))
    )
    batch.pixels = ArrayReader({i + 1: image for i, image in enumerate(images)})
    det = make_detector("alignment")
    det.size_ = (64, 36)
    monkeypatch.setattr(camera, "CHUNK", 16)
    pieces = list(det._chunks(batch, np.arange(n)))
    assert len(pieces) == 3
    got = np.concatenate([det._gradient_maps(grids) for _, grids in pieces])
    alone = np.concatenate(
        [det._gradient_maps(grids[[i]]) for _, grids in pieces for i in range(len(grids))]
    )
    np.testing.assert_array_equal(got, alone)
    luma = camera.luma(images)
    gradient = 4 * np.hypot(
        *(np.stack([ndimage.sobel(frame, axis=a) for frame in luma]) for a in (1, 0))
    )
    gradient[ndimage.binary_dilation(luma >= det.saturated, structure=np.ones((1, 5, 5)))] = 0
    want = np.log1p(gradient.reshape(n, 36, 2, 64, 2).mean(axis=(2, 4))).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    det.view_ = np.median(want, axis=0)
    s, m = det.max_shift, det.margin
    centre = det.view_[m:-m, m:-m] - det.view_[m:-m, m:-m].mean()  # float32, as the detector
    centre /= np.sqrt((centre**2).sum())
    h, w = centre.shape
    direct = np.empty((n, 2 * s + 1, 2 * s + 1))
    for dy, dx in np.ndindex(2 * s + 1, 2 * s + 1):
        top, left = m - s + dy, m - s + dx
        window = want[:, top : top + h, left : left + w].astype(np.float64)
        spread = window.var(axis=(1, 2)) * window[0].size
        direct[:, dy, dx] = (window * centre).sum(axis=(1, 2)) / np.sqrt(spread)
    np.testing.assert_allclose(det._correlations(want), direct, rtol=0, atol=1e-9)


def test_alignment_learns_the_view_from_a_sample_of_a_long_footage(batches):
    """Beyond `max_view_frames` frames the usual view is the median of a seeded sample (its
    memory bounded); every frame is still scored, and the knocked frames still stand out."""
    batch = batches["alignment"]
    whole = make_detector("alignment").fit(batch)
    sampled = make_detector("alignment").set_params(max_view_frames=100).fit(batch)
    scores = sampled.decision_scores_
    normal = np.setdiff1d(np.flatnonzero(batch.daylight == "day"), PLANTED)
    assert np.isfinite(scores).sum() == np.isfinite(whole.decision_scores_).sum()
    assert scores[PLANTED].min() > np.nanmax(scores[normal])
    np.testing.assert_array_equal(sampled.decision_function(batch), scores)


def test_background_scores_do_not_depend_on_when_the_next_blocks_references_load():
    """Frames are scored a week of days at a time while the next week's references load in
    another thread; each block is scored with the references held when it began, so two fits
    give the very same scores (before, a block's later pieces could see the next block's pool,
    and at 20k frames two runs differed by up to 0.14 on two thirds of the frames)."""
    batch, _ = _shadowed_garden(n_days=16, per_day=36)
    first = make_detector("background").fit(batch).decision_scores_
    second = make_detector("background").fit(batch).decision_scores_
    assert np.isfinite(first).sum() > 0.9 * len(batch)
    np.testing.assert_array_equal(first, second)


def test_consensus_counts_a_generalist_only_in_its_top_tenth():
    """`lof` ranks frames by any difference (weather and light too): below its 90th percentile
    its rank is no evidence; above, the rank within its top tenth counts as tail evidence."""
    pcts = {"lof": np.array([0.85, 0.95, 0.95]), "dark": np.array([0.5, 0.5, np.nan])}
    scores = consensus_scores(pcts, "family_tail", n_reference=1000)
    np.testing.assert_allclose(scores, [np.log(2), 2 * np.log(2), np.log(2)])
    # a specialist's ranks count from the bottom up
    specialist = consensus_scores({"dark": np.array([0.85])}, "tail", n_reference=1000)
    assert specialist[0] == pytest.approx(-np.log(0.15))


def test_same_time_compares_only_days_within_max_days(batches):
    """A frame's references are the same time of day on days at most `max_days` away (not its
    own day); with every day within the bound the scores equal the unbounded detector's."""
    batch = batches[None]
    raw = make_detector("same_time").set_params(max_days=1).fit(batch)._raw(batch)
    # brute force: mean of the 3 nearest frames within +-30 min of the time of day, 1 day away
    minutes = (batch.local_time - batch.local_time.astype("datetime64[D]")) / np.timedelta64(1, "m")
    days = batch.local_time.astype("datetime64[D]").astype(np.int64)
    dm = np.abs(minutes[:, None] - minutes[None, :])
    near = (np.minimum(dm, 1440 - dm) <= 30) & (np.abs(days[:, None] - days[None, :]) == 1)
    dist = np.linalg.norm(batch.z[:, None, :].astype(np.float64) - batch.z[None, :, :], axis=2)
    expected = np.sort(np.where(near, dist, np.inf), axis=1)[:, :3].mean(axis=1)
    np.testing.assert_allclose(raw, expected, rtol=1e-4)
    # days 2-4 made copies of day 0: its nearest match, yet two days away, so not a reference
    copied = replace(batch, z=batch.z.copy())
    first_day = days == days[0]
    for later in (2, 3, 4):
        copied.z[days - days[0] == later] = batch.z[first_day]
    np.testing.assert_allclose(
        make_detector("same_time").set_params(max_days=1).fit(copied)._raw(copied)[first_day],
        raw[first_day],
        rtol=1e-5,
    )
    unbounded = make_detector("same_time").set_params(max_days=None).fit(copied)._raw(copied)
    assert unbounded[first_day].max() < 0.02 * raw[first_day].min()  # float32 rounding
    # all five days within 30 of each other: the default bound changes nothing
    np.testing.assert_allclose(
        make_detector("same_time").fit(batch).decision_scores_,
        make_detector("same_time").set_params(max_days=None).fit(batch).decision_scores_,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="max_days"):
        make_detector("same_time").set_params(max_days=0).fit(batch)


def _shadowed_garden(
    n_days: int = 8, per_day: int = 72, planted=(), seed: int = 3, drift: float = 0.0
):
    """A lawn whose tree shadow sweeps across it with the sun (its edge moves from left to right
    through the day, `drift` columns further each day as the season turns; no shadow on
    overcast days), every 20 min for `n_days`; a small drab figure stands on the lawn in the
    `planted` frames."""
    rng = np.random.default_rng(seed)
    texture = rng.uniform(70, 190, size=(72, 128, 3))
    n = n_days * per_day
    times = np.datetime64("2024-06-01T00:00") + np.timedelta64(20, "m") * np.arange(n)
    hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(float)
    overcast = rng.random(n_days) < 0.3
    columns = np.arange(128)[None, :]
    images = {}
    for i, hour in enumerate(hours):
        sun = max(0.0, np.sin(np.pi * (hour - 5) / 14))
        image = texture * (0.1 + 0.9 * sun)
        if sun > 0 and not overcast[i // per_day]:
            edge = 8 + (hour - 5) / 14 * 112 + drift * (i // per_day)
            shade = np.where(columns < edge, 0.55, 1.0)
            image[36:] *= shade[:, :, None]
        image = image + rng.normal(0, 2, image.shape)
        if i in planted:
            y, x = rng.integers(40, 62), rng.integers(10, 110)
            image[y : y + 6, x : x + 3] = (90, 100, 75)
        images[i] = np.clip(image, 0, 255)
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(n),
            "taken_at": times,
            "taken_at_utc": pd.to_datetime(times).tz_localize("UTC"),
            "daylight": np.where((hours >= 6) & (hours < 20), "day", "night"),
            "mean_luma": 100.0,
            "contrast": 40.0,
            "sharpness": 300.0,
            "colorfulness": 30.0,
        }
    )
    return FrameBatch.from_frames(
        np.arange(n), np.zeros((n, 2), np.float32), frames, pixels=ArrayReader(images)
    ), hours


SHADOW_PLANTED = [3 * 72 + 30, 5 * 72 + 40, 6 * 72 + 25]  # 10:00, 13:20, 08:20


def _garden_detector():
    """`background` on a grid as wide as the shadowed garden (128 px): these tests are about
    the shadows' parts, and its 3-pixel figure is below a 64-pixel grid's resolution."""
    return make_detector("background").set_params(width=128)


def test_background_refits_while_a_few_frames_own_a_component(tmp_path):
    """Two frames with a figure at the same time of day, among 144 daytime frames whose light
    changes by the hour: the first fit's components belong to other frames, so one refit
    without those leaves the two in, and its components take up their figures (each pixel
    explained: a z-score under 1, the least of any frame). Refit while a few frames own a
    component, the figures stay out and are the largest residuals of their frames."""
    import store
    from pipeline.detectors.background.eigen import BackgroundModel
    from pipeline.detectors.background.grids import log_rgb
    from pipeline.pixels import ThumbnailReader
    from store import analysis as sa
    from tests.pipeline.test_analyze import synthetic_store

    db = tmp_path / "store.duckdb"
    data = synthetic_store(db)  # thumbnails 64 x 36; figures 4 x 10 px
    with store.connect(db, read_only=True) as con:
        frames = sa.load_frames(con)
    day = frames[frames["daylight"] == "day"]["frame_id"].to_numpy(np.int64)
    reader = ThumbnailReader(db, read_only=True)
    (pos, grids), *rest = reader.grids(day, (64, 36))
    assert not rest and len(pos) == len(day)
    figures = np.flatnonzero(np.isin(day, data["anomalies"]))
    twice = [i for i in figures if int(day[i]) in (112, 184)]  # both at 13:20
    assert len(twice) == 2

    def top_z(max_refits):
        model = BackgroundModel(12, 0.9, 0).fit(log_rgb(grids), (64, 36), max_refits=max_refits)
        return model.pixel_z(model.project(log_rgb(grids))[1]).max(axis=1), model.n_fit_

    once, kept_once = top_z(1)
    until_none, kept = top_z(3)
    assert once[twice].max() < 1 and once[twice].max() < np.median(once)
    assert until_none[twice].min() > 10 * np.median(until_none)
    assert kept < kept_once


def test_background_explains_a_moving_shadow_by_the_same_time_on_other_days():
    """A shadow edge that sweeps across the lawn is not in a few principal components of the
    day, but it stands where it stood at that time on the other sunny days: the same-time part
    ranks every figure above every shadow, the scene part (measured against each pixel's
    residual over the whole day) does not, and together they rank the weakest figure above
    more normal frames than the scene part alone."""
    planted = SHADOW_PLANTED
    batch, _ = _shadowed_garden(planted=planted)
    normal = (batch.daylight == "day") & ~np.isin(np.arange(len(batch)), planted)
    both = _garden_detector().set_params(time_of_day_noise=False).fit(batch)
    scene_part, same_time_part, _ = both._parts(batch).T
    assert same_time_part[planted].min() > same_time_part[normal].max()
    assert scene_part[planted].min() < scene_part[normal].max()
    scene = _garden_detector().set_params(time_of_day_noise=False, same_time_neighbors=0).fit(batch)

    def above_weakest(scores):
        return int((scores[normal] >= scores[planted].min()).sum())

    assert above_weakest(both.decision_scores_) < above_weakest(scene.decision_scores_)


def test_background_measures_each_pixel_against_its_time_of_day():
    """As the season turns, the shadow edge stands a little further each day at the same time,
    so no other day explains it; but it always falls in the same band of the lawn at that hour.
    Measured against each pixel's residual at the frame's time of day (its MAD there), the scene
    part ranks every figure above every normal daytime frame; against the whole day, it does
    not. The detector ranks the weakest figure below fewer normal frames with it than without,
    with either spread. (With the default spread, 0.9, the band's pixels get the edge's whole
    range, so the weakest figure, which stands in that band, counts less than with the MAD:
    below 14 normal frames instead of 3, and 67 without the time of day. That is the price of
    taking a pixel's occasional swings as its range.)"""
    planted = SHADOW_PLANTED
    batch, _ = _shadowed_garden(planted=planted, drift=2.0)
    normal = (batch.daylight == "day") & ~np.isin(np.arange(len(batch)), planted)
    by_time = _garden_detector().fit(batch)
    by_time_mad = _garden_detector().set_params(noise_spread=0.5).fit(batch)
    whole_day = _garden_detector().set_params(time_of_day_noise=False).fit(batch)
    scene_by_time_mad = by_time_mad._parts(batch)[:, 0]
    scene_whole_day = whole_day._parts(batch)[:, 0]
    assert scene_by_time_mad[planted].min() > scene_by_time_mad[normal].max()
    assert scene_whole_day[planted].min() < scene_whole_day[normal].max()

    def above_weakest(scores):
        return int((scores[normal] >= scores[planted].min()).sum())

    without = above_weakest(whole_day.decision_scores_)
    assert above_weakest(by_time_mad.decision_scores_) < without
    assert above_weakest(by_time.decision_scores_) < without


def test_stand_out_measures_each_pixel_against_its_surroundings():
    """On a frosted morning a broad patch of the lawn is off all over, and its peak hides a
    drop on the lens elsewhere in the frame: against the frame alone, the drop's frame scores
    no higher than frosted frames without one. Measured against their surroundings, the patch
    sinks and the drop stands out of every frosted frame; a drop on a calm frame scores as it
    did."""
    width, height = 128, 72
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    patch = 30 * np.exp(-((rows - 45) ** 2 + (cols - 40) ** 2) / (2 * 14**2))

    def frames(n, frosted, drop):
        z = np.abs(rng.normal(0, 1, (n, height, width))) + (patch if frosted else 0)
        if drop:
            z[:, 50:53, 90:93] += 12
        return z.reshape(n, -1).astype(np.float32)

    def scores(z, surround):
        return stand_out(z.copy(), 9, (width, height), surround)

    frosted, on_frost = frames(50, True, False), frames(5, True, True)
    calm, on_calm = frames(50, False, False), frames(5, False, True)
    assert scores(on_frost, 0).min() < scores(frosted, 0).max()
    assert scores(on_frost, 21).min() > 1.5 * scores(frosted, 21).max()
    np.testing.assert_allclose(scores(on_calm, 21), scores(on_calm, 0), rtol=0.1)
    assert scores(on_calm, 21).min() > 3 * scores(calm, 21).max()
    # less_surroundings works in place: a flat map becomes zero, a lone spot keeps most
    flat = np.full((1, height * width), 7.0, np.float32)
    less_surroundings(flat, (width, height), 21)
    np.testing.assert_allclose(flat, 0, atol=1e-5)
    spot = np.zeros((1, height * width), np.float32)
    spot[0, 40 * width + 60] = 1.0
    less_surroundings(spot, (width, height), 21)
    assert spot[0, 40 * width + 60] == pytest.approx(1 - 1 / 21**2)


def test_time_of_day_noise_rescores_a_pixel_against_its_hour():
    """A pixel that is noisy every morning (a shadow edge) is ordinary at 9:00 and stands out at
    noon; frames of an unknown time, or of an hour with too few fit frames, keep their
    z-scores."""
    from pipeline.detectors.background.eigen import TimeOfDayNoise

    rng = np.random.default_rng(0)
    minutes = np.concatenate(
        [rng.uniform(8 * 60, 10 * 60, 200), rng.uniform(11 * 60, 13 * 60, 200)]
    )
    z = rng.normal(0, 1, (400, 50)).astype(np.float32)
    morning = minutes < 600
    z[morning, :5] += rng.uniform(0, 12, (morning.sum(), 5))  # the edge's band, mornings only
    noise = TimeOfDayNoise().fit(z.copy(), minutes)
    edge_at_nine = np.zeros((1, 50), np.float32)
    edge_at_nine[0, :5] = 8.0
    at_nine, at_noon, untimed, at_night = (edge_at_nine.copy() for _ in range(4))
    noise.standardise(at_nine, np.array([9 * 60.0]))
    noise.standardise(at_noon, np.array([12 * 60.0]))
    noise.standardise(untimed, np.array([np.nan]))
    noise.standardise(at_night, np.array([2 * 60.0]))  # no fit frames then
    assert at_nine[0, :5].max() < 2 < 6 < at_noon[0, :5].min()
    np.testing.assert_array_equal(untimed, edge_at_nine)
    np.testing.assert_array_equal(at_night, edge_at_nine)


def test_time_of_day_noise_takes_a_pixels_occasional_swings_as_its_range():
    """A pixel that is calm on most days at that hour and far off on some (the sky where clouds
    break, a shadow edge on sunny days only) has the range of its swings with the default
    spread (0.9), so another such swing is ordinary; with the MAD (0.5) its calm majority sets
    the range and the swing stands out. A pixel with even noise gets the same range either way,
    and a change far beyond what any pixel does stands out with both."""
    from pipeline.detectors.background.eigen import TimeOfDayNoise

    rng = np.random.default_rng(1)
    minutes = rng.uniform(9 * 60, 10 * 60, 300)
    z = rng.normal(0, 1, (300, 40)).astype(np.float32)
    swings = rng.random(300) < 0.2  # one frame in five: clouds break over pixels 0-9
    z[swings, :10] += rng.uniform(6, 14, (swings.sum(), 10))
    tail = TimeOfDayNoise().fit(z.copy(), minutes)
    mad = TimeOfDayNoise(spread=0.5).fit(z.copy(), minutes)
    assert tail.spread == 0.9
    a_swing = np.zeros((1, 40), np.float32)
    a_swing[0, :10] = 10.0
    with_tail, with_mad = a_swing.copy(), a_swing.copy()
    tail.standardise(with_tail, np.array([570.0]))
    mad.standardise(with_mad, np.array([570.0]))
    assert with_tail[0, :10].max() < 2 < 5 < with_mad[0, :10].min()
    even_tail = tail.scale_[tail.row_[28], 10:].astype(np.float32)
    even_mad = mad.scale_[mad.row_[28], 10:].astype(np.float32)
    np.testing.assert_allclose(np.median(even_tail), np.median(even_mad), rtol=0.1)
    an_object = np.zeros((1, 40), np.float32)
    an_object[0, :] = 60.0
    tail.standardise(an_object, np.array([570.0]))
    assert an_object.min() > 6
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="spread must be a quantile"):
            TimeOfDayNoise(spread=bad).fit(z.copy(), minutes)


def test_background_refuses_a_noise_spread_that_is_not_a_quantile(batches):
    with pytest.raises(ValueError, match="noise_spread must be a quantile"):
        make_detector("background").set_params(noise_spread=1.0).fit(batches[None])


def test_background_scores_do_not_depend_on_the_order_of_the_frames(batches):
    """Frames are scored in time order whatever order the batch is in."""
    batch = batches[None]
    det = make_detector("background").fit(batch)
    perm = np.random.default_rng(5).permutation(len(batch))
    shuffled = FrameBatch(
        batch.frame_ids[perm],
        batch.z[perm],
        batch.order_time[perm],
        batch.local_time[perm],
        batch.stats.iloc[perm].reset_index(drop=True),
        daylight=batch.daylight[perm],
        pixels=batch.pixels,
    )
    np.testing.assert_allclose(
        det.decision_function(shuffled), det.decision_scores_[perm], rtol=1e-6
    )


def test_background_scores_frames_without_a_time_by_the_scene_part(batches):
    """No camera time, no same time of day: such frames count their scene part twice."""
    batch = batches[None]
    det = make_detector("background").fit(batch)
    untimed = replace(batch, local_time=np.full(len(batch), np.datetime64("NaT"), "M8[ns]"))
    scene_part, same_time_part, gains = det._parts(untimed).T
    assert np.isfinite(scene_part).all() and np.isnan(same_time_part).all()
    assert np.isnan(gains).all()  # the camera cause is the `alignment` detector's
    p = np.searchsorted(det.part_reference_[0], scene_part, side="right") / (
        len(det.part_reference_[0]) + 1
    )
    np.testing.assert_allclose(det.decision_function(untimed), -2 * np.log1p(-p))


def _textured_scene(seed: int = 5) -> np.ndarray:
    """A 72 x 128 scene with structure: blocks of flat colour (a fence, a shed, beds)."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(40, 220, size=(9, 16, 3))
    return np.kron(blocks, np.ones((8, 8, 1)))


def _moved(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The view of a camera knocked by (dx, dy) pixels (edges repeated where it sees new)."""
    padded = np.pad(image, ((8, 8), (8, 8), (0, 0)), mode="edge")
    return padded[8 - dy : 8 - dy + image.shape[0], 8 - dx : 8 - dx + image.shape[1]]


def test_alignment_sees_a_moved_camera_and_not_light_objects_or_noise():
    from pipeline.detectors.background.alignment import Alignment
    from pipeline.detectors.background.grids import edge_map

    rng = np.random.default_rng(0)
    scene = _textured_scene()
    normal = np.stack(
        [
            np.clip(scene * rng.uniform(0.3, 1.2) + rng.normal(0, 4, scene.shape), 0, 255)
            for _ in range(60)
        ]
    ).astype(np.uint8)
    alignment = Alignment(edge_map(normal))
    assert (alignment.gain(edge_map(normal)) == 0).all()
    person = scene.copy()
    person[30:50, 60:66] = (90, 100, 75)  # an object in front: the scene still lines up
    dusk = scene * 0.2  # a change of light: edges in log grey stay where they are
    moved = [_moved(scene, 2, 0), _moved(scene, -1, 2), _moved(scene, 5, -3)]
    black = np.full_like(scene, 3.0)
    gains = alignment.gain(edge_map(np.stack([person, dusk, *moved, black]).astype(np.uint8)))
    assert gains[0] == 0 and gains[1] == 0
    assert (gains[2:5] > 3).all()
    assert np.isnan(gains[5])  # nothing to line up


def test_background_flags_a_knocked_camera_by_its_alignment():
    """A knocked camera that stays knocked for a few frames: every edge is a little off, all
    over the frame, so the local parts barely see it; the alignment part ranks those frames
    above every normal one, and frames that line up get nothing from it."""
    batch, _ = _shadowed_garden()
    knocked = np.arange(4 * 72 + 36, 4 * 72 + 40)  # noon to 13:00 on the fifth day
    images = batch.pixels.images
    for i in knocked:
        images[int(batch.frame_ids[i])] = _moved(images[int(batch.frame_ids[i])], 2, 1)
    det = make_detector("background").set_params(alignment_part=True).fit(batch)  # as runs
    parts = det._parts(batch)  # fitted before `alignment` did
    day = batch.daylight == "day"
    normal = day & ~np.isin(np.arange(len(batch)), knocked)
    assert (parts[knocked, 2] > 0).all() and (parts[normal, 2] == 0).mean() > 0.95
    assert det.decision_scores_[knocked].min() > det.decision_scores_[normal].max()
    keys = det._class_keys(batch)
    evidence = det._alignment_evidence(parts[:, 2], keys)
    assert (evidence[normal & (parts[:, 2] == 0)] == 0).all()
    # where no class's fit frames line up, the alignment part says nothing: they rank lower
    det.lines_up_ = {}
    without = det.decision_function(batch)
    assert without[knocked].min() < det.decision_scores_[knocked].min()


@pytest.mark.parametrize("key", ["lof", "regions"])
def test_a_density_detector_says_nothing_of_a_dozen_frames(key, batches):
    """Fitted on fewer than 30 frames every frame's neighbourhood is most of the archive: `lof`
    and `regions` score nothing (NaN, with the reason) instead of ranking a cluster of junk as
    the densest; from 30 frames they rank as before, and a detector pickled before the floor
    (format 1) still scores its fit."""
    batch = batches[None]
    few = batch.take(np.arange(20))
    few.nn_dist, few.nn_idx = None, None
    NeighborIndex().fit(few.z, few.frame_ids).attach(few, 19)
    det = make_detector(key).set_params(n_neighbors=19).fit(few)
    assert np.isnan(det.decision_scores_).all() and np.isnan(det.decision_function(few)).all()
    assert "at least 30 frames" in det.why_unscorable()
    full = make_detector(key).fit(batch)
    assert np.isfinite(full.decision_scores_).all()
    assert make_detector(key, contamination=0.05).get_params()["min_frames"] == 30
    state = {k: v for k, v in full.__getstate__().items() if k != "min_frames"}
    state[FORMAT_KEY] = 1
    old = type(full).__new__(type(full))
    old.__setstate__(state)
    assert old.min_frames == 0
    np.testing.assert_array_equal(old.decision_function(batch), full.decision_scores_)


def _unpickled_format_0(obj, lacking=(), models_lacking=(), noise_lacking=()):
    """What unpickling `obj` saved before formats were recorded (format 0) gives, when that
    pickle lacked the attributes `lacking` (and its background models and their time-of-day
    noise lacked `models_lacking` and `noise_lacking`): pickle hands each object's saved
    state, without a format, to its class's `__setstate__`."""

    def load(thing, drop):
        state = {k: v for k, v in thing.__dict__.items() if k not in drop}
        new = type(thing).__new__(type(thing))
        new.__setstate__(state)
        return new

    if models_lacking or noise_lacking:
        obj = copy.deepcopy(obj)
        for name, model in obj.models_.items():
            if model.time_noise_ is not None:
                model.time_noise_ = load(model.time_noise_, noise_lacking)
            obj.models_[name] = load(model, models_lacking)
    return load(obj, lacking)


@pytest.mark.parametrize("key", list(DETECTORS))
def test_a_pickled_detector_scores_as_it_did(key, batches):
    batch = batches[key if key in OWN_BATCH else None]
    det = make_detector(key).fit(batch)
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.decision_function(batch), det.decision_scores_)


def test_a_fitted_state_of_a_newer_format_is_refused(batches):
    det = make_detector("dark").fit(batches["dark"])
    state = {**det.__getstate__(), FORMAT_KEY: det.format_version + 1}
    with pytest.raises(FittedFormatError, match="newer version of the pipeline"):
        type(det).__new__(type(det)).__setstate__(state)


def test_background_fitted_before_time_of_day_noise_is_upgraded(batches):
    """A run saved before the scene part measured pixels per time of day lacks that setting,
    the spread and surround settings that came after it, and its models' `time_noise_`; it
    is upgraded to the settings that reproduce its fit, and scores as it did."""
    batch = batches[None]
    det = (
        make_detector("background")
        .set_params(time_of_day_noise=False, surround=0.0, noise_spread=0.5)
        .fit(batch)
    )
    old = _unpickled_format_0(
        det,
        lacking={"time_of_day_noise", "noise_spread", "surround"},
        models_lacking={"time_noise_"},
    )
    assert old.get_params() == det.get_params()
    assert all(m.time_noise_ is None for m in old.models_.values())
    np.testing.assert_array_equal(old.decision_function(batch), det.decision_scores_)


def test_background_fitted_before_surroundings_is_upgraded(batches):
    """A run saved before pixels were measured against their surroundings lacks `surround`
    and the later `noise_spread` (its time-of-day noise measured the MAD: spread 0.5); it scores
    as one fitted with `surround=0` and `noise_spread=0.5`, which differs from the default."""
    batch = batches[None]
    det = make_detector("background").set_params(surround=0.0, noise_spread=0.5).fit(batch)
    assert not np.allclose(
        make_detector("background").fit(batch).decision_scores_, det.decision_scores_
    )
    old = _unpickled_format_0(det, lacking={"surround", "noise_spread"}, noise_lacking={"spread"})
    assert old.get_params() == det.get_params()
    assert all(m.time_noise_.spread == 0.5 for m in old.models_.values())
    np.testing.assert_array_equal(old.decision_function(batch), det.decision_scores_)


def test_background_fitted_before_the_same_time_or_alignment_part_is_refused(batches):
    """Runs saved before the same-time part (no references) or the alignment part (no edge
    maps, no `lines_up_`) scored without them; this version cannot, and says so."""
    det = make_detector("background").fit(batches[None])
    with pytest.raises(FittedFormatError, match="before the same-time and alignment parts"):
        _unpickled_format_0(det, lacking={"references_", "part_reference_", "lines_up_"})
    with pytest.raises(FittedFormatError, match="before the alignment part"):
        _unpickled_format_0(
            det, lacking={"lines_up_", "min_lines_up"}, models_lacking={"alignment_"}
        )


def test_same_time_fitted_before_max_days_is_upgraded(batches):
    """A same_time fit saved before the bound on days compared every other day."""
    batch = batches[None]
    det = make_detector("same_time").set_params(max_days=None).fit(batch)
    old = _unpickled_format_0(det, lacking={"max_days"})
    assert old.max_days is None
    np.testing.assert_array_equal(old.decision_function(batch), det.decision_scores_)


def test_consensus_fitted_before_n_reference_is_upgraded():
    """A consensus saved before it knew how many frames it ranked used a floor of 1e-4."""
    pcts = {"lof": np.linspace(0.1, 1, 10)}
    cons = Consensus(["lof"], "tail", 0.05).fit(pcts)
    old = _unpickled_format_0(cons, lacking={"n_reference_"})
    assert old.decision_function(pcts)[-1] == pytest.approx(np.log(10_000))


@pytest.mark.parametrize("shape", [(144, 256), (200, 300), (72, 128)])
def test_thumbnail_decode_gives_pillow_draft_pixels_and_none_for_damage(shape):
    """Thumbnails decode (libjpeg-turbo through simplejpeg) to the grid Pillow's draft mode
    gives, whatever their size; a truncated or garbage thumbnail gives None, not an error."""
    import io

    from PIL import Image

    from pipeline.pixels import decode_thumbnail, grid_size, resize_rgb

    rng = np.random.default_rng(1)
    height, width = shape
    smooth = np.kron(rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)), np.ones((8, 8, 1)))[
        :height, :width
    ]
    buffer = io.BytesIO()
    Image.fromarray(smooth.astype(np.uint8)).save(buffer, "JPEG", quality=80)
    jpeg = buffer.getvalue()
    size = grid_size(width / height, 128)
    pillow = Image.open(io.BytesIO(jpeg))
    pillow.draft("RGB", size)
    expected = resize_rgb(pillow, size)
    np.testing.assert_array_equal(decode_thumbnail(jpeg, size), expected)
    assert decode_thumbnail(jpeg[: len(jpeg) // 2], size) is None
    assert decode_thumbnail(b"not a jpeg at all", size) is None


def test_day_groups_keep_days_whole_and_every_frame_once():
    local = np.array(
        [
            "2024-04-01T10:00",
            "NaT",
            "2024-04-03T09:00",
            "2024-04-01T11:00",
            "2024-04-02T08:00",
            "2024-04-03T10:00",
            "2024-04-03T11:00",
        ],
        dtype="datetime64[ns]",
    )
    groups = batch_module.day_groups(
        local, size=2
    )  # day 2 has one frame: its group takes day 3 whole
    assert [g.tolist() for g in groups] == [[0, 3], [2, 4, 5, 6], [1]]
    everything = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(everything, np.arange(len(local)))
    assert [g.tolist() for g in batch_module.day_groups(local, size=100)] == [
        [0, 2, 3, 4, 5, 6],
        [1],
    ]


def test_the_nearest_references_do_not_depend_on_what_else_the_pool_holds():
    """Each row's k smallest distances, ties broken by pool order, the usable ones in pool
    order and the unusable (infinite) last: a pool with more days around gives the same
    references in the same order, so a cluster's task of a few days scores as one big run."""
    from pipeline.detectors.background.references import _nearest

    rng = np.random.default_rng(1)
    for _ in range(300):
        m, n = rng.integers(1, 20), rng.integers(1, 40)
        k = int(min(rng.integers(1, 8), n))
        d2 = rng.integers(0, 5, (m, n)).astype(float)  # many ties
        d2[rng.random((m, n)) < 0.3] = np.inf
        got = _nearest(d2, k)
        for i in range(m):
            first = np.lexsort((np.arange(n), d2[i]))[:k]
            usable = np.isfinite(d2[i][first])
            np.testing.assert_array_equal(
                got[i], np.r_[np.sort(first[usable]), np.sort(first[~usable])]
            )
    # more days in the pool before and after (out of reach: infinite distances): the same
    # references, in the same order, the unusable ones last
    for d2, k in (([3.0, 1.0, 1.0, np.inf, 1.0, 2.0], 3), ([np.inf, 2.0, np.inf], 3)):
        d2 = np.array([d2])
        wider = np.c_[np.full((1, 4), np.inf), d2, np.full((1, 3), np.inf)]
        alone, more = _nearest(d2, k)[0], _nearest(wider, k)[0] - 4
        usable = np.isfinite(d2[0][alone])
        np.testing.assert_array_equal(more[: usable.sum()], alone[usable])
        assert usable.sum() == (np.isfinite(d2).sum() if k > np.isfinite(d2).sum() else k)


@pytest.mark.parametrize("blas_threads", [1, 2])
def test_each_row_multiplies_to_the_same_bits_in_any_batch(blas_threads):
    """OpenBLAS sums a row's products in an order that depends on how many rows come with it
    (on an AMD EPYC for most batch sizes); `rows_times` gives each row the same bits alone,
    in any batch and at any place in it, for a given number of BLAS threads; the same-time
    references' distances do not depend on what else the pool holds."""
    from threadpoolctl import threadpool_limits

    from pipeline.detectors.background.eigen import rows_times
    from pipeline.detectors.background.references import _distances

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((300, 27_648)).astype(np.float32)
    basis = rng.standard_normal((12, 27_648)).astype(np.float32)
    with threadpool_limits(blas_threads, user_api="blas"):
        coef = rows_times(rows, basis.T)
        rebuilt = rows_times(coef, basis)
        every = np.ones((len(coef), 257), bool)
        distances = _distances(coef, coef[:257], every)  # a pool of references
        for m in (1, 2, 3, 4, 5, 8, 13, 64, 299):
            some = rng.permutation(len(rows))[:m]
            np.testing.assert_array_equal(rows_times(rows[some], basis.T), coef[some])
            np.testing.assert_array_equal(rows_times(coef[some], basis), rebuilt[some])
            # a pool one block ahead holds more references, a cluster's task fewer
            np.testing.assert_array_equal(
                _distances(coef[some], coef[:100], every[some, :100]), distances[some, :100]
            )
    c, p = coef.astype(np.float64), coef[:257].astype(np.float64)
    expanded = (c**2).sum(axis=1)[:, None] - 2 * c @ p.T + (p**2).sum(axis=1)[None, :]
    np.testing.assert_allclose(distances, expanded, rtol=1e-5, atol=1e-3 * np.median(expanded))


def test_a_part_of_a_batch_keeps_every_per_frame_column(batches):
    """`take` (score-new's groups) and `light` (a cluster's task) keep each frame's own facts,
    the sun's position included; `light` leaves out the vectors, neighbours and reader."""
    batch = batches[None]
    batch = replace(batch, sun=np.column_stack([np.arange(len(batch)), -np.arange(len(batch))]))
    rows = np.array([5, 1, 7])
    for part in (batch.take(rows), batch.light(rows)):
        np.testing.assert_array_equal(part.frame_ids, batch.frame_ids[rows])
        np.testing.assert_array_equal(part.local_time, batch.local_time[rows])
        np.testing.assert_array_equal(part.sun, batch.sun[rows])
        assert part.spread is None
    light = batch.light(rows)
    assert light.z.shape == (3, 0) and light.nn_idx is None and light.pixels is None


def test_a_cause_that_ranks_daylight_frames_against_the_quality_cause_is_at_odds():
    """`cause_agreement`: Spearman of each cause with the quality cause over daylight frames
    only (at night every cause follows the dark); a cause at or under `AT_ODDS` that the user
    counts gets the advice to leave it out, with the causes left to count."""
    from pipeline.detectors import at_odds_advice, cause_agreement, causes_at_odds
    from pipeline.detectors.consensus import AT_ODDS

    rng = np.random.default_rng(0)
    n = 600
    day = np.arange(n) < 400
    quality = rng.exponential(size=n)
    scene = -quality + rng.normal(scale=0.5, size=n)  # a sea-and-sky camera's clear days
    scene[~day] = 5 * quality[~day]  # at night it follows the dark
    rarity = quality + rng.normal(scale=2.0, size=n)
    camera = np.zeros(n)  # sees nothing: no correlation to speak of
    by_cause = {"quality": quality, "camera": camera, "scene": scene, "rarity": rarity}
    agreement = cause_agreement(by_cause, day)
    assert set(agreement) == {"scene", "rarity"}
    assert agreement["scene"] < -0.8 and 0.1 < agreement["rarity"] < 0.8
    assert AT_ODDS < 0 and cause_agreement(by_cause, np.arange(n) < 99) == {}
    everything = ("quality", "camera", "scene", "rarity")
    assert causes_at_odds(agreement, everything) == {"scene": agreement["scene"]}
    assert causes_at_odds(agreement, ("quality", "camera")) == {}
    (advice,) = at_odds_advice(causes_at_odds(agreement, everything), everything)
    assert "scene cause" in advice and advice.endswith("--junk-causes quality,camera,rarity")
    assert "Gallery ranked by cause:scene" in advice
    assert at_odds_advice({}, everything) == []


def test_a_scene_cause_that_says_what_kind_of_day_it_is_is_left_out_unless_named():
    """`day_share` is the ICC(1) of a cause's daylight ranks by day: near 0 where each frame
    stands alone (a fox, a van), high where the day decides (a sea-and-sky camera's clear
    days). With the junk causes unset (`default_causes`) the scene cause is left out from
    `DAY_SHARE_GATE`, never the last cause; and a fitted consensus counts other causes of the
    same fit (`Consensus.count`)."""
    from pipeline.detectors.consensus import (
        DAY_SHARE_GATE,
        MIN_DAY_SHARE_DAYS,
        Consensus,
        day_gate_note,
        day_gated,
        day_share,
        default_causes,
        sum_causes,
    )

    rng = np.random.default_rng(1)
    days = np.repeat(np.arange(40), 12)
    light = np.ones(len(days), bool)
    alone = rng.normal(size=len(days))  # frames of a day no more alike than others
    by_day = rng.normal(size=40)[days] + 0.5 * rng.normal(size=len(days))  # the day decides
    assert abs(day_share(alone, light, days)) < 0.05
    assert day_share(by_day, light, days) > 0.6
    # the same day effect, once per frame, does not depend on how many frames a day has
    uneven = np.repeat(np.arange(40), np.where(np.arange(40) % 2, 4, 20))
    assert abs(day_share(rng.normal(size=len(uneven)), np.ones(len(uneven), bool), uneven)) < 0.06
    # night frames, days of under three daylight frames and too few days say nothing
    dark = light.copy()
    dark[days >= MIN_DAY_SHARE_DAYS - 1] = False
    assert day_share(by_day, dark, days) is None
    thin = light & (np.arange(len(days)) % 12 < 2)  # two daylight frames a day
    assert day_share(by_day, thin, days) is None

    by_cause = {"quality": alone, "camera": alone * 0, "scene": by_day, "rarity": alone}
    shares = day_gated(by_cause, light, days)
    assert list(shares) == ["scene"] and shares["scene"] >= DAY_SHARE_GATE
    assert default_causes(shares, by_cause) == ["quality", "camera", "rarity"]
    assert default_causes({"scene": 0.1}, by_cause) == list(by_cause)
    assert default_causes({"scene": None}, by_cause) == list(by_cause)
    assert default_causes(shares, {"scene": by_day}) == ["scene"]  # never none at all
    (note,) = day_gate_note(shares, ["quality", "camera", "rarity"])
    assert note.startswith("the scene cause is left out of the consensus")
    assert note.endswith("--junk-causes quality,camera,rarity,scene")
    assert day_gate_note(shares, list(by_cause)) == []

    pcts = {"soft": rng.random(200), "lof": rng.random(200), "background": rng.random(200)}
    fitted = Consensus(list(pcts)).fit(pcts)
    assert fitted.junk_causes is None
    fitted.count(["quality", "rarity"])
    by_fit = {c: s.decision_scores_ for c, s in fitted.causes_.items()}
    np.testing.assert_allclose(fitted.decision_scores_, sum_causes(by_fit, ["quality", "rarity"]))
    assert fitted.junk_causes == ["quality", "rarity"]
    new_causes, new = fitted.score_causes(pcts)  # new frames: the same causes counted
    np.testing.assert_allclose(new, new_causes["quality"] + new_causes["rarity"])
