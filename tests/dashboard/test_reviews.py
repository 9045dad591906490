"""Review writes round-trip through the store and show in the readers."""

from __future__ import annotations

import pandas as pd
import pytest

import store
from store import facts, reviews
from store.facts import FrameFilter


def test_verdicts_round_trip(store_copy):
    with store.connect(store_copy) as con:
        ids = [
            r[0]
            for r in con.execute("SELECT frame_id FROM frames ORDER BY frame_id LIMIT 5").fetchall()
        ]
        assert reviews.set_verdicts(con, ids[:3], "junk", "rain on lens") == 3
        assert reviews.set_verdicts(con, ids[2:], "keep") == 3  # frame ids[2] changes its mind
        assert reviews.set_verdicts(con, [999_999_999], "junk") == 0  # not a frame: no row
    with store.connect(store_copy, read_only=True) as con:
        got = reviews.verdicts(con, ids + [999_999_999])
        assert got == {
            ids[0]: "junk",
            ids[1]: "junk",
            ids[2]: "keep",
            ids[3]: "keep",
            ids[4]: "keep",
        }
        assert facts.review_counts(con) == {"junk": 2, "keep": 3}
        run_id = facts.latest_run_id(con)
        kept = facts.export_frames(con, FrameFilter(run_id=run_id), "keep")
        assert sorted(kept["frame_id"]) == ids[2:]
        not_junk = facts.export_frames(con, FrameFilter(run_id=run_id), "not_junk")
        assert not set(not_junk["frame_id"]) & set(ids[:2])
        labels = facts.detector_matrix(
            con, FrameFilter(run_id=run_id), ["consensus"], labels=True
        ).set_index("frame_id")
        assert labels.loc[ids[0], "label_is_anomaly"]  # a junk verdict is a known anomaly
        assert labels.loc[ids[0], "label_source"] == "review"
        assert not labels.loc[ids[2], "label_is_anomaly"]  # a kept frame is a known normal
        note = store.db.scalar(con, "SELECT note FROM reviews WHERE frame_id = ?", [ids[0]])
        assert note == "rain on lens"
    with store.connect(store_copy) as con:
        reviews.set_verdicts(con, ids, None)
        assert reviews.verdicts(con, ids) == {}


def test_bad_verdict_is_refused(store_copy):
    with store.connect(store_copy) as con:
        with pytest.raises(ValueError, match="verdict must be"):
            reviews.set_verdicts(con, [1], "maybe")
        assert reviews.set_verdicts(con, [], "junk") == 0


def test_read_only_connection_cannot_review(demo_store):
    with store.connect(demo_store, read_only=True) as con:
        with pytest.raises(Exception):
            reviews.set_verdicts(con, [1], "junk")


def test_marking_many_frames_can_be_undone_to_their_earlier_verdicts(store_copy):
    with store.connect(store_copy) as con:
        ids = [
            r[0]
            for r in con.execute("SELECT frame_id FROM frames ORDER BY frame_id LIMIT 4").fetchall()
        ]
        reviews.set_verdicts(con, ids[:1], "keep", "fine after all")
        reviews.set_verdicts(con, ids[1:2], "junk")
        earlier = reviews.snapshot(con, ids)
        assert list(earlier["frame_id"]) == ids[:2]
        changed, before = reviews.mark(con, ids, "junk")
        assert changed == 4 and set(reviews.verdicts(con, ids).values()) == {"junk"}
        pd.testing.assert_frame_equal(before, earlier)
        assert reviews.restore(con, ids, before) == 2
        again = reviews.snapshot(con, ids)
    pd.testing.assert_frame_equal(again, earlier)  # verdict, note and time as they were
    assert again["note"].tolist()[0] == "fine after all"
