"""Scenario 6: stores and fitted runs from other versions.

- An older store (schema version 0: a DuckDB file that has none of our migrations, holding a
  table of the user's own, or half-created tables) is refused by read-only opens (`info`, the
  dashboard) with a message naming `python -m pipeline migrate`, upgraded by `migrate` (with a
  backup copy) or by any writing command, and keeps the user's table.
- A migration that fails half-way leaves the store at its old version with nothing of the
  migration in it, and is applied cleanly next time.
- A store from a newer schema is refused by every entry point with a clear message and is left
  byte for byte unchanged.
- A fitted run saved under other library versions: `score-new` warns and scores; one whose
  pickled state no longer loads (a class moved between library versions) is one clear error
  telling to re-run analyze, after which score-new works against the new run.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sys
import types
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

import store
from store import migrations
from tests.conftest import REPO
from tests.reliability.conftest import make_frames, one, query, run_ok, run_pipeline

# the whole module on one xdist worker (`make test`): its module fixtures are built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("versions")]

APP = str(REPO / "dashboard" / "app.py")
CONTRACT_TABLES = {
    "schema_migrations",
    "frames",
    "thumbnails",
    "ingest_errors",
    "models",
    "embeddings",
    "analysis_runs",
    "clusters",
    "outlier_scores",
    "weather",
    "reviews",
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }


def _older_store(path: Path, half_created: bool = False) -> Path:
    """A version-0 store: the user's own table, and (optionally) a table an older run made."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE my_notes (note VARCHAR)")
        con.execute("INSERT INTO my_notes VALUES ('keep me')")
        if half_created:
            con.execute(
                "CREATE TABLE settings (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL, "
                "updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            con.execute("INSERT INTO settings (key, value) VALUES ('timezone', '\"UTC\"')")
    return path


def _dashboard_error(db: Path, monkeypatch) -> str:
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1
    return at.error[0].value


def test_older_store_is_refused_read_only_and_upgraded_by_migrate(tmp_path, monkeypatch):
    db = _older_store(tmp_path / "old.duckdb", half_created=True)
    with pytest.raises(store.SchemaError, match="schema version 0; this code needs"):
        store.connect(db, read_only=True)
    info = run_pipeline("info", "--db", db)
    assert info.returncode == 1 and "Traceback" not in info.stderr
    assert f"python -m pipeline migrate --db {db}" in info.stderr
    assert "python -m pipeline migrate" in _dashboard_error(db, monkeypatch)

    up = run_pipeline("migrate", "--db", db)
    assert up.returncode == 0, up.stderr
    backup = tmp_path / "old.duckdb.v0.bak"
    assert f"schema version 0 -> {migrations.LATEST}" in up.stdout and str(backup) in up.stdout
    assert CONTRACT_TABLES <= _tables(db)
    assert "schema_migrations" not in _tables(backup)  # the backup is the old file
    with store.connect(db, read_only=True) as con:
        assert migrations.applied_version(con) == migrations.LATEST
        assert con.execute("SELECT note FROM my_notes").fetchall() == [("keep me",)]
        assert con.execute("SELECT value FROM settings").fetchall() == [('"UTC"',)]
    again = run_pipeline("migrate", "--db", db)
    assert again.returncode == 0 and "is current; nothing to do" in again.stdout
    assert run_pipeline("info", "--db", db).returncode == 0


def test_a_writing_command_upgrades_an_older_store(tmp_path):
    db = _older_store(tmp_path / "old.duckdb")
    folder = tmp_path / "frames"
    make_frames(folder, 24)
    run_ok("ingest", folder, "--db", db)
    assert one(db, "SELECT max(version) FROM schema_migrations") == migrations.LATEST
    assert one(db, "SELECT count(*) FROM frames") == 24
    assert query(db, "SELECT note FROM my_notes") == [("keep me",)]


def test_a_failing_migration_leaves_the_old_version_and_nothing_of_itself(tmp_path, monkeypatch):
    db = tmp_path / "s.duckdb"
    with store.connect(db) as con:
        con.execute("INSERT INTO reviews (frame_id, verdict) VALUES (1, 'keep')")
    broken = (
        migrations.LATEST + 1,
        "add a table, then fail",
        "CREATE TABLE half_done (x INTEGER); INSERT INTO half_done VALUES (1); "
        "SELECT * FROM no_such_table;",
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS + [broken])
    monkeypatch.setattr(migrations, "LATEST", broken[0])
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        store.connect(db)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchall() == [
            (broken[0] - 1,)
        ]
        assert "half_done" not in {
            r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert con.execute("SELECT verdict FROM reviews").fetchall() == [("keep",)]
    fixed = (broken[0], broken[1], "CREATE TABLE half_done (x INTEGER);")
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1] + [fixed])
    with store.connect(db) as con:
        assert migrations.applied_version(con) == broken[0]


def test_newer_store_is_refused_everywhere_and_left_unchanged(tmp_path, monkeypatch):
    db = tmp_path / "new.duckdb"
    with store.connect(db) as con:
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, 'from the future')",
            [migrations.LATEST + 5],
        )
        con.execute("CHECKPOINT")
    before = _digest(db)
    folder = tmp_path / "frames"
    make_frames(folder, 3)
    for args in (
        ("run", folder, "--db", db, "--model", "pixels"),
        ("info", "--db", db),
        ("migrate", "--db", db),
    ):
        proc = run_pipeline(*args)
        assert proc.returncode == 1, (args[0], proc.stderr)
        assert proc.stderr.startswith(
            f"error: the store {db} has schema version "
            f"{migrations.LATEST + 5}, newer than this code knows"
        )
        assert "update the software" in proc.stderr and "Traceback" not in proc.stderr
    assert "newer than this code knows" in _dashboard_error(db, monkeypatch)
    assert _digest(db) == before


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A store with a complete pixels run (fitted state saved) and a folder of new frames."""
    tmp = tmp_path_factory.mktemp("fitted")
    folder = tmp / "frames"
    make_frames(folder, 30)
    db = tmp / "garden.duckdb"
    run_ok("run", folder, "--db", db, "--model", "pixels", "--detectors", "iforest,lof,hbos")
    return tmp, db


def test_fitted_run_from_other_library_versions_warns_and_scores(fitted, tmp_path):
    base, db = fitted
    db_copy = tmp_path / "garden.duckdb"
    shutil.copy(db, db_copy)
    old = {"python": "3.9.0", "numpy": "1.21.0", "scikit-learn": "0.24.2", "pyod": "1.0.0"}
    with store.connect(db_copy) as con:
        versions = json.loads(con.execute("SELECT versions FROM fitted_runs").fetchall()[0][0])
        con.execute("UPDATE fitted_runs SET versions = ?", [json.dumps({**versions, **old})])
    new = tmp_path / "new"
    make_frames(new, 4, start=datetime(2024, 4, 12, 9))
    proc = run_ok("score-new", new, "--db", db_copy)
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("warning: "))
    assert "fitted with other library versions" in warning and "re-run analyze" in warning
    assert "scikit-learn 0.24.2 ->" in warning and "numpy 1.21.0 ->" in warning
    assert "4 frames scored" in proc.stdout


def test_fitted_run_that_no_longer_loads_asks_for_a_refit(fitted, tmp_path):
    _, db = fitted
    db_copy = tmp_path / "garden.duckdb"
    shutil.copy(db, db_copy)
    # a pickle of a class from a module this installation does not have (moved or renamed in
    # another library version)
    old_module = types.ModuleType("sklearn_0_24_tree_shim")

    class ExtraTreeRegressor:  # noqa: D401 - a stand-in for a moved class
        pass

    ExtraTreeRegressor.__module__ = old_module.__name__
    ExtraTreeRegressor.__qualname__ = "ExtraTreeRegressor"
    old_module.ExtraTreeRegressor = ExtraTreeRegressor
    sys.modules[old_module.__name__] = old_module
    try:
        artifact = pickle.dumps(ExtraTreeRegressor())
    finally:
        del sys.modules[old_module.__name__]
    with store.connect(db_copy) as con:
        con.execute("UPDATE fitted_runs SET artifact = ?", [artifact])
        (run_id,) = con.execute("SELECT run_id FROM fitted_runs").fetchall()[0]
    new = tmp_path / "new"
    make_frames(new, 4, start=datetime(2024, 4, 12, 9))
    proc = run_pipeline("score-new", new, "--db", db_copy)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: the fitted state of run {run_id} cannot be loaded")
    assert "sklearn_0_24_tree_shim" in proc.stderr
    assert f"`python -m pipeline analyze --db {db_copy}` to refit" in proc.stderr
    assert one(db_copy, "SELECT count(*) FROM frames") == 30  # nothing was ingested

    run_ok(
        "analyze",
        "--db",
        db_copy,
        "--model",
        "pixels",
        "--detectors",
        "iforest,lof,hbos",
        "--quiet",
    )
    proc = run_ok("score-new", new, "--db", db_copy)
    assert f"score-new (run {run_id + 1}, pixels): 4 frames scored" in proc.stdout
    assert "warning" not in proc.stdout
