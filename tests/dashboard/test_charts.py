"""Pure chart and metric functions: one colour per detector/cluster everywhere, labelled axes,
and the comparison numbers checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import charts, metrics


def wide_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame_id": [1, 2, 3, 4, 5, 6],
            "taken_at": pd.to_datetime(
                [
                    "2024-04-01 10:00",
                    "2024-04-01 11:00",
                    "2024-04-01 12:00",
                    "2024-04-02 10:00",
                    "2024-04-02 11:00",
                    "2024-04-02 12:00",
                ]
            ),
            "a": [0.1, 0.2, 0.3, 0.4, 0.5, 0.96],
            "b": [0.96, 0.5, 0.4, 0.3, 0.2, 0.1],
            "c": [0.1, 0.2, 0.3, 0.4, 0.97, 0.96],
        }
    )


def test_colours_are_stable_and_distinct():
    assert charts.detector_color("consensus") == charts.detector_color("consensus")
    known = ["consensus", "iforest", "lof", "knn", "ecod", "copod", "hbos"]
    assert len({charts.detector_color(d) for d in known}) == len(known)
    assert charts.detector_color("new_detector") == charts.detector_color("new_detector")
    assert charts.cluster_color(-1) == charts.NOISE_COLOR
    assert len({charts.cluster_color(c) for c in range(10)}) == 10
    assert charts.cluster_label(-1) == "noise" and charts.cluster_label(3) == "cluster 3"


def test_every_detector_and_cause_score_has_its_own_colour():
    """Each detector the registry holds, each cause's score and the consensus: one colour each
    (a new detector falls back to a hashed colour that may repeat another's: give it one)."""
    from pipeline.causes import CAUSES
    from pipeline.detectors import DETECTORS
    from store.causes import cause_key

    keys = ["consensus", *DETECTORS, *map(cause_key, CAUSES)]
    colours = {k: charts.detector_color(k) for k in keys}
    assert len(set(colours.values())) == len(keys), colours


def test_same_colour_on_every_chart():
    wide = wide_table()
    bar = charts.outliers_bar(
        pd.DataFrame(
            {
                "detector": ["a", "lof"],
                "n_flagged": [1, 2],
                "n_scored": [6, 6],
                "flagged_share": [1 / 6, 2 / 6],
            }
        )
    )
    assert list(bar.data[0].marker.color) == [
        charts.detector_color("a"),
        charts.detector_color("lof"),
    ]
    labels = pd.DataFrame({"frame_id": [1, 6], "is_anomaly": [False, True]})
    pat = charts.precision_at_k(wide, labels, ["a", "b"], 2)
    assert [t.line.color for t in pat.data] == [
        charts.detector_color("a"),
        charts.detector_color("b"),
    ]


def test_flagged_bars_split_by_agreement_with_the_consensus():
    """Every detector flags its own top share, so its bar alone is the same height as the
    others': each bar is split into the flags the consensus shares (solid) and those only the
    detector raises (hatched, faint, same colour), scaled from the sample's share."""
    wide = pd.DataFrame(
        {
            "frame_id": [1, 2, 3, 4],
            "consensus_flag": [True, True, False, False],
            "lof_flag": [True, False, True, False],  # one shared, one its own
            "knn_flag": [True, True, False, False],  # both shared
            "hbos_flag": [False, False, False, None],  # none here (None: no score)
        }
    )
    agreement = metrics.consensus_agreement(wide, ["consensus", "lof", "knn", "hbos", "gone"])
    assert list(agreement["detector"]) == ["consensus", "lof", "knn", "hbos"]
    assert list(agreement["n_shared"]) == [2, 1, 2, 0]
    assert agreement["shared_share"].tolist()[:3] == [1.0, 0.5, 1.0]
    assert np.isnan(agreement["shared_share"].iloc[3])

    per = pd.DataFrame(
        {
            "detector": ["consensus", "lof", "knn", "hbos"],
            "n_flagged": [10, 10, 10, 10],  # equal, as on an unfiltered view
            "n_scored": [200] * 4,
            "flagged_share": [0.05] * 4,
        }
    )
    bar = charts.outliers_bar(per, agreement, sampled=True)
    parts = {t.name: t for t in bar.data}
    assert list(parts) == [charts.BAR_SHARED, charts.BAR_OWN, charts.BAR_UNKNOWN]
    assert list(parts[charts.BAR_SHARED].y) == [10, 5, 10, 0]
    assert list(parts[charts.BAR_OWN].y) == [0, 5, 0, 0]
    assert list(parts[charts.BAR_UNKNOWN].y) == [0, 0, 0, 10]
    assert bar.layout.barmode == "stack"
    colours = [charts.detector_color(d) for d in per["detector"]]
    assert list(parts[charts.BAR_SHARED].marker.color) == colours
    assert list(parts[charts.BAR_OWN].marker.pattern.fgcolor) == colours  # hatched, own hue
    assert parts[charts.BAR_OWN].marker.pattern.shape == "/"
    assert "about" in parts[charts.BAR_SHARED].hovertemplate  # a sample: an estimate
    assert "consensus" in parts[charts.BAR_OWN].hovertemplate
    # no agreement (a run without a consensus): one plain bar per detector, as before
    assert len(charts.outliers_bar(per, metrics.consensus_agreement(wide, ["lof"], "x")).data) == 1


def test_spearman_and_overlap():
    wide = wide_table()
    rho = metrics.spearman(wide, ["a", "b", "c"])
    assert rho.loc["a", "b"] == pytest.approx(-1.0)
    assert rho.loc["a", "a"] == pytest.approx(1.0)
    assert rho.loc["a", "c"] == pytest.approx(1 - 6 * 2 / (6 * 35))  # one swapped pair
    ov = metrics.top_k_overlap(wide, ["a", "b", "c"], 2)
    assert ov.loc["a", "c"] == 1.0 and ov.loc["a", "b"] == 0.0


def test_precision_at_k_and_roc():
    wide = wide_table()
    labels = pd.DataFrame({"frame_id": [1, 2, 5, 6], "is_anomaly": [False, False, True, True]})
    pat = metrics.precision_at_k(wide, labels, ["a", "b"], k_max=4)
    a = pat[pat["detector"] == "a"].set_index("k")["precision"]
    assert list(a) == [1.0, 1.0, pytest.approx(2 / 3), 0.5]
    curves, aucs = metrics.roc(wide, labels, ["a", "b"])
    assert aucs["a"] == pytest.approx(1.0) and aucs["b"] == pytest.approx(0.0)
    only_one_class = labels.assign(is_anomaly=True)
    assert metrics.roc(wide, only_one_class, ["a"])[1] == {}


def test_agreement_by_day():
    df = metrics.agreement_by_day(wide_table(), ["a", "b"], top_pct=0.95)
    # day 1: frame 1 flagged by b only -> disagree; frames 2, 3 agree. day 2: frame 6 a only.
    assert list(df["agreement"]) == [pytest.approx(2 / 3), pytest.approx(2 / 3)]
    assert list(df["n_frames"]) == [3, 3]


def test_agreement_over_a_long_archive_is_per_week_then_per_month():
    # 500 daily points were an unreadable tangle on a real webcam of 17 months
    rng = np.random.default_rng(0)
    for days, period, n_points in ((90, "day", 90), (500, "week", 73), (1500, "month", 50)):
        times = pd.Timestamp("2016-06-05 12:00") + pd.to_timedelta(np.arange(days), unit="D")
        wide = pd.DataFrame({"taken_at": times, "a": rng.random(days), "b": rng.random(days)})
        assert metrics.agreement_period(wide["taken_at"]) == period
        fig = charts.agreement_over_time(wide, ["a", "b"])
        assert fig.layout.title.text == f"Agreement per {period} (each detector's own flags)"
        assert len(fig.data[0].x) == n_points
        df = metrics.agreement_by_day(wide, ["a", "b"], period=period)
        assert df["n_frames"].sum() == days
    weeks = metrics.agreement_by_day(wide, ["a", "b"], period="week")["day"]
    assert (weeks.dt.day_of_week == 0).all()  # a week from its Monday


def test_flags_are_the_detectors_own_where_the_table_has_them():
    """`alignment` scores 0 on every frame that lines up: on a still camera that is nearly
    every frame, and all of them share the block's top percentile (1.0 here). Its own flag
    (is_outlier) is off for them; a percentile cut would flag them all, and the agreement chart
    would say every frame is flagged by some detector."""
    wide = wide_table().assign(
        alignment=[1.0] * 6,
        alignment_flag=[False] * 6,
        a_flag=[False, False, False, False, False, True],
        b_flag=[True, False, False, False, False, None],  # None: no score, not flagged
    )
    assert not metrics.flagged(wide, "alignment").any()
    assert metrics.flagged(wide.drop(columns="alignment_flag"), "alignment").all()
    assert list(metrics.flagged(wide, "b")) == [True] + [False] * 5
    df = metrics.agreement_by_day(wide, ["a", "alignment"])
    assert list(df["any_flagged"]) == [0.0, pytest.approx(1 / 3)]
    assert list(df["agreement"]) == [1.0, pytest.approx(2 / 3)]
    fig = charts.rank_scatter(wide, "a", "alignment")
    sizes = {t.name: len(t.x) for t in fig.data}
    assert sizes == {
        "neither flags it": 5,
        "only a flags it": 1,
        "only alignment flags it": 0,
        "both flag it": 0,
    }


def test_a_detector_that_scores_every_frame_alike_has_no_correlation_shown_as_a_number():
    wide = wide_table().assign(same=[0.5] * 6)
    fig = charts.spearman_heatmap(wide, ["a", "b", "same"])
    text = fig.data[0].text
    assert text[0][1] == "-1.00" and text[2][0] == "–" and text[0][0] == "1.00"


def test_calendar_heatmap_has_24_hours_and_units():
    cal = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-04-01", "2024-04-01", "2024-04-02"]),
            "hour": [3, 4, 23],
            "n_frames": [5, 6, 7],
            "outlier_rate": [0.0, 0.5, 1.0],
            "mean_pct": [0.1, 0.2, 0.3],
        }
    )
    fig = charts.calendar_heatmap(cal, "outlier_rate")
    z = np.array(fig.data[0].z, dtype=float)
    assert z.shape == (2, 24) and z[0, 4] == 50 and z[1, 23] == 100
    assert fig.layout.xaxis.title.text == "hour of day (camera clock)"
    assert fig.data[0].colorbar.title.text == "% flagged"


def test_calendar_heatmap_colours_start_at_zero():
    """One frame in every hour reads as one colour on a 0-1 scale (was 0.6-1.4: Plotly
    centres a flat z on its value)."""
    days = pd.to_datetime(["2024-04-01"] * 3 + ["2024-04-02"] * 3)
    cal = pd.DataFrame(
        {"day": days, "hour": [6, 7, 8] * 2, "n_frames": 1, "outlier_rate": 0.0, "period": "day"}
    )
    heat = charts.calendar_heatmap(cal).data[0]
    assert (heat.zmin, heat.zmax) == (0, 1)
    assert heat.colorbar.dtick == 1  # whole frames on the colour bar
    rate = charts.calendar_heatmap(cal, "outlier_rate").data[0]
    assert (rate.zmin, rate.zmax) == (0, 1)  # no flags: the bottom colour, not the middle
    busy = charts.calendar_heatmap(cal.assign(n_frames=[1, 2, 3, 40, 5, 6])).data[0]
    assert (busy.zmin, busy.zmax) == (0, 40)


def test_calendar_heatmap_cells_are_clickable_markers():
    """Plotly does not select heatmap cells: every cell carries an invisible marker, whose
    click is the selection event the Overview reads (period label as y, hour as x)."""
    cal = pd.DataFrame(
        {
            "day": pd.to_datetime(["2024-04-05", "2024-04-05", "2024-04-06"]),
            "hour": [10, 11, 23],
            "n_frames": [6, 1, 2],
            "outlier_rate": [0.5, 0.0, 1.0],
            "period": "day",
        }
    )
    fig = charts.calendar_heatmap(cal)
    heat, filled, empty = fig.data
    assert heat.type == "heatmap" and heat.hoverinfo == "skip"
    for cells in (filled, empty):
        assert cells.type == "scatter" and cells.name == charts.CELL_TRACE
        assert cells.marker.opacity == 0
        assert cells.selected.marker.opacity == cells.unselected.marker.opacity == 0
    got = {(str(y), int(x)): v for x, y, v in zip(filled.x, filled.y, filled.customdata)}
    assert got == {
        ("Fri 05 Apr 2024", 10): 6,
        ("Fri 05 Apr 2024", 11): 1,
        ("Sat 06 Apr 2024", 23): 2,
    }
    assert filled.hovertemplate == "%{y} %{x}:00 — %{customdata:,.0f} frames<extra></extra>"
    # the empty cells too: a click there finds its own cell, not a neighbour
    assert len(empty.x) == 2 * 24 - 3 and ("Sat 06 Apr 2024", 3) in set(
        zip(map(str, empty.y), map(int, empty.x))
    )
    assert "no frames" in empty.hovertemplate and empty.customdata is None
    # the markers do not widen the axes past the cells; the first day on top
    assert tuple(fig.layout.xaxis.range) == (-0.5, 23.5)
    assert tuple(fig.layout.yaxis.range) == (1.5, -0.5)
    rate = charts.calendar_heatmap(cal, "outlier_rate").data[1]
    assert list(rate.customdata) == [50, 0, 100] and "% flagged" in rate.hovertemplate


def test_selected_frame_ids_read_every_customdata_shape():
    """Streamlit's selection event carries each point's customdata as the browser serialised
    it: a row of a numpy (binary-encoded) array is a dict keyed "0", "1", ..."""
    points = [
        {"curve_number": 0, "point_index": 0, "customdata": {"0": 1001.0, "1": 58.6}},
        {"curve_number": 1, "point_index": 4, "customdata": [7, 12.5]},
        {"curve_number": 0, "point_index": 2, "customdata": 42},
        {"curve_number": 0, "point_index": 3},
        {"curve_number": 0, "point_index": 5, "customdata": {"0": None}},
        {"curve_number": 0, "point_index": 6, "customdata": "n/a"},
    ]
    assert charts.selected_frame_ids(points) == [1001, 7, 42]
    assert charts.custom_value(points[0], 1) == pytest.approx(58.6)
    assert charts.custom_value(points[2], 1) is None
    assert charts.selected_frame_ids([]) == []


def test_map_scatter_names_a_single_colour_in_its_legend():
    """Every frame without weather is one 'unknown' trace: the legend still says so."""
    pts = pd.DataFrame(
        {
            "frame_id": [1, 2],
            "map_x": [0.0, 1],
            "map_y": [0.0, 1],
            "cluster": [0, 0],
            "score_pct": [0.1, 0.5],
            "daylight": ["day"] * 2,
            "condition": ["unknown"] * 2,
            "taken_at": pd.to_datetime(["2024-04-01"] * 2),
        }
    )
    fig = charts.map_scatter(pts, "condition")
    assert [t.name for t in fig.data] == ["unknown"] and fig.layout.showlegend is True
    assert charts.map_scatter(pts, "score").layout.showlegend is False  # the colour bar says it


def test_map_scatter_is_webgl_and_carries_frame_ids():
    pts = pd.DataFrame(
        {
            "frame_id": [1, 2, 3],
            "map_x": [0.0, 1, 2],
            "map_y": [0.0, 1, 2],
            "cluster": [0, 1, -1],
            "score_pct": [0.1, 0.5, 0.99],
            "is_outlier": [False, False, True],
            "daylight": ["day"] * 3,
            "condition": ["fog"] * 3,
            "taken_at": pd.to_datetime(["2024-04-01"] * 3),
        }
    )
    fig = charts.map_scatter(pts, "cluster")
    assert {t.type for t in fig.data} == {"scattergl"}
    assert {t.name for t in fig.data} == {"cluster 0", "cluster 1", "noise"}
    ids = sorted(int(float(c[0])) for t in fig.data for c in t.customdata)
    assert ids == [1, 2, 3]
    score = charts.map_scatter(pts, "score", "lof")
    assert len(score.data) == 1 and score.data[0].marker.colorbar.title.text.startswith("lof")


def test_empty_inputs_give_a_titled_placeholder():
    empty = pd.DataFrame(columns=["day", "hour", "n_frames", "outlier_rate"])
    fig = charts.calendar_heatmap(empty)
    assert fig.layout.annotations[0].text == "No frames match the filters"
    assert charts.map_scatter(pd.DataFrame(), "cluster").layout.title.text == "Embedding map"


def test_ffmpeg_concat_file():
    from store.export import export_concat

    text = export_concat(["/f/a.jpg", "/f/it's.jpg"], fps=25, description="night")
    lines = text.splitlines()
    assert lines[0] == "ffconcat version 1.0" and "25 fps; night" in lines[1]
    assert lines[3:] == [
        "file '/f/a.jpg'",
        "duration 0.040000",
        "file '/f/it'\\''s.jpg'",
        "duration 0.040000",
        "file '/f/it'\\''s.jpg'",
    ]
    with pytest.raises(ValueError):
        export_concat(["/f/a.jpg"], fps=0)
