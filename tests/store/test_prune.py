"""Store upkeep: fitted-state retention in write_run, prune_runs and compact (real DuckDB)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import store
from store import analysis as sa
from store import embeddings as se
from store import frames as frames_store
from store import kv, migrations, reviews, upkeep
from store.db import scalar
from tests.store.test_frames import _frame_rows, _thumbs, _write

N_FRAMES = 6
ARTIFACT_BYTES = 1 << 20  # random, so it does not compress: the file grows by ~1 MB per run


@pytest.fixture
def db(db_path):
    """A store with frames, thumbnails, vectors of model 'a', two reviews and a setting."""
    return make_store(db_path)


def make_store(db_path):
    """Frames, thumbnails, vectors of model 'a', two reviews and a setting; no runs yet."""
    with store.connect(db_path) as con:
        ids = frames_store.new_frame_ids(con, N_FRAMES)
        rows = _frame_rows(ids, [f"f/{i}.jpg" for i in ids])
        _write(con, new=rows, thumbs=_thumbs(ids))
        se.record_model(con, se.ModelRow("a", "test", "none", 4, None))
        se.insert_vectors(con, "a", ids, np.ones((N_FRAMES, 4), dtype=np.float32))
        reviews.set_verdicts(con, ids[:2], "junk")
        kv.put(con, "timezone", "Europe/London")
    return db_path


def write_run(
    con, model: str, *, fitted: bool = True, keep_fitted: int | None = None, seed: int = 0
) -> int:
    """One complete run of `model` over every frame: 2 detectors, 2 neighbours per frame."""
    run_id = sa.start_run(con, model, {"save_fitted": fitted}, "test")
    ids = np.arange(1, N_FRAMES + 1)
    rng = np.random.default_rng(seed + run_id)
    clusters = pd.DataFrame(
        {
            "run_id": run_id,
            "frame_id": ids,
            "cluster": 0,
            "map_x": rng.normal(size=N_FRAMES),
            "map_y": 0.0,
        }
    )
    scores = pd.concat(
        [
            pd.DataFrame(
                {
                    "run_id": run_id,
                    "detector": det,
                    "frame_id": ids,
                    "score": rng.normal(size=N_FRAMES),
                    "score_pct": 0.5,
                    "is_outlier": False,
                }
            )
            for det in ("lof", "consensus")
        ]
    )
    neighbors = pd.DataFrame(
        {
            "run_id": run_id,
            "frame_id": np.repeat(ids, 2),
            "rank": np.tile([1, 2], N_FRAMES).astype(np.int32),
            "neighbor_id": np.roll(np.repeat(ids, 2), 1),
            "distance": 1.0,
        }
    )
    artifact = rng.bytes(ARTIFACT_BYTES) if fitted else None
    sa.write_run(
        con,
        run_id,
        n_frames=N_FRAMES,
        clusters=clusters,
        scores=scores,
        neighbors=neighbors,
        artifact=artifact,
        versions={},
        timings={},
        keep_fitted=keep_fitted,
    )
    return run_id


def failed_run(con, model: str) -> int:
    run_id = sa.start_run(con, model, {}, "test")
    sa.fail_run(con, run_id, "boom")
    return run_id


def _fitted(con) -> dict[str, list[int]]:
    rows = con.execute(
        "SELECT r.model, r.run_id FROM fitted_runs f JOIN analysis_runs r "
        "USING (run_id) ORDER BY r.run_id"
    ).fetchall()
    out: dict[str, list[int]] = {}
    for model, run_id in rows:
        out.setdefault(model, []).append(run_id)
    return out


def _state_tables(con) -> list[int]:
    """The run ids whose fitted state has a table of its own, ascending."""
    names = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'fitted_state_%'"
    ).fetchall()
    return sorted(int(name.rsplit("_", 1)[1]) for (name,) in names)


def _rows_per_run(con) -> dict[str, dict[int, int]]:
    return {
        table: dict(con.execute(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id").fetchall())
        for table in sa.RUN_TABLES + ("analysis_runs",)
    }


def _untouched(con) -> dict[str, int]:
    return {
        table: scalar(con, f"SELECT count(*) FROM {table}")
        for table in (
            "frames",
            "thumbnails",
            "embeddings",
            "models",
            "reviews",
            "settings",
            "schema_migrations",
        )
    }


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- fitted-state retention (write_run) ---------------------------------------------------------


def test_write_run_keeps_the_newest_fitted_states_of_its_model_only(db):
    with store.connect(db) as con:
        b_runs = [write_run(con, "b") for _ in range(4)]  # no retention asked
        a_runs = [write_run(con, "a", keep_fitted=3) for _ in range(5)]
        assert _fitted(con) == {"a": a_runs[-3:], "b": b_runs}  # b untouched by a's runs
        newest_b = write_run(con, "b", keep_fitted=2)
        assert _fitted(con) == {"a": a_runs[-3:], "b": [b_runs[-1], newest_b]}
        # each kept state in a table of its own, and a dropped state's table dropped with it
        assert _state_tables(con) == sorted(a_runs[-3:] + [b_runs[-1], newest_b])
        rows = _rows_per_run(con)
    for run_id in a_runs + b_runs:  # the runs and their rows stay; only the fitted state went
        assert rows["clusters"][run_id] == N_FRAMES
        assert rows["outlier_scores"][run_id] == 2 * N_FRAMES
        assert rows["neighbors"][run_id] == 2 * N_FRAMES
        assert rows["analysis_runs"][run_id] == 1


def test_runs_without_a_fitted_state_do_not_count(db):
    with store.connect(db) as con:
        fitted = [write_run(con, "a", keep_fitted=2) for _ in range(2)]
        write_run(con, "a", fitted=False, keep_fitted=2)
        failed_run(con, "a")
        assert _fitted(con) == {"a": fitted}
        newest = write_run(con, "a", keep_fitted=2)
        assert _fitted(con) == {"a": [fitted[1], newest]}
        assert sa.latest_fitted_run(con, "a") == newest


def test_keep_below_one_is_refused_and_writes_nothing(db):
    with store.connect(db) as con:
        write_run(con, "a")
        for keep in (0, -1):
            with pytest.raises(ValueError, match="keep_fitted must be a whole number >= 1"):
                write_run(con, "a", keep_fitted=keep)
            with pytest.raises(ValueError, match="keep must be a whole number >= 1"):
                sa.drop_old_fitted(con, "a", keep)
        assert scalar(con, "SELECT count(*) FROM clusters") == N_FRAMES
        assert [
            r[0] for r in con.execute("SELECT status FROM analysis_runs ORDER BY run_id").fetchall()
        ] == ["complete", "running", "running"]


# --- prune_runs ---------------------------------------------------------------------------------


def _history(con) -> dict[str, list[int]]:
    """Runs of three models, oldest first; returns the ids by role."""
    running = sa.start_run(con, "a", {}, "test")  # e.g. a live run on another host: never pruned
    a1 = write_run(con, "a")
    failed_old = failed_run(con, "a")
    a2 = write_run(con, "a")
    a3 = write_run(con, "a", fitted=False)
    a4 = write_run(con, "a")
    failed_new = failed_run(con, "a")
    b1 = write_run(con, "b")
    c_failed = failed_run(con, "c")
    return {
        "running": [running],
        "a_gone": [a1, failed_old, a2],
        "a_kept": [a4, a3],
        "a_failed_new": [failed_new],
        "b": [b1],
        "c": [c_failed],
    }


def test_prune_keeps_the_newest_complete_runs_per_model_and_removes_every_row_of_the_others(db):
    with store.connect(db) as con:
        runs = _history(con)
        before = _rows_per_run(con)
        untouched = _untouched(con)
        report = sa.prune_runs(con, 2)
        after = _rows_per_run(con)
        assert _untouched(con) == untouched
        assert sa.latest_complete_runs(con) == {"a": runs["a_kept"][0], "b": runs["b"][0]}
    gone = runs["a_gone"]
    assert report.removed == {"a": gone}
    assert report.kept == {"a": runs["a_kept"], "b": runs["b"], "c": []}
    assert report.running == runs["running"]
    for table, per_run in after.items():
        assert not set(per_run) & set(gone), table
        assert per_run == {r: n for r, n in before[table].items() if r not in gone}, table
        assert report.rows[table] == sum(before[table].get(r, 0) for r in gone), table
    assert report.rows["analysis_runs"] == 3 and report.rows["fitted_runs"] == 2
    assert report.fitted_bytes == 2 * ARTIFACT_BYTES  # counted in their own tables
    with store.connect(db, read_only=True) as con:
        assert not set(_state_tables(con)) & set(gone)
    assert set(after["analysis_runs"]) == {r for ids in runs.values() for r in ids} - set(gone)


def test_prune_never_removes_a_models_newest_complete_run(db):
    with store.connect(db) as con:
        runs = [write_run(con, "a") for _ in range(3)]
        with pytest.raises(ValueError, match="keep must be a whole number >= 1"):
            sa.prune_runs(con, 0)
        report = sa.prune_runs(con, 1)
        assert report.removed == {"a": runs[:2]}
        assert sa.latest_complete_runs(con) == {"a": runs[-1]}
        assert sa.prune_runs(con, 1).run_ids == []  # nothing left to remove


def test_dry_run_reports_the_same_plan_and_changes_nothing(db):
    with store.connect(db) as con:
        _history(con)
    digest = _sha(db)
    with store.connect(db, read_only=True) as con:  # a dry run needs no write access
        plan = sa.prune_runs(con, 2, dry_run=True)
    assert _sha(db) == digest
    with store.connect(db) as con:
        done = sa.prune_runs(con, 2)
    assert plan.dry_run and not done.dry_run
    assert (plan.removed, plan.kept, plan.rows) == (done.removed, done.kept, done.rows)


# --- compact ------------------------------------------------------------------------------------


def _contents(con) -> dict[str, pd.DataFrame]:
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() ORDER BY table_name"
        ).fetchall()
    ]
    return {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").df() for t in tables}


def test_checkpoint_puts_every_committed_change_in_the_file_itself(db, tmp_path):
    """What `migrate` relies on before it copies the file as a backup: after `checkpoint`, the
    file without its write-ahead log holds the change; before, the log held it."""
    import shutil

    def copied_settings() -> dict:
        copy = tmp_path / "copy.duckdb"
        copy.unlink(missing_ok=True)
        shutil.copy(db, copy)  # the file alone, as a plain copy takes it
        with store.connect(copy, read_only=True, migrate=False) as other:
            return {key: kv.get(other, key) for key in ("timezone", "lat")}

    with store.connect(db) as con:
        kv.put(con, "lat", 51.5)
        assert upkeep._wal(db).exists()
        assert copied_settings()["lat"] is None
        upkeep.checkpoint(con)
        assert copied_settings() == {"timezone": "Europe/London", "lat": 51.5}


def test_compact_gives_a_smaller_file_with_every_kept_row_and_a_working_sequence(db):
    with store.connect(db) as con:
        runs = [write_run(con, "a") for _ in range(5)]
        sa.prune_runs(con, 2)
        kept = _contents(con)
        frame_facts = con.sql("SELECT * FROM frame_facts ORDER BY frame_id").df()
    pruned = upkeep.file_size(db)
    done = upkeep.compact(db)
    assert done.bytes_before == pruned
    # smaller, though by less than when pruned fitted states left rewritten copies behind
    assert done.bytes_after == upkeep.file_size(db) < pruned
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]  # no copy or log left
    with store.connect(db, read_only=True) as con:
        assert migrations.applied_version(con) == migrations.LATEST
        again = _contents(con)
        assert con.sql("SELECT * FROM frame_facts ORDER BY frame_id").df().equals(frame_facts)
    assert again.keys() == kept.keys()
    for table in kept:
        pd.testing.assert_frame_equal(again[table], kept[table], obj=table)
    with store.connect(db) as con:  # a later run gets a fresh id, not one of the pruned ones
        new_run = write_run(con, "a", keep_fitted=3)
        assert new_run == runs[-1] + 1
        assert sa.latest_complete_runs(con) == {"a": new_run}
        assert _fitted(con) == {"a": runs[-2:] + [new_run]}
        assert frames_store.new_frame_ids(con, 1) == [N_FRAMES + 1]


def test_compact_of_a_store_that_is_already_tight_keeps_it_whole(db):
    with store.connect(db) as con:
        write_run(con, "a")
        kept = _contents(con)
    done = upkeep.compact(db)
    assert done.bytes_after <= done.bytes_before
    with store.connect(db, read_only=True) as con:
        again = _contents(con)
    for table in kept:
        pd.testing.assert_frame_equal(again[table], kept[table], obj=table)


def test_a_failed_compact_leaves_the_store_as_it_was_and_no_copy(db, monkeypatch):
    with store.connect(db) as con:
        write_run(con, "a")
    digest = _sha(db)

    def differs(con, name, path):
        raise store.StoreError(f"cannot compact {path}: the copy differs (test)")

    monkeypatch.setattr(upkeep, "_check_copy", differs)
    with pytest.raises(store.StoreError, match="the copy differs"):
        upkeep.compact(db)
    assert _sha(db) == digest
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]


# --- where a fitted state is kept ---------------------------------------------------------------


def test_each_fitted_state_has_a_table_of_its_own_and_one_kept_inline_still_loads(db):
    """A checkpoint rewrites a table's row group whole: with every state in `fitted_runs`, each
    new state rewrote the kept ones (bench/fitted_blobs.py). A store written before keeps its
    states in `fitted_runs.artifact`; they load, and prune and retention remove them."""
    with store.connect(db) as con:
        new = write_run(con, "a")
        assert scalar(con, "SELECT octet_length(artifact) FROM fitted_runs") == 0
        assert scalar(con, f"SELECT count(*) FROM {sa.fitted_table(new)}") == 1
        artifact, _ = sa.load_fitted(con, new)
        assert len(artifact) == ARTIFACT_BYTES
        old = write_run(con, "b", fitted=False)  # then given an inline state, as stores had
        con.execute(
            "INSERT INTO fitted_runs (run_id, artifact, versions) VALUES (?, ?, '{}')",
            [old, b"inline state"],
        )
        assert sa.load_fitted(con, old) == (b"inline state", {})
        assert sa.latest_fitted_run(con, "b") == old
        newer = write_run(con, "b", keep_fitted=1)
        assert _fitted(con) == {"a": [new], "b": [newer]} and _state_tables(con) == [new, newer]
        con.execute(f"DROP TABLE {sa.fitted_table(new)}")  # its state gone: none to load
        assert sa.load_fitted(con, new) is None
