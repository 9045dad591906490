"""The consensus of other junk causes materialised once (`store.causes.cached`, read through
`store.causes.shadow` by the dashboard's `Reader`) on the real demo store: it gives what the
SQL recombination (`store.causes.with_causes`) gives, page by page; for the run's own causes,
what `analyze` stored; a changed store file builds it again; sessions asking at once share
one build; a build that fails is not kept; a build keeps the page's read lock on the store;
switching runs resets the cause chips; the Overview mosaic outlines the chosen consensus's
incidents."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import threading
from datetime import date

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import store
from dashboard import charts
from dashboard.data import Reader, stamp
from store import causes, facts, reviews
from store.facts import FrameFilter
from tests.conftest import REPO, writer_opens
from tests.dashboard.test_junk_causes import _ok

OTHER = ("quality", "camera")
# a choice whose incidents fall on other days than the default consensus's in the 150-frame
# demo (the quality cause's are the default's: day 7; the scene cause alone flags day 12)
OUTLINED_OTHERWISE = ("scene",)
RAIN = "rain"  # a condition the demo's weather has


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(causes.ENV_CACHE, raising=False)  # on by default
    causes._CACHE.clear()
    yield
    causes._CACHE.clear()


def _calls(run_id: int, frame_id: int) -> tuple:
    flt = FrameFilter(run_id=run_id, junk_causes=OTHER)
    day = FrameFilter(run_id=run_id, junk_causes=OTHER, date_from=date(2024, 4, 2))
    return (
        ("summary", (flt,)),
        ("summary", (day.replace(daylight=("day",)),)),
        ("outliers_per_detector", (flt,)),
        ("calendar", (flt,)),
        ("timeline", (flt,)),
        ("frames_page", (flt, 0, 40)),
        ("frames_page", (flt.replace(threshold_kind="flagged"), 0, 40)),
        ("count", (flt.replace(threshold_kind="flagged"),)),
        ("map_points", (flt,)),
        ("cluster_sizes", (flt,)),
        ("cluster_profiles", (flt,)),
        ("detector_matrix", (flt, ["consensus", "cause:quality", "cause:scene"])),
        ("top_k_differences", (flt, "consensus", "cause:scene", 20)),
        ("incidents", (flt,)),
        ("incident_list", (flt,)),
        ("incident_strip", (run_id, 1, 12, "consensus", OTHER)),
        ("scores_for", (run_id, [frame_id], OTHER)),
        ("neighbor_page", (run_id, frame_id, "consensus", OTHER)),
        ("export_count", (flt,)),
        ("mosaic", (run_id, OTHER)),
        # one weather condition: the pages read each condition's own sample (migration 8)
        ("map_points", (flt.replace(conditions=(RAIN,)),)),
        ("detector_matrix", (flt.replace(conditions=(RAIN,)), ["consensus", "cause:scene"])),
        ("summary", (flt.replace(conditions=(RAIN,)),)),
    )


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(
            a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False
        )
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, (list, tuple)) and a and isinstance(a[0], pd.DataFrame):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


def test_every_reader_reads_what_the_sql_recombination_gives(demo_store, con, run_id, monkeypatch):
    frame_id = int(
        con.execute("SELECT min(frame_id) FROM clusters WHERE run_id = ?", [run_id]).fetchall()[0][
            0
        ]
    )
    calls = _calls(run_id, frame_id)
    monkeypatch.setenv(causes.ENV_CACHE, "0")
    in_sql = Reader(demo_store).call_many(calls)
    assert not causes._CACHE
    monkeypatch.delenv(causes.ENV_CACHE)
    cached = Reader(demo_store).call_many(calls)
    assert len(causes._CACHE) == 1  # one build for every call
    for (name, _), a, b in zip(calls, cached, in_sql, strict=True):
        try:
            _same(a, b)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    # and the shadow is gone: the same connection reads the run's own consensus again
    own = Reader(demo_store).call("summary", FrameFilter(run_id=run_id))
    assert own == facts.summary(con, FrameFilter(run_id=run_id))


def test_the_materialised_consensus_is_the_recombined_one_and_covers(demo_store, con, run_id):
    made = causes.cached(con, demo_store, stamp(demo_store), run_id, OTHER)
    sql, params = causes.with_causes(
        "SELECT * FROM outlier_scores WHERE run_id = $run AND detector = 'consensus' "
        "ORDER BY frame_id",
        {"run": run_id},
        run_id,
        OTHER,
    )
    recombined = con.execute(sql, params).df()
    mine = made.tables["outlier_scores"].to_pandas().sort_values("frame_id")
    pd.testing.assert_frame_equal(mine.reset_index(drop=True), recombined, check_exact=True)
    stored = con.execute(
        "SELECT * FROM outlier_scores WHERE run_id = ? AND detector = 'consensus' "
        "ORDER BY frame_id",
        [run_id],
    ).df()
    assert list(recombined["is_outlier"]) != list(stored["is_outlier"])  # another consensus
    with causes.shadow(con, made):
        assert store.aggregates.covers(con, FrameFilter(run_id=run_id))  # its own aggregates
    assert causes.cached(con, demo_store, stamp(demo_store), run_id, OTHER) is made


def test_the_runs_own_causes_materialise_what_analyze_stored(demo_store, con, run_id):
    own = tuple(facts.own_causes(con, run_id))
    made = causes.materialise(con, run_id, own)
    checks = {
        "run_detector_cells": "detector = 'consensus'",
        "run_top": "detector = 'consensus'",
        "run_sample_scores": "detector = 'consensus'",
        "run_frame_cells": "TRUE",
        "run_samples": "TRUE",
        "run_condition_sample_scores": "detector = 'consensus'",
        "run_condition_samples": "TRUE",
        "incidents": "TRUE",
        "incident_frames": "TRUE",
    }
    # an incident's stored cause names the detector's kind; a recombined one, the cause
    # (`store.causes`), as the SQL path does
    for table, where in checks.items():
        columns = "* EXCLUDE (cause, cause_share)" if table == "incidents" else "*"
        stored = con.execute(
            f"SELECT {columns} FROM {table} WHERE run_id = ? AND {where} ORDER BY ALL", [run_id]
        ).df()
        con.register("_mine", made.tables[table])
        mine = con.execute(f"SELECT {columns} FROM _mine ORDER BY ALL").df()
        con.unregister("_mine")
        # (the demo's frames all fit in the sample: no condition has frames of its own)
        assert len(stored) > 0 or table.startswith("run_condition"), table
        pd.testing.assert_frame_equal(mine, stored, check_dtype=False, obj=table)
    stored = facts.mosaic(con, run_id)
    assert stored["outlined"]  # the demo has incidents by day
    assert made.tables["run_aggregates"]["mosaic_outlined"].to_pylist() == [stored["outlined"]]
    assert causes.outlined(con, run_id, stored["days"]) == stored["outlined"]


def test_the_mosaic_outlines_the_chosen_consensus(demo_store, con, run_id):
    own = facts.mosaic(con, run_id)["outlined"]
    chosen = OUTLINED_OTHERWISE
    in_sql = facts.mosaic(con, run_id, chosen)["outlined"]
    assert in_sql and in_sql != own
    assert Reader(demo_store).call("mosaic", run_id, chosen)["outlined"] == in_sql
    flagged = facts.incident_list(con, FrameFilter(run_id=run_id, junk_causes=chosen))["rows"]
    assert len(flagged) > 0


def _analyze(db, *options: str) -> None:
    """`python -m pipeline analyze --db DB OPTIONS`: a new run."""
    args = [sys.executable, "-m", "pipeline", "analyze", "--db", str(db), "--quiet", *options]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _fresh(db, run_id):
    with store.connect(db, read_only=True) as con:
        return causes.cached(con, db, stamp(db), run_id, OTHER)


def test_a_review_keeps_it_and_a_changed_frame_builds_it_again(store_copy):
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        flagged = facts.incident_list(con, FrameFilter(run_id=run_id, junk_causes=OTHER))
        peak = int(flagged["rows"]["frame_id"].iloc[0])
    first = _fresh(store_copy, run_id)
    assert _fresh(store_copy, run_id) is first
    before = stamp(store_copy)
    with store.connect(store_copy) as con:  # a review changes the file, not the consensus
        reviews.set_verdicts(con, [peak], "junk")
    assert stamp(store_copy) != before
    assert _fresh(store_copy, run_id) is first
    flt = FrameFilter(run_id=run_id, junk_causes=OTHER)
    shown = Reader(store_copy).call("summary", flt)
    with store.connect(store_copy, read_only=True) as con:
        assert shown == facts.summary(con, flt) and shown["n_junk"] == 1
    # a frame's daylight changed (as `ingest` rewrites a frame): its incident ends there
    with store.connect(store_copy) as con:
        con.execute("UPDATE frames SET daylight = 'night' WHERE frame_id = ?", [peak])
    again = _fresh(store_copy, run_id)
    assert again is not first and len(causes._CACHE) == 1
    listed = Reader(store_copy).call("incident_list", flt)
    with store.connect(store_copy, read_only=True) as con:
        _same(listed, facts.incident_list(con, flt))
    assert not listed["rows"]["frame_id"].eq(peak).any()
    # a new analysis: the old run's consensus is still made of the same, the new run's its own
    _analyze(store_copy)
    assert _fresh(store_copy, run_id) is again
    with store.connect(store_copy, read_only=True) as con:
        new_run = facts.latest_run_id(con)
    assert new_run != run_id
    assert _fresh(store_copy, new_run) not in (first, again)


def test_sessions_asking_at_once_share_one_build(demo_store, run_id):
    got: list = []
    start = threading.Barrier(4)

    def ask() -> None:
        with store.connect(demo_store, read_only=True) as con:  # each session its own
            start.wait()
            got.append(causes.cached(con, demo_store, stamp(demo_store), run_id, OTHER))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and got[0] is not None
    assert all(g is got[0] for g in got)
    assert not causes._BUILDING


def test_a_failed_build_is_not_kept_and_the_next_call_builds(demo_store, con, run_id, caplog):
    """A build that fails (here: out of memory) is logged and kept nowhere, nobody waits for it,
    and the caller recombines in SQL (`cached` gives None, as when the cache is off); the next
    call builds it."""
    con.execute("SET memory_limit = '1MB'")  # too little for any build (the whole instance)
    try:
        assert causes.cached(con, demo_store, stamp(demo_store), run_id, OTHER) is None
    finally:
        con.execute("RESET memory_limit")
    assert "not materialised: Out of Memory Error" in caplog.text
    assert not causes._CACHE and not causes._BUILDING
    flt = FrameFilter(run_id=run_id, junk_causes=OTHER)
    assert Reader(demo_store).call("summary", flt) == facts.summary(con, flt)
    assert len(causes._CACHE) == 1


def test_the_shadow_is_per_connection(demo_store, con, run_id):
    made = causes.cached(con, demo_store, stamp(demo_store), run_id, OTHER)
    query = (
        "SELECT list(frame_id ORDER BY frame_id) FILTER (WHERE is_outlier) FROM outlier_scores "
        "WHERE run_id = ? AND detector = 'consensus'"
    )
    with (
        store.connect(demo_store, read_only=True) as a,
        store.connect(demo_store, read_only=True) as b,
    ):
        own = a.execute(query, [run_id]).fetchall()
        with causes.shadow(a, made):
            other = a.execute(query, [run_id]).fetchall()
            assert b.execute(query, [run_id]).fetchall() == own
        assert a.execute(query, [run_id]).fetchall() == own
    mine = made.tables["outlier_scores"].to_pandas()
    flagged = sorted(int(i) for i in mine.loc[mine["is_outlier"], "frame_id"])
    assert other == [(flagged,)] and other != own


def test_a_build_keeps_the_readers_lock(store_copy):
    """A page's read-only connection keeps a writer in another process out while the
    consensus is built through it and after: the build never opens the store file a second
    time (DuckDB's locks are POSIX record locks, held per process, so closing a second open
    would let go of the page's lock too)."""
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        flt = FrameFilter(run_id=run_id, junk_causes=OTHER)
        assert writer_opens(store_copy) == "locked"
        made = causes.cached(con, store_copy, stamp(store_copy), run_id, OTHER)
        assert made is not None and made.tables["outlier_scores"].num_rows > 0
        assert writer_opens(store_copy) == "locked"
        # a dashboard call on its own connection (the same DuckDB instance), built afresh
        causes._CACHE.clear()
        assert Reader(store_copy).call("summary", flt) == facts.summary(con, flt)
        assert len(causes._CACHE) == 1
        assert writer_opens(store_copy) == "locked"
        # and the build left nothing on the connection: the temporary tables were dropped
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall() == [
            (0,)
        ]
    assert writer_opens(store_copy) == "opened"  # the lock was the page's


# --- the dashboard -----------------------------------------------------------------------------


@pytest.fixture
def app(monkeypatch):
    from streamlit.testing.v1 import AppTest

    def make(db, **params) -> AppTest:
        monkeypatch.setenv("TIMELAPSE_DB", str(db))
        monkeypatch.setenv("TIMELAPSE_LOCK_WAIT_S", "2")
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=60)
        for key, value in params.items():
            at.query_params[key] = value
        return at

    return make


@pytest.fixture(scope="module")
def two_runs(demo_store, tmp_path_factory):
    """The demo store and a second run that counts only quality and camera."""
    db = tmp_path_factory.mktemp("two-runs") / "garden.duckdb"
    shutil.copy(demo_store, db)
    _analyze(db, "--junk-causes", ",".join(OTHER))
    return db


def test_switching_runs_resets_the_cause_chips_to_the_new_runs_own(app, two_runs):
    with store.connect(two_runs, read_only=True) as con:
        old, new = sorted(int(r) for r in facts.complete_run_ids(con))[:2]
        assert facts.own_causes(con, new) == list(OTHER)
    at = _ok(app(two_runs).run())
    assert at.multiselect(key="f_causes").value == list(OTHER)  # the latest run's own
    _ok(at.multiselect(key="f_causes").set_value(["scene"]).run())
    assert at.query_params["causes"] == "scene"
    runs = next(s for s in at.sidebar.selectbox if s.label == "Analysis run")
    _ok(runs.set_value(old).run())
    assert at.multiselect(key="f_causes").value == ["quality", "camera", "scene", "rarity"]
    assert "causes" not in at.query_params  # the old run's own: nothing to share
    _ok(at.multiselect(key="f_causes").set_value(["rarity"]).run())
    _ok(at.run())  # a rerun on the same run keeps the choice
    assert at.multiselect(key="f_causes").value == ["rarity"]
    runs = next(s for s in at.sidebar.selectbox if s.label == "Analysis run")
    _ok(runs.set_value(new).run())
    assert at.multiselect(key="f_causes").value == list(OTHER)


def test_a_links_causes_hold_on_the_first_load(app, two_runs):
    with store.connect(two_runs, read_only=True) as con:
        old = min(int(r) for r in facts.complete_run_ids(con))
    at = _ok(app(two_runs, run=str(old), causes="scene").run())
    assert at.multiselect(key="f_causes").value == ["scene"]
    assert at.query_params["causes"] == "scene"


def _mosaic_png(at) -> bytes:
    chart = next(c for c in at.get("plotly_chart") if "archive" in c.proto.spec)
    spec = json.loads(chart.proto.spec)
    source = next(t["source"] for t in spec["data"] if t.get("type") == "image")
    return base64.b64decode(source.split(",", 1)[1])


def test_the_overview_mosaic_outlines_the_chosen_consensus(app, demo_store, con, run_id):
    picture = facts.mosaic(con, run_id)
    opts = facts.options(con, run_id)
    want = causes.outlined(con, run_id, picture["days"], OUTLINED_OTHERWISE)
    assert want and want != picture["outlined"]

    def drawn(outlined):
        fig = charts.mosaic(
            picture["png"],
            picture["days"],
            picture["cell_height"],
            outlined,
            (opts["date_min"], opts["date_max"]),
        )
        source = fig.data[0].source
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))

    at = _ok(app(demo_store, causes=",".join(OUTLINED_OTHERWISE)).run())
    shown = np.asarray(Image.open(io.BytesIO(_mosaic_png(at))))
    assert np.array_equal(shown, drawn(want))
    assert not np.array_equal(shown, drawn(picture["outlined"]))
    at = _ok(app(demo_store).run())
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(_mosaic_png(at)))), drawn(picture["outlined"])
    )
