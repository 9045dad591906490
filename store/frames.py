"""All SQL for frames, thumbnails and ingest_errors, plus the summary readers `info` needs.

Writers take pandas DataFrames and insert them in bulk (`INSERT ... SELECT` from a registered
frame), one transaction per call, so a killed ingest keeps every batch it committed. Readers
return DataFrames or plain dicts from parameterised queries.
"""

from __future__ import annotations

from typing import Any, Iterable

import duckdb
import pandas as pd

from store.db import fetch_one, scalar
from store.db import execute as _run

# Columns ingest writes per frame (frame_id and ingested_at aside).
FRAME_COLUMNS = [
    "path", "root", "taken_at", "taken_at_utc", "time_source", "utc_offset_min", "source_utc",
    "width", "height", "file_bytes", "file_mtime", "content_hash", "mean_luma", "contrast",
    "sharpness", "colorfulness", "sun_elevation", "daylight", "daylight_source",
]
TIME_COLUMNS = ["taken_at", "taken_at_utc", "utc_offset_min", "sun_elevation", "daylight",
                "daylight_source"]




# --- readers for ingest ----------------------------------------------------------------------

def known_files(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every frame's path, frame_id, root, file_bytes and mtime in microseconds."""
    return con.sql(
        "SELECT path, frame_id, root, file_bytes, epoch_us(file_mtime) AS mtime_us FROM frames"
    ).df()


def failed_files(con: duckdb.DuckDBPyConnection, stage: str) -> pd.DataFrame:
    """Files that failed at `stage` with the size and mtime they had then."""
    return con.execute(
        "SELECT path, file_bytes, epoch_us(file_mtime) AS mtime_us FROM ingest_errors "
        "WHERE stage = ?", [stage]).df()


def new_frame_ids(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    """`n` fresh frame ids from the sequence, in ascending order."""
    if n <= 0:
        return []
    rows = con.execute("SELECT nextval('frame_id_seq') FROM range(?)", [n]).fetchall()
    return sorted(int(r[0]) for r in rows)


def list_frames(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int] | None = None
                ) -> pd.DataFrame:
    """frame_id, path, root of every frame (or of `frame_ids`), ordered by frame_id.

    The original file is `root/path` (see `pipeline.ingest.frame_file` for names that were
    not valid UTF-8).
    """
    if frame_ids is None:
        return con.sql("SELECT frame_id, path, root FROM frames ORDER BY frame_id").df()
    ids = pd.DataFrame({"frame_id": pd.Series(list(frame_ids), dtype="int64")})
    con.register("_wanted_ids", ids)
    try:
        return con.sql(
            "SELECT f.frame_id, f.path, f.root FROM frames f "
            "JOIN _wanted_ids w USING (frame_id) ORDER BY f.frame_id").df()
    finally:
        con.unregister("_wanted_ids")


def thumbnails(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]) -> pd.DataFrame:
    """frame_id, jpeg (bytes), width, height for the given frames."""
    ids = pd.DataFrame({"frame_id": pd.Series(list(frame_ids), dtype="int64")})
    con.register("_thumb_ids", ids)
    try:
        return con.sql("SELECT t.frame_id, t.jpeg, t.width, t.height FROM thumbnails t "
                       "JOIN _thumb_ids USING (frame_id) ORDER BY t.frame_id").df()
    finally:
        con.unregister("_thumb_ids")


def time_inputs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """What the time/daylight computation needs for every frame, in frame order."""
    return con.sql(
        "SELECT frame_id, taken_at, source_utc, time_source, mean_luma FROM frames "
        "ORDER BY frame_id").df()


def errors(con: duckdb.DuckDBPyConnection, stage: str | None = None) -> pd.DataFrame:
    """ingest_errors rows (all stages, or one), newest first."""
    where, params = ("WHERE stage = ?", [stage]) if stage else ("", [])
    return con.execute(
        f"SELECT path, stage, message, root, occurred_at FROM ingest_errors {where} "
        "ORDER BY occurred_at DESC, path", params).df()


# --- writers ---------------------------------------------------------------------------------

def write_batch(con: duckdb.DuckDBPyConnection, new: pd.DataFrame, changed: pd.DataFrame,
                thumbs: pd.DataFrame, errors: pd.DataFrame, cleared: list[str],
                stages: list[str]) -> None:
    """One ingest batch in one transaction.

    `new`/`changed`: frame rows (frame_id + FRAME_COLUMNS); a changed frame keeps its id and
    loses its embeddings and old thumbnail. `thumbs`: frame_id, jpeg, width, height.
    `errors`: path, stage, message, root, file_bytes, file_mtime (upserted). `cleared`: paths
    whose rows at `stages` are removed first (a fixed file, a re-read warning).
    """
    con.execute("BEGIN TRANSACTION")
    try:
        if cleared:
            con.register("_cleared", pd.DataFrame({"path": pd.Series(cleared, dtype=object)}))
            _run(con, "DELETE FROM ingest_errors WHERE stage IN (SELECT unnest(?)) "
                      "AND path IN (SELECT path FROM _cleared)", [stages])
        if len(new):
            con.register("_new_frames", new)
            cols = ", ".join(["frame_id", *FRAME_COLUMNS])
            _run(con, f"INSERT INTO frames ({cols}) SELECT {cols} FROM _new_frames")
        if len(changed):
            con.register("_changed_frames", changed)
            sets = ", ".join(f"{c} = c.{c}" for c in FRAME_COLUMNS if c != "path")
            _run(con, f"UPDATE frames SET {sets}, ingested_at = now() FROM _changed_frames c "
                      "WHERE frames.frame_id = c.frame_id")
            _run(con, "DELETE FROM embeddings WHERE frame_id IN "
                      "(SELECT frame_id FROM _changed_frames)")
        if len(thumbs):
            con.register("_thumbs", thumbs)
            _run(con, "INSERT OR REPLACE INTO thumbnails (frame_id, jpeg, width, height) "
                      "SELECT frame_id, jpeg, width, height FROM _thumbs")
        if len(errors):
            con.register("_errors", errors)
            _run(con, "INSERT OR REPLACE INTO ingest_errors "
                      "(path, stage, message, root, file_bytes, file_mtime, occurred_at) "
                      "SELECT path, stage, message, root, file_bytes, file_mtime, now() "
                      "FROM _errors")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("_cleared", "_new_frames", "_changed_frames", "_thumbs", "_errors"):
            try:
                con.unregister(name)
            except duckdb.Error:
                pass


def move_root(con: duckdb.DuckDBPyConnection, paths: list[str], root: str) -> None:
    """Point unchanged frames at a folder that moved (same relative paths, new root)."""
    if not paths:
        return
    con.register("_moved", pd.DataFrame({"path": pd.Series(paths, dtype=object)}))
    try:
        _run(con, "UPDATE frames SET root = ? WHERE path IN (SELECT path FROM _moved)", [root])
    finally:
        con.unregister("_moved")


def update_times(con: duckdb.DuckDBPyConnection, times: pd.DataFrame) -> None:
    """Write recomputed time and daylight columns (frame_id + TIME_COLUMNS), one transaction."""
    con.register("_times", times[["frame_id", *TIME_COLUMNS]])
    con.execute("BEGIN TRANSACTION")
    try:
        sets = ", ".join(f"{c} = t.{c}" for c in TIME_COLUMNS)
        _run(con, f"UPDATE frames SET {sets} FROM _times t WHERE frames.frame_id = t.frame_id")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_times")


# --- summary readers for `info` ----------------------------------------------------------------

def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = ?", [table]))


def frame_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Counts, time span and sources of the frames table."""
    row = fetch_one(con, """
        SELECT count(*), min(taken_at), max(taken_at), min(taken_at_utc), max(taken_at_utc),
               count(DISTINCT root), sum(file_bytes),
               count(*) - count(DISTINCT content_hash) - count(*) FILTER (content_hash IS NULL)
        FROM frames""")
    n, first, last, first_utc, last_utc, n_roots, n_bytes, n_dupes = row
    sources = dict(con.sql("SELECT time_source, count(*) FROM frames GROUP BY 1 ORDER BY 2 DESC"
                           ).fetchall())
    daylight = dict(con.sql(
        "SELECT coalesce(daylight, 'unknown') || ' (' || coalesce(daylight_source, '-') || ')',"
        " count(*) FROM frames GROUP BY 1 ORDER BY 2 DESC").fetchall())
    roots = [r[0] for r in con.sql(
        "SELECT root FROM frames GROUP BY root ORDER BY count(*) DESC LIMIT 3").fetchall()]
    n_thumbs = scalar(con, "SELECT count(*) FROM thumbnails")
    return {
        "n_frames": n, "first": first, "last": last, "first_utc": first_utc,
        "last_utc": last_utc, "n_roots": n_roots, "roots": roots, "bytes": n_bytes or 0,
        "n_duplicate_contents": n_dupes or 0, "time_sources": sources, "daylight": daylight,
        "n_thumbnails": n_thumbs,
    }


def error_summary(con: duckdb.DuckDBPyConnection, n_examples: int = 3) -> dict[str, Any]:
    """ingest_errors by stage: count and a few examples (path, message)."""
    by_stage = con.sql(
        "SELECT stage, count(*) FROM ingest_errors GROUP BY stage ORDER BY 2 DESC, 1").fetchall()
    out: dict[str, Any] = {}
    for stage, n in by_stage:
        examples = con.execute(
            "SELECT path, message FROM ingest_errors WHERE stage = ? "
            "ORDER BY occurred_at DESC, path LIMIT ?", [stage, n_examples]).fetchall()
        out[stage] = {"n": n, "examples": examples}
    return out


def model_summary(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(model, family, dim, n_vectors) per model that has a row or vectors."""
    return con.sql("""
        SELECT coalesce(m.model, e.model) AS model, m.family, m.dim, coalesce(e.n, 0) AS n
        FROM models m
        FULL OUTER JOIN (SELECT model, count(*) AS n FROM embeddings GROUP BY model) e
          ON e.model = m.model
        ORDER BY model""").fetchall()


def run_summary(con: duckdb.DuckDBPyConnection, limit: int = 10) -> tuple[int, list[tuple]]:
    """(total runs, newest runs as (run_id, model, status, n_frames, started_at, finished_at))."""
    total = scalar(con, "SELECT count(*) FROM analysis_runs")
    rows = con.execute(
        "SELECT run_id, model, status, n_frames, started_at, finished_at FROM analysis_runs "
        "ORDER BY run_id DESC LIMIT ?", [limit]).fetchall()
    return total, rows


def weather_summary(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(station, rows, first observed_at, last observed_at, source) per station."""
    return con.sql(
        "SELECT station, count(*), min(observed_at), max(observed_at), "
        "string_agg(DISTINCT source, ', ') FROM weather GROUP BY station ORDER BY station"
    ).fetchall()


def review_summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(con.sql("SELECT verdict, count(*) FROM reviews GROUP BY 1 ORDER BY 1").fetchall())


def ground_truth_summary(con: duckdb.DuckDBPyConnection) -> tuple[int, int] | None:
    if not _table_exists(con, "ground_truth"):
        return None
    row = fetch_one(con, "SELECT count(*), count(*) FILTER (is_anomaly) FROM ground_truth")
    return (row[0], row[1]) if row else None


def thumbnail_aspect(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]) -> float | None:
    """Median width / height of the given frames' thumbnails (None without any)."""
    ids = pd.DataFrame({"frame_id": pd.Series(list(frame_ids), dtype="int64")})
    con.register("_aspect_ids", ids)
    try:
        value = scalar(con, "SELECT median(t.width / t.height) FROM thumbnails t "
                            "JOIN _aspect_ids USING (frame_id)")
    finally:
        con.unregister("_aspect_ids")
    return None if value is None else float(value)
