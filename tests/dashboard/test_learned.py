"""The sidebar on learning from reviews: how to get `learned`, what the run learned, its
button, and reviews changed since; Review & export's order where `learned` is least sure
(AppTest and the store's readers on a copy of the real demo store)."""

from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

import store
from pipeline.analyze import analyze
from pipeline.settings import Settings
from store import facts, reviews
from store.db import scalar
from store.facts import FrameFilter
from tests.dashboard.test_app import APP, ok, open_page


def _said(at: AppTest) -> list[str]:
    return [
        c.value
        for c in at.sidebar.caption
        if ("learned" in c.value and "reviews" in c.value) or "You have reviewed" in c.value
    ]


def _day_frames_by_consensus(con) -> list[int]:
    """The latest run's daylight frames, highest consensus score first."""
    return [
        r[0]
        for r in con.execute(
            "SELECT o.frame_id FROM outlier_scores o JOIN frames f USING (frame_id) "
            "WHERE o.run_id = (SELECT run_id FROM latest_run) AND o.detector = 'consensus' "
            "AND f.daylight = 'day' ORDER BY o.score DESC, o.frame_id"
        ).fetchall()
    ]


def test_the_sidebar_says_how_to_learn_from_reviews_then_what_was_learned(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    with store.connect(store_copy) as con:
        ranked = _day_frames_by_consensus(con)
        reviews.set_verdicts(con, ranked[:6], "junk")
        reviews.set_verdicts(con, ranked[-3:], "keep")

    at = AppTest.from_file(APP, default_timeout=60)
    ok(at.run())
    (text,) = _said(at)  # too few kept frames: says which to mark
    assert "You have reviewed 6 frames junk and 3 keep" in text
    assert "at least 5 of each: mark some good frames from the bottom of the Gallery" in text
    assert "in the order *to teach learned* (Review & export)" in text

    with store.connect(store_copy) as con:
        reviews.set_verdicts(con, ranked[-12:], "keep")
    at = AppTest.from_file(APP, default_timeout=60)
    ok(at.run())
    (text,) = _said(at)
    assert "You have reviewed 6 frames junk and 12 keep" in text
    assert "`python -m pipeline analyze --db garden.duckdb` learns from them" in text
    assert not [b for b in at.sidebar.button if b.key == "rank_by_learned"]

    analyze(store_copy, Settings(model="pixels"), progress=False)
    at = AppTest.from_file(APP, default_timeout=60)
    ok(at.run())
    (text,) = _said(at)
    assert text.startswith("**learned** ranks by your reviews as this run learned them")
    assert "(6 junk, 12 keep)" in text and "You have" not in text
    (button,) = [b for b in at.sidebar.button if b.key == "rank_by_learned"]
    # the run's parameters on Runs & errors say what it learned from
    runs = open_page(AppTest.from_file(APP, default_timeout=60), "views/runs.py")
    assert any("learned from 6 junk and 12 keep reviews" in c.value for c in runs.caption)
    ok(button.click().run())
    assert at.query_params["det"] in ("learned", ["learned"])
    assert not [b for b in at.sidebar.button if b.key == "rank_by_learned"]

    with store.connect(store_copy) as con:
        reviews.set_verdicts(con, ranked[6:7], "junk")
    at = AppTest.from_file(APP, default_timeout=60)
    ok(at.run())
    (text,) = _said(at)
    assert "You have 7 junk and 12 keep reviews now" in text and "learns from them all" in text
    assert "re-weighs the run's own junk causes" not in text

    # other junk causes chosen (the link's `causes`): learned re-weighs the run's own, and the
    # sidebar says so and how to learn on these
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["causes"] = "quality,camera"
    ok(at.run())
    (text,) = _said(at)
    assert "It re-weighs the run's own junk causes (" in text
    assert "not the ones chosen above" in text
    assert "`python -m pipeline analyze --db garden.duckdb --junk-causes quality,camera`" in text


def test_the_meeting_rank_is_the_best_balanced_cut_between_the_verdicts():
    """Of the reviews' own ranks, the lowest with the most junk at or above it and the most
    kept under it."""
    from store.facts import meeting_rank

    ranks = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert meeting_rank(ranks, np.array([0, 0, 1, 1, 1], bool)) == 0.3  # a clean cut
    # overlapping verdicts, junk at 0.2, 0.3 and 0.9, kept at 0.1 and 0.8: at 0.2 every junk
    # frame is at or above the cut and one of the two kept under it (1 + 1/2), at 0.9 one
    # junk above and both kept under (1/3 + 1)
    junk = np.array([0, 1, 1, 0, 1], bool)
    best = max(
        np.unique(ranks),
        key=lambda t: ((ranks[junk] >= t).mean() + (ranks[~junk] < t).mean(), -t),
    )
    assert meeting_rank(ranks, junk) == best == 0.2
    assert meeting_rank(np.array([0.5, 0.5]), np.array([1, 0], bool)) == 0.5  # a tie


def _nearest(con, flt, meet, skip=()) -> float | None:
    """How near `meet` the filtered unreviewed frames' `learned` ranks come (not in `skip`),
    from the filter's frames and the stored ranks, in pandas; None when none is left."""
    sql, params = facts._filtered(flt, need=("review",))
    kept = facts._query(con, sql + "SELECT frame_id, verdict FROM sel", params)
    ranks = con.execute(
        "SELECT frame_id, score_pct FROM outlier_scores WHERE run_id = ? AND detector = 'learned'",
        [flt.run_id],
    ).df()
    left = kept[kept["verdict"].isna() & ~kept["frame_id"].isin(list(skip))]
    gaps = (ranks[ranks["frame_id"].isin(left["frame_id"])]["score_pct"] - meet).abs()
    return None if gaps.empty else float(gaps.min())


def _gap(con, run_id, frame_id, meet) -> float:
    pct = con.execute(
        "SELECT score_pct FROM outlier_scores WHERE run_id = ? AND detector = 'learned' "
        "AND frame_id = ?",
        [run_id, frame_id],
    ).fetchone()[0]
    return abs(pct - meet)


def test_where_learned_is_least_sure(store_copy, monkeypatch):
    """Until the run has `learned`, the order offers frames to teach it (and says so); then the
    unreviewed frame whose `learned` rank is nearest the rank where the reviewed junk and keep
    meet, under every filter, skipped frames passed over; a user who picks it is offered that
    frame, told why, and after a verdict offered the next."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    with store.connect(store_copy) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")
        ranked = _day_frames_by_consensus(con)
        reviews.set_verdicts(con, ranked[:6], "junk")
        reviews.set_verdicts(con, ranked[-12:], "keep")
        base = FrameFilter(run_id=run_id)
        assert facts.doubt_rank(con, run_id) is None
        assert facts.review_turn(con, "doubt", run_id) == "top"  # 18 verdicts: teach's turn
        assert facts.next_unreviewed(con, base, (), "doubt") == facts.next_unreviewed(
            con, base, (), "teach"
        )
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/review.py").run()
    at.radio(key="review_order").set_value("doubt").run()
    ok(at)
    assert any(c.value.startswith("Learned is not in this run yet") for c in at.caption)

    run_id = analyze(store_copy, Settings(model="pixels"), progress=False).run_id
    with store.connect(store_copy, read_only=True) as con:
        pcts = con.execute(
            "SELECT l.score_pct, r.verdict = 'junk' FROM outlier_scores l JOIN reviews r "
            "USING (frame_id) WHERE l.run_id = ? AND l.detector = 'learned'",
            [run_id],
        ).fetchall()
        ranks, junk = np.array([p for p, _ in pcts]), np.array([j for _, j in pcts])
        meet = facts.doubt_rank(con, run_id)
        assert meet == facts.meeting_rank(ranks, junk) and 0 < meet < 1
        assert facts.review_turn(con, "doubt", run_id) == "doubt"
        assert facts.review_turn(con, "teach", run_id) == "top"
        flts = [
            FrameFilter(run_id=run_id),
            FrameFilter(run_id=run_id, daylight=("day",)),
            FrameFilter(run_id=run_id, hour_from=9, hour_to=15, threshold_kind="flagged"),
        ]
        for flt in flts:
            offered = facts.next_unreviewed(con, flt, (), "doubt")
            nearest = _nearest(con, flt, meet)
            assert (offered is None) == (nearest is None), flt
            if offered is None:
                continue
            assert facts.next_unreviewed(con, flt.replace(frame_ids=(offered,))) == offered
            assert _gap(con, run_id, offered, meet) == nearest, flt
            after = facts.next_unreviewed(con, flt, (offered,), "doubt")
            assert after != offered
            assert _gap(con, run_id, after, meet) == _nearest(con, flt, meet, (offered,)), flt
        first = facts.next_unreviewed(con, flts[0], (), "doubt")
        assert first not in ranked[:6] + ranked[-12:]

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/review.py").run()
    at.radio(key="review_order").set_value("doubt").run()
    ok(at)
    (said,) = [c.value for c in at.caption if c.value.startswith("The frame learned is least")]
    assert f"nearest to {meet:.0%}, where your junk and keep verdicts meet" in said
    at.button(key="review_junk").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert reviews.verdicts(con, [first]) == {first: "junk"}
        meet = facts.doubt_rank(con, run_id)  # the new verdict moves where they meet
        nearest = _nearest(con, flts[0], meet)
    at.button(key="review_keep").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        (kept,) = [
            r[0]
            for r in con.execute("SELECT frame_id FROM reviews WHERE verdict = 'keep'").fetchall()
            if r[0] not in ranked[-12:]
        ]
        assert _gap(con, run_id, kept, meet) == nearest
