"""`learned`: the consensus re-weighed by the user's reviews (pipeline/detectors/learned.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detectors.learned import MIDDLE_RANK, Learned, auc_standard_error


def _ranks(scores: np.ndarray) -> np.ndarray:
    return (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 1) / len(scores)


def _camera(seed: int = 0, n: int = 600):
    """Percentile ranks of three detectors over `n` frames: `people` ranks the 30 frames with
    a person in front highest, `water` the 30 with water on the lens, `noise` sees nothing;
    the consensus ranks both kinds alike (the mean of `people` and `water`). Returns (ranks,
    consensus ranks, positions of the people frames, of the water frames)."""
    rng = np.random.default_rng(seed)
    people, water = np.arange(0, 30), np.arange(30, 60)
    raw = {key: rng.normal(size=n) for key in ("people", "water", "noise")}
    raw["people"][people] += 4
    raw["water"][water] += 4
    pcts = {key: _ranks(values) for key, values in raw.items()}
    consensus = _ranks(pcts["people"] + pcts["water"])
    return pcts, consensus, people, water


def _water_above_people(scores, water, people) -> float:
    """ROC-AUC of the water frames against the people frames."""
    from sklearn.metrics import roc_auc_score

    both = np.concatenate([water, people])
    return roc_auc_score(np.isin(both, water), scores[both])


def test_a_user_who_keeps_the_people_gets_them_ranked_below_the_water():
    pcts, consensus, people, water = _camera()
    # reviewed: 10 frames of water (junk), 10 of people and 20 ordinary frames (keep)
    reviewed = np.concatenate([water[:10], people[:10], np.arange(100, 120)])
    junk = np.isin(reviewed, water)
    learned = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk)
    rest_people, rest_water = people[10:], water[10:]
    assert learned.weight_ > 0
    assert learned.cross_validated_["roc_auc"] > learned.cross_validated_["roc_auc_consensus"]
    # the frames not reviewed: water above people, where the consensus ranked them alike
    assert _water_above_people(learned.decision_scores_, rest_water, rest_people) > 0.9
    assert 0.3 < _water_above_people(consensus, rest_water, rest_people) < 0.7
    assert learned.weights_["water"] > 0 > learned.weights_["people"]
    record = learned.record()
    assert (record["n_junk"], record["n_keep"]) == (10, 30)
    assert record["model_weight"] == learned.weight_
    assert set(record["weights"]) == {"people", "water", "noise"}


def test_reviews_that_agree_with_the_consensus_leave_it_as_it_is():
    pcts, consensus, people, water = _camera(seed=1)
    reviewed = np.concatenate([water[:8], people[:8], np.arange(100, 130)])
    junk = np.isin(reviewed, np.concatenate([water, people]))  # both kinds are junk to them
    learned = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk)
    assert learned.weight_ == 0
    np.testing.assert_allclose(learned.decision_scores_, consensus)


def test_new_frames_are_scored_as_the_fit_was():
    pcts, consensus, people, water = _camera(seed=2)
    reviewed = np.concatenate([water[:10], people[:10], np.arange(100, 120)])
    learned = Learned(list(pcts)).fit(pcts, consensus, reviewed, np.isin(reviewed, water))
    np.testing.assert_allclose(learned.score(pcts, consensus), learned.decision_scores_)
    fit_pct = learned.percentile(learned.decision_scores_)
    assert fit_pct[water[10:]].mean() > 0.9


def test_a_detector_without_a_score_counts_as_its_middle_rank():
    pcts, consensus, people, water = _camera(seed=3)
    reviewed = np.concatenate([water[:10], people[:10], np.arange(100, 120)])
    learned = Learned(list(pcts)).fit(pcts, consensus, reviewed, np.isin(reviewed, water))
    one = {key: values[:1].copy() for key, values in pcts.items()}
    middle = dict(one, water=np.array([MIDDLE_RANK]))
    unscored = dict(one, water=np.array([np.nan]))
    missing = {k: v for k, v in one.items() if k != "water"}
    expected = learned.score(middle, consensus[:1])
    np.testing.assert_allclose(learned.score(unscored, consensus[:1]), expected)
    np.testing.assert_allclose(learned.score(missing, consensus[:1]), expected)


def test_it_needs_two_reviews_of_each_verdict():
    pcts, consensus, _, water = _camera()
    reviewed = np.concatenate([water[:1], np.arange(100, 120)])
    with pytest.raises(ValueError, match="two reviews of each verdict"):
        Learned(list(pcts)).fit(pcts, consensus, reviewed, np.isin(reviewed, water))


def test_the_standard_error_of_an_auc():
    # at 0.5 it is the Mann-Whitney statistic's spread under no difference:
    # sqrt((m + n + 1) / (12 m n))
    for m, n in ((10, 10), (12, 150), (80, 500)):
        assert auc_standard_error(0.5, m, n) == pytest.approx(np.sqrt((m + n + 1) / (12 * m * n)))
    assert auc_standard_error(0.8, 500, 500) < auc_standard_error(0.8, 50, 50)
    assert auc_standard_error(1.0, 10, 10) == 0.0


def test_junk_no_detector_ranks_high_is_learned_from_where_it_lies_in_the_view():
    """A yard's vans: no detector ranks them high, but they lie apart in the run's PCA space;
    reviews that mark some junk teach `learned` to rank the others high."""
    rng = np.random.default_rng(4)
    n = 800
    vans = np.arange(0, 60)
    pcts = {key: _ranks(rng.normal(size=n)) for key in ("soft", "lof")}
    consensus = _ranks(pcts["soft"] + pcts["lof"])
    view = rng.normal(size=(n, 6))
    view[vans, 2] += 3.0  # the vans' side of one dimension of the view
    reviewed = np.concatenate([vans[:15], np.arange(100, 140)])
    junk = np.isin(reviewed, vans)
    learned = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk, view)
    assert learned.weight_ > 0 and learned.record()["view_dims"] == 6
    rest = np.setdiff1d(np.arange(n), reviewed)
    from sklearn.metrics import roc_auc_score

    is_van = np.isin(rest, vans)
    assert roc_auc_score(is_van, learned.decision_scores_[rest]) > 0.9
    assert roc_auc_score(is_van, consensus[rest]) < 0.65
    # new frames are scored from the same view; without it the model cannot score them
    np.testing.assert_allclose(learned.score(pcts, consensus, view), learned.decision_scores_)
    with pytest.raises(ValueError, match="PCA space"):
        learned.score(pcts, consensus)
    # without a view, the detectors' ranks alone (they know nothing of the vans)
    blind = Learned(list(pcts)).fit(pcts, consensus, reviewed, junk)
    assert blind.record()["view_dims"] == 0
    assert roc_auc_score(is_van, blind.decision_scores_[rest]) < 0.65
