"""The one-connection page readers (`gallery_page`, `top_k_differences`, `neighbor_page`,
`next_unreviewed_row`, thumbnails and labels fetched with the rows) return what the separate
readers (or the same question asked in pandas) return, and `_filtered`'s column groups change
only which joins run, never the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import charts
from store import facts
from store.db import scalar
from store.facts import FrameFilter


def _filters(con, run_id):
    opts = facts.options(con, run_id)
    return [
        FrameFilter(run_id=run_id),
        FrameFilter(run_id=run_id, hour_from=20, hour_to=5, daylight=("day", "night")),
        FrameFilter(
            run_id=run_id,
            clusters=tuple(opts["clusters"][:2]),
            detector="lof",
            threshold_kind="pct",
            threshold=40,
        ),
        FrameFilter(run_id=run_id, threshold_kind="topk", threshold=15, detector="iforest"),
    ]


def test_column_groups_leave_the_rows_alone(con, run_id):
    for flt in _filters(con, run_id):
        full_sql, params = facts._filtered(flt)
        full = facts._query(con, full_sql + "SELECT * FROM sel ORDER BY frame_id", params)
        for need in ((), ("cluster",), ("score",), ("review",), ("cluster", "score")):
            sql, params = facts._filtered(flt, need=need)
            part = facts._query(con, sql + "SELECT * FROM sel ORDER BY frame_id", params)
            assert list(part["frame_id"]) == list(full["frame_id"])
            for group, cols in (
                ("cluster", ["cluster", "map_x"]),
                ("score", ["score", "is_outlier"]),
                ("review", ["verdict"]),
            ):
                if group in need:
                    pd.testing.assert_frame_equal(part[cols], full[cols])
        assert facts.count(con, flt) == len(full)
    with pytest.raises(ValueError, match="unknown column groups"):
        facts._filtered(FrameFilter(run_id=run_id), need=("weather",))


def test_gallery_page_has_rows_and_thumbnails(con, run_id):
    flt = FrameFilter(run_id=run_id, detector="iforest")
    got = facts.gallery_page(con, flt, 1, 8, "score")
    rows, total = facts.frames_page(con, flt, 1, 8, "score")
    pd.testing.assert_frame_equal(got["rows"].drop(columns=["thumb"]), rows)
    assert got["total"] == total == scalar(con, "SELECT count(*) FROM frames")
    thumbs = facts.thumbnails(con, list(rows["frame_id"]))
    assert [bytes(t) for t in got["rows"]["thumb"]] == [thumbs[int(i)] for i in rows["frame_id"]]
    # ranked by the chosen detector, highest first
    assert list(rows["score"]) == sorted(rows["score"], reverse=True)


def test_frames_page_orders_match_sql(con, run_id):
    flt = FrameFilter(run_id=run_id, detector="lof")
    for order, sql in (
        ("score", "score DESC NULLS LAST, frame_id"),
        ("score_asc", "score ASC NULLS LAST, frame_id"),
        ("time", "taken_at, frame_id"),
        ("time_desc", "taken_at DESC, frame_id"),
    ):
        expected = [
            int(r[0])
            for r in con.execute(
                f"""
            SELECT f.frame_id FROM frames f LEFT JOIN outlier_scores o
              ON o.run_id = ? AND o.detector = 'lof' AND o.frame_id = f.frame_id
            ORDER BY {sql.replace("frame_id", "f.frame_id").replace("taken_at", "f.taken_at")}
            LIMIT 5 OFFSET 5""",
                [run_id],
            ).fetchall()
        ]
        rows, _ = facts.frames_page(con, flt, 1, 5, order)
        assert list(rows["frame_id"]) == expected, order


def test_top_k_differences_are_each_top_k_without_the_others(con, run_id):
    flt = FrameFilter(run_id=run_id, hour_from=6, hour_to=20)
    scores = facts.scores_for(con, run_id, facts.frame_ids(con, flt))

    def top(detector: str, k: int) -> list[int]:
        mine = scores[scores["detector"] == detector].sort_values(
            ["score", "frame_id"], ascending=[False, True], na_position="last"
        )
        return [int(i) for i in mine["frame_id"][:k]]

    for k in (5, 20):
        got = facts.top_k_differences(con, flt, "iforest", "lof", k, 4)
        for side, (a, b) in (("a", ("iforest", "lof")), ("b", ("lof", "iforest"))):
            expected = [i for i in top(a, k) if i not in set(top(b, k))]
            rows, total = got[side]
            assert list(rows["frame_id"]) == expected[:4] and total == len(expected)
            mine = scores[scores["detector"] == a].set_index("frame_id")["score"]
            assert list(rows["score"]) == [mine[i] for i in expected[:4]]
            assert rows["thumb"].notna().all()


def test_detector_matrix_labels_are_the_known_answers(con, run_id):
    flt = FrameFilter(run_id=run_id)
    wide = facts.detector_matrix(con, flt, ["consensus", "iforest"], None, labels=True)
    plain = facts.detector_matrix(con, flt, ["consensus", "iforest"], None)
    pd.testing.assert_frame_equal(wide[plain.columns], plain)
    labels = con.sql("""
        SELECT coalesce(r.frame_id, g.frame_id) AS frame_id,
               CASE WHEN r.verdict IS NOT NULL THEN r.verdict = 'junk' ELSE g.is_anomaly END
                   AS is_anomaly,
               CASE WHEN r.verdict IS NOT NULL THEN 'review' ELSE 'ground_truth' END AS source
        FROM reviews r FULL OUTER JOIN ground_truth g ON g.frame_id = r.frame_id""").df()
    labels = labels.set_index("frame_id")
    assert len(labels)  # the demo store has ground truth
    labelled = wide[wide["label_source"].notna()].set_index("frame_id")
    assert set(labelled.index) == set(labels.index) & set(wide["frame_id"])
    assert (
        labelled["label_is_anomaly"].astype(bool)
        == labels.loc[labelled.index, "is_anomaly"].astype(bool)
    ).all()
    assert (labelled["label_source"] == labels.loc[labelled.index, "source"]).all()


def test_neighbor_page_and_next_unreviewed_row(con, run_id):
    fid = int(scalar(con, "SELECT min(frame_id) FROM neighbors WHERE run_id = ?", [run_id]))
    nb = facts.neighbor_page(con, run_id, fid, "iforest")
    plain = facts.neighbors(con, run_id, fid)
    assert list(nb["frame_id"]) == list(plain["frame_id"])
    assert list(nb["rank"]) == sorted(nb["rank"]) and "thumb" in nb and "condition" in nb
    flt = FrameFilter(run_id=run_id, detector="iforest")
    first = facts.next_unreviewed(con, flt)
    row = facts.next_unreviewed_row(con, flt, ())
    assert int(row["frame_id"].iloc[0]) == first and row["thumb"].iloc[0] is not None
    second = facts.next_unreviewed_row(con, flt, (first,))
    assert int(second["frame_id"].iloc[0]) == facts.next_unreviewed(con, flt, (first,))


def test_export_preview_is_the_head_of_the_export(con, run_id):
    flt = FrameFilter(run_id=run_id, detector="lof")
    full = facts.export_frames(con, flt, "not_junk")
    head = facts.export_frames(con, flt, "not_junk", 7)
    pd.testing.assert_frame_equal(head, full.head(7), check_dtype=False)
    assert facts.export_count(con, flt, "not_junk") == len(full)


def test_timeline_buckets_follow_the_span(con, run_id):
    first, last, n = con.execute(
        "SELECT min(taken_at)::DATE, max(taken_at)::DATE, count(*) FROM frames"
    ).fetchall()[0]
    days = (last - first).days + 1
    for max_buckets in (1, 4, 50, 300):
        line = facts.timeline(con, FrameFilter(run_id=run_id), max_buckets=max_buckets)
        fits = [m for m in (10, 30, 60, 180, 360, 720) if days * 1440 / m <= max_buckets]
        minutes = fits[0] if fits else 1440  # else days (the demo spans a few)
        assert int(line["bucket_minutes"].iloc[0]) == minutes, max_buckets
        assert int(line["n_frames"].sum()) == n
        assert line["bucket"].is_monotonic_increasing
    assert line["bucket_label"].iloc[0] == "10 min"


def test_roc_is_drawn_from_corners():
    x = np.array([0.0, 0.0, 0.0, 0.5, 1.0])
    y = np.array([0.0, 0.5, 1.0, 1.0, 1.0])
    cx, cy = charts._corners(x, y)
    assert list(cx) == [0.0, 0.0, 1.0] and list(cy) == [0.0, 1.0, 1.0]
    t = np.linspace(0, 1, 10_000)
    cx, cy = charts._corners(t, t**2, max_points=500)
    assert len(cx) <= 500 and cx[0] == 0 and cx[-1] == 1 and np.all(np.diff(cx) > 0)


def test_the_unfiltered_shortcut_gives_the_filtered_answer(con, run_id):
    everything = FrameFilter(run_id=run_id)
    assert facts._keeps_every_frame(everything)
    # a filter that keeps every frame but is not the default takes the join
    wide_hours = FrameFilter(run_id=run_id, date_from=pd.Timestamp("1990-01-01").date())
    assert not facts._keeps_every_frame(wide_hours)
    pd.testing.assert_frame_equal(
        facts.outliers_per_detector(con, everything), facts.outliers_per_detector(con, wide_hours)
    )
    a = facts.top_k_differences(con, everything, "iforest", "lof", 10, 5)
    b = facts.top_k_differences(con, wide_hours, "iforest", "lof", 10, 5)
    for side in ("a", "b"):
        pd.testing.assert_frame_equal(a[side][0], b[side][0])
        assert a[side][1] == b[side][1]
