"""Junk causes from the user's reviews: `dashboard.metrics.suggest_causes` on reviews made up to
favour or oppose a cause, `store.facts.reviewed_cause_scores` on the real demo store, and the
sidebar's suggestion and its button in AppTest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

import store
from dashboard import metrics
from dashboard.metrics import suggest_causes
from store import facts, reviews
from store.db import scalar
from tests.dashboard.test_app import APP, ok

CAUSES = ["quality", "camera", "scene", "rarity"]


def _reviews(n_junk: int, n_keep: int, seed: int = 0, scene_on_keeps: float = 0.0) -> pd.DataFrame:
    """Reviews where the quality cause tells junk from keep; with `scene_on_keeps`, the scene
    cause scores the kept frames that much higher (a sea-and-sky camera's clear days)."""
    rng = np.random.default_rng(seed)
    junk = np.r_[np.ones(n_junk, bool), np.zeros(n_keep, bool)]
    n = len(junk)
    return pd.DataFrame(
        {
            "frame_id": np.arange(n),
            "junk": junk,
            "quality": rng.exponential(1, n) + 2.0 * junk,
            "camera": np.zeros(n),
            "scene": rng.exponential(1, n) + scene_on_keeps * ~junk,
            "rarity": np.where(rng.random(n) < 0.1, rng.exponential(2, n), 0.0),
        }
    )


def test_no_suggestion_before_enough_reviews_of_each_verdict():
    assert suggest_causes(_reviews(4, 40), CAUSES, CAUSES) is None
    assert suggest_causes(_reviews(40, 4), CAUSES, CAUSES) is None
    assert suggest_causes(_reviews(5, 5), CAUSES, CAUSES) is not None


def test_a_cause_that_ranks_the_kept_frames_first_is_left_out():
    reviewed = _reviews(30, 40, scene_on_keeps=3.0)
    got = suggest_causes(reviewed, CAUSES, CAUSES)
    assert got.changed and "scene" not in got.causes and "quality" in got.causes
    assert got.steps[0] == "leave out scene"
    assert (got.n_junk, got.n_keep) == (30, 40)
    # the AUCs are the reviews' own ROC-AUC of the sums (NaN counting 0)
    y = reviewed["junk"]
    assert got.auc_now == round(roc_auc_score(y, reviewed[CAUSES].sum(axis=1)), 3)
    assert got.auc == round(roc_auc_score(y, reviewed[list(got.causes)].sum(axis=1)), 3)
    assert got.auc > got.auc_now + metrics.MIN_GAIN


def test_reviews_that_agree_with_the_causes_counted_change_nothing():
    for seed in range(5):
        got = suggest_causes(_reviews(8, 8, seed=seed), CAUSES, CAUSES)
        assert not got.changed and got.causes == tuple(CAUSES)
        assert got.auc == got.auc_now


def test_a_cause_the_junk_needs_is_counted():
    """A yard camera whose junk is a van in front of the lens: its owner counting only the
    quality cause is told to count the scene cause too."""
    rng = np.random.default_rng(1)
    junk = np.r_[np.ones(20, bool), np.zeros(60, bool)]
    reviewed = pd.DataFrame(
        {
            "junk": junk,
            "quality": rng.exponential(1, 80),
            "scene": rng.exponential(1, 80) + 3.0 * junk,
            "rarity": np.full(80, np.nan),  # no opinion: counts 0
        }
    )
    got = suggest_causes(reviewed, ["quality"], ["quality", "scene", "rarity"])
    assert got.steps[0] == "count scene" and "scene" in got.causes


def test_reviewed_cause_scores_are_the_stored_scores_of_the_reviewed_filtered_frames(store_copy):
    with store.connect(store_copy) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")
        flt = facts.FrameFilter(run_id=run_id, detector="consensus", daylight=("day",))
        stored = facts.options(con, run_id)["causes"]
        assert facts.reviewed_cause_scores(con, flt, stored).empty
        day = [
            r[0]
            for r in con.execute(
                "SELECT frame_id FROM frames WHERE daylight = 'day' ORDER BY frame_id LIMIT 6"
            ).fetchall()
        ]
        night = scalar(con, "SELECT min(frame_id) FROM frames WHERE daylight = 'night'")
        reviews.set_verdicts(con, day[:4] + [night], "junk")
        reviews.set_verdicts(con, day[4:], "keep")
        got = facts.reviewed_cause_scores(con, flt, stored)
        assert got["frame_id"].tolist() == day  # the night frame is filtered out
        assert got["junk"].tolist() == [True] * 4 + [False] * 2
        assert list(got.columns) == ["frame_id", "junk", *stored]
        for cause in stored:
            want = con.execute(
                "SELECT frame_id, score FROM outlier_scores WHERE run_id = ? AND detector = ? "
                "AND list_contains(?, frame_id) ORDER BY frame_id",
                [run_id, f"cause:{cause}", day],
            ).df()
            assert np.allclose(got[cause], want["score"].astype(float), equal_nan=True)
        # the threshold and another choice of junk causes play no part
        other = flt.replace(threshold_kind="pct", threshold=99.0, junk_causes=("quality",))
        pd.testing.assert_frame_equal(facts.reviewed_cause_scores(con, other, stored), got)


def test_the_sidebar_suggests_the_causes_the_reviews_rank_best_and_counts_them(
    store_copy, monkeypatch
):
    """Reviews that keep the demo's frames the scene cause ranks first and mark its
    poorest-quality frames junk: the sidebar suggests leaving the scene cause out; its button
    counts the suggested causes (in the URL too), after which nothing more is suggested."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    with store.connect(store_copy) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")

        def top(cause: str, where: str) -> list[int]:
            return [
                r[0]
                for r in con.execute(
                    f"SELECT o.frame_id FROM outlier_scores o JOIN frames f USING (frame_id) "
                    f"WHERE o.run_id = ? AND o.detector = 'cause:{cause}' AND {where} "
                    "ORDER BY o.score DESC, o.frame_id LIMIT 12",
                    [run_id],
                ).fetchall()
            ]

        junk = top("quality", "f.daylight = 'day'")
        kept = top("scene", f"f.daylight = 'day' AND NOT list_contains({junk}, o.frame_id)")
        reviews.set_verdicts(con, junk, "junk")
        reviews.set_verdicts(con, kept, "keep")

    def said(at: AppTest) -> list[str]:
        return [c.value for c in at.sidebar.caption if c.value.startswith("Your reviews")]

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["daylight"] = "day"
    ok(at.run())
    (text,) = said(at)
    assert "(12 junk, 12 keep)" in text and "leave out scene" in text
    (button,) = [b for b in at.sidebar.button if b.key == "suggested_causes"]
    assert "scene" not in button.label and button.label.startswith("Count quality")
    assert "analyze --junk-causes quality," in button.help
    ok(button.click().run())
    chosen = at.query_params["causes"]
    chosen = chosen[0] if isinstance(chosen, list) else chosen
    assert "scene" not in chosen.split(",") and "quality" in chosen.split(",")
    assert said(at) == []
