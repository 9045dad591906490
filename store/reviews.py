"""Review writes (the dashboard's only writes): set or clear junk/keep verdicts in bulk, and
put earlier verdicts back (undo).

Callers open a short write connection (`with store.connect(db) as con:`) around one call and
close it at once, so the pipeline is never kept waiting. Rows go in as one DataFrame with
`INSERT ... SELECT ... ON CONFLICT`, never row by row. `mark` returns the rows it replaced
(`snapshot`), and `restore` puts them back as they were (verdict, note and time). Each
review row also carries its frame's time and daylight (`frame_taken_at`, `frame_daylight`,
migration 7; `copy_frame_times` keeps them when frames change), so the readers count reviews
under a date, hour or daylight filter without joining `frames`.
"""

from __future__ import annotations

from typing import Iterable

import duckdb
import pandas as pd

from store.db import log_failed

VERDICTS = ("junk", "keep")


def set_verdicts(
    con: duckdb.DuckDBPyConnection,
    frame_ids: Iterable[int],
    verdict: str | None,
    note: str | None = None,
) -> int:
    """Mark frames junk or keep (None clears their verdict). Returns the rows changed.

    Ids that are not frames in the store are ignored. A later verdict replaces an earlier one.
    """
    ids = sorted({int(i) for i in frame_ids})
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS} or None, not {verdict!r}")
    if not ids:
        return 0
    batch = pd.DataFrame({"frame_id": pd.array(ids, dtype="int64")})
    con.register("review_batch", batch)
    try:
        con.execute("BEGIN TRANSACTION")
        if verdict is None:
            sql = "DELETE FROM reviews WHERE frame_id IN (SELECT frame_id FROM review_batch)"
            changed = con.execute(sql).fetchall()[0][0]
        else:
            sql = """
                INSERT INTO reviews (frame_id, verdict, note, reviewed_at, frame_taken_at,
                                     frame_daylight)
                SELECT b.frame_id, ?, ?, now(), f.taken_at, f.daylight FROM review_batch b
                JOIN frames f ON f.frame_id = b.frame_id
                ON CONFLICT (frame_id) DO UPDATE SET verdict = excluded.verdict,
                    note = excluded.note, reviewed_at = excluded.reviewed_at,
                    frame_taken_at = excluded.frame_taken_at,
                    frame_daylight = excluded.frame_daylight"""
            changed = con.execute(sql, [verdict, note]).fetchall()[0][0]
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        log_failed(sql if "sql" in locals() else "BEGIN", {"verdict": verdict, "n": len(ids)}, exc)
        raise
    finally:
        con.unregister("review_batch")
    return int(changed)


def verdicts(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]) -> dict[int, str]:
    """Current verdicts of some frames (frames without one are absent)."""
    ids = [int(i) for i in frame_ids]
    rows = con.execute(
        "SELECT frame_id, verdict FROM reviews WHERE list_contains(?, frame_id)", [ids]
    ).fetchall()
    return {int(fid): verdict for fid, verdict in rows}


def all_verdicts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every review's frame_id and verdict, by frame_id (what `analyze` learns from)."""
    return con.execute("SELECT frame_id, verdict FROM reviews ORDER BY frame_id").df()


def snapshot(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int]) -> pd.DataFrame:
    """The review rows of some frames as they are now (frame_id, verdict, note, reviewed_at);
    frames without a verdict have no row."""
    ids = sorted({int(i) for i in frame_ids})
    return con.execute(
        "SELECT frame_id, verdict, note, reviewed_at FROM reviews "
        "WHERE list_contains(?, frame_id) ORDER BY frame_id",
        [ids],
    ).df()


def mark(
    con: duckdb.DuckDBPyConnection,
    frame_ids: Iterable[int],
    verdict: str | None,
    note: str | None = None,
) -> tuple[int, pd.DataFrame]:
    """`set_verdicts`, returning also the `snapshot` of the frames' reviews before it (what
    `restore` needs to undo it)."""
    ids = sorted({int(i) for i in frame_ids})
    before = snapshot(con, ids)
    return set_verdicts(con, ids, verdict, note), before


def restore(con: duckdb.DuckDBPyConnection, frame_ids: Iterable[int], before: pd.DataFrame) -> int:
    """Undo a `mark`: every frame in `frame_ids` gets back the review row it had in `before`
    (its `snapshot` then), or none. One transaction; returns the rows put back."""
    ids = sorted({int(i) for i in frame_ids})
    rows = before[before["frame_id"].isin(ids)][["frame_id", "verdict", "note", "reviewed_at"]]
    con.register("review_ids", pd.DataFrame({"frame_id": pd.array(ids, dtype="int64")}))
    con.register("review_rows", rows)
    sql = "DELETE FROM reviews WHERE frame_id IN (SELECT frame_id FROM review_ids)"
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(sql)
        sql = """INSERT INTO reviews (frame_id, verdict, note, reviewed_at, frame_taken_at,
                                      frame_daylight)
                 SELECT r.frame_id, r.verdict, r.note, r.reviewed_at, f.taken_at, f.daylight
                 FROM review_rows r JOIN frames f ON f.frame_id = r.frame_id"""
        con.execute(sql)
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        log_failed(sql, {"n": len(ids)}, exc)
        raise
    finally:
        con.unregister("review_ids")
        con.unregister("review_rows")
    return len(rows)


def copy_frame_times(con: duckdb.DuckDBPyConnection) -> None:
    """Copy the frames' time and daylight into their reviews (`frame_taken_at`,
    `frame_daylight`, which the readers count reviews by) where they differ: the frame writers
    call it after changing them, in their transaction."""
    sql = """
        UPDATE reviews SET frame_taken_at = f.taken_at, frame_daylight = f.daylight
        FROM frames f
        WHERE f.frame_id = reviews.frame_id
          AND (reviews.frame_taken_at IS DISTINCT FROM f.taken_at
               OR reviews.frame_daylight IS DISTINCT FROM f.daylight)"""
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        log_failed(sql, {}, exc)
        raise
