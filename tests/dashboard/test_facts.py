"""The dashboard's store readers (`store.facts`) on the real demo store, checked against plain
SQL; filters are bound parameters, so hostile text finds nothing and breaks nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from store import facts
from store.db import scalar
from store.facts import FrameFilter


def test_options_describe_the_store(con, run_id):
    opts = facts.options(con, run_id)
    assert opts["n_frames"] == scalar(con, "SELECT count(*) FROM frames") > 0
    assert opts["runs"][0] == run_id
    assert opts["detectors"][0] == "consensus"
    assert {"iforest", "lof"} <= set(opts["detectors"])
    assert opts["clusters"] == sorted(opts["clusters"]) and opts["clusters"]
    assert set(opts["daylight"]) <= {"day", "twilight", "night"}


def test_summary_counts_match_sql(con, run_id):
    s = facts.summary(con, FrameFilter(run_id=run_id))
    assert s["n_frames"] == s["n_total"] == scalar(con, "SELECT count(*) FROM frames")
    night = scalar(con, "SELECT avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0 END) FROM frames")
    assert s["night_share"] == pytest.approx(night)
    flagged = scalar(
        con,
        "SELECT count(*) FROM outlier_scores WHERE run_id = ? "
        "AND detector = 'consensus' AND is_outlier",
        [run_id],
    )
    assert s["n_flagged"] == flagged
    assert s["n_errors"] == scalar(con, "SELECT count(*) FROM ingest_errors")
    assert s["daylight_source"] == "sun"  # the demo garden is placed


def test_filters_narrow_the_frames(con, run_id):
    base = FrameFilter(run_id=run_id)
    night = facts.summary(con, base.replace(daylight=("night",)))["n_frames"]
    assert night == scalar(con, "SELECT count(*) FROM frames WHERE daylight = 'night'")
    hours = facts.summary(con, base.replace(hour_from=10, hour_to=13))["n_frames"]
    assert hours == scalar(
        con, "SELECT count(*) FROM frames WHERE hour(taken_at) BETWEEN 10 AND 13"
    )
    wrap = facts.summary(con, base.replace(hour_from=22, hour_to=2))["n_frames"]
    assert wrap == scalar(
        con, "SELECT count(*) FROM frames WHERE hour(taken_at) >= 22 OR hour(taken_at) <= 2"
    )
    day0 = scalar(con, "SELECT min(taken_at)::DATE FROM frames")
    one_day = facts.summary(con, base.replace(date_from=day0, date_to=day0))["n_frames"]
    assert one_day == scalar(con, "SELECT count(*) FROM frames WHERE taken_at::DATE = ?", [day0])
    cluster = facts.options(con, run_id)["clusters"][0]
    in_cluster = facts.summary(con, base.replace(clusters=(cluster,)))["n_frames"]
    assert in_cluster == scalar(
        con, "SELECT count(*) FROM clusters WHERE run_id = ? AND cluster = ?", [run_id, cluster]
    )


def test_thresholds(con, run_id):
    base = FrameFilter(run_id=run_id, detector="iforest")
    top = facts.frames_page(con, base.replace(threshold_kind="topk", threshold=7), 0, 100)[0]
    best = con.execute(
        "SELECT frame_id FROM outlier_scores WHERE run_id = ? AND detector = "
        "'iforest' ORDER BY score DESC, frame_id LIMIT 7",
        [run_id],
    ).fetchall()
    assert list(top["frame_id"]) == [r[0] for r in best]
    assert top["score"].is_monotonic_decreasing
    pct = facts.summary(con, base.replace(threshold_kind="pct", threshold=90))["n_frames"]
    assert pct == scalar(
        con,
        "SELECT count(*) FROM outlier_scores WHERE run_id = ? AND "
        "detector = 'iforest' AND score_pct >= 0.9",
        [run_id],
    )
    flagged = facts.summary(con, base.replace(threshold_kind="flagged"))["n_frames"]
    assert flagged == scalar(
        con,
        "SELECT count(*) FROM outlier_scores WHERE run_id = ? AND "
        "detector = 'iforest' AND is_outlier",
        [run_id],
    )


def test_hostile_text_is_only_a_value(con, run_id):
    evil = "night') OR 1=1; DROP TABLE frames; --"
    flt = FrameFilter(run_id=run_id, daylight=(evil,), conditions=(evil,), detector=evil)
    assert facts.summary(con, flt)["n_frames"] == 0
    assert scalar(con, "SELECT count(*) FROM frames") > 0


def test_gallery_pages_partition_the_frames(con, run_id):
    flt = FrameFilter(run_id=run_id)
    first, total = facts.frames_page(con, flt, 0, 10)
    second, _ = facts.frames_page(con, flt, 1, 10)
    assert total == scalar(con, "SELECT count(*) FROM frames")
    assert len(first) == 10 and not set(first["frame_id"]) & set(second["frame_id"])
    assert first["score"].iloc[-1] >= second["score"].iloc[0]
    thumbs = facts.thumbnails(con, list(first["frame_id"]))
    assert set(thumbs) == set(first["frame_id"])
    assert all(b[:2] == b"\xff\xd8" for b in thumbs.values())  # JPEG


def test_calendar_and_timeline_cover_every_frame(con, run_id):
    flt = FrameFilter(run_id=run_id)
    n = scalar(con, "SELECT count(*) FROM frames WHERE taken_at IS NOT NULL")
    cal = facts.calendar(con, flt)
    assert cal["n_frames"].sum() == n
    assert cal["hour"].between(0, 23).all() and cal["outlier_rate"].between(0, 1).all()
    tl = facts.timeline(con, flt)
    assert tl["n_frames"].sum() == n and (tl["n_flagged"] <= tl["n_frames"]).all()


def test_map_sample_keeps_flagged_frames(con, run_id):
    flt = FrameFilter(run_id=run_id)
    pts, n = facts.map_points(con, flt, max_points=20)
    assert n == scalar(con, "SELECT count(*) FROM clusters WHERE run_id = ?", [run_id])
    assert len(pts) == min(20, n)
    flagged = scalar(
        con,
        "SELECT count(*) FROM outlier_scores WHERE run_id = ? AND "
        "detector = 'consensus' AND is_outlier",
        [run_id],
    )
    assert pts["is_outlier"].fillna(False).sum() == min(flagged, 20)
    again, _ = facts.map_points(con, flt, max_points=20)
    assert list(again["frame_id"]) == list(pts["frame_id"])  # deterministic sample


def test_clusters(con, run_id):
    flt = FrameFilter(run_id=run_id)
    sizes = facts.cluster_sizes(con, flt)
    assert sizes["n_frames"].sum() == scalar(
        con, "SELECT count(*) FROM clusters WHERE run_id = ?", [run_id]
    )
    prof = facts.cluster_profiles(con, flt)
    assert prof[prof["kind"] == "hour"]["n_frames"].sum() == sizes["n_frames"].sum()
    samples = facts.cluster_samples(con, flt, 3, seed=2)
    assert samples.equals(facts.cluster_samples(con, flt, 3, seed=2))  # repeatable
    per = samples.groupby("cluster").size()
    expected = sizes.set_index("cluster")["n_frames"].clip(upper=3)
    assert per.to_dict() == expected.to_dict()


def test_weather_is_joined_when_needed(con, run_id):
    flt = FrameFilter(run_id=run_id)
    page, _ = facts.frames_page(con, flt, 0, 500)
    conditions = con.execute("SELECT frame_id, condition FROM frame_weather").df()
    merged = page.merge(conditions, on="frame_id", suffixes=("", "_view"))
    assert (merged["condition"] == merged["condition_view"].fillna("unknown")).all()
    view = con.execute("SELECT frame_id, condition, temperature_c FROM frame_weather").df()
    for row in view.head(30).to_dict("records"):  # the page-only ASOF join = the view
        d = facts.frame_detail(con, row["frame_id"], run_id)
        assert d["condition"] == (row["condition"] or "unknown")
        assert (pd.isna(d["temperature_c"]) and pd.isna(row["temperature_c"])) or d[
            "temperature_c"
        ] == row["temperature_c"]
    for cond in facts.options(con, run_id)["conditions"]:
        n = facts.summary(con, flt.replace(conditions=(cond,)))["n_frames"]
        assert n == scalar(
            con,
            "SELECT count(*) FROM frame_weather WHERE coalesce(condition, 'unknown') = ?",
            [cond],
        )


def test_detector_matrix_and_a_not_b(con, run_id):
    flt = FrameFilter(run_id=run_id)
    wide = facts.detector_matrix(con, flt, ["consensus", "iforest", "lof"])
    assert len(wide) == scalar(con, "SELECT count(*) FROM frames")
    assert wide[["consensus", "iforest", "lof"]].stack().between(0, 1).all()
    rows, n = facts.top_k_differences(con, flt, "iforest", "lof", 10, limit=50)["a"]
    top_a = set(wide.nlargest(10, "iforest")["frame_id"])
    top_b = set(wide.nlargest(10, "lof")["frame_id"])
    assert n == len(top_a - top_b) and set(rows["frame_id"]) == top_a - top_b


def test_frame_detail_neighbours_and_export(con, run_id):
    fid = scalar(con, "SELECT min(frame_id) FROM frames")
    d = facts.frame_detail(con, fid, run_id)
    assert d["frame_id"] == fid and d["path"] and d["root"]
    nb = facts.neighbors(con, run_id, fid)
    assert list(nb["rank"]) == sorted(nb["rank"]) and fid not in set(nb["frame_id"])
    assert len(nb) == scalar(
        con, "SELECT count(*) FROM neighbors WHERE run_id = ? AND frame_id = ?", [run_id, fid]
    )
    out = facts.export_frames(con, FrameFilter(run_id=run_id))
    assert len(out) == scalar(
        con,
        "SELECT count(*) FROM frames f LEFT JOIN reviews r USING "
        "(frame_id) WHERE r.verdict IS DISTINCT FROM 'junk'",
    )
    assert pd.Series(out["taken_at"]).is_monotonic_increasing
    assert out["abs_path"].iloc[0].endswith(out["path"].iloc[0])
    assert facts.export_count(con, FrameFilter(run_id=run_id)) == len(out)
    first = facts.export_frames(con, FrameFilter(run_id=run_id), "not_junk", limit=3)
    assert list(first["frame_id"]) == list(out["frame_id"][:3])
    with pytest.raises(ValueError, match="unknown export mode"):
        facts.export_count(con, FrameFilter(run_id=run_id), "everything")


def test_runs_and_errors(con):
    runs = facts.runs(con)
    assert len(runs) == scalar(con, "SELECT count(*) FROM analysis_runs")
    assert isinstance(runs["params"].iloc[0], dict)
    errs = facts.ingest_errors(con)
    assert len(errs) == scalar(con, "SELECT count(*) FROM ingest_errors")
    assert facts.store_counts(con)["frames"] == scalar(con, "SELECT count(*) FROM frames")


def test_detectors_are_listed_in_the_order_their_run_recorded(con, run_id):
    """analyze records each detector's place in lists (a fact of its class): the consensus,
    then what it combines beyond the image checks, then the others, the image checks last."""
    order = facts.detector_order(con, run_id)
    names = ["zeta", "lof", "consensus", "dark", "iforest", "background", "blurry"]
    assert facts.sort_detectors(names, order) == [
        "consensus",
        "background",
        "lof",
        "iforest",
        "blurry",
        "dark",
        "zeta",
    ]
    listed = facts.detectors(con, run_id)
    causes = [d for d in listed if d.startswith("cause:")]  # each cause of junk's score
    assert causes and listed[: 1 + len(causes)] == ["consensus", *causes]
    assert causes == sorted(
        causes, key=lambda d: ["quality", "camera", "scene", "rarity"].index(d[6:])
    )
    rest = listed[1 + len(causes) :]
    assert rest == sorted(rest, key=lambda d: (order[d], d))
    assert rest.index("background") < rest.index("lof") < rest.index("iforest")


def test_a_run_made_before_facts_were_recorded_lists_its_detectors_as_it_ran_them(store_copy):
    import json

    import store

    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        params = json.loads(
            scalar(
                con, "SELECT CAST(params AS VARCHAR) FROM analysis_runs WHERE run_id = ?", [run_id]
            )
        )
        del params["detector_facts"]
        con.execute(
            "UPDATE analysis_runs SET params = ? WHERE run_id = ?", [json.dumps(params), run_id]
        )
        # (this run's cause scores, which a run from before facts would not have, come last)
        causes = sorted(d for d in facts.detectors(con, run_id) if d.startswith("cause:"))
        assert facts.detectors(con, run_id) == ["consensus", *params["detectors"], *causes]
        per_detector = facts.outliers_per_detector(con, FrameFilter(run_id=run_id))
    assert list(per_detector["detector"]) == ["consensus", *params["detectors"], *causes]
