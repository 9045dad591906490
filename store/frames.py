"""All SQL for frames, thumbnails and ingest_errors, plus the summary readers `info` needs.

Writers take pandas DataFrames and insert them in bulk (`INSERT ... SELECT` from a registered
frame), one transaction per call, so a killed ingest keeps every batch it committed. Readers
return DataFrames or plain dicts from parameterised queries.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from store import aggregates, reviews, weather
from store.db import execute as _run
from store.db import fetch_one, scalar

# Columns ingest writes per frame (frame_id and ingested_at aside).
FRAME_COLUMNS = [
    "path",
    "root",
    "location",
    "taken_at",
    "taken_at_utc",
    "time_source",
    "utc_offset_min",
    "source_utc",
    "width",
    "height",
    "file_bytes",
    "file_mtime",
    "content_hash",
    "mean_luma",
    "contrast",
    "sharpness",
    "colorfulness",
    "sun_elevation",
    "daylight",
    "daylight_source",
    "local_contrast",
    "sharpness_cells",
]
# Frame measures added after the first schema: rows written without them leave them NULL
# (`pipeline.imagestats.backfill_thumbnail_measures` fills them in later).
OPTIONAL_COLUMNS = ["local_contrast", "sharpness_cells"]
TIME_COLUMNS = [
    "taken_at",
    "taken_at_utc",
    "utc_offset_min",
    "sun_elevation",
    "daylight",
    "daylight_source",
]
# Rows that describe a frame's old pixels: removed when its file's content changes.
_SCORED_TABLES = ("clusters", "outlier_scores", "frame_cause_evidence", "neighbors")
CHANGED_STAGE = "changed"
# At least this many frames of one folder timed by their files' modification times, all within
# fewer seconds than there are frames, were timed by a copy, not by the camera (`copied_times`).
COPIED_MIN_FRAMES = 10


# --- readers for ingest ----------------------------------------------------------------------


def known_files(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every frame's location, frame_id, path, root, file_bytes, mtime (us) and content hash."""
    return con.sql(
        "SELECT location, frame_id, path, root, file_bytes, epoch_us(file_mtime) AS mtime_us, "
        "content_hash FROM frames"
    ).df()


def failed_files(con: duckdb.DuckDBPyConnection, stage: str) -> pd.DataFrame:
    """Files that failed at `stage`: location, and the size and mtime they had then."""
    return con.execute(
        "SELECT location, file_bytes, epoch_us(file_mtime) AS mtime_us FROM ingest_errors "
        "WHERE stage = ?",
        [stage],
    ).df()


def new_frame_ids(con: duckdb.DuckDBPyConnection, n: int) -> list[int]:
    """`n` fresh frame ids from the sequence, in ascending order."""
    if n <= 0:
        return []
    rows = _run(con, "SELECT nextval('frame_id_seq') FROM range(?)", [n]).fetchall()
    return sorted(int(r[0]) for r in rows)


def list_frames(
    con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int] | None = None
) -> pd.DataFrame:
    """frame_id, path, root of every frame (or of `frame_ids`), ordered by frame_id.

    The original file is `root/path` (see `pipeline.ingest.frame_file` for names that were
    not valid UTF-8).
    """
    if frame_ids is None:
        return con.sql("SELECT frame_id, path, root FROM frames ORDER BY frame_id").df()
    with _registered(con, "_wanted_ids", frame_ids):
        return con.sql(
            "SELECT f.frame_id, f.path, f.root FROM frames f "
            "JOIN _wanted_ids w USING (frame_id) ORDER BY f.frame_id"
        ).df()


def thumbnails(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]) -> pd.DataFrame:
    """frame_id, jpeg (bytes), width, height for the given frames."""
    with _registered(con, "_thumb_ids", frame_ids):
        return con.sql(
            "SELECT t.frame_id, t.jpeg, t.width, t.height FROM thumbnails t "
            "JOIN _thumb_ids USING (frame_id) ORDER BY t.frame_id"
        ).df()


def thumbnail_jpegs(
    con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]
) -> tuple[np.ndarray, list[memoryview]]:
    """(frame_id ascending, each one's JPEG) for the given frames that have a thumbnail, the
    JPEGs as views into the one buffer the query's Arrow result holds them in: no bytes object
    and copy per frame, as `thumbnails` makes while holding the GIL (the pixel detectors read
    every frame's this way, a chunk of thousands at a time)."""
    with _registered(con, "_jpeg_ids", frame_ids):
        table = con.sql(
            "SELECT t.frame_id, t.jpeg FROM thumbnails t "
            "JOIN _jpeg_ids USING (frame_id) ORDER BY t.frame_id"
        ).to_arrow_table()
    ids = table.column("frame_id").to_numpy().astype(np.int64, copy=False)
    jpegs = table.column("jpeg").combine_chunks()
    if len(jpegs) == 0:
        return ids, []
    width = np.int64 if pa.types.is_large_binary(jpegs.type) else np.int32
    _, offsets, data = jpegs.buffers()
    ends = np.frombuffer(offsets, width)[jpegs.offset : jpegs.offset + len(jpegs) + 1]
    view = memoryview(data).cast("B")  # Arrow exports signed bytes, which simplejpeg refuses
    return ids, [view[a:b] for a, b in zip(ends[:-1].tolist(), ends[1:].tolist())]


def time_inputs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """What the time/daylight computation needs for every frame, in frame order."""
    return con.sql(
        "SELECT frame_id, taken_at, source_utc, time_source, mean_luma FROM frames "
        "ORDER BY frame_id"
    ).df()


def errors(con: duckdb.DuckDBPyConnection, stage: str | None = None) -> pd.DataFrame:
    """ingest_errors rows (all stages, or one), newest first."""
    where, params = ("WHERE stage = ?", [stage]) if stage else ("", [])
    return _run(
        con,
        f"SELECT path, stage, message, root, location, occurred_at FROM ingest_errors {where} "
        "ORDER BY occurred_at DESC, path",
        params,
    ).df()


def _ids(frame_ids: Iterable[int]) -> pd.DataFrame:
    return pd.DataFrame({"frame_id": pd.Series(list(frame_ids), dtype="int64")})


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, frame_ids: Iterable[int]):
    """`frame_ids` as the view `name` (one column, frame_id) while the block runs."""
    con.register(name, _ids(frame_ids))
    try:
        yield
    finally:
        con.unregister(name)


# --- writers ---------------------------------------------------------------------------------


@dataclass
class FrameBatch:
    """One ingest batch, written by `write_batch` in one transaction.

    `new`, `changed` and `reread` are frame rows (frame_id + FRAME_COLUMNS). A `changed` frame
    (same place, other pixels) keeps its id and loses what described its old pixels: its
    vectors, its rows in earlier analysis runs and its review, which is recorded as a
    'changed' row in `ingest_errors` so that nothing disappears unnoticed. A `reread` frame
    (new mtime, same content) only gets its row updated. `thumbs`: frame_id, jpeg, width,
    height. `errors`: location, path, stage, message, root, file_bytes, file_mtime (upserted).
    `cleared`: locations whose rows at `stages` are removed first (a fixed file, a re-read
    warning).
    """

    new: pd.DataFrame
    changed: pd.DataFrame
    reread: pd.DataFrame
    thumbs: pd.DataFrame
    errors: pd.DataFrame
    cleared: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)


def write_batch(con: duckdb.DuckDBPyConnection, batch: FrameBatch) -> int:
    """Write one ingest batch in one transaction; returns the reviews a content change removed.
    The batch's new, re-read and changed frames are joined to the weather
    (`weather.refresh_join`) in it."""
    registered: list[str] = []

    def register(name: str, frame: pd.DataFrame) -> None:
        if name.endswith("_frames"):  # frame rows: a measure not taken stays NULL
            missing = [c for c in OPTIONAL_COLUMNS if c not in frame.columns]
            frame = frame.assign(
                **{c: pd.Series(None, index=frame.index, dtype=object) for c in missing}
            )
        con.register(name, frame)
        registered.append(name)

    n_reviews = 0
    con.execute("BEGIN TRANSACTION")
    try:
        if batch.cleared:
            register("_cleared", pd.DataFrame({"location": pd.Series(batch.cleared, dtype=object)}))
            _run(
                con,
                "DELETE FROM ingest_errors WHERE stage IN (SELECT unnest(?)) "
                "AND location IN (SELECT location FROM _cleared)",
                [batch.stages],
            )
        if len(batch.new):
            register("_new_frames", batch.new)
            cols = ", ".join(["frame_id", *FRAME_COLUMNS])
            _run(con, f"INSERT INTO frames ({cols}) SELECT {cols} FROM _new_frames")
        sets = ", ".join(
            f"{c} = u.{c}" for c in FRAME_COLUMNS if c not in ("path", "root", "location")
        )
        for name, rows in (("_reread_frames", batch.reread), ("_changed_frames", batch.changed)):
            if len(rows):
                register(name, rows)
                _run(
                    con,
                    f"UPDATE frames SET {sets}, ingested_at = now() FROM {name} u "
                    "WHERE frames.frame_id = u.frame_id",
                )
        if len(batch.changed):
            n_reviews = _forget_old_pixels(con)
        if len(batch.reread) or len(batch.changed):
            aggregates.mark_stale(con)
            reviews.copy_frame_times(con)
        for name in ("_new_frames", "_reread_frames", "_changed_frames"):
            if name in registered:  # their UTC times are new: join them to the weather again
                weather.refresh_join(con, name, new=name == "_new_frames")
        if len(batch.thumbs):
            register("_thumbs", batch.thumbs)
            _run(
                con,
                "INSERT OR REPLACE INTO thumbnails (frame_id, jpeg, width, height) "
                "SELECT frame_id, jpeg, width, height FROM _thumbs",
            )
        if len(batch.errors):
            register("_errors", batch.errors)
            _run(
                con,
                "INSERT OR REPLACE INTO ingest_errors (location, stage, path, message, "
                "root, file_bytes, file_mtime, occurred_at) SELECT location, stage, path, "
                "message, root, file_bytes, file_mtime, now() FROM _errors",
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in registered:
            con.unregister(name)
    return n_reviews


def _forget_old_pixels(con: duckdb.DuckDBPyConnection) -> int:
    """For `_changed_frames` (registered): record, then remove, what judged the old pixels."""
    _run(
        con,
        f"""
        INSERT OR REPLACE INTO ingest_errors (location, stage, path, message, root, file_bytes,
                                              file_mtime, occurred_at)
        SELECT c.location, '{CHANGED_STAGE}', c.path,
               'the file changed after it was ingested (other pixels at the same place): '
               || CASE WHEN r.verdict IS NULL THEN ''
                       ELSE 'its review ''' || r.verdict || ''' of '
                            || strftime(r.reviewed_at, '%Y-%m-%d %H:%M')
                            || coalesce(' (note: ' || r.note || ')', '') || ', ' END
               || 'its vectors and its scores in ' || count(DISTINCT s.run_id)
               || ' earlier run(s) were removed; the next embed and analyze see the new picture',
               c.root, c.file_bytes, c.file_mtime, now()
        FROM _changed_frames c
        LEFT JOIN reviews r ON r.frame_id = c.frame_id
        LEFT JOIN clusters s ON s.frame_id = c.frame_id
        GROUP BY c.location, c.path, c.root, c.file_bytes, c.file_mtime, r.verdict,
                 r.reviewed_at, r.note""",
    )
    n_reviews = scalar(
        con, "SELECT count(*) FROM reviews WHERE frame_id IN (SELECT frame_id FROM _changed_frames)"
    )
    for table in ("embeddings", "reviews", *_SCORED_TABLES):
        _run(con, f"DELETE FROM {table} WHERE frame_id IN (SELECT frame_id FROM _changed_frames)")
    _run(con, "DELETE FROM neighbors WHERE neighbor_id IN (SELECT frame_id FROM _changed_frames)")
    return int(n_reviews or 0)


def relocate(con: duckdb.DuckDBPyConnection, moves: pd.DataFrame) -> None:
    """Point unchanged frames at their file's new place (frame_id, root, path, location)."""
    if not len(moves):
        return
    con.register("_moved", moves[["frame_id", "root", "path", "location"]])
    try:
        _run(
            con,
            "UPDATE frames SET root = m.root, path = m.path, location = m.location "
            "FROM _moved m WHERE frames.frame_id = m.frame_id",
        )
        aggregates.move_cards(con, "_moved")
    finally:
        con.unregister("_moved")


def update_times(con: duckdb.DuckDBPyConnection, times: pd.DataFrame) -> None:
    """Write recomputed time and daylight columns (frame_id + TIME_COLUMNS), one transaction;
    those frames are joined to the weather again (`weather.refresh_join`)."""
    con.register("_times", times[["frame_id", *TIME_COLUMNS]])
    con.execute("BEGIN TRANSACTION")
    try:
        sets = ", ".join(f"{c} = t.{c}" for c in TIME_COLUMNS)
        _run(con, f"UPDATE frames SET {sets} FROM _times t WHERE frames.frame_id = t.frame_id")
        aggregates.mark_stale(con)
        reviews.copy_frame_times(con)
        weather.refresh_join(con, "_times")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_times")


def lacking_thumbnail_measures(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Frames with a thumbnail but no local contrast or no cell sharpness (ingested before
    they were measured)."""
    rows = con.sql(
        "SELECT f.frame_id FROM frames f JOIN thumbnails t USING (frame_id) "
        "WHERE f.local_contrast IS NULL OR f.sharpness_cells IS NULL ORDER BY f.frame_id"
    ).fetchall()
    return [int(r[0]) for r in rows]


def update_thumbnail_measures(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    """Write `local_contrast` and `sharpness_cells` for frames (frame_id, local_contrast,
    sharpness_cells; None leaves a stored value as it is), one transaction."""
    if rows.empty:
        return
    con.register("_measures", rows[["frame_id", "local_contrast", "sharpness_cells"]])
    con.execute("BEGIN TRANSACTION")
    try:
        _run(
            con,
            "UPDATE frames SET local_contrast = coalesce(m.local_contrast, frames.local_contrast), "
            "sharpness_cells = coalesce(m.sharpness_cells::DOUBLE[], frames.sharpness_cells) "
            "FROM _measures m WHERE frames.frame_id = m.frame_id",
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_measures")


# --- summary readers for `info` ----------------------------------------------------------------


def _table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
    )


def frame_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Counts, time span and sources of the frames table."""
    row = fetch_one(
        con,
        """
        SELECT count(*), min(taken_at), max(taken_at), min(taken_at_utc), max(taken_at_utc),
               count(DISTINCT root), sum(file_bytes),
               count(*) - count(DISTINCT content_hash) - count(*) FILTER (content_hash IS NULL)
        FROM frames""",
    )
    n, first, last, first_utc, last_utc, n_roots, n_bytes, n_dupes = row
    sources = dict(
        con.sql("SELECT time_source, count(*) FROM frames GROUP BY 1 ORDER BY 2 DESC").fetchall()
    )
    daylight = dict(
        con.sql(
            "SELECT coalesce(daylight, 'unknown') || ' (' || coalesce(daylight_source, '-') || ')',"
            " count(*) FROM frames GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    )
    roots = [
        r[0]
        for r in con.sql(
            "SELECT root FROM frames GROUP BY root ORDER BY count(*) DESC LIMIT 3"
        ).fetchall()
    ]
    n_thumbs = scalar(con, "SELECT count(*) FROM thumbnails")
    return {
        "n_frames": n,
        "first": first,
        "last": last,
        "first_utc": first_utc,
        "last_utc": last_utc,
        "n_roots": n_roots,
        "roots": roots,
        "bytes": n_bytes or 0,
        "n_duplicate_contents": n_dupes or 0,
        "time_sources": sources,
        "copied_times": copied_times(con),
        "daylight": daylight,
        "n_thumbnails": n_thumbs,
    }


def copied_times(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, float]]:
    """(root, frames, seconds) for each ingested folder whose frames took their time from their
    files' modification times (no EXIF date, no time in the name) and got them within fewer
    seconds than there are frames: a copy, a download or a git checkout gave the files the
    time it wrote them, not the time they were taken (a camera without EXIF that wrote a frame
    a second or faster is the exception). Such frames all share one time, so daylight, the
    pools of the quality checks and the time line cannot tell them apart."""
    return [
        (root, int(n), float(span))
        for root, n, span in con.sql(
            f"""
            SELECT root, count(*) AS n, epoch(max(source_utc)) - epoch(min(source_utc)) AS span
            FROM frames WHERE time_source = 'mtime' AND source_utc IS NOT NULL
            GROUP BY root HAVING n >= {COPIED_MIN_FRAMES} AND span < n
            ORDER BY root"""
        ).fetchall()
    ]


def error_summary(con: duckdb.DuckDBPyConnection, n_examples: int = 3) -> dict[str, Any]:
    """ingest_errors by stage: count and a few examples (path, message)."""
    by_stage = con.sql(
        "SELECT stage, count(*) FROM ingest_errors GROUP BY stage ORDER BY 2 DESC, 1"
    ).fetchall()
    out: dict[str, Any] = {}
    for stage, n in by_stage:
        examples = con.execute(
            "SELECT path, message FROM ingest_errors WHERE stage = ? "
            "ORDER BY occurred_at DESC, path LIMIT ?",
            [stage, n_examples],
        ).fetchall()
        out[stage] = {"n": n, "examples": examples}
    return out


def model_summary(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(model, family, dim, n_vectors, {precision: n_vectors}) per model that has a row or
    vectors; the precisions most first."""
    rows = con.sql("""
        SELECT coalesce(m.model, e.model) AS model, m.family, m.dim,
               coalesce(sum(e.n), 0) AS n,
               list(struct_pack(precision := e.precision, n := e.n)
                    ORDER BY e.n DESC, e.precision) FILTER (WHERE e.n IS NOT NULL) AS split
        FROM models m
        FULL OUTER JOIN (SELECT model, precision, count(*) AS n FROM embeddings
                         GROUP BY model, precision) e
          ON e.model = m.model
        GROUP BY ALL
        ORDER BY model""").fetchall()
    return [
        (model, family, dim, int(n), {p["precision"]: int(p["n"]) for p in split or []})
        for model, family, dim, n, split in rows
    ]


def run_summary(con: duckdb.DuckDBPyConnection, limit: int = 10) -> tuple[int, list[tuple]]:
    """(total runs, newest runs as (run_id, model, status, n_frames, started_at, finished_at))."""
    total = scalar(con, "SELECT count(*) FROM analysis_runs")
    rows = con.execute(
        "SELECT run_id, model, status, n_frames, started_at, finished_at FROM analysis_runs "
        "ORDER BY run_id DESC LIMIT ?",
        [limit],
    ).fetchall()
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
        value = scalar(
            con,
            "SELECT median(t.width / t.height) FROM thumbnails t JOIN _aspect_ids USING (frame_id)",
        )
    finally:
        con.unregister("_aspect_ids")
    return None if value is None else float(value)
