"""The store's front door: migrations, schema checks, read-only opens, lock errors, run lock,
and files that are not our stores."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

import store
from store import kv, migrations
from store.db import scalar
from tests.conftest import writer_opens


def _schema(path) -> list[tuple]:
    with store.connect(path, read_only=True) as con:
        return con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()


def test_migrations_create_every_contract_table(db_path):
    with store.connect(db_path) as con:
        tables = {
            row[0]
            for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        applied = con.execute("SELECT version, name FROM schema_migrations").fetchall()
    for name in [
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
        "frame_facts",
        "latest_run",
    ]:
        assert name in tables
    assert [v for v, _ in applied] == [m[0] for m in migrations.MIGRATIONS]


def test_migrating_twice_changes_nothing(db_path):
    with store.connect(db_path):
        pass
    before = _schema(db_path)
    with store.connect(db_path) as con:
        assert migrations.migrate(con, db_path) == migrations.LATEST
        n_applied = scalar(con, "SELECT count(*) FROM schema_migrations")
    assert _schema(db_path) == before
    assert n_applied == len(migrations.MIGRATIONS)


def test_vectors_made_before_precision_was_recorded_are_float32(db_path):
    """A store at schema version 2 with vectors: after the migration each vector and model row
    says float32 (every vector before then was), and new rows say what made them."""
    from store import embeddings as se

    with duckdb.connect(str(db_path)) as con:
        con.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR "
            "NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations.MIGRATIONS[:2]:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name]
            )
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, time_source, "
            "file_bytes, file_mtime) SELECT i, i || '.jpg', '/r', '/r/' || i || '.jpg', "
            "'mtime', 1, now() FROM range(1, 4) t(i)"
        )
        con.execute("INSERT INTO models (model, family, weights, dim) VALUES ('m', 'f', 'w', 2)")
        con.execute("INSERT INTO embeddings VALUES (1, 'm', [1.0, 2.0]), (2, 'm', [3.0, 4.0])")
    with store.connect(db_path) as con:
        assert migrations.applied_version(con) == migrations.LATEST
        assert se.precision_counts(con, "m") == {"float32": 2}
        assert se.get_model_row(con, "m").precision == "float32"
        se.insert_vectors(con, "m", [3], np.array([[5.0, 6.0]], np.float32), precision="bfloat16")
        assert se.precision_counts(con, "m") == {"float32": 2, "bfloat16": 1}
        assert se.precision_counts(con, "m", [3, 99]) == {"bfloat16": 1}


def test_a_migration_that_lands_after_a_higher_one_is_still_applied(db_path, monkeypatch):
    """Branches reserve numbers and land in any order (4 before 3): a store that got the
    higher one first gets the lower one when it lands; until then a read-only open says it
    lacks it. Here with two numbers above today's newest, `high` landing before `low`."""
    low, high = migrations.LATEST + 1, migrations.LATEST + 2
    first = [*migrations.MIGRATIONS, (high, "landed first", "CREATE TABLE landed_first (x INT);")]
    monkeypatch.setattr(migrations, "MIGRATIONS", first)
    monkeypatch.setattr(migrations, "LATEST", high)
    with store.connect(db_path) as con:
        assert migrations.applied_version(con) == high
    late = (low, "landed later", "CREATE TABLE landed_late (x INTEGER);")
    monkeypatch.setattr(migrations, "MIGRATIONS", sorted([*first, late], key=lambda m: m[0]))
    with pytest.raises(store.SchemaError, match=f"schema version {high} \\(it lacks {low}\\)"):
        store.connect(db_path, read_only=True)
    with store.connect(db_path) as con:
        assert migrations.missing(con) == []
        assert scalar(con, "SELECT count(*) FROM landed_late") == 0
        assert migrations.applied_version(con) == high
    with store.connect(db_path, read_only=True) as con:
        assert migrations.missing(con) == []


def test_store_from_newer_schema_is_refused(db_path):
    with store.connect(db_path) as con:
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, 'from the future')",
            [migrations.LATEST + 1],
        )
    for read_only in (False, True):
        with pytest.raises(store.SchemaError, match="newer than this code knows"):
            store.connect(db_path, read_only=read_only)


def test_read_only_connection_cannot_write(db_path):
    with store.connect(db_path):
        pass
    with store.connect(db_path, read_only=True) as con:
        with pytest.raises(duckdb.Error):
            con.execute("INSERT INTO reviews (frame_id, verdict) VALUES (1, 'junk')")


def test_read_only_open_of_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(store.StoreNotFoundError, match="pipeline ingest"):
        store.connect(tmp_path / "nope.duckdb", read_only=True)


def test_write_open_in_missing_folder_is_a_store_error(tmp_path):
    with pytest.raises(store.StoreError, match="does not exist"):
        store.connect(tmp_path / "no" / "such" / "dir" / "s.duckdb")


def _hold_write_connection(path, seconds: float) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_error_names_file_and_holder_after_retrying(db_path):
    with store.connect(db_path):
        pass
    holder = _hold_write_connection(db_path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(store.StoreLockedError) as info:
            store.connect(db_path, read_only=True, timeout=1.0)
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    message = str(info.value)
    assert str(db_path) in message
    assert f"PID {holder.pid}" in message or f"process {holder.pid}" in message
    assert "wait for it to finish" in message
    assert waited >= 1.0  # it retried instead of failing at once


def test_connect_succeeds_once_the_holder_lets_go(db_path):
    with store.connect(db_path):
        pass
    holder = _hold_write_connection(db_path, 1.0)
    try:
        with store.connect(db_path, read_only=True, timeout=20) as con:
            assert scalar(con, "SELECT count(*) FROM frames") == 0
    finally:
        holder.wait()


def test_second_writer_lock_is_refused_with_clear_message(db_path):
    code = textwrap.dedent(f"""
        import time, store
        with store.writer_lock({str(db_path)!r}):
            print("held", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(store.StoreBusyError, match="another run is writing") as info:
            with store.writer_lock(db_path):
                pass
        assert str(proc.pid) in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    with store.writer_lock(db_path):  # released by the OS when the holder died
        pass


def test_kv_round_trip(db_path):
    with store.connect(db_path) as con:
        kv.put(con, "timezone", "Europe/London")
        kv.put(con, "lat", 51.5)
        kv.put(con, "clock_check", {"offset_minutes": 12.5, "days": [1, 2]})
        kv.put(con, "lat", 52.0)
    with store.connect(db_path, read_only=True) as con:
        assert kv.get(con, "timezone") == "Europe/London"
        assert kv.get(con, "lat") == 52.0
        assert kv.get(con, "missing", "dflt") == "dflt"
        assert kv.get_all(con)["clock_check"] == {"offset_minutes": 12.5, "days": [1, 2]}
    with store.connect(db_path) as con:
        kv.put(con, "lat", None)
        assert kv.get(con, "lat") is None


def test_run_lock_in_missing_folder_says_which_folder(tmp_path):
    with pytest.raises(store.StoreError, match="folder for the store .* does not exist"):
        with store.writer_lock(tmp_path / "missing" / "s.duckdb"):
            pass


def test_run_lock_is_reentrant_within_a_process(db_path):
    with store.connect(db_path):
        pass
    with store.writer_lock(db_path):
        with store.writer_lock(db_path):  # a stage inside `run` takes it again
            pass
        lock_file = db_path.with_name(db_path.name + ".lock")
        code = f"import store\nwith store.writer_lock({str(db_path)!r}): pass"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert other.returncode != 0 and "another run is writing" in other.stderr
        assert lock_file.exists()
    with store.writer_lock(db_path):  # released after the outer block
        pass


def _hold_run_lock(db: str):
    code = textwrap.dedent(f"""
        import time, store
        with store.writer_lock({db!r}):
            print("held", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _store_and_another_name(tmp_path, alias: str) -> tuple[Path, Path]:
    """A new store in tmp_path/real and another name of it from tmp_path/other: a symlink, a
    hard link, a relative path (from tmp_path/other: chdir there) or a path through `..`."""
    db = tmp_path / "real" / "store.duckdb"
    db.parent.mkdir()
    with store.connect(db):
        pass
    other = tmp_path / "other"
    other.mkdir()
    if alias == "symlink":
        name = other / "link.duckdb"
        name.symlink_to(db)
    elif alias == "hardlink":
        name = other / "hard.duckdb"
        os.link(db, name)
    elif alias == "relative path":
        name = Path("..") / "real" / "store.duckdb"
    else:
        name = other / ".." / "real" / "." / "store.duckdb"
    return db, name


@pytest.mark.parametrize("alias", ["symlink", "hardlink", "dotted path"])
def test_the_run_lock_holds_whatever_name_the_store_is_reached_by(tmp_path, alias):
    db, name = _store_and_another_name(tmp_path, alias)
    for held, tried in ((db, name), (name, db)):  # either name holding, the other refused
        proc = _hold_run_lock(str(held))
        try:
            with pytest.raises(store.StoreBusyError, match="another run is writing"):
                with store.writer_lock(tried):
                    pass
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("alias", ["symlink", "hardlink", "relative path", "dotted path"])
def test_a_readers_lock_holds_while_the_store_opens_and_closes_under_any_name(
    tmp_path, monkeypatch, alias
):
    """Every connection to one store file in a process shares one DuckDB instance and reads
    nothing of the file itself: a reader's lock keeps a writer in another process out while
    other connections open and close, under any name of the file (DuckDB's locks are POSIX
    record locks, held per process: closing a second descriptor of the file would let go)."""
    db, name = _store_and_another_name(tmp_path, alias)
    monkeypatch.chdir(tmp_path / "other")  # where the relative path starts
    with store.connect(db, read_only=True) as reader:
        assert writer_opens(db) == "locked"
        reader.execute("SET memory_limit = '123MB'")  # a setting of the whole DuckDB instance
        try:
            mine = scalar(reader, "SELECT current_setting('memory_limit')")
            for _ in range(2):
                with store.connect(name, read_only=True) as again:
                    shared = scalar(again, "SELECT current_setting('memory_limit')")
                    assert shared == mine  # the same instance
                    assert scalar(again, "SELECT count(*) FROM frames") == 0
        finally:
            reader.execute("RESET memory_limit")
        assert writer_opens(db) == "locked"
        assert writer_opens(Path(os.path.abspath(name))) == "locked"  # the other name too
        assert scalar(reader, "SELECT count(*) FROM frames") == 0
    assert writer_opens(db) == "opened"


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_sqlite_file_is_named_and_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as lite:
        lite.execute("CREATE TABLE frames (id INTEGER, name TEXT)")
    before = _digest(path)
    for read_only in (False, True):
        with pytest.raises(store.SchemaError, match="is a SQLite database, not a store"):
            store.connect(path, read_only=read_only)
    assert _digest(path) == before


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a database at all\n", b"\xff\xd8\xff\xe0 a JPEG"]
)
def test_a_file_that_is_no_database_is_named_and_left_alone(tmp_path, content):
    path = tmp_path / "x.duckdb"
    path.write_bytes(content)
    with pytest.raises(store.SchemaError, match="not a store of this tool"):
        store.connect(path)
    assert path.read_bytes() == content


def test_a_store_cut_short_is_one_clear_error_and_left_alone(tmp_path, db_path):
    # copies that stopped part way (a full disk, a killed `cp`): cut short early, DuckDB cannot
    # open the file; later, it opens and the schema check cannot read its pages (a raw
    # IOException traceback before); near the end, what is left may still open
    with store.connect(db_path):
        pass
    data = db_path.read_bytes()
    seen = set()
    for tenth in range(1, 10):
        cut = tmp_path / f"cut{tenth}.duckdb"
        cut.write_bytes(data[: len(data) * tenth // 10])
        before = _digest(cut)
        for kwargs in ({}, {"read_only": True}, {"migrate": False}):
            try:
                store.connect(cut, **kwargs).close()
                seen.add("opened")
            except store.StoreError as exc:
                assert "(the file is damaged or cut short: restore it from a copy)" in str(exc)
                seen.add(str(exc).split(" the store")[0])
        assert _digest(cut) == before
    assert {"cannot open", "cannot read"} <= seen


def test_a_duckdb_file_of_another_program_is_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE frames (id INTEGER, name VARCHAR)")
        con.execute("INSERT INTO frames VALUES (1, 'mine')")
    before = _digest(path)
    for kwargs in ({}, {"read_only": True}, {"migrate": False}):
        with pytest.raises(store.SchemaError, match="made by another program: its table 'frames'"):
            store.connect(path, **kwargs)
    assert _digest(path) == before
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [
            ("frames",)
        ]


def test_connections_never_fetch_or_load_extensions(db_path):
    with store.connect(db_path) as con:
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('autoinstall_known_extensions', 'autoload_known_extensions')"
            ).fetchall()
        )
        assert settings == {
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        }
        with pytest.raises(duckdb.Error, match="(?i)extension"):
            con.execute("SELECT * FROM sqlite_scan('x.db', 'frames')")


def test_a_writer_gets_in_between_readers_that_keep_overlapping(db_path):
    """Three readers in this process that always overlap (each opens as the one before it is
    half done) hold the store's file lock without a gap; a writer in another process that is
    refused by them makes new readers wait (`<store>.wait`), so the ones in finish, it opens,
    and the readers go on after it."""
    import threading

    from tests.conftest import REPO

    store.connect(db_path).close()
    stop = threading.Event()
    reads: list[float] = []
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                with store.connect(db_path, read_only=True, timeout=30) as con:
                    con.execute("SELECT count(*) FROM frames").fetchall()
                    time.sleep(0.3)
                reads.append(time.monotonic())
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    try:
        code = (
            "import store\n"
            "from store import kv\n"
            f"with store.connect({str(db_path)!r}, timeout=10) as con:\n"
            "    kv.put(con, 'written', 1)\n"
            "print('written')\n"
        )
        writer = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        written_at = time.monotonic()
        time.sleep(1.0)  # the readers go on after the writer
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert writer.returncode == 0 and writer.stdout.strip() == "written", writer.stderr
    assert not failures, failures
    assert any(at > written_at for at in reads)
    with store.connect(db_path, read_only=True) as con:
        assert kv.get(con, "written") == 1
