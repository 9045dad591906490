"""All SQL for the `weather` table and the readers around the weather join and the clock check.

Observations go in once per (station, observed_at); the `frame_weather_live` view joins each
frame to the latest observation at or before its UTC time, from the station in the
'weather_station' setting (else the one with most rows), within 'weather_tolerance_minutes'.
The `frame_weather` table (migration 8) holds that view's rows, so readers filter and show the
weather with a plain join on frame_id instead of the ASOF join over every frame; the writers
here and in `store.frames` keep it equal to the view in their transactions (`refresh_join`).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from store import aggregates, kv
from store.db import execute as _run
from store.db import fetch_one, log_failed, scalar
from store.migrations import frame_weather_join

COLUMNS = (
    "station",
    "observed_at",
    "temperature_c",
    "precipitation_mm",
    "cloud_cover_pct",
    "wind_speed_ms",
    "visibility_km",
    "weather_code",
    "condition",
    "source",
)

DEFAULT_TOLERANCE_MINUTES = 90.0


def insert_observations(
    con: duckdb.DuckDBPyConnection, frame: pd.DataFrame, replace: bool = False
) -> tuple[int, int]:
    """Add observations (a DataFrame with `COLUMNS`, `observed_at` tz-aware) in one statement.

    Rows whose (station, observed_at) is already stored are left alone, or updated when
    `replace`. Returns (rows added, rows already present). Any change makes the conditions
    stored with the runs' aggregates stale (`aggregates.mark_weather_stale`) and joins every
    frame again (`refresh_join`), in the same transaction.
    """
    if frame.empty:
        return 0, 0
    data = frame.loc[:, list(COLUMNS)].copy()
    data["weather_code"] = data["weather_code"].astype("Int32")
    data["observed_at"] = pd.to_datetime(data["observed_at"], utc=True)
    columns = ", ".join(COLUMNS)
    conflict = "DO NOTHING"
    if replace:
        conflict = "DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in COLUMNS if c not in ("station", "observed_at")
        )
    sql = (
        f"INSERT INTO weather ({columns}) SELECT {columns} FROM _weather_rows "
        f"ON CONFLICT (station, observed_at) {conflict}"
    )
    con.register("_weather_rows", data)
    try:
        known = scalar(
            con, "SELECT count(*) FROM _weather_rows r JOIN weather w USING (station, observed_at)"
        )
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            if known < len(data) or (replace and known):
                aggregates.mark_weather_stale(con)
                refresh_join(con)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            log_failed(sql, f"{len(data)} rows", exc)
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("_weather_rows")
    return len(data) - known, known


def station_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute(
        "SELECT station, count(*) FROM weather GROUP BY station ORDER BY station"
    ).fetchall()
    return {station: n for station, n in rows}


def stations(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per station: rows, first/last observation, sources, and whether frames use it."""
    return con.sql("""
        SELECT w.station, count(*) AS n_rows,
               min(observed_at) AS first_observed_at, max(observed_at) AS last_observed_at,
               string_agg(DISTINCT source, ', ') AS sources,
               w.station = (SELECT station FROM weather_station_used) AS is_joined
        FROM weather w GROUP BY w.station ORDER BY w.station
    """).df()


def joined_station(con: duckdb.DuckDBPyConnection) -> str | None:
    return scalar(con, "SELECT station FROM weather_station_used")


def tolerance_minutes(con: duckdb.DuckDBPyConnection) -> float:
    return float(kv.get(con, "weather_tolerance_minutes", DEFAULT_TOLERANCE_MINUTES))


def _join(con: duckdb.DuckDBPyConnection) -> tuple[str | None, float]:
    """The station and tolerance the `frame_weather_live` view joins frames with now."""
    return joined_station(con), tolerance_minutes(con)


def set_join(
    con: duckdb.DuckDBPyConnection,
    station: str | None = None,
    tolerance_minutes: float | None = None,
) -> None:
    """Store the join station and/or tolerance (None leaves a value as it is), in one
    transaction. A join that changes makes the conditions stored with the runs' aggregates
    stale (`aggregates.mark_weather_stale`) and joins every frame again (`refresh_join`)."""
    con.execute("BEGIN TRANSACTION")
    try:
        before = _join(con)
        if station is not None:
            kv.put(con, "weather_station", station)
        if tolerance_minutes is not None:
            kv.put(con, "weather_tolerance_minutes", float(tolerance_minutes))
        if _join(con) != before:
            aggregates.mark_weather_stale(con)
            refresh_join(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def refresh_join(
    con: duckdb.DuckDBPyConnection, frames: str | None = None, new: bool = False
) -> None:
    """Make the stored join (`frame_weather`) the live one (`frame_weather_live`) again: for
    every frame, or for the frames whose ids the table or view named `frames` holds (a name
    from the store's code, never from input: frames just written or re-timed; `new`: frames
    just inserted, which have no stored row to remove). Inside the caller's transaction. Every
    frame: 0.8-1.0 CPU seconds at 750,000 frames (2.6-3.6 s wall on the loaded 2-core
    machine). A few frames are joined alone (`migrations.frame_weather_join`), with only the
    observations their ASOF matches can be: a batch of 64 at 750,000 frames and 125,000
    observations, 14.5 ms CPU against 238 ms through the view filtered by id."""
    if frames is None:
        _run(con, "DELETE FROM frame_weather")
        _run(con, "INSERT INTO frame_weather SELECT * FROM frame_weather_live ORDER BY frame_id")
        return
    if not new:
        _run(con, f"DELETE FROM frame_weather WHERE frame_id IN (SELECT frame_id FROM {frames})")
    joined = frame_weather_join(frames).strip().rstrip(";")
    _run(con, f"INSERT INTO frame_weather SELECT * FROM ({joined}) ORDER BY frame_id")


def observations(con: duckdb.DuckDBPyConnection, station: str | None = None) -> pd.DataFrame:
    """Stored observations (one station, or all), in time order."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM weather"
    params: list = []
    if station is not None:
        sql += " WHERE station = ?"
        params.append(station)
    return con.execute(sql + " ORDER BY station, observed_at", params).df()


def frame_weather(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Each frame with its joined observation (`frame_weather`), in time order."""
    return con.sql("""
        SELECT f.frame_id, f.path, f.taken_at, f.taken_at_utc, fw.* EXCLUDE (frame_id)
        FROM frames f LEFT JOIN frame_weather fw USING (frame_id)
        ORDER BY f.taken_at_utc NULLS LAST, f.frame_id
    """).df()


def condition_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Frames per joined condition ('unknown' when no observation is close enough)."""
    rows = con.execute(
        "SELECT coalesce(fw.condition, 'unknown'), count(*) FROM frames f "
        "LEFT JOIN frame_weather fw USING (frame_id) GROUP BY 1 "
        "ORDER BY 2 DESC"
    ).fetchall()
    return {condition: n for condition, n in rows}


def frame_span(con: duckdb.DuckDBPyConnection) -> tuple | None:
    """(first, last) UTC time of the frames, or None when no frame has one."""
    row = fetch_one(
        con,
        "SELECT min(taken_at_utc), max(taken_at_utc) FROM frames WHERE taken_at_utc IS NOT NULL",
    )
    return None if row is None or row[0] is None else (row[0], row[1])


def frame_brightness(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Frames with a UTC time and a brightness, for the clock check, in time order."""
    return con.sql("""
        SELECT frame_id, taken_at, taken_at_utc, mean_luma FROM frames
        WHERE taken_at_utc IS NOT NULL AND mean_luma IS NOT NULL
        ORDER BY taken_at_utc
    """).df()
