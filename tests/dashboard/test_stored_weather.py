"""The stored weather join (migration 8): every reader gives the same answer reading each
frame's stored observation as it gave with the ASOF join over every frame, on the demo store,
after weather re-imported with other values once the run was analysed (the stored join follows
it; the aggregates' conditions are stale, so weather filters scan), and after the next analysis.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pandas as pd

import store
from store import aggregates, facts, migrations, reviews
from store import weather as store_weather
from store.facts import FrameFilter
from tests.dashboard.test_aggregates import _filters, _readers, _same

# The conditions rotated in the re-imported observations: every frame's condition changes.
ROTATED = {"clear": "rain", "rain": "fog", "fog": "cloudy", "cloudy": "snow", "snow": "clear"}


def _with_the_old_join(db, tmp_path):
    """A copy of the store whose `frame_weather` is the ASOF view again (what every reader
    joined before migration 8), the stored rows set aside."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    old = tmp_path / "old-join.duckdb"
    shutil.copy(db, old)
    with store.connect(old) as con:
        con.execute("ALTER TABLE frame_weather RENAME TO frame_weather_set_aside")
        con.execute("CREATE VIEW frame_weather AS SELECT * FROM frame_weather_live")
    return old


def _page_readers(con, run_id, opts) -> list[tuple[str, tuple]]:
    """Reader calls of one frame or a few frames, with their weather."""
    fid = int(con.execute("SELECT min(frame_id) FROM incident_frames").fetchone()[0])
    incident = int(con.execute("SELECT min(incident_id) FROM incidents").fetchone()[0])
    return [
        ("frame_detail", (fid, run_id)),
        ("neighbor_page", (run_id, fid, "consensus")),
        ("incident_strip", (run_id, incident, 12, "lof")),
    ]


def _compare(new_db, old_db, *, expect_covered: bool) -> None:
    with (
        store.connect(new_db, read_only=True) as new,
        store.connect(old_db, read_only=True) as old,
    ):
        run_id = facts.latest_run_id(new)
        opts = facts.options(new, run_id)
        assert facts.options(old, run_id) == opts
        rainy = FrameFilter(run_id=run_id, conditions=("rain",))
        assert aggregates.covers(new, rainy) == expect_covered
        filters = [
            *_filters(new, run_id),
            rainy.replace(threshold_kind="flagged"),
            rainy.replace(conditions=("rain", "unknown"), threshold_kind="pct", threshold=50),
        ]
        readers = [
            *_readers(opts),
            ("export_frames", ("not_junk",)),
            ("frames_page", (0, 24, "time", True)),
            ("cluster_samples", (6, 0, True)),
            ("map_points", (40, True)),
            ("top_k_differences", (*opts["detectors"][:2], 10, 6, True)),
        ]
        for flt in filters:
            for name, args in readers:
                got = getattr(facts, name)(new, flt, *args)
                expected = getattr(facts, name)(old, flt, *args)
                _same(got, expected, f"{name}{args} {flt}")
        for name, args in _page_readers(new, run_id, opts):
            _same(getattr(facts, name)(new, *args), getattr(facts, name)(old, *args), name)


def test_readers_answer_as_with_the_asof_join(store_copy, tmp_path):
    with store.connect(store_copy) as con:  # some verdicts, so the review counts count
        ids = [r[0] for r in con.execute("SELECT frame_id FROM frames ORDER BY 1").fetchall()]
        reviews.set_verdicts(con, ids[::4], "junk")
        reviews.set_verdicts(con, ids[1::9], "keep")
    _compare(store_copy, _with_the_old_join(store_copy, tmp_path), expect_covered=True)


def test_weather_reimported_after_the_analysis_is_followed(store_copy, tmp_path):
    """Observations replaced by others (every condition another, warmer, and an hour of them
    moved) after `analyze`: the stored join is the live one at once, the readers answer as the
    ASOF join does (a weather filter scans: the aggregates hold the old conditions), and after
    the next analysis (the aggregates read again) too."""
    with store.connect(store_copy) as con:
        observed = store_weather.observations(con)
        before = con.sql("SELECT * FROM frame_weather ORDER BY frame_id").df()
        changed = observed.assign(
            condition=observed["condition"].map(ROTATED).fillna("rain"),
            temperature_c=observed["temperature_c"] + 4.5,
            precipitation_mm=observed["precipitation_mm"].fillna(0) + 1.0,
        )
        store_weather.insert_observations(con, changed, replace=True)
        # one observation more, after the others: frames past the last one join it
        extra = changed.tail(1).assign(
            observed_at=changed["observed_at"].max() + timedelta(minutes=30), condition="snow"
        )
        store_weather.insert_observations(con, extra)
        after = con.sql("SELECT * FROM frame_weather ORDER BY frame_id").df()
        live = con.sql("SELECT * FROM frame_weather_live ORDER BY frame_id").df()
    pd.testing.assert_frame_equal(after, live, check_dtype=False)
    joined = before["station"].notna()
    assert joined.any()
    assert (after.loc[joined, "condition"] != before.loc[joined, "condition"]).all()
    assert (after.loc[joined, "temperature_c"] == before.loc[joined, "temperature_c"] + 4.5).all()
    _compare(store_copy, _with_the_old_join(store_copy, tmp_path), expect_covered=False)
    from tests.store.test_aggregates import write_again

    with store.connect(store_copy) as con:  # the next analysis writes the new conditions
        write_again(con, facts.latest_run_id(con))
    _compare(store_copy, _with_the_old_join(store_copy, tmp_path / "x"), expect_covered=True)


def test_a_version_7_store_is_refused_then_migrated_with_its_join(store_copy):
    """A store as migration 7 left it (the ASOF view, no stored join, no condition strata) is
    refused read-only with the command that upgrades it; upgraded, its stored join is the
    view's rows, and its run's sample has no strata (weather filters scan for that run until
    the next analysis, as before)."""
    from tests.store.test_aggregates import undo_migration_8

    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        undo_migration_8(con)
        view = con.sql("SELECT * FROM frame_weather ORDER BY frame_id").df()
    try:
        store.connect(store_copy, read_only=True)
        raise AssertionError("a version-7 store opened read-only")
    except store.SchemaError as exc:
        assert "schema version 7" in str(exc) and "python -m pipeline migrate" in str(exc)
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "migrate", "--db", str(store_copy), "--no-backup"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"7 -> {migrations.LATEST}" in done.stdout + done.stderr
    with store.connect(store_copy, read_only=True) as con:
        kinds = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = ?",
            ["frame_weather"],
        ).fetchall()
        assert kinds == [("BASE TABLE",)]
        stored = con.sql("SELECT * FROM frame_weather ORDER BY frame_id").df()
        pd.testing.assert_frame_equal(stored, view, check_dtype=False)
        assert con.execute(
            "SELECT count(*) FROM run_condition_samples WHERE run_id = ?", [run_id]
        ).fetchone() == (0,)
        flt = FrameFilter(run_id=run_id, conditions=("rain",))
        assert facts.summary(con, flt)["n_frames"] == facts.count(con, flt)
