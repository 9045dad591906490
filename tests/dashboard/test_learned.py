"""The sidebar on learning from reviews: how to get `learned`, what the run learned, its
button, and reviews changed since (AppTest on a copy of the real demo store)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

import store
from pipeline.analyze import analyze
from pipeline.settings import Settings
from store import reviews
from store.db import scalar
from tests.dashboard.test_app import APP, ok, open_page


def _said(at: AppTest) -> list[str]:
    return [
        c.value
        for c in at.sidebar.caption
        if ("learned" in c.value and "reviews" in c.value) or "You have reviewed" in c.value
    ]


def test_the_sidebar_says_how_to_learn_from_reviews_then_what_was_learned(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    with store.connect(store_copy) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")
        ranked = [
            r[0]
            for r in con.execute(
                "SELECT o.frame_id FROM outlier_scores o JOIN frames f USING (frame_id) "
                "WHERE o.run_id = ? AND o.detector = 'consensus' AND f.daylight = 'day' "
                "ORDER BY o.score DESC, o.frame_id",
                [run_id],
            ).fetchall()
        ]
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
