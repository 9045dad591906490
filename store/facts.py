"""Readers for the dashboard: parameterised, filtered queries over frames, runs, scores and reviews.

Every function takes an open (read-only) connection and returns a pandas DataFrame or plain
values. A `FrameFilter` describes the frames a page looks at; `_filtered()` turns it into a
`WITH sel AS (...)` clause built only from fixed SQL fragments, with every value bound as a
named parameter, so nothing a user typed (or put in a URL) is ever pasted into SQL.
Scores: higher = more abnormal; `score_pct` is the 0..1 rank within the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from store.db import fetch_one, log_failed, scalar

THRESHOLD_KINDS = ("all", "flagged", "pct", "topk")
DAYLIGHT_VALUES = ("day", "twilight", "night")
# Detectors listed first, in this order, wherever detectors are listed; the rest alphabetically.
DETECTOR_ORDER = ("consensus", "iforest", "lof", "knn", "ecod", "copod", "hbos", "temporal",
                  "same_time")


@dataclass(frozen=True)
class FrameFilter:
    """Which frames a page shows. Empty tuples mean "any"; dates are camera-clock days.

    `threshold_kind`: 'all' (no score filter), 'flagged' (the detector's is_outlier),
    'pct' (score_pct >= threshold/100) or 'topk' (the `threshold` highest-scoring frames
    among those the other filters keep). `frame_ids` restricts to a selection (e.g. from the map).
    """

    run_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None          # inclusive
    hour_from: int = 0
    hour_to: int = 23                    # inclusive; hour_from > hour_to wraps past midnight
    daylight: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    clusters: tuple[int, ...] = ()
    detector: str = "consensus"
    threshold_kind: str = "all"
    threshold: float = 0.0
    frame_ids: tuple[int, ...] = field(default=())

    def replace(self, **changes: Any) -> "FrameFilter":
        values = {**self.__dict__, **changes}
        return FrameFilter(**values)


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """Run SQL with only the named parameters it uses; log and re-raise on failure."""
    used = {name: params[name] for name in set(_PARAM.findall(sql))}
    try:
        return con.execute(sql, used).df()
    except duckdb.Error as exc:
        log_failed(sql, used, exc)
        raise


_WEATHER_COLUMNS = ("temperature_c", "precipitation_mm", "cloud_cover_pct", "wind_speed_ms",
                    "visibility_km")


def _filtered(flt: FrameFilter, weather: bool = False) -> tuple[str, dict[str, Any]]:
    """`WITH sel AS (...)`: the filtered frames with cluster, chosen score, weather and review.

    The weather (an ASOF join over every frame) is joined only when the filter or the caller
    (`weather=True`) needs it; otherwise its columns are NULL ('unknown' for condition).

    `sel` columns: frame_id, path, root, taken_at, taken_at_utc, daylight, sun_elevation,
    mean_luma, cluster, map_x, map_y, score, score_pct, is_outlier, condition, temperature_c,
    precipitation_mm, cloud_cover_pct, wind_speed_ms, visibility_km, verdict, note.
    """
    where: list[str] = ["TRUE"]
    params: dict[str, Any] = {"run_id": flt.run_id, "detector": flt.detector}
    if flt.date_from is not None:
        where.append("f.taken_at >= CAST($date_from AS TIMESTAMP)")
        params["date_from"] = flt.date_from
    if flt.date_to is not None:
        where.append("f.taken_at < CAST($date_to AS TIMESTAMP) + INTERVAL 1 DAY")
        params["date_to"] = flt.date_to
    if (flt.hour_from, flt.hour_to) != (0, 23):
        params["hour_from"], params["hour_to"] = int(flt.hour_from), int(flt.hour_to)
        if flt.hour_from <= flt.hour_to:
            where.append("hour(f.taken_at) BETWEEN $hour_from AND $hour_to")
        else:
            where.append("(hour(f.taken_at) >= $hour_from OR hour(f.taken_at) <= $hour_to)")
    if flt.daylight:
        where.append("list_contains($daylight, f.daylight)")
        params["daylight"] = list(flt.daylight)
    if flt.conditions:
        where.append("list_contains($conditions, coalesce(fw.condition, 'unknown'))")
        params["conditions"] = list(flt.conditions)
    if flt.clusters:
        where.append("list_contains($clusters, c.cluster)")
        params["clusters"] = [int(c) for c in flt.clusters]
    if flt.frame_ids:
        where.append("f.frame_id IN (SELECT unnest($frame_ids))")
        params["frame_ids"] = [int(i) for i in flt.frame_ids]
    qualify = ""
    if flt.threshold_kind == "flagged":
        where.append("coalesce(s.is_outlier, FALSE)")
    elif flt.threshold_kind == "pct":
        where.append("s.score_pct >= $pct")
        params["pct"] = float(flt.threshold) / 100.0
    elif flt.threshold_kind == "topk":
        qualify = ("QUALIFY row_number() OVER (ORDER BY s.score DESC NULLS LAST, f.frame_id)"
                   " <= $topk")
        params["topk"] = int(flt.threshold)
    if weather or flt.conditions:
        weather_cols = "coalesce(fw.condition, 'unknown') AS condition, " + ", ".join(
            f"fw.{c}" for c in _WEATHER_COLUMNS)
        weather_join = "LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id"
    else:
        weather_cols = "'unknown' AS condition, " + ", ".join(
            f"CAST(NULL AS DOUBLE) AS {c}" for c in _WEATHER_COLUMNS)
        weather_join = ""
    sql = f"""
WITH sel AS (
    SELECT f.frame_id, f.path, f.root, f.taken_at, f.taken_at_utc, f.daylight,
           f.sun_elevation, f.mean_luma,
           c.cluster, c.map_x, c.map_y,
           s.score, s.score_pct, s.is_outlier,
           {weather_cols},
           r.verdict, r.note
    FROM frames f
    LEFT JOIN clusters c ON c.run_id = $run_id AND c.frame_id = f.frame_id
    LEFT JOIN outlier_scores s
           ON s.run_id = $run_id AND s.detector = $detector AND s.frame_id = f.frame_id
    {weather_join}
    LEFT JOIN reviews r ON r.frame_id = f.frame_id
    WHERE {' AND '.join(where)}
    {qualify}
)
"""
    return sql, params


# Weather for a few frames (a page of the gallery, one frame): the same rules as the
# `frame_weather` view (station from `weather_station_used`, nearest earlier observation within
# `weather_tolerance_minutes`), but the ASOF join runs over the `page` rows only, not every frame.
_PAGE_WEATHER = """
, wtol AS (
    SELECT to_seconds(CAST(60 * coalesce(
        (SELECT TRY_CAST(value AS DOUBLE) FROM settings WHERE key = 'weather_tolerance_minutes'),
        90.0) AS BIGINT)) AS span)
, wpick AS (
    SELECT p.frame_id, w.station, w.observed_at, w.condition, w.temperature_c,
           w.precipitation_mm, w.cloud_cover_pct, w.wind_speed_ms, w.visibility_km,
           coalesce(p.taken_at_utc - w.observed_at <= (SELECT span FROM wtol), FALSE) AS within
    FROM (SELECT frame_id, taken_at_utc FROM page WHERE taken_at_utc IS NOT NULL) p
    ASOF LEFT JOIN (SELECT * FROM weather
                    WHERE station = (SELECT station FROM weather_station_used)) w
      ON p.taken_at_utc >= w.observed_at)
"""
_PAGE_WEATHER_COLUMNS = """
    CASE WHEN wp.within THEN wp.station END AS weather_station,
    CASE WHEN wp.within THEN wp.observed_at END AS weather_observed_at,
    CASE WHEN wp.within THEN coalesce(wp.condition, 'unknown') ELSE 'unknown' END AS condition,
    CASE WHEN wp.within THEN wp.temperature_c END AS temperature_c,
    CASE WHEN wp.within THEN wp.precipitation_mm END AS precipitation_mm,
    CASE WHEN wp.within THEN wp.cloud_cover_pct END AS cloud_cover_pct,
    CASE WHEN wp.within THEN wp.wind_speed_ms END AS wind_speed_ms,
    CASE WHEN wp.within THEN wp.visibility_km END AS visibility_km"""


def sort_detectors(names: list[str]) -> list[str]:
    """Detector keys in display order: `consensus` first, then the known ones, then the rest."""
    known = [d for d in DETECTOR_ORDER if d in names]
    return known + sorted(set(names) - set(known))


# --- runs, options, counts --------------------------------------------------------------------

def runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every analysis run, newest first, with params and timings parsed from JSON."""
    df = _query(con, """
        SELECT r.run_id, r.model, r.status, r.n_frames, r.started_at, r.finished_at,
               date_diff('millisecond', r.started_at, r.finished_at) / 1000.0 AS seconds,
               r.code_version, CAST(r.params AS VARCHAR) AS params,
               CAST(r.timings AS VARCHAR) AS timings, r.error,
               m.family, m.weights, m.dim,
               (SELECT count(DISTINCT detector) FROM outlier_scores o
                 WHERE o.run_id = r.run_id) AS n_detectors,
               (SELECT count(DISTINCT cluster) FROM clusters c
                 WHERE c.run_id = r.run_id AND c.cluster >= 0) AS n_clusters
        FROM analysis_runs r LEFT JOIN models m USING (model)
        ORDER BY r.started_at DESC, r.run_id DESC""", {})
    for column in ("params", "timings"):
        df[column] = [json.loads(v) if isinstance(v, str) and v else {} for v in df[column]]
    return df


def latest_run_id(con: duckdb.DuckDBPyConnection) -> int | None:
    """The newest complete run (the `latest_run` view), or None before any analysis."""
    value = scalar(con, "SELECT run_id FROM latest_run")
    return None if value is None else int(value)


def complete_run_ids(con: duckdb.DuckDBPyConnection) -> list[int]:
    rows = con.execute(
        "SELECT run_id FROM analysis_runs WHERE status = 'complete' "
        "ORDER BY finished_at DESC, run_id DESC").fetchall()
    return [int(r[0]) for r in rows]


def detectors(con: duckdb.DuckDBPyConnection, run_id: int | None) -> list[str]:
    """Detector keys scored in a run, display order (consensus first)."""
    rows = con.execute("SELECT DISTINCT detector FROM outlier_scores WHERE run_id = $run_id",
                       {"run_id": run_id}).fetchall()
    return sort_detectors([r[0] for r in rows])


def options(con: duckdb.DuckDBPyConnection, run_id: int | None = None) -> dict[str, Any]:
    """What the filters can choose from: days, clusters, conditions, daylight values, detectors,
    complete runs (newest first). `run_id` None = the latest complete run (returned as run_id)."""
    if run_id is None:
        run_id = latest_run_id(con)
    span = fetch_one(con, "SELECT min(taken_at)::DATE, max(taken_at)::DATE, count(*) FROM frames")
    clusters = [int(r[0]) for r in con.execute(
        "SELECT DISTINCT cluster FROM clusters WHERE run_id = $run_id ORDER BY cluster",
        {"run_id": run_id}).fetchall()]
    # Conditions observed at the station frames are joined to, and 'unknown' (no observation
    # within the tolerance); cheaper than the ASOF join over every frame.
    conditions = [r[0] for r in con.execute(
        "SELECT DISTINCT coalesce(condition, 'unknown') FROM weather "
        "WHERE station = (SELECT station FROM weather_station_used)").fetchall()]
    if span and span[2]:
        conditions = sorted(set(conditions) | {"unknown"})
    daylight = [r[0] for r in con.execute(
        "SELECT DISTINCT daylight FROM frames WHERE daylight IS NOT NULL").fetchall()]
    daylight = [d for d in DAYLIGHT_VALUES if d in daylight] + sorted(
        set(daylight) - set(DAYLIGHT_VALUES))
    return {
        "date_min": span[0] if span else None,
        "date_max": span[1] if span else None,
        "n_frames": int(span[2]) if span else 0,
        "clusters": clusters,
        "conditions": conditions,
        "daylight": daylight,
        "detectors": detectors(con, run_id),
        "runs": complete_run_ids(con),
        "run_id": run_id,
    }


def summary(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> dict[str, Any]:
    """Counts for the filtered frames: frames, span, share of night, clusters, reviews."""
    sql, params = _filtered(flt)
    df = _query(con, sql + """
        SELECT count(*) AS n_frames, min(taken_at) AS first, max(taken_at) AS last,
               avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0.0 END) AS night_share,
               count(DISTINCT cluster) FILTER (WHERE cluster >= 0) AS n_clusters,
               count(*) FILTER (WHERE coalesce(is_outlier, FALSE)) AS n_flagged,
               count(*) FILTER (WHERE verdict = 'junk') AS n_junk,
               count(*) FILTER (WHERE verdict = 'keep') AS n_keep
        FROM sel""", params)
    row = df.iloc[0].to_dict()
    row["n_total"] = int(scalar(con, "SELECT count(*) FROM frames"))
    row["n_errors"] = int(scalar(con, "SELECT count(*) FROM ingest_errors"))
    return row


def outliers_per_detector(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Per detector: frames flagged (is_outlier) among the filtered frames, and the share."""
    sql, params = _filtered(flt.replace(threshold_kind="all"))
    df = _query(con, sql + """
        SELECT o.detector, count(*) FILTER (WHERE o.is_outlier) AS n_flagged,
               count(*) AS n_scored,
               count(*) FILTER (WHERE o.is_outlier) / greatest(count(*), 1) AS flagged_share
        FROM outlier_scores o JOIN sel USING (frame_id)
        WHERE o.run_id = $run_id
        GROUP BY o.detector""", params)
    order = sort_detectors(list(df["detector"]))
    return df.set_index("detector").loc[order].reset_index() if len(df) else df


def calendar(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Day x hour: frame count and the share flagged by the filter's detector."""
    sql, params = _filtered(flt)
    return _query(con, sql + """
        SELECT CAST(taken_at AS DATE) AS day, hour(taken_at) AS hour, count(*) AS n_frames,
               avg(CASE WHEN is_outlier THEN 1.0 ELSE 0.0 END) AS outlier_rate,
               avg(score_pct) AS mean_pct
        FROM sel WHERE taken_at IS NOT NULL
        GROUP BY ALL ORDER BY day, hour""", params)


def timeline(con: duckdb.DuckDBPyConnection, flt: FrameFilter, max_buckets: int = 120
             ) -> pd.DataFrame:
    """Frames per time bucket with the mean and max score; the bucket grows with the span."""
    sql, params = _filtered(flt)
    span = _query(con, sql + "SELECT min(taken_at) AS a, max(taken_at) AS b FROM sel", params)
    first, last = span.iloc[0]["a"], span.iloc[0]["b"]
    if pd.isna(first):
        return pd.DataFrame(columns=["bucket", "n_frames", "n_flagged", "mean_score",
                                     "max_score", "bucket_minutes"])
    minutes = max(1.0, (last - first).total_seconds() / 60.0)
    steps = [10, 30, 60, 180, 360, 720, 1440, 10080]
    bucket = next((s for s in steps if minutes / s <= max_buckets), steps[-1])
    params["bucket_s"] = bucket * 60
    df = _query(con, sql + """
        SELECT to_timestamp(floor(epoch(taken_at) / $bucket_s) * $bucket_s)::TIMESTAMP AS bucket,
               count(*) AS n_frames,
               count(*) FILTER (WHERE is_outlier) AS n_flagged,
               avg(score) AS mean_score, max(score) AS max_score
        FROM sel WHERE taken_at IS NOT NULL GROUP BY 1 ORDER BY 1""", params)
    df["bucket_minutes"] = bucket
    return df


# --- frames, thumbnails, scores ---------------------------------------------------------------

GALLERY_ORDERS = {
    "score": "score DESC NULLS LAST, frame_id",
    "score_asc": "score ASC NULLS LAST, frame_id",
    "time": "taken_at, frame_id",
    "time_desc": "taken_at DESC, frame_id",
}


def frames_page(con: duckdb.DuckDBPyConnection, flt: FrameFilter, page: int = 0,
                page_size: int = 24, order: str = "score") -> tuple[pd.DataFrame, int]:
    """One page of filtered frames (ranked by the filter's detector), with their weather, and
    the total count."""
    sql, params = _filtered(flt)
    params.update(limit=int(page_size), offset=int(page) * int(page_size))
    df = _query(con, sql + f"""
        , page AS (
            SELECT frame_id, path, taken_at, taken_at_utc, daylight, cluster, score, score_pct,
                   is_outlier, verdict, count(*) OVER () AS n_total,
                   row_number() OVER (ORDER BY {GALLERY_ORDERS[order]}) AS pos
            FROM sel ORDER BY {GALLERY_ORDERS[order]} LIMIT $limit OFFSET $offset)
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.taken_at, page.daylight, page.cluster, page.score,
               page.score_pct, page.is_outlier, {_PAGE_WEATHER_COLUMNS}, page.verdict,
               page.n_total
        FROM page LEFT JOIN wpick wp USING (frame_id) ORDER BY page.pos""", params)
    if len(df):
        total = int(df["n_total"].iloc[0])
    else:
        total = int(_query(con, sql + "SELECT count(*) AS n FROM sel", params)["n"].iloc[0])
    return df.drop(columns=["n_total", "weather_station", "weather_observed_at",
                            "cloud_cover_pct", "wind_speed_ms", "visibility_km"]), total


def frame_ids(con: duckdb.DuckDBPyConnection, flt: FrameFilter, limit: int | None = None,
              order: str = "score") -> list[int]:
    """Ids of the filtered frames in gallery order (all of them, or the first `limit`)."""
    sql, params = _filtered(flt)
    tail = ""
    if limit is not None:
        tail, params["limit"] = "LIMIT $limit", int(limit)
    df = _query(con, sql + f"SELECT frame_id FROM sel ORDER BY {GALLERY_ORDERS[order]} {tail}",
                params)
    return [int(i) for i in df["frame_id"]]


def scores_for(con: duckdb.DuckDBPyConnection, run_id: int | None, ids: list[int]
               ) -> pd.DataFrame:
    """Long form: every detector's score and percentile for some frames."""
    return _query(con, """
        SELECT frame_id, detector, score, score_pct, is_outlier FROM outlier_scores
        WHERE run_id = $run_id AND frame_id IN (SELECT unnest($ids))
        ORDER BY frame_id, detector""", {"run_id": run_id, "ids": [int(i) for i in ids]})


def thumbnails(con: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, bytes]:
    """JPEG thumbnails by frame id (frames without one are absent)."""
    rows = con.execute(
        "SELECT frame_id, jpeg FROM thumbnails WHERE frame_id IN (SELECT unnest($ids))",
        {"ids": [int(i) for i in ids]}).fetchall()
    return {int(fid): bytes(jpeg) for fid, jpeg in rows}


def frame_detail(con: duckdb.DuckDBPyConnection, frame_id: int, run_id: int | None
                 ) -> dict[str, Any] | None:
    """Everything known about one frame: file, time, image statistics, cluster, weather, review."""
    df = _query(con, f"""
        WITH page AS (SELECT frame_id, taken_at_utc FROM frames WHERE frame_id = $frame_id)
        {_PAGE_WEATHER}
        SELECT f.*, c.cluster, c.map_x, c.map_y, {_PAGE_WEATHER_COLUMNS},
               r.verdict, r.note AS review_note, r.reviewed_at,
               g.is_anomaly AS truth_is_anomaly, g.kind AS truth_kind,
               t.width AS thumb_width, t.height AS thumb_height
        FROM frames f
        LEFT JOIN clusters c ON c.run_id = $run_id AND c.frame_id = f.frame_id
        LEFT JOIN wpick wp ON wp.frame_id = f.frame_id
        LEFT JOIN reviews r ON r.frame_id = f.frame_id
        LEFT JOIN ground_truth g ON g.frame_id = f.frame_id
        LEFT JOIN thumbnails t ON t.frame_id = f.frame_id
        WHERE f.frame_id = $frame_id""", {"run_id": run_id, "frame_id": int(frame_id)})
    return None if df.empty else df.iloc[0].to_dict()


def neighbors(con: duckdb.DuckDBPyConnection, run_id: int | None, frame_id: int
              ) -> pd.DataFrame:
    """A frame's nearest neighbours in the run's embedding space (rank 1 = nearest)."""
    return _query(con, """
        SELECT n.rank, n.neighbor_id AS frame_id, n.distance, f.taken_at, f.daylight,
               c.cluster
        FROM neighbors n
        JOIN frames f ON f.frame_id = n.neighbor_id
        LEFT JOIN clusters c ON c.run_id = n.run_id AND c.frame_id = n.neighbor_id
        WHERE n.run_id = $run_id AND n.frame_id = $frame_id
        ORDER BY n.rank""", {"run_id": run_id, "frame_id": int(frame_id)})


def adjacent_frames(con: duckdb.DuckDBPyConnection, frame_id: int) -> dict[str, int | None]:
    """The frames just before and after one in time (for stepping through the sequence)."""
    df = _query(con, """
        WITH me AS (SELECT taken_at, frame_id FROM frames WHERE frame_id = $frame_id)
        SELECT
            (SELECT f.frame_id FROM frames f, me
             WHERE (f.taken_at, f.frame_id) < (me.taken_at, me.frame_id)
             ORDER BY f.taken_at DESC, f.frame_id DESC LIMIT 1) AS prev,
            (SELECT f.frame_id FROM frames f, me
             WHERE (f.taken_at, f.frame_id) > (me.taken_at, me.frame_id)
             ORDER BY f.taken_at, f.frame_id LIMIT 1) AS next
        FROM me""", {"frame_id": int(frame_id)})
    if df.empty:
        return {"prev": None, "next": None}
    row = df.iloc[0]
    return {k: (None if pd.isna(row[k]) else int(row[k])) for k in ("prev", "next")}


# --- map and clusters -------------------------------------------------------------------------

def map_points(con: duckdb.DuckDBPyConnection, flt: FrameFilter, max_points: int = 20_000,
               weather: bool = False) -> tuple[pd.DataFrame, int]:
    """2-D map points of the filtered frames, and how many there are in all.

    Above `max_points` a deterministic sample is returned (every flagged frame is kept, the
    rest is sampled by a hash of the frame id), so the picture is stable between reruns.
    `weather=True` fills `condition` (for colouring by weather).
    """
    sql, params = _filtered(flt, weather=weather)
    n = int(_query(con, sql + "SELECT count(*) AS n FROM sel WHERE map_x IS NOT NULL",
                   params)["n"].iloc[0])
    params["max_points"] = int(max_points)
    df = _query(con, sql + """
        SELECT frame_id, map_x, map_y, cluster, score, score_pct, is_outlier, daylight,
               condition, taken_at
        FROM sel WHERE map_x IS NOT NULL
        ORDER BY coalesce(is_outlier, FALSE) DESC, hash(frame_id)
        LIMIT $max_points""", params)
    return df, n


def cluster_sizes(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Per cluster: frames, share of night, mean score percentile, flagged frames, time span."""
    sql, params = _filtered(flt)
    return _query(con, sql + """
        SELECT cluster, count(*) AS n_frames,
               avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0.0 END) AS night_share,
               avg(score_pct) AS mean_pct,
               count(*) FILTER (WHERE is_outlier) AS n_flagged,
               min(taken_at) AS first, max(taken_at) AS last
        FROM sel WHERE cluster IS NOT NULL GROUP BY cluster ORDER BY cluster""", params)


def cluster_profiles(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Frames per cluster x hour of day and per cluster x day (column `kind`: hour/day)."""
    sql, params = _filtered(flt)
    return _query(con, sql + """
        SELECT 'hour' AS kind, cluster, CAST(hour(taken_at) AS VARCHAR) AS key,
               count(*) AS n_frames
        FROM sel WHERE cluster IS NOT NULL AND taken_at IS NOT NULL GROUP BY ALL
        UNION ALL
        SELECT 'day' AS kind, cluster, strftime(taken_at, '%Y-%m-%d') AS key, count(*)
        FROM sel WHERE cluster IS NOT NULL AND taken_at IS NOT NULL GROUP BY ALL
        ORDER BY kind, cluster, key""", params)


def cluster_samples(con: duckdb.DuckDBPyConnection, flt: FrameFilter, n: int = 6,
                    seed: int = 0) -> pd.DataFrame:
    """A random (seeded, repeatable) sample of up to `n` filtered frames from every cluster,
    with the gallery columns; one query for the whole page."""
    sql, params = _filtered(flt)
    params.update(n=int(n), seed=int(seed))
    return _query(con, sql + f"""
        , page AS (
            SELECT frame_id, path, taken_at, taken_at_utc, daylight, cluster, score, score_pct,
                   is_outlier, verdict
            FROM sel WHERE cluster IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY cluster
                                       ORDER BY hash(frame_id + $seed)) <= $n)
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.taken_at, page.daylight, page.cluster, page.score,
               page.score_pct, page.is_outlier,
               CASE WHEN wp.within THEN coalesce(wp.condition, 'unknown') ELSE 'unknown' END
                   AS condition,
               CASE WHEN wp.within THEN wp.temperature_c END AS temperature_c,
               CASE WHEN wp.within THEN wp.precipitation_mm END AS precipitation_mm,
               page.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        ORDER BY page.cluster, page.taken_at, page.frame_id""", params)


def cluster_sample(con: duckdb.DuckDBPyConnection, flt: FrameFilter, cluster: int, n: int = 8,
                   seed: int = 0) -> list[int]:
    """A random (seeded, repeatable) sample of the cluster's filtered frames."""
    sql, params = _filtered(flt)
    params.update(cluster=int(cluster), n=int(n), seed=int(seed))
    df = _query(con, sql + """
        SELECT frame_id FROM sel WHERE cluster = $cluster
        ORDER BY hash(frame_id + $seed) LIMIT $n""", params)
    return [int(i) for i in df["frame_id"]]


# --- detector comparison ----------------------------------------------------------------------

def detector_matrix(con: duckdb.DuckDBPyConnection, flt: FrameFilter, names: list[str],
                    max_rows: int | None = None) -> pd.DataFrame:
    """Wide form for the filtered frames: one `<detector>` score-percentile column and one
    `<detector>_flag` (is_outlier) column per detector, plus frame_id and taken_at.

    Above `max_rows` frames, a fixed pseudo-random sample (by a hash of the frame id)."""
    sql, params = _filtered(flt.replace(threshold_kind="all"))
    names = list(dict.fromkeys(names))
    # Column aliases are fixed (d0, d1, ...); detector names are bound values.
    cols = []
    for i, name in enumerate(names):
        params[f"d{i}"] = name
        cols.append(f"max(o.score_pct) FILTER (WHERE o.detector = $d{i}) AS d{i}, "
                    f"bool_or(o.is_outlier) FILTER (WHERE o.detector = $d{i}) AS f{i}")
    params["names"] = names
    tail = ""
    if max_rows is not None:
        tail, params["max_rows"] = "ORDER BY hash(frame_id) LIMIT $max_rows", int(max_rows)
    df = _query(con, sql + f"""
        , ids AS (SELECT frame_id, taken_at FROM sel {tail})
        SELECT ids.frame_id, any_value(ids.taken_at) AS taken_at, {', '.join(cols)}
        FROM ids JOIN outlier_scores o
          ON o.run_id = $run_id AND o.frame_id = ids.frame_id
         AND list_contains($names, o.detector)
        GROUP BY ids.frame_id ORDER BY ids.frame_id""", params)
    rename = {f"d{i}": name for i, name in enumerate(names)}
    rename.update({f"f{i}": f"{name}_flag" for i, name in enumerate(names)})
    return df.rename(columns=rename)


def labels(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Known answers: reviews (junk = anomaly) override the imported ground truth."""
    return _query(con, """
        SELECT coalesce(r.frame_id, g.frame_id) AS frame_id,
               CASE WHEN r.verdict IS NOT NULL THEN r.verdict = 'junk' ELSE g.is_anomaly END
                   AS is_anomaly,
               CASE WHEN r.verdict IS NOT NULL THEN 'review' ELSE 'ground_truth' END AS source,
               g.kind
        FROM reviews r FULL OUTER JOIN ground_truth g ON g.frame_id = r.frame_id""", {})


def flagged_by_a_not_b(con: duckdb.DuckDBPyConnection, flt: FrameFilter, a: str, b: str,
                       top_k: int, limit: int = 12) -> tuple[list[int], int]:
    """Frames in A's top-k (of the filtered frames) that are not in B's top-k, A's rank order;
    and how many there are."""
    sql, params = _filtered(flt.replace(threshold_kind="all"))
    params.update(a=a, b=b, k=int(top_k), limit=int(limit))
    df = _query(con, sql + """
        , ranked AS (
            SELECT o.detector, o.frame_id, o.score,
                   row_number() OVER (PARTITION BY o.detector
                                      ORDER BY o.score DESC NULLS LAST, o.frame_id) AS rank
            FROM outlier_scores o JOIN sel USING (frame_id)
            WHERE o.run_id = $run_id AND o.detector IN ($a, $b))
        , ta AS (SELECT frame_id, rank FROM ranked WHERE detector = $a AND rank <= $k)
        , tb AS (SELECT frame_id FROM ranked WHERE detector = $b AND rank <= $k)
        SELECT frame_id, count(*) OVER () AS n FROM ta ANTI JOIN tb USING (frame_id)
        ORDER BY rank LIMIT $limit""", params)
    n = int(df["n"].iloc[0]) if len(df) else 0
    return [int(i) for i in df["frame_id"]], n


# --- review and export ------------------------------------------------------------------------

EXPORT_MODES = ("not_junk", "keep")


_EXPORT_CONDITIONS = {"not_junk": "verdict IS DISTINCT FROM 'junk'", "keep": "verdict = 'keep'"}


def _export_condition(mode: str) -> str:
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; choose one of {EXPORT_MODES}")
    return _EXPORT_CONDITIONS[mode]


def export_frames(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk",
                  limit: int | None = None) -> pd.DataFrame:
    """The filtered frames to export in time order: 'not_junk' (every frame not marked junk) or
    'keep' (only frames marked keep); the first `limit` when given. `abs_path` is root + path."""
    cond = _export_condition(mode)
    sql, params = _filtered(flt, weather=True)
    tail = ""
    if limit is not None:
        tail, params["limit"] = "LIMIT $limit", int(limit)
    return _query(con, sql + f"""
        SELECT frame_id, path, root, rtrim(root, '/') || '/' || path AS abs_path, taken_at,
               daylight, condition, cluster, score, score_pct, verdict
        FROM sel WHERE {cond} ORDER BY taken_at, frame_id {tail}""", params)


def export_count(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk"
                 ) -> int:
    """How many frames `export_frames` would return (without the weather join)."""
    cond = _export_condition(mode)
    sql, params = _filtered(flt)
    return int(_query(con, sql + f"SELECT count(*) AS n FROM sel WHERE {cond}",
                      params)["n"].iloc[0])


def review_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT verdict, count(*) FROM reviews GROUP BY verdict").fetchall()
    counts = {"junk": 0, "keep": 0}
    counts.update({verdict: int(n) for verdict, n in rows})
    return counts


def next_unreviewed(con: duckdb.DuckDBPyConnection, flt: FrameFilter, skip: tuple[int, ...] = ()
                    ) -> int | None:
    """The highest-ranked filtered frame without a verdict (not in `skip`), or None."""
    sql, params = _filtered(flt)
    params["skip"] = [int(i) for i in skip]
    df = _query(con, sql + f"""
        SELECT frame_id FROM sel
        WHERE verdict IS NULL AND NOT list_contains($skip, frame_id)
        ORDER BY {GALLERY_ORDERS['score']} LIMIT 1""", params)
    return None if df.empty else int(df["frame_id"].iloc[0])


# --- runs and errors --------------------------------------------------------------------------

def ingest_errors(con: duckdb.DuckDBPyConnection, limit: int = 5000) -> pd.DataFrame:
    """Files that could not be used, newest first."""
    return _query(con, """
        SELECT occurred_at, stage, path, message, root, file_bytes FROM ingest_errors
        ORDER BY occurred_at DESC, path LIMIT $limit""", {"limit": int(limit)})


def store_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of the main tables (for the Runs page)."""
    tables = ("frames", "thumbnails", "embeddings", "analysis_runs", "outlier_scores",
              "clusters", "neighbors", "weather", "reviews", "ground_truth", "ingest_errors")
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables)
    return {t: int(n) for t, n in con.execute(sql).fetchall()}


def frame_root(con: duckdb.DuckDBPyConnection, frame_id: int) -> tuple[str, str] | None:
    """(root, path) of a frame, for the file-system lookup of its original."""
    row = fetch_one(con, "SELECT root, path FROM frames WHERE frame_id = ?", [int(frame_id)])
    return None if row is None else (row[0], row[1])
