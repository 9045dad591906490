"""Migration 3 (incidents and per-run aggregates) upgrades a version-2 store and keeps its rows;
migration 7 fills in the gallery cards of a version-6 store; migration 9 (incident groups)
leaves a run's incidents to the scan until it is analysed again; the period helpers the
aggregates are cut by."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

import store
from store import aggregates, facts, migrations, reviews
from store.db import CONNECT_CONFIG, scalar
from store.facts import FrameFilter

NEW_TABLES = {
    "incidents",
    "incident_frames",
    "run_frame_cells",
    "run_detector_cells",
    "run_samples",
    "run_top",
    "run_aggregates",
}


def _version_2_store(path) -> None:
    """A store as version 2 of the schema left it, with one frame and one complete run."""
    with duckdb.connect(str(path), config=CONNECT_CONFIG) as con:
        con.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for number, name, sql in migrations.MIGRATIONS[:2]:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [number, name]
            )
        con.execute("""INSERT INTO frames (frame_id, path, root, location, taken_at, time_source,
                                           file_bytes, file_mtime, daylight)
                       VALUES (1, 'a.jpg', '/f', '/f/a.jpg', '2024-04-02 10:00', 'exif', 10,
                               now(), 'day')""")
        con.execute("""INSERT INTO analysis_runs (run_id, model, params, status, n_frames)
                       VALUES (1, 'pixels', '{}', 'complete', 1)""")
        con.execute("INSERT INTO clusters VALUES (1, 1, 0, 0.0, 0.0)")
        con.execute("INSERT INTO outlier_scores VALUES (1, 'consensus', 1, 0.5, 1.0, TRUE)")


def test_a_version_2_store_migrates_to_the_latest_and_keeps_its_rows(tmp_path):
    db = tmp_path / "v2.duckdb"
    _version_2_store(db)
    with pytest.raises(store.SchemaError, match="schema version 2"):
        store.connect(db, read_only=True)
    with store.connect(db) as con:  # a write open migrates
        assert migrations.applied_version(con) == migrations.LATEST >= 3
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert NEW_TABLES <= tables
        assert scalar(con, "SELECT count(*) FROM frames") == 1
        assert scalar(con, "SELECT count(*) FROM outlier_scores") == 1
    with store.connect(db, read_only=True) as con:
        flt = FrameFilter(run_id=1)
        assert not aggregates.covers(con, flt)  # a run analysed before: no aggregates
        assert facts.summary(con, flt)["n_flagged"] == 1  # answered by the scan
        assert facts.incidents(con, flt).empty and facts.mosaic(con, 1) is None
        assert facts.runs(con)["n_detectors"].tolist() == [1]


CARD_COLUMNS = {
    "run_top": ("path", "temperature_c", "precipitation_mm"),
    "run_samples": ("path", "temperature_c", "precipitation_mm"),
    "incident_frames": ("path", "temperature_c", "precipitation_mm"),
    "run_aggregates": ("has_cards",),
    "reviews": ("frame_taken_at", "frame_daylight"),
}


def _rows(con, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def write_again(con, run_id: int) -> None:
    """Write the run's aggregates again with its stored incidents, as the next analysis
    writes them."""
    incidents = con.execute(
        "SELECT * EXCLUDE (run_id) FROM incidents WHERE run_id = ?", [run_id]
    ).df()
    members = con.execute(
        "SELECT incident_id, frame_id, is_flagged FROM incident_frames WHERE run_id = ?",
        [run_id],
    ).df()
    con.execute("BEGIN TRANSACTION")
    aggregates.write(con, run_id, incidents=incidents, incident_frames=members)
    con.execute("COMMIT")


def undo_migration_11(con) -> None:
    """Make a store as migration 10 left it: no cell sharpness."""
    con.execute("ALTER TABLE frames DROP COLUMN sharpness_cells")
    con.execute("DELETE FROM schema_migrations WHERE version = 11")


def undo_migration_10(con) -> None:
    """Make a store as migration 9 left it: no evidence per plain cause (and what migration 11
    added after)."""
    undo_migration_11(con)
    con.execute("DROP TABLE frame_cause_evidence")
    con.execute("DELETE FROM schema_migrations WHERE version = 10")


def undo_migration_9(con) -> None:
    """Make a store as migration 8 left it: no incident groups or ranks, no undated cells
    (and what migration 10 added after)."""
    undo_migration_10(con)
    con.execute("DROP TABLE incident_groups; DROP TABLE incident_group_cells")
    con.execute("DROP TABLE incident_ranks; DROP TABLE run_frame_hours")
    con.execute("DROP TABLE run_detector_hours")
    con.execute("ALTER TABLE run_aggregates DROP COLUMN has_incident_groups")
    con.execute("ALTER TABLE run_aggregates DROP COLUMN has_hour_cells")
    con.execute("DELETE FROM schema_migrations WHERE version = 9")


def undo_migration_8(con) -> None:
    """Make a store's weather join the view migration 1 made again (as a version-7 store has
    it): no stored join, no `frame_weather_live`, no condition strata in the samples (and
    what migration 9 added after)."""
    undo_migration_9(con)
    con.execute("DROP VIEW frame_facts; DROP TABLE frame_weather; DROP VIEW frame_weather_live")
    con.execute("DROP TABLE run_condition_samples; DROP TABLE run_condition_sample_scores")
    con.execute(migrations._VIEWS)
    con.execute("DELETE FROM schema_migrations WHERE version = 8")


def test_migration_7_fills_in_the_cards_of_a_version_6_store(store_copy):
    """A store as migration 6 left it (no cards, no frame times in reviews) is refused
    read-only with the command that upgrades it; upgraded, its lists hold the same cards and
    its reviews the same frame times as the writers make now, and the pages read them."""
    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        ids = [r[0] for r in con.execute("SELECT frame_id FROM frames LIMIT 40").fetchall()]
        reviews.set_verdicts(con, ids[::2], "junk")
        reviews.set_verdicts(con, ids[1::4], "keep")
        written = {table: _rows(con, table) for table in CARD_COLUMNS if table != "run_aggregates"}
        for table, columns in CARD_COLUMNS.items():
            for column in columns:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        con.execute("DELETE FROM schema_migrations WHERE version = 7")
        undo_migration_8(con)
    with pytest.raises(store.SchemaError, match="schema version 6.*python -m pipeline migrate"):
        store.connect(store_copy, read_only=True)
    with store.connect(store_copy) as con:  # a write open migrates
        assert migrations.applied_version(con) == migrations.LATEST
        for table, rows in written.items():
            assert _rows(con, table) == rows, table
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.cards(con, FrameFilter(run_id=run_id))
        verdicts = facts.summary(con, FrameFilter(run_id=run_id, hour_from=6, hour_to=18))
        assert verdicts["n_junk"] + verdicts["n_keep"] > 0


def undone_then_migrated(path, undo, version: int, table: str) -> None:
    """`undo` a migration on the store at `path`, leaving it at `version`: a read-only open is
    refused with the command that upgrades it, a write open migrates it, and `table` (one the
    migration made) is there and empty."""
    with store.connect(path) as con:
        undo(con)
    match = f"schema version {version}.*python -m pipeline migrate"
    with pytest.raises(store.SchemaError, match=match):
        store.connect(path, read_only=True)
    with store.connect(path) as con:  # a write open migrates
        assert migrations.applied_version(con) == migrations.LATEST
        assert scalar(con, f"SELECT count(*) FROM {table}") == 0


def test_migration_9_leaves_a_runs_incidents_to_the_scan_until_it_is_analysed(store_copy):
    """A store as migration 8 left it is refused read-only; upgraded, its run has no incident
    groups (nor undated cells) and the Incidents page's list is the scan's, the same as after
    the run's aggregates are written again with them."""
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        flt = FrameFilter(run_id=run_id, hour_from=7, hour_to=16)
        before = facts.incident_list(con, flt, 2, 1)
    undone_then_migrated(store_copy, undo_migration_9, 8, "incident_ranks")
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.covers(con, flt) and not aggregates.incident_groups(con, run_id)
        assert not aggregates.hour_cells(con, run_id)  # the cells answer as before
        scanned = facts.incident_list(con, flt, 2, 1)
    with store.connect(store_copy) as con:
        write_again(con, run_id)
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.incident_groups(con, run_id) and aggregates.hour_cells(con, run_id)
        grouped = facts.incident_list(con, flt, 2, 1)
    for got in (scanned, grouped):
        assert got.keys() == before.keys()
        for key, value in before.items():
            if key == "rows":
                assert got[key].equals(value)
            else:
                assert got[key] == value, key


def test_migration_10_names_recombined_incidents_by_cause_until_the_run_is_analysed(store_copy):
    """A store as migration 9 left it is refused read-only; upgraded, its run has no evidence
    per plain cause, so another choice of causes names its incidents by the chosen cause with
    the most score, as before (an analysed run names them in plain words)."""
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        flt = FrameFilter(run_id=run_id, junk_causes=("quality",))
        plain = set(facts.incident_list(con, flt)["rows"]["cause"])
    assert plain and "quality" not in plain
    undone_then_migrated(store_copy, undo_migration_10, 9, "frame_cause_evidence")
    with store.connect(store_copy, read_only=True) as con:
        listed = facts.incident_list(con, flt)
    assert listed["n"] > 0 and set(listed["rows"]["cause"]) == {"quality"}


def test_period_units_and_whole_periods():
    assert aggregates.period_unit(date(2024, 1, 1), date(2025, 2, 3)) == "day"  # 400 days
    assert aggregates.period_unit(date(2024, 1, 1), date(2025, 2, 4)) == "week"
    assert aggregates.period_unit(date(2024, 1, 1), date(2031, 8, 31)) == "week"  # 400 weeks
    assert aggregates.period_unit(date(2024, 1, 1), date(2031, 9, 30)) == "month"
    assert aggregates.period_unit(None, None) == "day"
    assert aggregates.period_end(date(2024, 2, 1), "month") == date(2024, 2, 29)
    assert aggregates.period_end(date(2024, 12, 1), "month") == date(2024, 12, 31)
    assert aggregates.period_end(date(2024, 4, 1), "week") == date(2024, 4, 7)
    assert aggregates.whole_periods("week", date(2024, 4, 1), date(2024, 4, 14))
    assert not aggregates.whole_periods("week", date(2024, 4, 2), None)
    assert aggregates.whole_periods("month", date(2024, 2, 1), date(2024, 2, 29))
    assert not aggregates.whole_periods("month", None, date(2024, 2, 28))
    assert aggregates.whole_periods("day", date(2024, 2, 5), date(2024, 2, 6))
    assert aggregates.coarser("month", "day") and not aggregates.coarser("month", "week")
    assert not aggregates.coarser("day", "week")
    with pytest.raises(ValueError, match="unknown period"):
        aggregates.period_start("year", "taken_at")


def test_a_migration_numbered_below_the_newest_applied_is_applied_too(tmp_path, monkeypatch):
    """Migrations made on parallel branches land out of order: a store that got 5 before 3
    existed lacks 3; a read-only open says so, a write open applies it and keeps the rows."""
    db = tmp_path / "v5.duckdb"
    _version_2_store(db)
    five = [m for m in migrations.MIGRATIONS if m[0] == 5][0]
    with duckdb.connect(str(db)) as con:
        con.execute(five[2])
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [five[0], five[1]]
        )
    with monkeypatch.context() as when:  # the code as it was when 5 was the newest
        when.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] <= 5])
        when.setattr(migrations, "LATEST", 5)
        with pytest.raises(store.SchemaError, match=r"\(it lacks 3, 4\)"):
            store.connect(db, read_only=True)
    with store.connect(db) as con:
        assert migrations.missing(con) == []
        tables = {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert NEW_TABLES <= tables
        assert scalar(con, "SELECT count(*) FROM frames") == 1
