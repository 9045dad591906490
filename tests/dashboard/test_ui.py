"""The gallery card's words: a page whose other frames are reviewed reads NaN for an
unreviewed frame's verdict (pandas' text columns), and the card must not say "nan"."""

from __future__ import annotations

import pandas as pd

from dashboard import ui


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
    assert ui.badge_for(unreviewed, "consensus") == ("consensus 99.5 %", "orange")
    assert ui.badge_for(reviewed, "consensus") == ("consensus 50.0 % · junk", "red")
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
