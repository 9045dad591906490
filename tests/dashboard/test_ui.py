"""The card's words: a page whose other frames are reviewed reads NaN for an unreviewed
frame's verdict (pandas' text columns), and the card must not say "nan"; the verdict is a mark
of its own; counts say "1 frame"; a detector that did not score a frame says so."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard import charts, filters, ui
from store.facts import FrameFilter


def _rows() -> pd.DataFrame:
    """Two cards as a reader gives them: one frame reviewed, one not, one with weather."""
    return pd.DataFrame(
        {
            "taken_at": pd.to_datetime(["2024-04-10 12:11", "2024-04-10 12:21"]),
            "condition": pd.array([None, "rain"], dtype="str"),
            "cluster": [0, 1],
            "score_pct": [0.995, 0.5],
            "is_outlier": [True, False],
            "verdict": pd.array([None, "junk"], dtype="str"),
        }
    )


def test_a_card_without_a_verdict_says_nothing_of_one():
    unreviewed, reviewed = (row for _, row in _rows().iterrows())
    assert pd.isna(unreviewed["verdict"])  # what the card is given
    assert ui.badges_for(unreviewed, "consensus") == [("consensus 99.5\u00a0%", "orange")]
    assert ui.badges_for(reviewed, "consensus") == [
        ("consensus 50.0\u00a0%", "gray"),
        ("junk", "red"),
    ]
    caption = ui.caption_for(unreviewed, "consensus")
    assert "nan" not in caption and "marked" not in caption and " · unknown · " in caption
    assert ui.caption_for(reviewed, "consensus").endswith("marked junk")


def test_present_is_none_for_empty_cells_only():
    assert [ui.present(v) for v in (None, float("nan"), pd.NA, "", "junk", 0, 0.0)] == [
        None,
        None,
        None,
        None,
        "junk",
        0,
        0.0,
    ]


def test_the_verdict_is_a_mark_of_its_own_beside_the_score():
    """A narrow card cut "consensus 96.7 % · junk" to "consensus 96.7...": the score and the
    verdict are two marks now, each wrapping on its own, and the score keeps its flag colour."""
    row = {"score_pct": 0.967, "is_outlier": True, "verdict": "keep"}
    assert ui.badges_for(row, "cause:quality") == [
        ("cause:quality 96.7\u00a0%", "orange"),
        ("keep", "green"),
    ]
    assert ui.badges_for(row, "consensus", compact=True)[0] == ("96.7\u00a0%", "orange")
    text = ui._badges_markdown([("a [b]", "gray"), ("junk", "red")])
    assert text == ":gray-badge[a \\[b\\]] :red-badge[junk]"


def test_counts_say_one_frame_and_many_frames():
    assert filters.plural(1, "frame") == "1 frame"
    assert filters.plural(0, "frame") == "0 frames"
    assert filters.plural(12345, "frame") == "12,345 frames"
    assert filters.plural(1, "anomaly", "anomalies") == "1 anomaly"
    assert filters.plural(3, "anomaly", "anomalies") == "3 anomalies"
    assert filters.describe(FrameFilter(frame_ids=(7,))) == "1 selected frame"
    assert filters.describe(FrameFilter(frame_ids=(7, 8))) == "2 selected frames"


def _scores() -> pd.DataFrame:
    """One frame's scores as `store.facts.scores_for` reads them: two detectors could not
    score it (no score stored: NaN, and not flagged)."""
    return pd.DataFrame(
        {
            "frame_id": [542] * 3,
            "detector": ["alignment", "cause:quality", "cause:camera"],
            "score": [np.nan, 9.0983, np.nan],
            "score_pct": [np.nan, 0.9975, np.nan],
            "is_outlier": [False, True, False],
        }
    )


def test_a_detector_that_did_not_score_the_frame_says_not_scored():
    table = ui.score_table(_scores())
    assert list(table.columns) == ["detector", "score", "percentile", "flagged"]
    assert list(table["score"]) == ["not scored", "9.0983", "not scored"]
    assert list(table["percentile"]) == ["not scored", "99.8 %", "not scored"]
    assert list(table["flagged"]) == [None, True, None]


def test_the_percentile_chart_labels_the_detectors_without_a_score():
    fig = charts.frame_scores(_scores().drop(columns="frame_id"))
    notes = {a.y: a.text for a in fig.layout.annotations}
    assert notes == {"alignment": "not scored", "cause:camera": "not scored"}
    bars = fig.data[0]
    assert np.isnan(bars.x[0]) and np.isnan(bars.x[2])  # no bar, not a bar of 0
    assert charts.frame_scores(_scores().iloc[[1]]).layout.annotations == ()


def test_a_neighbour_card_says_its_rank_and_distance():
    assert ui.neighbour_note({"rank": 1, "distance": 0.0850143}) == "rank 1 · distance\u00a00.085"
    assert ui.neighbour_note({"rank": 3, "distance": None}) == "rank 3"


def test_a_gallery_of_one_frame_not_in_the_other_top_says_is():
    """Compare's line over a "A flags it, B does not" gallery read "1 of ... are not in":
    one is, several are, none says so."""
    assert ui.not_in_top(1, "lof", "iforest", 50, 1) == (
        "1 of lof's top 50 frames is not in iforest's top 50; the highest by lof:"
    )
    assert ui.not_in_top(12, "lof", "iforest", 50, 6) == (
        "12 of lof's top 50 frames are not in iforest's top 50; the 6 highest by lof:"
    )
    assert ui.not_in_top(1, "lof", "knn", 1, 1) == (
        "1 of lof's top 1 frame is not in knn's top 1; the highest by lof:"
    )
    assert ui.not_in_top(0, "lof", "knn", 1_000, 0) == (
        "Every one of lof's top 1,000 frames is in knn's top 1,000."
    )
