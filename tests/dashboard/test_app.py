"""AppTest of every page against the real demo store, with query parameters set, asserting what
is shown; hostile URLs show a notice; review writes round-trip; a locked store shows the notice;
the password gate holds."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import store
from store import aggregates
from store.db import scalar
from tests.conftest import REPO, python_output

APP = str(REPO / "dashboard" / "app.py")


@pytest.fixture
def app(demo_store, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(demo_store))
    monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "2")

    def make(**params) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        return at

    return make


def sql(db, query, params=None):
    with store.connect(db, read_only=True) as con:
        return scalar(con, query, params)


def store_rows(db, query, params=None) -> list[tuple]:
    with store.connect(db, read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    """Open the app on `page` first, as a browser opening a copied link would."""
    at.switch_page(page).run()
    return ok(at)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def values(arr) -> np.ndarray:
    """A Plotly array from a chart's JSON (plain or binary-encoded), as numpy."""
    if isinstance(arr, dict) and "bdata" in arr:
        flat = np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"])
        shape = arr.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return np.asarray(arr)


def n_values(arr) -> int:
    if isinstance(arr, dict) and "bdata" in arr:  # Plotly's binary array encoding
        return len(np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"]))
    return len(arr)


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def test_overview_counts_follow_the_url(app, demo_store):
    at = ok(app(daylight="night").run())
    assert titles(at) == ["Overview"]
    n_night = sql(demo_store, "SELECT count(*) FROM frames WHERE daylight = 'night'")
    assert metric(at, "Frames") == f"{n_night:,}"
    first, last = (
        sql(demo_store, f"SELECT {f}(taken_at)::DATE::VARCHAR FROM frames WHERE daylight = 'night'")
        for f in ("min", "max")
    )
    n_days = sql(
        demo_store, "SELECT count(DISTINCT taken_at::DATE) FROM frames WHERE daylight = 'night'"
    )
    assert metric(at, "Days") == str(n_days)
    assert any(
        c.value.startswith(f"From {first} ") and f" to {last} " in c.value for c in at.caption
    )
    assert metric(at, "Night") == "100 %"
    # the demo garden is placed: night by the sun there, said in the metric's help
    night_help = next(m for m in at.metric if m.label == "Night").proto.help
    assert night_help.startswith("Frames taken with the sun down at the camera's place")
    specs = charts(at)
    assert [s["layout"]["title"]["text"] for s in specs][:3] == [
        "The archive, an hour per cell (median of its thumbnails)",
        "Frames flagged per detector",
        "Frames per hour",
    ]
    bar = specs[1]["data"][0]
    assert bar["x"][0] == "consensus"
    heat = specs[2]["data"][0]
    assert heat["type"] == "heatmap" and n_values(heat["x"]) == 24
    assert at.query_params["daylight"] == "night"


def test_overview_bars_split_each_detectors_flags_by_the_consensus(app, demo_store):
    """The flags per detector are alike by construction (each flags its own top share): the
    bar chart splits each into the frames the consensus flags too and those it flags alone,
    counted on every frame of the small demo (under the sample size)."""
    at = ok(app().run())
    bar = charts(at)[1]
    assert bar["layout"]["title"]["text"] == "Frames flagged per detector"
    parts = {t["name"]: t for t in bar["data"]}
    assert {"consensus flags too", "only this detector"} <= set(parts)
    run = "(SELECT run_id FROM latest_run)"
    dets = list(parts["consensus flags too"]["x"])
    shared = dict(zip(dets, values(parts["consensus flags too"]["y"])))
    own = dict(zip(dets, values(parts["only this detector"]["y"])))
    for det in ("consensus", "lof", "iforest"):
        both = sql(
            demo_store,
            f"""SELECT count(*) FROM outlier_scores o JOIN outlier_scores c USING (frame_id)
                WHERE o.run_id = {run} AND c.run_id = {run} AND o.detector = ?
                  AND c.detector = 'consensus' AND o.is_outlier AND c.is_outlier""",
            [det],
        )
        alone = (
            sql(
                demo_store,
                f"""SELECT count(*) FROM outlier_scores WHERE run_id = {run} AND detector = ?
                AND is_outlier""",
                [det],
            )
            - both
        )
        assert (shared[det], own[det]) == (both, alone), det
    assert own["consensus"] == 0
    assert any("only that detector flags" in c.value for c in at.caption)


def test_gallery_shows_a_ranked_page(app, demo_store):
    at = open_page(app(thr="top5", det="iforest"), "views/gallery.py")
    assert titles(at) == ["Gallery"]
    assert len(at.image) == 5
    assert at.caption[0].value.startswith("5 frames (top 5 by iforest), ranked by iforest")
    links = at.get("page_link")
    top = sql(
        demo_store,
        "SELECT frame_id FROM outlier_scores WHERE detector = 'iforest' AND "
        "run_id = (SELECT run_id FROM latest_run) "
        "ORDER BY score DESC, frame_id LIMIT 1",
    )
    assert links[0].proto.label == f"Frame {top}"
    assert f"frame={top}" in links[0].proto.query_string
    assert "thr=top5" in links[0].proto.query_string


def test_gallery_paging_and_page_size(app, demo_store):
    n = sql(demo_store, "SELECT count(*) FROM frames")
    at = open_page(app(page="2"), "views/gallery.py")
    assert len(at.image) == min(24, max(0, n - 24))
    assert "on page 2 of" in at.caption[0].value
    assert at.query_params["page"] == "2"


def test_map_draws_every_filtered_point(app, demo_store):
    at = open_page(app(hours="8-16", color="daylight"), "views/map.py")
    n = sql(
        demo_store,
        "SELECT count(*) FROM frames f JOIN clusters c USING (frame_id) "
        "WHERE c.run_id = (SELECT run_id FROM latest_run) "
        "AND hour(f.taken_at) BETWEEN 8 AND 16",
    )
    spec = charts(at)[0]
    assert all(t["type"] == "scattergl" for t in spec["data"])
    assert sum(n_values(t["x"]) for t in spec["data"]) == n
    assert {t["name"] for t in spec["data"]} <= {"day", "twilight", "night"}
    assert any(f"Showing all {n:,} frames" in c.value for c in at.caption)


def test_a_map_selection_from_the_browser_selects_its_frames(app, demo_store):
    """A lasso or box on the map: the event as the browser sends it (each point's customdata,
    a numpy row, is a dict {"0": frame id, "1": percentile}; it crashed the page with
    KeyError: 0) selects those frames and offers the Gallery and Review."""
    at = open_page(app(), "views/map.py")
    spec = charts(at)[0]
    picked = []
    for curve, trace in enumerate(spec["data"][:2]):
        custom = values(trace["customdata"])
        for index in range(min(3, len(custom))):
            fid, pct = (float(v) for v in custom[index])
            picked.append(
                {
                    "curve_number": curve,
                    "point_number": index,
                    "point_index": index,
                    "x": 0.0,
                    "y": 0.0,
                    "customdata": {"0": fid, "1": pct},
                }
            )
    at.session_state["map_chart"] = {
        "selection": {
            "points": picked,
            "point_indices": sorted({p["point_index"] for p in picked}),
            "box": [],
            "lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}],
        }
    }
    at = ok(at.run())
    ids = sorted(int(p["customdata"]["0"]) for p in picked)
    assert len(ids) >= 4 and at.session_state["selection"] == ids
    assert [s.value for s in at.success] == [f"{len(ids):,} frames selected."]
    links = [link.proto.label for link in at.get("page_link")]
    assert "Open the selection in the gallery" in links and "Review the selection" in links
    at.switch_page("views/gallery.py").run()
    assert len(ok(at).image) == len(ids)


def test_map_weather_colouring_without_weather_says_how_to_import(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["color"] = "condition"
    at.switch_page("views/map.py").run()
    assert not [i.value for i in ok(at).info]  # the demo has weather: no note
    with store.connect(store_copy) as con:
        con.execute("DELETE FROM frame_weather")
        con.execute("DELETE FROM weather")
        aggregates.mark_weather_stale(con)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["color"] = "condition"
    at.switch_page("views/map.py").run()
    notes = [i.value for i in ok(at).info]
    assert len(notes) == 1 and notes[0].startswith("No weather in this store")
    assert "`python -m pipeline weather import" in notes[0]
    assert {t["name"] for t in charts(at)[0]["data"]} == {"unknown"}
    at.segmented_control(key="map_color").set_value("cluster").run()
    assert not [i.value for i in ok(at).info]


def test_clusters_page(app, demo_store):
    at = open_page(app(), "views/clusters.py")
    n_clusters = sql(
        demo_store,
        "SELECT count(DISTINCT cluster) FROM clusters "
        "WHERE run_id = (SELECT run_id FROM latest_run)",
    )
    heads = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert len(heads) == n_clusters
    assert len(at.image) > 0
    sizes = charts(at)[0]
    assert sizes["layout"]["title"]["text"] == "Frames per cluster"


def test_each_cluster_heading_has_the_clusters_colour(app):
    """The headings' icon was a grey circle: each is now a square in its cluster's colour,
    the colour of its bar in "Frames per cluster" (and of its lines elsewhere)."""
    at = open_page(app(), "views/clusters.py")
    bars = charts(at)[0]["data"][0]
    colour_of = dict(zip(bars["x"], bars["marker"]["color"]))
    heads = [m.value for m in at.markdown if m.value.startswith("### ")]
    assert [h.rsplit("</span> ", 1)[1] for h in heads] == list(colour_of)
    for head in heads:
        label = head.rsplit("</span> ", 1)[1]
        assert f'<span style="color: {colour_of[label]}"' in head, head
    assert len(set(colour_of.values())) == len(colour_of)  # not one grey for all


def test_a_compare_link_keeps_its_a_and_b(app):
    at = open_page(
        app(cmp="iforest,lof,consensus", k="20", a="lof", b="consensus"), "views/compare.py"
    )
    assert [at.selectbox(key=k).value for k in ("compare_a", "compare_b")] == ["lof", "consensus"]
    assert charts(at)[0]["layout"]["title"]["text"] == "lof vs consensus: score percentile"
    assert not at.warning
    # a change of B is in the link
    at.selectbox(key="compare_b").set_value("iforest").run()
    assert (at.query_params["a"], at.query_params["b"]) == ("lof", "iforest")
    # one detector in 'cmp' cannot be compared: the page says so instead of changing it quietly
    at = open_page(app(cmp="lof"), "views/compare.py")
    assert any("two or more detectors in 'cmp'" in w.value for w in at.warning)


def test_compare_page(app, demo_store):
    at = open_page(app(cmp="iforest,lof", k="10"), "views/compare.py")
    names = [s["layout"]["title"]["text"] for s in charts(at)]
    assert names[:4] == [
        "iforest vs lof: score percentile",
        "Spearman rank correlation",
        "Top-10 overlap (share of row's top-10 also in column's)",
        "Agreement per day (each detector's own flags)",
    ]
    flagged = {t["name"]: n_values(t["x"]) for t in charts(at)[0]["data"]}
    assert flagged["only iforest flags it"] + flagged["both flag it"] == sql(
        demo_store,
        "SELECT count(*) FROM outlier_scores WHERE detector = 'iforest' AND is_outlier "
        "AND run_id = (SELECT run_id FROM latest_run)",
    )
    heads = [s.value for s in at.subheader]
    assert "iforest flags it, lof does not" in heads and "lof flags it, iforest does not" in heads
    n_truth = sql(demo_store, "SELECT count(*) FROM ground_truth")
    if n_truth:
        assert "Precision@k against reviews / ground truth" in names
        assert "ROC against reviews / ground truth" in names
    spear = charts(at)[1]["data"][0]
    assert spear["x"] == ["iforest", "lof"]


def test_compare_says_one_frame_is_not_in_the_others_top(app, demo_store):
    """With k = 1 and two detectors whose highest frames differ, exactly one of each one's top
    frames is not in the other's: the line says "is", not "are"."""
    tops = {
        det: fid
        for det, fid in store_rows(
            demo_store,
            """SELECT detector, arg_max(frame_id, (score, -frame_id)) FROM outlier_scores
               WHERE run_id = (SELECT run_id FROM latest_run) GROUP BY detector""",
        )
    }
    a, b = next((a, b) for a in sorted(tops) for b in sorted(tops) if tops[a] != tops[b])
    at = open_page(app(cmp=f"{a},{b}", k="1", a=a, b=b), "views/compare.py")
    lines = [c.value for c in at.caption if "top 1 frame" in c.value]
    assert lines == [
        f"1 of {a}'s top 1 frame is not in {b}'s top 1; the highest by {a}:",
        f"1 of {b}'s top 1 frame is not in {a}'s top 1; the highest by {b}:",
    ]


def test_frame_page_shows_the_original_scores_and_neighbours(app, demo_store):
    fid = sql(demo_store, "SELECT min(frame_id) FROM frames")
    at = open_page(app(frame=str(fid)), "views/frame.py")
    assert at.caption[0].value.startswith(f"Frame {fid} · ")
    n_det = sql(
        demo_store,
        "SELECT count(*) FROM outlier_scores WHERE frame_id = ? AND run_id = "
        "(SELECT run_id FROM latest_run)",
        [fid],
    )
    assert n_values(charts(at)[0]["data"][0]["y"]) == n_det
    n_nb = sql(
        demo_store,
        "SELECT count(*) FROM neighbors WHERE frame_id = ? AND run_id = "
        "(SELECT run_id FROM latest_run)",
        [fid],
    )
    assert len(at.image) == 1 + n_nb
    root = sql(demo_store, "SELECT root FROM frames WHERE frame_id = ?", [fid])
    from pathlib import Path

    expected = "original file" if Path(root).is_dir() else "thumbnail"
    assert at.image[0].captions[0].startswith(expected)
    # the demo garden is placed: its daylight was told by the sun at the camera
    [meta] = [d.value.set_index("field")["value"] for d in at.dataframe if "field" in d.value]
    [(daylight, elevation)] = store_rows(
        demo_store, "SELECT daylight, sun_elevation FROM frames WHERE frame_id = ?", [fid]
    )
    assert meta["daylight"] == f"{daylight} (by the sun, {elevation:.1f}°)"


def test_unknown_frame_is_a_notice(app):
    at = open_page(app(frame="999999999"), "views/frame.py")
    assert any("no frame 999999999" in w.value for w in at.warning)
    at = open_page(app(frame="../../etc/passwd"), "views/frame.py")
    assert any("Ignored URL parameter 'frame'" in w.value for w in at.warning)


def test_runs_page(app, demo_store):
    at = open_page(app(), "views/runs.py")
    n_runs = sql(demo_store, "SELECT count(*) FROM analysis_runs")
    assert len(at.expander) == n_runs
    # each run's parameters: the model, causes and detectors in a line, the whole tree folded
    # (unfolded it made the page 9,000 pixels tall, the ingest errors below it out of reach)
    trees = at.get("json")
    assert len(trees) == n_runs and not any(t.proto.expanded for t in trees)
    assert any("causes quality, camera, scene, rarity" in c.value for c in at.caption)
    assert metric(at, "frames") == f"{sql(demo_store, 'SELECT count(*) FROM frames'):,}"
    n_err = sql(demo_store, "SELECT count(*) FROM ingest_errors")
    if n_err:
        assert at.dataframe[-1].value.shape[0] == n_err
    else:
        assert at.success[0].value == "No file failed."


@pytest.mark.parametrize(
    "params",
    [
        {"cluster": "99999", "from": "2024-99-99", "det": "x'; DROP TABLE frames; --"},
        {"weather": "../../../../etc/passwd", "hours": "25-3", "thr": "pct-1"},
        {"daylight": "A" * 10_000, "run": "0 OR 1=1", "bogus": "<script>alert(1)</script>"},
        {"causes": "vibes,<b>x</b>", "det": "cause:vibes", "thr": "top0"},
    ],
)
def test_hostile_urls_show_a_notice(app, demo_store, params):
    at = ok(app(**params).run())
    text = "\n".join(w.value for w in at.warning)
    assert text.count("Ignored") >= 3, text
    n = sql(demo_store, "SELECT count(*) FROM frames")
    assert metric(at, "Frames") == f"{n:,}"  # the view is unfiltered
    for key in params:
        assert key not in at.query_params  # the bad values are not written back


@pytest.mark.parametrize(
    "params",
    [
        {"incident": "1; DROP TABLE incidents", "cluster": "99999", "det": "<img src=x>"},
        {"incident": "-5", "from": "2024-13-40", "thr": "top-3", "hours": "0-99"},
        {"incident": "9" * 40, "daylight": "../etc", "weather": "A" * 10_000},
    ],
)
def test_hostile_urls_on_the_incidents_page_show_a_notice(app, demo_store, params):
    at = open_page(app(**params), "views/incidents.py")
    text = "\n".join(w.value for w in at.warning)
    assert text.count("Ignored") >= 3, text
    assert "Ignored URL parameter 'incident'" in text
    assert metric(at, "Incidents") == f"{len(_incidents(demo_store)):,}"  # unfiltered
    assert at.query_params["incident"] == str(at.selectbox(key="incident_pick").value)
    for key in set(params) - {"incident"}:
        assert key not in at.query_params


def test_review_one_by_one_and_bulk_round_trip(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/review.py").run()
    ok(at)
    top = sql(
        store_copy,
        "SELECT frame_id FROM outlier_scores WHERE detector = 'consensus' AND "
        "run_id = (SELECT run_id FROM latest_run) "
        "ORDER BY score DESC, frame_id LIMIT 1",
    )
    at.text_input(key="review_note").input("person in view")
    at.button(key="review_junk").click().run()
    ok(at)
    assert (
        sql(store_copy, "SELECT verdict || ':' || note FROM reviews WHERE frame_id = ?", [top])
        == "junk:person in view"
    )
    at.button(key="review_keep").click().run()
    assert sql(store_copy, "SELECT count(*) FROM reviews WHERE verdict = 'keep'") == 1
    # bulk: every night frame -> junk
    at.query_params.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["daylight"] = "night"
    at.run()
    at.switch_page("views/review.py").run()
    at.radio(key="review_target").set_value("filtered").run()
    at.checkbox(key="review_confirm").check().run()
    at.button(key="review_apply").click().run()
    ok(at)
    n_night = sql(store_copy, "SELECT count(*) FROM frames WHERE daylight = 'night'")
    assert (
        sql(
            store_copy,
            "SELECT count(*) FROM reviews r JOIN frames f USING (frame_id) "
            "WHERE f.daylight = 'night' AND verdict = 'junk'",
        )
        == n_night
    )
    # the export leaves them out
    at.radio(key="export_mode").set_value("not_junk").run()
    assert any(
        s.value.startswith("**0 frames**") or "Nothing to export" in s.value
        for s in list(at.markdown) + list(at.info)
    )


def test_review_to_teach_offers_the_top_and_a_random_frame_in_turn(store_copy, monkeypatch):
    """A user who picks the teaching order marks the highest-ranked frame junk, is then offered
    a frame drawn at random (the first unreviewed in hash order, which the caption says), marks
    it keep, and is offered the highest-ranked again."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("views/review.py").run()
    at.radio(key="review_order").set_value("teach").run()
    ok(at)
    ranked = (
        "SELECT frame_id FROM outlier_scores WHERE detector = 'consensus' AND "
        "run_id = (SELECT run_id FROM latest_run) AND frame_id NOT IN "
        "(SELECT frame_id FROM reviews) ORDER BY "
    )
    top = sql(store_copy, ranked + "score DESC, frame_id LIMIT 1")
    at.button(key="review_junk").click().run()
    ok(at)
    drawn = sql(store_copy, ranked + "hash(frame_id), frame_id LIMIT 1")
    assert any(c.value.startswith("A frame drawn at random") for c in at.caption)
    at.button(key="review_keep").click().run()
    ok(at)
    assert store_rows(store_copy, "SELECT frame_id, verdict FROM reviews ORDER BY verdict") == [
        (top, "junk"),
        (drawn, "keep"),
    ]
    assert any(c.value.startswith("The highest-ranked frame left") for c in at.caption)
    assert drawn != top
    # at random alone: the next of the same draw, whatever the count of verdicts
    at.radio(key="review_order").set_value("random").run()
    ok(at)
    assert any("offered at random" in c.value for c in at.caption)
    next_drawn = sql(store_copy, ranked + "hash(frame_id), frame_id LIMIT 1")
    at.button(key="review_keep").click().run()
    ok(at)
    assert sql(store_copy, "SELECT verdict FROM reviews WHERE frame_id = ?", [next_drawn]) == "keep"
    assert next_drawn not in (top, drawn)


def test_gallery_selection_bulk_review(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["thr"] = "top3"
    at.run()
    at.switch_page("views/gallery.py").run()
    ids = [int(link.proto.label.split()[-1]) for link in at.get("page_link")[:3]]
    for fid in ids[:2]:
        at.checkbox(key=f"pick_gallery_{fid}").check()
    at.run()
    at.button(key="gallery_keep").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, ids) == {ids[0]: "keep", ids[1]: "keep"}


def test_export_downloads(app, demo_store):
    at = open_page(app(daylight="day"), "views/review.py")
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["File list (.txt)", "CSV", "ffmpeg concat"]
    n_day = sql(
        demo_store,
        "SELECT count(*) FROM frames f LEFT JOIN reviews r USING (frame_id) "
        "WHERE daylight = 'day' AND r.verdict IS DISTINCT FROM 'junk'",
    )
    assert any(m.value.startswith(f"**{n_day:,} frames** to export") for m in at.markdown)


def test_locked_store_shows_the_notice(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "0.5")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); sys.stdin.read()",
            str(store_copy),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        at = AppTest.from_file(APP, default_timeout=60).run()
        assert not at.exception
        text = "\n".join(w.value for w in at.warning)
        assert "is locked by process" in text and str(store_copy) in text
        assert "retries by itself" in text
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    at.button[-1].click().run()  # "Retry now" after the lock is gone
    ok(at)
    assert titles(at) == ["Overview"]


def test_password_gate(app):
    at = app(password="letmein", _authed="1", daylight="night")
    at.secrets["password"] = "s3cret"
    at.run()
    assert not at.metric and len(at.text_input) == 1  # no URL parameter gets past it
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert not at.metric and at.error[0].value == "Wrong password."
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    ok(at)
    assert titles(at) == ["Overview"] and at.metric


def test_missing_store_is_an_error_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("TIMELAPSE_DB", str(tmp_path / "nope.duckdb"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "No store at" in at.error[0].value


def test_dashboard_does_not_import_heavy_modules():
    code = (
        "import sys; sys.argv = ['x']\n"
        "import dashboard.data, dashboard.charts, dashboard.filters, dashboard.metrics, "
        "dashboard.ui, store.facts, store.reviews\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'pyod', 'sklearn', 'pipeline', 'umap', 'hdbscan', 'torch', 'numba')]\n"
        "print(heavy)"
    )
    assert python_output(code) == "[]"


def test_overview_days_are_the_days_with_frames_in_the_filters(store_copy, monkeypatch):
    """'Days' counts the days holding a frame the filters keep, not the calendar from the first
    frame to the last: with the demo's second day moved two days on, 2 days of a 4-day span."""
    with store.connect(store_copy) as con:
        last = scalar(con, "SELECT max(taken_at)::DATE FROM frames")
        con.execute(
            "UPDATE frames SET taken_at = taken_at + INTERVAL 2 DAY WHERE taken_at::DATE = ?",
            [last],
        )
        aggregates.mark_stale(con)  # what the frame writers do when times change
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))

    def days(**params) -> int:
        at = AppTest.from_file(APP, default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        at = ok(at.run())
        help_text = next(m for m in at.metric if m.label == "Days").proto.help
        assert "with at least one frame the filters keep" in help_text
        return int(metric(at, "Days"))

    assert sql(store_copy, "SELECT count(DISTINCT taken_at::DATE) FROM frames") == 2
    assert days() == 2  # of a 4-day span
    assert days(hours="0-5") == 2
    # the moved day has frames from 00:00 to 07:59 only
    assert (
        sql(
            store_copy,
            "SELECT count(DISTINCT taken_at::DATE) FROM frames WHERE hour(taken_at) >= 8",
        )
        == 1
    )
    assert days(hours="8-23") == 1


def test_overview_says_how_night_was_told_and_how_to_tell_it_better(store_copy, monkeypatch):
    """A store told night by its time zone's sun (no place) or by brightness: the Night
    metric's help says so and names the command that does better."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))

    def night_help() -> str:
        at = ok(AppTest.from_file(APP, default_timeout=60).run())
        return next(m for m in at.metric if m.label == "Night").proto.help

    for source, says in [
        (
            "timezone",
            [
                "at its time zone's own place: the camera's place is not set",
                "locate --db FILE --lat LAT --lon LON",
                "--daylight-from brightness",
            ],
        ),
        ("brightness", ["by each frame's brightness", "locate --db FILE --timezone TZ"]),
    ]:
        with store.connect(store_copy) as con:
            con.execute("UPDATE frames SET daylight_source = ?", [source])
        text = night_help()
        assert all(part in text for part in says), (source, text)


def test_overview_opens_a_day_in_the_gallery(app, demo_store):
    at = ok(app().run())
    at.selectbox(key="overview_day").select_index(0).run()
    day = at.selectbox(key="overview_day").value
    at.button(key="overview_open").click().run()
    ok(at)
    assert titles(at) == ["Gallery"]
    n_day = sql(demo_store, "SELECT count(*) FROM frames WHERE taken_at::DATE = ?", [day])
    assert at.caption[0].value.startswith(f"{n_day:,} frames (dates {day} to {day})")
    assert at.query_params["from"] == at.query_params["to"] == str(day)


def test_selection_filters_the_gallery(app, demo_store):
    at = app()
    at.run()
    with store.connect(demo_store, read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute("SELECT frame_id FROM frames ORDER BY frame_id LIMIT 4").fetchall()
        ]
    at.session_state["selection"] = ids
    at.switch_page("views/gallery.py").run()
    ok(at)
    assert at.toggle(key="gallery_only_sel").value is True
    assert len(at.image) == 4
    assert "4 selected frames" in at.caption[0].value
    at.toggle(key="gallery_only_sel").set_value(False).run()
    assert len(at.image) == min(24, sql(demo_store, "SELECT count(*) FROM frames"))


def test_store_with_frames_only(garden_monz, tmp_path, monkeypatch):
    """Right after `ingest` (no analysis yet): counts, span and the paged grid; every other page
    says what to run instead of failing. Uses the 13 real garden frames."""
    db = tmp_path / "real.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", str(garden_monz), "--db", str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    n = sql(db, "SELECT count(*) FROM frames")
    assert n == 13
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = ok(AppTest.from_file(APP, default_timeout=60).run())
    assert metric(at, "Frames") == "13"
    first, last = (
        sql(db, f"SELECT strftime({f}(taken_at), '%Y-%m-%d %H:%M') FROM frames")
        for f in ("min", "max")
    )
    assert any(c.value == f"From {first} to {last} (camera clock)." for c in at.caption)
    at.switch_page("views/gallery.py").run()
    ok(at)
    assert len(at.image) == 13 and "13 frames" in at.caption[0].value
    at.selectbox(key="gallery_size").set_value(12).run()
    assert len(at.image) == 12
    at.number_input(key="gallery_page").set_value(2).run()
    assert len(at.image) == 1
    for page in (
        "views/map.py",
        "views/clusters.py",
        "views/compare.py",
        "views/runs.py",
        "views/review.py",
    ):
        at.switch_page(page).run()
        ok(at)
    at.switch_page("views/frame.py").run()
    ok(at)
    assert at.image[0].captions[0] == "original file"  # the real JPEG under its root


def test_a_session_on_a_pruned_run_falls_back_to_a_kept_one(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    for _ in range(2):  # three runs in all
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "analyze", "--db", str(store_copy), "--quiet"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    at = ok(AppTest.from_file(APP, default_timeout=60).run())
    runs = next(s for s in at.sidebar.selectbox if s.label == "Analysis run")
    oldest = sql(store_copy, "SELECT min(run_id) FROM analysis_runs WHERE status = 'complete'")
    runs.set_value(oldest).run()
    assert at.query_params["run"] == str(oldest)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "prune", "--db", str(store_copy), "--keep", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ok(at.run())
    runs = next(s for s in at.sidebar.selectbox if s.label == "Analysis run")
    latest = sql(store_copy, "SELECT run_id FROM latest_run")
    assert len(runs.options) == 2 and runs.value == latest
    assert "run" not in at.query_params
    n = sql(store_copy, "SELECT count(*) FROM frames")
    assert metric(at, "Frames") == f"{n:,}"


def _incidents(db, where: str = "TRUE") -> list[int]:
    with store.connect(db, read_only=True) as con:
        return [
            r[0]
            for r in con.execute(
                "SELECT incident_id FROM incidents WHERE run_id = (SELECT run_id FROM latest_run) "
                f"AND {where} ORDER BY started_at, incident_id"
            ).fetchall()
        ]


def test_incidents_page_lists_draws_and_exports_the_runs_incidents(app, demo_store):
    ids = _incidents(demo_store)
    assert ids, "the demo store has incidents"
    at = open_page(app(), "views/incidents.py")
    assert titles(at) == ["Incidents"]
    assert metric(at, "Incidents") == f"{len(ids):,}"
    timeline = charts(at)[0]
    assert timeline["layout"]["title"]["text"] == "Incidents over the archive"
    drawn = sorted(
        int(c[0])
        for t in timeline["data"]
        if t["mode"] == "markers"
        for c in values(t["customdata"])
    )
    assert drawn == sorted(ids)
    assert at.dataframe[0].value["incident_id"].tolist() == ids
    assert [b.label for b in at.get("download_button")] == ["Bad periods (CSV)"]
    longest = sql(
        demo_store,
        "SELECT incident_id FROM incidents WHERE run_id = "
        "(SELECT run_id FROM latest_run) ORDER BY n_frames DESC, "
        "peak_score DESC LIMIT 1",
    )
    assert at.selectbox(key="incident_pick").value == longest
    assert at.query_params["incident"] == str(longest)
    n = sql(
        demo_store,
        "SELECT n_frames FROM incidents WHERE run_id = (SELECT run_id FROM "
        "latest_run) AND incident_id = ?",
        [longest],
    )
    assert at.button(key="incident_junk").label == f"Mark all {n:,} frames junk"
    assert len(at.image) == min(n, 12)


def test_incidents_follow_the_url_and_the_filters(app, demo_store):
    ids = _incidents(demo_store)
    at = open_page(app(incident=str(ids[-1])), "views/incidents.py")
    assert at.selectbox(key="incident_pick").value == ids[-1]
    at = open_page(app(daylight="night"), "views/incidents.py")
    assert at.success[0].value == "No incidents among the filtered frames."
    at = open_page(app(hours="12-23"), "views/incidents.py")
    later = _incidents(
        demo_store,
        "incident_id IN (SELECT incident_id FROM incident_frames WHERE hour(taken_at) >= 12)",
    )
    assert at.dataframe[0].value["incident_id"].tolist() == later
    at = open_page(app(incident="not-a-number"), "views/incidents.py")
    assert any("Ignored URL parameter 'incident'" in w.value for w in at.warning)


def test_marking_an_incident_marks_every_frame_and_undo_restores(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    with store.connect(store_copy, read_only=True) as con:
        (incident,) = con.execute(
            "SELECT incident_id FROM incidents WHERE run_id = (SELECT run_id FROM latest_run) "
            "ORDER BY n_frames DESC LIMIT 1"
        ).fetchall()[0]
        members = [
            r[0]
            for r in con.execute(
                "SELECT frame_id FROM incident_frames WHERE run_id = (SELECT run_id FROM "
                "latest_run) AND incident_id = ? ORDER BY frame_id",
                [incident],
            ).fetchall()
        ]
    with store.connect(store_copy) as con:
        store.reviews.set_verdicts(con, members[:1], "keep", "a judgement call")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["incident"] = str(incident)
    at.run()
    at.switch_page("views/incidents.py").run()
    at.button(key="incident_junk").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, members) == {fid: "junk" for fid in members}
    at.button(key="incident_undo").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, members) == {members[0]: "keep"}
        assert (
            scalar(con, "SELECT note FROM reviews WHERE frame_id = ?", [members[0]])
            == "a judgement call"
        )
    assert "incident_undo" not in [b.key for b in at.button]  # nothing left to undo


def test_an_incident_the_filters_leave_out_is_named(app, demo_store):
    morning = _incidents(demo_store, "hour(started_at) < 12")
    assert morning, "the demo store has a morning incident"
    at = open_page(app(incident=str(morning[0]), hours="12-23"), "views/incidents.py")
    assert any(
        f"Incident {morning[0]} is not among the incidents the filters keep" in w.value
        for w in at.warning
    )
    assert at.selectbox(key="incident_pick").value != morning[0]


def _longest_incident(db) -> int:
    return sql(
        db,
        "SELECT incident_id FROM incidents WHERE run_id = (SELECT run_id FROM latest_run) "
        "ORDER BY n_frames DESC, peak_score DESC LIMIT 1",
    )


def test_the_open_incident_survives_page_changes_and_a_reload(app, demo_store):
    other = next(i for i in _incidents(demo_store) if i != _longest_incident(demo_store))
    at = open_page(app(incident=str(other), daylight="day"), "views/incidents.py")
    assert at.selectbox(key="incident_pick").value == other
    for away in ("views/gallery.py", "views/overview.py"):  # the sidebar's page links
        ok(at.switch_page(away).run())
        assert "incident" not in at.query_params  # another page's URL: its own keys only
        assert at.query_params["daylight"] == "day"
        ok(at.switch_page("views/incidents.py").run())
        assert at.selectbox(key="incident_pick").value == other
        assert at.query_params["incident"] == str(other)
    # a reload, or the address sent to someone: a new session on the same URL
    again = open_page(app(**dict(at.query_params)), "views/incidents.py")
    assert again.selectbox(key="incident_pick").value == other
    assert not again.warning


def test_an_unknown_incident_in_the_url_is_named(app, demo_store):
    at = open_page(app(incident="9999999"), "views/incidents.py")
    run = sql(demo_store, "SELECT run_id FROM latest_run")
    assert [w.value for w in at.warning] == [
        f"There is no incident 9999999 in run {run}; showing the longest instead."
    ]
    assert at.selectbox(key="incident_pick").value == _longest_incident(demo_store)
    assert at.query_params["incident"] == str(_longest_incident(demo_store))


def test_keep_and_clear_an_incident_then_undo_the_clearing(store_copy, monkeypatch):
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    incident = _incidents(store_copy)[0]
    with store.connect(store_copy, read_only=True) as con:
        members = [
            r[0]
            for r in con.execute(
                "SELECT frame_id FROM incident_frames WHERE run_id = (SELECT run_id FROM "
                "latest_run) AND incident_id = ? ORDER BY frame_id",
                [incident],
            ).fetchall()
        ]
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["incident"] = str(incident)
    at.switch_page("views/incidents.py").run()  # a link to the incident, opened
    assert at.selectbox(key="incident_pick").value == incident
    at.button(key="incident_keep").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, members) == {fid: "keep" for fid in members}
    row = at.dataframe[0].value.set_index("incident_id").loc[incident]
    assert (row["n_keep"], row["n_junk"]) == (len(members), 0)
    at.button(key="incident_unmarked").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, members) == {}
    assert at.button(key="incident_undo").label == "Undo (unmarked)"
    at.button(key="incident_undo").click().run()
    ok(at)
    with store.connect(store_copy, read_only=True) as con:
        assert store.reviews.verdicts(con, members) == {fid: "keep" for fid in members}


@pytest.mark.parametrize("shape", ["list", "browser"])
def test_clicking_an_incident_on_the_timeline_opens_it(app, demo_store, shape):
    ids = _incidents(demo_store)
    at = open_page(app(), "views/incidents.py")
    other = next(i for i in ids if i != at.selectbox(key="incident_pick").value)
    # what is sent when a marker is clicked (its customdata: the incident id, its frames); a
    # browser sends a numpy row as a dict {"0": id, "1": n}, which crashed the page
    custom = [other, 3] if shape == "list" else {"0": other, "1": 3}
    at.session_state["incidents_timeline"] = {
        "selection": {
            "points": [{"customdata": custom}],
            "point_indices": [0],
            "box": [],
            "lasso": [],
        }
    }
    at.run()
    ok(at)
    assert at.selectbox(key="incident_pick").value == other
    assert at.query_params["incident"] == str(other)


def test_bad_periods_have_start_end_cause_and_frames(con, run_id):
    from dashboard import ui
    from store import facts
    from store.facts import FrameFilter

    found = facts.incidents(con, FrameFilter(run_id=run_id))
    periods = ui.bad_periods(found)
    assert list(periods.columns[:4]) == ["start", "end", "cause", "frames"]
    assert periods["frames"].tolist() == found["n_frames"].tolist()
    assert (periods["end"] >= periods["start"]).all()


@pytest.mark.parametrize("size, columns", [("small", 6), ("medium", 4), ("large", 2)])
def test_gallery_thumbnail_size_follows_the_url(app, size, columns):
    at = open_page(app(size=size), "views/gallery.py")
    assert at.segmented_control(key="gallery_thumb").value == size
    assert at.query_params["size"] == size

    def has_image(node) -> bool:
        return node.type == "image" or any(
            has_image(c) for c in getattr(node, "children", {}).values()
        )

    assert len(at.image) == 24
    cards = [column for column in at.columns if has_image(column)]
    assert len(cards) == 24  # a card per column, a row of `columns` columns at a time
    assert {round(1 / c.weight) for c in cards} == {columns}  # st.columns(n): weights 1/n


def test_gallery_cards_have_one_badge_and_details_on_demand(app, demo_store):
    at = open_page(app(det="lof", size="large"), "views/gallery.py")
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == len(at.image) == 24
    top = sql(
        demo_store,
        "SELECT frame_id FROM outlier_scores WHERE detector = 'lof' AND "
        "run_id = (SELECT run_id FROM latest_run) "
        "ORDER BY score DESC, frame_id LIMIT 1",
    )
    pct = sql(
        demo_store,
        "SELECT score_pct FROM outlier_scores WHERE detector = 'lof' AND "
        "run_id = (SELECT run_id FROM latest_run) AND frame_id = ?",
        [top],
    )
    assert f"lof {pct * 100:.1f}\u00a0%" in badges[0]
    n_scores = sql(
        demo_store,
        "SELECT count(score_pct) FROM outlier_scores WHERE frame_id = ? "
        "AND run_id = (SELECT run_id FROM latest_run)",
        [top],
    )
    assert not any("consensus" in c.value and "%" in c.value for c in at.caption)
    at.session_state[f"gallery_more_{top}"] = True  # open the first card's details
    at.run()
    ok(at)
    details = [c.value for c in at.caption if c.value.count("%") >= n_scores]
    assert details and details[0].startswith("consensus ")


def test_gallery_size_control_writes_the_url(app):
    at = open_page(app(), "views/gallery.py")
    assert at.segmented_control(key="gallery_thumb").value == "medium"
    at.segmented_control(key="gallery_thumb").set_value("large").run()
    ok(at)
    assert at.query_params["size"] == "large"
    assert len(at.image) == 24


def test_small_cards_badge_the_percentile_without_the_detector_name(app, demo_store):
    at = open_page(app(det="lof", size="small"), "views/gallery.py")
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == 24
    top = sql(
        demo_store,
        "SELECT score_pct FROM outlier_scores WHERE detector = 'lof' AND "
        "run_id = (SELECT run_id FROM latest_run) "
        "ORDER BY score DESC, frame_id LIMIT 1",
    )
    assert f"[{top * 100:.1f}\u00a0%]" in badges[0] and "lof" not in badges[0]
    assert "ranked by lof" in at.caption[0].value


def test_gallery_ignores_an_unknown_size(app):
    at = open_page(app(size="huge"), "views/gallery.py")
    assert any("Ignored URL value 'huge' for 'size'" in w.value for w in at.warning)
    assert at.segmented_control(key="gallery_thumb").value == "medium"


def test_overview_shows_the_archive_mosaic(app, demo_store):
    at = ok(app().run())
    mosaic = next(
        s
        for s in charts(at)
        if s["layout"]["title"]["text"].startswith("The archive, an hour per cell")
    )
    image = mosaic["data"][0]
    assert image["type"] == "image" and image["source"].startswith("data:image/png;base64,")
    n_days = sql(demo_store, "SELECT count(DISTINCT taken_at::DATE) FROM frames")
    assert len(mosaic["layout"]["yaxis"]["ticktext"]) == n_days
    at = ok(app(hours="6-18").run())
    cropped = next(
        s
        for s in charts(at)
        if s["layout"]["title"]["text"].startswith("The archive, an hour per cell")
    )
    assert cropped["layout"]["xaxis"]["ticktext"] == [str(h) for h in range(6, 19)]


def test_a_weather_filter_on_the_map_compare_and_review_pages(app, demo_store):
    """Map, Compare detectors and Review & export under a weather filter (each frame's stored
    observation, migration 8) count the frames the live ASOF join gives that condition."""
    condition = sql(
        demo_store,
        "SELECT condition FROM frame_weather_live GROUP BY condition "
        "ORDER BY count(*) DESC, condition LIMIT 1",
    )
    n = sql(
        demo_store,
        "SELECT count(*) FROM frame_weather_live w JOIN clusters c USING (frame_id) "
        "WHERE c.run_id = (SELECT run_id FROM latest_run) AND w.condition = ?",
        [condition],
    )
    at = open_page(app(weather=condition, color="condition"), "views/map.py")
    spec = charts(at)[0]
    assert sum(n_values(t["x"]) for t in spec["data"]) == n
    assert {t["name"] for t in spec["data"]} == {condition}
    at = open_page(app(weather=condition, cmp="iforest,lof", k="10"), "views/compare.py")
    assert charts(at)[0]["layout"]["title"]["text"] == "iforest vs lof: score percentile"
    at = open_page(app(weather=condition), "views/review.py")
    n_export = sql(
        demo_store,
        "SELECT count(*) FROM frames f LEFT JOIN frame_weather_live w USING (frame_id) "
        "LEFT JOIN reviews r USING (frame_id) "
        "WHERE coalesce(w.condition, 'unknown') = ? AND r.verdict IS DISTINCT FROM 'junk'",
        [condition],
    )
    assert any(m.value.startswith(f"**{n_export:,} frames** to export") for m in at.markdown)


def _change_run_params(path, **changes) -> None:
    """Set keys of the latest run's params in the store at `path`, as an analysis would have."""
    with store.connect(path) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")
        params = json.loads(
            scalar(
                con, "SELECT CAST(params AS VARCHAR) FROM analysis_runs WHERE run_id = ?", [run_id]
            )
        )
        con.execute(
            "UPDATE analysis_runs SET params = ? WHERE run_id = ?",
            [json.dumps({**params, **changes}), run_id],
        )


def _sidebar_captions(containing: str, **query) -> list[str]:
    """The sidebar's captions that contain `containing`, on a fresh page with this URL query."""
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    ok(at.run())
    return [c.value for c in at.sidebar.caption if containing in c.value]


def test_the_sidebar_says_the_run_left_the_scene_cause_out_by_itself(store_copy, monkeypatch):
    """A run that left the scene cause out by itself (junk causes unset, its scene cause saying
    what kind of day it is: `causes_left_out`) says so under "Junk causes", with the share and
    how to count it; counting the scene cause again (the URL's causes) silences the note. The
    demo's own run says nothing."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))
    assert _sidebar_captions("left the") == []
    _change_run_params(
        store_copy, junk_causes=["quality", "camera", "rarity"], causes_left_out={"scene": 0.304}
    )
    (said,) = _sidebar_captions("left the")
    assert said.startswith("The run left the **scene** cause out") and "30% of its" in said
    assert said.endswith("Add it above to count it.")
    assert _sidebar_captions("left the", causes="quality,camera,scene,rarity") == []


def test_the_sidebar_names_a_counted_cause_at_odds_with_the_quality_cause(store_copy, monkeypatch):
    """A run whose analysis found a counted cause ranking frames against the quality cause (its
    `causes_at_odds`, as Kat Kam's scene cause: its clear days) says so under "Junk causes",
    and no longer once that cause is left out, with a button that opens the Gallery ranked by
    that cause; the demo's own run says nothing."""
    monkeypatch.setenv("TIMELAPSE_DB", str(store_copy))

    def advice(**query) -> list[str]:
        return _sidebar_captions("against the quality cause", **query)

    assert advice() == []
    _change_run_params(store_copy, causes_at_odds={"scene": -0.33})
    (said,) = advice()
    assert "**scene** (Spearman -0.33)" in said and "leave it out" in said
    assert advice(causes="quality,camera,rarity") == []

    # its button opens the Gallery ranked by the scene cause, the frames it counts first
    at = ok(AppTest.from_file(APP, default_timeout=60).run())
    assert [b.key for b in at.sidebar.button if b.key.startswith("see_")] == ["see_scene"]
    at.button(key="see_scene").click().run()
    ok(at)
    assert titles(at) == ["Gallery"] and at.query_params["det"] == "cause:scene"
    with store.connect(store_copy, read_only=True) as con:
        run_id = scalar(con, "SELECT run_id FROM latest_run")
        top = {
            detector: scalar(
                con,
                "SELECT frame_id FROM outlier_scores WHERE run_id = ? AND detector = ? "
                "ORDER BY score DESC, frame_id LIMIT 1",
                [run_id, detector],
            )
            for detector in ("cause:scene", "consensus")
        }
    assert top["cause:scene"] != top["consensus"]  # else the order below would prove nothing
    first = int(at.get("page_link")[0].proto.label.split()[-1])
    assert first == top["cause:scene"]


def _picks(at: AppTest) -> list:
    """The Gallery cards' checkboxes, in card order."""
    return [c for c in at.checkbox if str(c.key).startswith("pick_gallery_")]


def test_gallery_ticks_add_up_and_select_this_page_selects_the_page(app, demo_store):
    """Ticking a second card used to swap the page for "Only the 1 selected frames" and lose
    the tick (the toggle appeared, on, the moment the first tick made a selection); the
    checkboxes are now drawn from the selection, which the ticks change."""
    at = open_page(app(), "views/gallery.py")
    n_page = min(24, sql(demo_store, "SELECT count(*) FROM frames"))
    ids = [int(str(c.key).rsplit("_", 1)[1]) for c in _picks(at)]
    assert len(ids) == n_page
    _picks(at)[1].check().run()
    _picks(at)[3].check().run()
    ok(at)
    assert at.session_state["selection"] == sorted([ids[1], ids[3]])
    assert [int(str(c.key).rsplit("_", 1)[1]) for c in _picks(at)] == ids  # still the page
    assert [c.value for c in _picks(at)] == [i in (1, 3) for i in range(n_page)]
    assert at.toggle(key="gallery_only_sel").value is False
    assert at.button(key="gallery_junk").label == "Mark 2 selected junk"
    assert any(c.value == "2 frames selected (map / gallery)." for c in at.sidebar.caption)
    _picks(at)[3].uncheck().run()
    assert at.session_state["selection"] == [ids[1]]
    assert at.toggle(key="gallery_only_sel").label == "Only the 1 selected frame"
    at.button(key="gallery_pick_page").click().run()
    ok(at)
    assert at.session_state["selection"] == sorted(ids)
    assert all(c.value for c in _picks(at)) and len(_picks(at)) == n_page
    assert at.button(key="gallery_junk").label == f"Mark {n_page} selected junk"
    at.toggle(key="gallery_only_sel").set_value(True).run()  # the selection, ticked
    assert len(_picks(at)) == n_page and all(c.value for c in _picks(at))
    at.button(key="clear_selection").click().run()
    ok(at)
    assert not at.session_state["selection"]
    assert len(_picks(at)) == n_page and not any(c.value for c in _picks(at))


def test_one_frame_is_one_frame(app, demo_store):
    """Counts of one are singular: the Gallery's caption and toggle, the sidebar, Review's
    selection and button, an incident of one frame in the list."""
    first = sql(demo_store, "SELECT min(frame_id) FROM frames")
    at = app()
    at.run()
    at.session_state["selection"] = [first]
    at.switch_page("views/gallery.py").run()
    ok(at)
    assert at.caption[0].value.startswith("1 frame (1 selected frame), ")
    assert at.toggle(key="gallery_only_sel").label == "Only the 1 selected frame"
    assert any(c.value == "1 frame selected (map / gallery)." for c in at.sidebar.caption)
    at.switch_page("views/review.py").run()
    ok(at)
    assert any(m.value.startswith("**Selection:** 1 frame (") for m in at.markdown)
    assert at.button(key="review_apply").label == "Apply to 1 frame"
    one = sql(
        demo_store,
        "SELECT min(incident_id) FROM incidents WHERE n_frames = 1 "
        "AND run_id = (SELECT run_id FROM latest_run)",
    )
    assert one is not None, "the demo store has an incident of one frame"
    at = open_page(app(incident=str(one)), "views/incidents.py")
    options = at.selectbox(key="incident_pick").options
    assert any(o.endswith(" · 1 frame") for o in options)
    assert not any(o.endswith(" · 1 frames") for o in options)


def test_frame_page_says_not_scored_and_shows_each_neighbours_rank(app, demo_store):
    """A frame that some detectors could not score (the alignment part of a frame it could
    not line up): the table says "not scored" (it said None) and the chart labels the row; each
    neighbour card says its rank and distance, as the caption promises."""
    frame = sql(
        demo_store,
        "SELECT min(s.frame_id) FROM outlier_scores s JOIN neighbors n "
        "ON n.frame_id = s.frame_id AND n.run_id = s.run_id "
        "WHERE s.score IS NULL AND s.run_id = (SELECT run_id FROM latest_run)",
    )
    assert frame is not None, "the demo store has a frame a detector did not score"
    at = open_page(app(frame=str(frame)), "views/frame.py")
    table = at.dataframe[0].value
    missing = table[table["score"] == "not scored"]
    assert len(missing) >= 1 and (missing["percentile"] == "not scored").all()
    assert "None" not in table[["score", "percentile"]].astype(str).to_numpy()
    spec = next(
        s for s in charts(at) if s["layout"]["title"]["text"] == "Score percentile per detector"
    )
    labelled = {a["y"] for a in spec["layout"].get("annotations", [])}
    assert labelled == set(missing["detector"])
    nb = sql(
        demo_store,
        "SELECT count(*) FROM neighbors WHERE frame_id = ? "
        "AND run_id = (SELECT run_id FROM latest_run)",
        [frame],
    )
    notes = [c.value for c in at.caption if c.value.startswith("rank ")]
    assert len(notes) == nb
    assert notes[0].startswith("rank 1 · distance\u00a0")
    assert [int(n.split()[1]) for n in notes] == list(range(1, nb + 1))
