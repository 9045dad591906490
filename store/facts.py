"""Readers for the dashboard: parameterised, filtered queries over frames, runs, scores and reviews.

Every function takes an open (read-only) connection and returns a pandas DataFrame or plain
values. A `FrameFilter` describes the frames a page looks at; `_filtered()` turns it into a
`WITH sel AS (...)` clause built only from fixed SQL fragments, with every value bound as a
named parameter, so nothing a user typed (or put in a URL) is ever pasted into SQL.
Scores: higher = more abnormal; `score_pct` is the 0..1 rank within the run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from store.db import fetch_one, log_failed, scalar

THRESHOLD_KINDS = ("all", "flagged", "pct", "topk")
DAYLIGHT_VALUES = ("day", "twilight", "night")


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


# Column groups of `sel` that cost a join; a reader names the ones it uses (`need=`) so the
# others are NULL constants and their joins are left out (DuckDB does not drop an unused LEFT
# JOIN by itself: counting the filtered frames of a 100k store takes 3 ms on `frames` alone and
# 50 ms with the cluster, score and review joins).
_GROUPS = ("cluster", "score", "review")
_NULL_COLUMNS = {
    "cluster": "CAST(NULL AS INTEGER) AS cluster, CAST(NULL AS DOUBLE) AS map_x, "
               "CAST(NULL AS DOUBLE) AS map_y",
    "score": "CAST(NULL AS DOUBLE) AS score, CAST(NULL AS DOUBLE) AS score_pct, "
             "CAST(NULL AS BOOLEAN) AS is_outlier",
    "review": "CAST(NULL AS VARCHAR) AS verdict, CAST(NULL AS VARCHAR) AS note",
}
_COLUMNS = {
    "cluster": "c.cluster, c.map_x, c.map_y",
    "score": "s.score, s.score_pct, s.is_outlier",
    "review": "r.verdict, r.note",
}
_JOINS = {
    "cluster": "LEFT JOIN clusters c ON c.run_id = $run_id AND c.frame_id = f.frame_id",
    "score": "LEFT JOIN outlier_scores s ON s.run_id = $run_id AND s.detector = $detector\n"
             "           AND s.frame_id = f.frame_id",
    "review": "LEFT JOIN reviews r ON r.frame_id = f.frame_id",
}


def _keeps_every_frame(flt: FrameFilter) -> bool:
    """True when the filter restricts nothing (the default view): readers that only need the
    filtered frame ids can then skip the join with `sel`."""
    return (flt.date_from is None and flt.date_to is None
            and (flt.hour_from, flt.hour_to) == (0, 23) and flt.threshold_kind == "all"
            and not (flt.daylight or flt.conditions or flt.clusters or flt.frame_ids))


def _filtered(flt: FrameFilter, weather: bool = False,
              need: tuple[str, ...] = _GROUPS) -> tuple[str, dict[str, Any]]:
    """`WITH sel AS (...)`: the filtered frames with cluster, chosen score, weather and review.

    `need` names the column groups the caller reads ('cluster': cluster, map_x, map_y;
    'score': score, score_pct, is_outlier; 'review': verdict, note); the others are NULL
    unless the filter itself needs their join (a cluster or threshold filter). The weather (an
    ASOF join over every frame) is joined only when the filter or the caller (`weather=True`)
    needs it; otherwise its columns are NULL ('unknown' for condition).

    `sel` columns: frame_id, path, root, taken_at, taken_at_utc, daylight, sun_elevation,
    mean_luma, cluster, map_x, map_y, score, score_pct, is_outlier, condition, temperature_c,
    precipitation_mm, cloud_cover_pct, wind_speed_ms, visibility_km, verdict, note.
    """
    unknown = set(need) - set(_GROUPS)
    if unknown:
        raise ValueError(f"unknown column groups {sorted(unknown)}; choose from {_GROUPS}")
    groups = set(need)
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
        groups.add("cluster")
    if flt.frame_ids:
        where.append("f.frame_id IN (SELECT unnest($frame_ids))")
        params["frame_ids"] = [int(i) for i in flt.frame_ids]
    qualify = ""
    if flt.threshold_kind == "flagged":
        where.append("coalesce(s.is_outlier, FALSE)")
        groups.add("score")
    elif flt.threshold_kind == "pct":
        where.append("s.score_pct >= $pct")
        params["pct"] = float(flt.threshold) / 100.0
        groups.add("score")
    elif flt.threshold_kind == "topk":
        qualify = ("QUALIFY row_number() OVER (ORDER BY s.score DESC NULLS LAST, f.frame_id)"
                   " <= $topk")
        params["topk"] = int(flt.threshold)
        groups.add("score")
    if weather or flt.conditions:
        weather_cols = "coalesce(fw.condition, 'unknown') AS condition, " + ", ".join(
            f"fw.{c}" for c in _WEATHER_COLUMNS)
        weather_join = "LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id"
    else:
        weather_cols = "'unknown' AS condition, " + ", ".join(
            f"CAST(NULL AS DOUBLE) AS {c}" for c in _WEATHER_COLUMNS)
        weather_join = ""
    cols = {g: (_COLUMNS[g] if g in groups else _NULL_COLUMNS[g]) for g in _GROUPS}
    joins = "\n    ".join(_JOINS[g] for g in ("cluster", "score") if g in groups)
    review_join = _JOINS["review"] if "review" in groups else ""
    sql = f"""
WITH sel AS (
    SELECT f.frame_id, f.path, f.root, f.taken_at, f.taken_at_utc, f.daylight,
           f.sun_elevation, f.mean_luma,
           {cols['cluster']},
           {cols['score']},
           {weather_cols},
           {cols['review']}
    FROM frames f
    {joins}
    {weather_join}
    {review_join}
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
# What a gallery card shows of the weather (same rules as _PAGE_WEATHER_COLUMNS).
_PAGE_WEATHER_BRIEF = """
    CASE WHEN wp.within THEN coalesce(wp.condition, 'unknown') ELSE 'unknown' END AS condition,
    CASE WHEN wp.within THEN wp.temperature_c END AS temperature_c,
    CASE WHEN wp.within THEN wp.precipitation_mm END AS precipitation_mm"""


def sort_detectors(names: list[str], order: dict[str, float]) -> list[str]:
    """Detector keys in display order: by their place in `order` (`detector_order`), then by
    key; keys `order` lacks come last."""
    return sorted(names, key=lambda name: (order.get(name, math.inf), name))


def detector_order(con: duckdb.DuckDBPyConnection, run_id: int | None) -> dict[str, float]:
    """Each detector's place in lists for a run: the `order` analyze recorded among the
    detectors' facts (`params.detector_facts`, from the detector classes). A run made before
    facts were recorded lists `consensus` first, then its detectors in the order it ran them."""
    params = scalar(con, "SELECT CAST(params AS VARCHAR) FROM analysis_runs "
                         "WHERE run_id = $run_id", {"run_id": run_id})
    params = json.loads(params) if params else {}
    recorded = params.get("detector_facts")
    if recorded:
        return {key: fact["order"] for key, fact in recorded.items()}
    ran = ["consensus", *params.get("detectors", [])]
    return {key: place for place, key in enumerate(ran)}


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
    return sort_detectors([r[0] for r in rows], detector_order(con, run_id))


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
    sql, params = _filtered(flt.replace(threshold_kind="all"), need=())
    everything = _keeps_every_frame(flt.replace(threshold_kind="all"))
    df = _query(con, sql + f"""
        SELECT o.detector, count(*) FILTER (WHERE o.is_outlier) AS n_flagged,
               count(*) AS n_scored,
               count(*) FILTER (WHERE o.is_outlier) / greatest(count(*), 1) AS flagged_share
        FROM outlier_scores o {"" if everything else "SEMI JOIN sel ON sel.frame_id = o.frame_id"}
        WHERE o.run_id = $run_id
        GROUP BY o.detector""", params)
    order = sort_detectors(list(df["detector"]), detector_order(con, flt.run_id))
    return df.set_index("detector").loc[order].reset_index() if len(df) else df


def calendar(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Day x hour: frame count and the share flagged by the filter's detector."""
    sql, params = _filtered(flt, need=("score",))
    return _query(con, sql + """
        SELECT CAST(taken_at AS DATE) AS day, hour(taken_at) AS hour, count(*) AS n_frames,
               avg(CASE WHEN is_outlier THEN 1.0 ELSE 0.0 END) AS outlier_rate,
               avg(score_pct) AS mean_pct
        FROM sel WHERE taken_at IS NOT NULL
        GROUP BY ALL ORDER BY day, hour""", params)


def timeline(con: duckdb.DuckDBPyConnection, flt: FrameFilter, max_buckets: int = 120
             ) -> pd.DataFrame:
    """Frames per time bucket with the mean and max score; the bucket grows with the span
    (the smallest of 10 min, 30 min, 1 h, 3 h, 6 h, 12 h, 1 d, 1 week giving at most
    `max_buckets` buckets). One scan: the span and the bucket size are worked out in SQL."""
    sql, params = _filtered(flt, need=("score",))
    params["max_buckets"] = int(max_buckets)
    df = _query(con, sql + """
        , span AS (SELECT greatest(1.0, date_diff('second', min(taken_at), max(taken_at))
                                        / 60.0) AS minutes
                   FROM sel WHERE taken_at IS NOT NULL)
        , pick AS (SELECT coalesce(min(s) FILTER (WHERE span.minutes / s <= $max_buckets),
                                   10080) AS bucket
                   FROM span, unnest([10, 30, 60, 180, 360, 720, 1440, 10080]) u(s))
        SELECT to_timestamp(floor(epoch(taken_at) / (pick.bucket * 60)) * pick.bucket * 60
                           )::TIMESTAMP AS bucket,
               count(*) AS n_frames,
               count(*) FILTER (WHERE is_outlier) AS n_flagged,
               avg(score) AS mean_score, max(score) AS max_score,
               any_value(pick.bucket) AS bucket_minutes
        FROM sel, pick WHERE taken_at IS NOT NULL GROUP BY 1 ORDER BY 1""", params)
    if df.empty:
        return pd.DataFrame(columns=["bucket", "n_frames", "n_flagged", "mean_score",
                                     "max_score", "bucket_minutes"])
    df["bucket_minutes"] = df["bucket_minutes"].astype(int)
    return df


# --- frames, thumbnails, scores ---------------------------------------------------------------

GALLERY_ORDERS = {
    "score": "score DESC NULLS LAST, frame_id",
    "score_asc": "score ASC NULLS LAST, frame_id",
    "time": "taken_at, frame_id",
    "time_desc": "taken_at DESC, frame_id",
}


# A page of frames (a few dozen rows): their cluster, score, review and thumbnail are joined
# after the page is chosen, over those rows only. `page` CTEs are MATERIALIZED: the weather
# ASOF join and the final SELECT both read it, and inlined it would be chosen twice (a second
# top-N over every frame; 750k frames: 520 -> 390 ms).
_PAGE_EXTRAS = """
        LEFT JOIN clusters pc ON pc.run_id = $run_id AND pc.frame_id = page.frame_id
        LEFT JOIN outlier_scores ps ON ps.run_id = $run_id AND ps.detector = $detector
                                   AND ps.frame_id = page.frame_id
        LEFT JOIN reviews pr ON pr.frame_id = page.frame_id"""


def _with_thumbs(con: duckdb.DuckDBPyConnection, df: pd.DataFrame) -> pd.DataFrame:
    """Add a `thumb` column (JPEG bytes, None without one) to a page of frames: one lookup by
    id on the same connection (a join would read the blob column of every thumbnail)."""
    found = thumbnails(con, [int(i) for i in df["frame_id"]]) if len(df) else {}
    return df.assign(thumb=[found.get(int(i)) for i in df["frame_id"]])


def frames_page(con: duckdb.DuckDBPyConnection, flt: FrameFilter, page: int = 0,
                page_size: int = 24, order: str = "score", thumbs: bool = False
                ) -> tuple[pd.DataFrame, int]:
    """One page of filtered frames (ranked by the filter's detector), with their weather, and
    the total count. `thumbs=True` adds a `thumb` column (JPEG bytes or None), so a page
    needs no second query for its pictures."""
    sql, params = _filtered(flt, need=("score",) if order.startswith("score") else ())
    params.update(limit=int(page_size), offset=int(page) * int(page_size))
    df = _query(con, sql + f"""
        , page AS MATERIALIZED (
            SELECT frame_id, path, taken_at, taken_at_utc, daylight, score
            FROM sel ORDER BY {GALLERY_ORDERS[order]} LIMIT $limit OFFSET $offset)
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.taken_at, page.daylight, pc.cluster, ps.score,
               ps.score_pct, ps.is_outlier, {_PAGE_WEATHER_COLUMNS}, pr.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id){_PAGE_EXTRAS}
        ORDER BY {GALLERY_ORDERS[order].replace("score", "page.score")}""", params)
    df = df.drop(columns=["weather_station", "weather_observed_at", "cloud_cover_pct",
                          "wind_speed_ms", "visibility_km"])
    return (_with_thumbs(con, df) if thumbs else df), count(con, flt)


def count(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> int:
    """How many frames the filter keeps (only the joins the filter itself needs)."""
    sql, params = _filtered(flt, need=())
    return int(_query(con, sql + "SELECT count(*) AS n FROM sel", params)["n"].iloc[0])


def gallery_page(con: duckdb.DuckDBPyConnection, flt: FrameFilter, page: int = 0,
                 page_size: int = 24, order: str = "score") -> dict[str, Any]:
    """What the Gallery draws, on one connection: `rows` (a `frames_page` with `thumb`),
    `total`, and `scores` (every detector's score for those rows, as `scores_for`)."""
    rows, total = frames_page(con, flt, page, page_size, order, thumbs=True)
    return {"rows": rows, "total": total,
            "scores": scores_for(con, flt.run_id, [int(i) for i in rows["frame_id"]])}


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


def neighbor_page(con: duckdb.DuckDBPyConnection, run_id: int | None, frame_id: int,
                  detector: str = "consensus") -> pd.DataFrame:
    """A frame's nearest neighbours (rank, distance) with the gallery columns of each (time,
    weather, cluster, `detector`'s score, verdict) and its `thumb`, nearest first."""
    nb = neighbors(con, run_id, frame_id)
    if nb.empty:
        return nb
    ids = tuple(int(i) for i in nb["frame_id"])
    rows, _ = frames_page(con, FrameFilter(run_id=run_id, detector=detector, frame_ids=ids),
                          0, len(ids), "time", thumbs=True)
    out = nb[["frame_id", "rank", "distance"]].merge(rows, on="frame_id", how="left")
    return out.sort_values("rank").reset_index(drop=True)


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
    sql, params = _filtered(flt, weather=weather, need=("cluster",))
    n = int(_query(con, sql + "SELECT count(*) AS n FROM sel WHERE map_x IS NOT NULL",
                   params)["n"].iloc[0])
    sql, params = _filtered(flt, weather=weather, need=("cluster", "score"))
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
    sql, params = _filtered(flt, need=("cluster", "score"))
    return _query(con, sql + """
        SELECT cluster, count(*) AS n_frames,
               avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0.0 END) AS night_share,
               avg(score_pct) AS mean_pct,
               count(*) FILTER (WHERE is_outlier) AS n_flagged,
               min(taken_at) AS first, max(taken_at) AS last
        FROM sel WHERE cluster IS NOT NULL GROUP BY cluster ORDER BY cluster""", params)


def cluster_profiles(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Frames per cluster x hour of day and per cluster x day (column `kind`: hour/day).
    One scan: the frames are counted per cluster, day and hour, and both profiles are sums
    of those few thousand rows."""
    sql, params = _filtered(flt, need=("cluster",))
    return _query(con, sql + """
        , cdh AS (
            SELECT cluster, CAST(taken_at AS DATE) AS day, hour(taken_at) AS hour,
                   count(*) AS n
            FROM sel WHERE cluster IS NOT NULL AND taken_at IS NOT NULL GROUP BY ALL)
        SELECT 'hour' AS kind, cluster, CAST(hour AS VARCHAR) AS key, sum(n) AS n_frames
        FROM cdh GROUP BY ALL
        UNION ALL
        SELECT 'day' AS kind, cluster, strftime(day, '%Y-%m-%d') AS key, sum(n)
        FROM cdh GROUP BY ALL
        ORDER BY kind, cluster, key""", params)


def cluster_samples(con: duckdb.DuckDBPyConnection, flt: FrameFilter, n: int = 6,
                    seed: int = 0, thumbs: bool = False) -> pd.DataFrame:
    """A random (seeded, repeatable) sample of up to `n` filtered frames from every cluster,
    with the gallery columns (and a `thumb` column with `thumbs=True`); one query for the
    whole page."""
    sql, params = _filtered(flt, need=("cluster",))
    params.update(n=int(n), seed=int(seed))
    df = _query(con, sql + f"""
        , page AS MATERIALIZED (
            SELECT frame_id, path, taken_at, taken_at_utc, daylight, cluster
            FROM sel WHERE cluster IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY cluster
                                       ORDER BY hash(frame_id + $seed)) <= $n)
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.taken_at, page.daylight, page.cluster, ps.score,
               ps.score_pct, ps.is_outlier,
               {_PAGE_WEATHER_BRIEF},
               pr.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        LEFT JOIN outlier_scores ps ON ps.run_id = $run_id AND ps.detector = $detector
                                   AND ps.frame_id = page.frame_id
        LEFT JOIN reviews pr ON pr.frame_id = page.frame_id
        ORDER BY page.cluster, page.taken_at, page.frame_id""", params)
    return _with_thumbs(con, df) if thumbs else df


# --- detector comparison ----------------------------------------------------------------------

def detector_matrix(con: duckdb.DuckDBPyConnection, flt: FrameFilter, names: list[str],
                    max_rows: int | None = None, labels: bool = False) -> pd.DataFrame:
    """Wide form for the filtered frames: one `<detector>` score-percentile column and one
    `<detector>_flag` (is_outlier) column per detector, plus frame_id and taken_at.

    Above `max_rows` frames, a fixed pseudo-random sample (by a hash of the frame id).
    `labels=True` adds the known answer of each frame as `label_is_anomaly` and
    `label_source`: its review ('review': junk = anomaly) or else its imported ground truth
    ('ground_truth'); NULL for unlabelled frames."""
    sql, params = _filtered(flt.replace(threshold_kind="all"), need=())
    names = list(dict.fromkeys(names))
    # Column aliases are fixed (d0, d1, ...); detector names are bound values. One join per
    # detector on the sampled ids (each a hash join on the run's rows of that detector).
    cols, joins = [], []
    for i, name in enumerate(names):
        params[f"d{i}"] = name
        cols.append(f"o{i}.score_pct AS d{i}, o{i}.is_outlier AS f{i}")
        joins.append(f"LEFT JOIN outlier_scores o{i} ON o{i}.run_id = $run_id "
                     f"AND o{i}.detector = $d{i} AND o{i}.frame_id = ids.frame_id")
    tail = ""
    if max_rows is not None:
        tail, params["max_rows"] = "ORDER BY hash(frame_id) LIMIT $max_rows", int(max_rows)
    label_cols = label_join = ""
    if labels:
        label_cols = """,
               CASE WHEN r.verdict IS NOT NULL THEN r.verdict = 'junk' ELSE g.is_anomaly END
                   AS label_is_anomaly,
               CASE WHEN r.verdict IS NOT NULL THEN 'review'
                    WHEN g.frame_id IS NOT NULL THEN 'ground_truth' END AS label_source"""
        label_join = """
        LEFT JOIN reviews r ON r.frame_id = ids.frame_id
        LEFT JOIN ground_truth g ON g.frame_id = ids.frame_id"""
    where = " OR ".join(f"o{i}.frame_id IS NOT NULL" for i in range(len(names))) or "FALSE"
    df = _query(con, sql + f"""
        , ids AS (SELECT frame_id, taken_at FROM sel {tail})
        SELECT ids.frame_id, ids.taken_at, {', '.join(cols)}{label_cols}
        FROM ids
        {' '.join(joins)}{label_join}
        WHERE {where}
        ORDER BY ids.frame_id""", params)
    rename = {f"d{i}": name for i, name in enumerate(names)}
    rename.update({f"f{i}": f"{name}_flag" for i, name in enumerate(names)})
    return df.rename(columns=rename)


def _top_k(flt: FrameFilter, a: str, b: str, top_k: int) -> tuple[str, dict[str, Any]]:
    """`sel` plus `ta`/`tb`: A's and B's `top_k` filtered frames (frame_id, score, rank).
    Each is a top-N over the filtered frames (no sort of every frame)."""
    sql, params = _filtered(flt.replace(threshold_kind="all"), need=())
    params.update(a=a, b=b, k=int(top_k))
    semi = ("" if _keeps_every_frame(flt.replace(threshold_kind="all"))
            else "SEMI JOIN sel ON sel.frame_id = o.frame_id")
    # The rank is numbered after the LIMIT: a window in the same SELECT would sort every row.
    top = """SELECT *, row_number() OVER (ORDER BY score DESC NULLS LAST, frame_id) AS rank
             FROM (SELECT o.frame_id, o.score, o.score_pct, o.is_outlier
                   FROM outlier_scores o {semi}
                   WHERE o.run_id = $run_id AND o.detector = ${d}
                   ORDER BY o.score DESC NULLS LAST, o.frame_id LIMIT $k)"""
    return sql + f"""
        , ta AS ({top.format(d="a", semi=semi)})
        , tb AS ({top.format(d="b", semi=semi)})
""", params


def top_k_differences(con: duckdb.DuckDBPyConnection, flt: FrameFilter, a: str, b: str,
                      top_k: int, limit: int = 12, thumbs: bool = True
                      ) -> dict[str, tuple[pd.DataFrame, int]]:
    """Both "flags it, the other does not" galleries in one query: `{"a": (rows, n),
    "b": (rows, n)}`. Rows are the first `limit` frames of A's top-k missing from B's top-k
    (and the reverse), in that detector's rank order, with the gallery columns (score,
    score_pct and is_outlier are that detector's), their weather and, with `thumbs=True`, a
    `thumb` column; n is how many there are in all."""
    sql, params = _top_k(flt, a, b, top_k)
    params["limit"] = int(limit)
    df = _query(con, sql + f"""
        , diff AS (
            SELECT 'a' AS side, ta.* FROM ta ANTI JOIN tb USING (frame_id)
            UNION ALL
            SELECT 'b' AS side, tb.* FROM tb ANTI JOIN ta USING (frame_id))
        , page AS MATERIALIZED (
            SELECT d.side, d.frame_id, d.score, d.score_pct, d.is_outlier, d.rank,
                   count(*) OVER (PARTITION BY d.side) AS n_side,
                   f.path, f.taken_at, f.taken_at_utc, f.daylight
            FROM diff d JOIN frames f USING (frame_id)
            QUALIFY row_number() OVER (PARTITION BY d.side ORDER BY d.rank) <= $limit)
        {_PAGE_WEATHER}
        SELECT page.side, page.n_side, page.frame_id, page.path, page.taken_at, page.daylight,
               pc.cluster, page.score, page.score_pct, page.is_outlier,
               {_PAGE_WEATHER_BRIEF},
               pr.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        LEFT JOIN clusters pc ON pc.run_id = $run_id AND pc.frame_id = page.frame_id
        LEFT JOIN reviews pr ON pr.frame_id = page.frame_id
        ORDER BY page.side, page.rank""", params)
    if thumbs:
        df = _with_thumbs(con, df)
    out = {}
    for side in ("a", "b"):
        part = df[df["side"] == side]
        n = int(part["n_side"].iloc[0]) if len(part) else 0
        out[side] = (part.drop(columns=["side", "n_side"]).reset_index(drop=True), n)
    return out


# --- review and export ------------------------------------------------------------------------

EXPORT_MODES = ("not_junk", "keep", "clean")
# What each export mode keeps of the filtered frames, and the reason it gives a frame it leaves
# out ('junk': marked junk; 'not_keep': not marked keep; 'flagged': flagged by the detector).
_EXPORT_CONDITIONS = {
    "not_junk": "verdict IS DISTINCT FROM 'junk'",
    "keep": "verdict = 'keep'",
    "clean": "verdict = 'keep' OR (verdict IS NULL AND NOT coalesce(is_outlier, FALSE))",
}
_EXPORT_REASONS = {"not_junk": "'junk'",
                   "keep": "CASE WHEN verdict = 'junk' THEN 'junk' ELSE 'not_keep' END",
                   "clean": "CASE WHEN verdict = 'junk' THEN 'junk' ELSE 'flagged' END"}


def _export_condition(mode: str) -> str:
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; choose one of {EXPORT_MODES}")
    return _EXPORT_CONDITIONS[mode]


def _export_need(mode: str) -> tuple[str, ...]:
    """The column groups an export mode reads ('clean' also reads the detector's flag)."""
    return ("review", "score") if mode == "clean" else ("review",)


def export_frames(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk",
                  limit: int | None = None) -> pd.DataFrame:
    """The filtered frames to export in time order (frames without a time last): 'not_junk'
    (every frame not marked junk), 'keep' (only frames marked keep) or 'clean' (frames marked
    keep, and unreviewed frames the detector does not flag); the first `limit` when given.
    `abs_path` is root + path as stored: valid UTF-8 text, where a name that was not valid UTF-8
    has ingest's `\\xNN` escapes, so it can sit in a DataFrame (pandas' Arrow strings refuse
    surrogates); `store.export.file_path` turns it into the real file name for the export files.
    With a `limit` (a preview) the weather is joined for those rows only."""
    cond = _export_condition(mode)
    if limit is None:
        sql, params = _filtered(flt, weather=True)
        return _query(con, sql + f"""
            SELECT frame_id, path, root, rtrim(root, '/') || '/' || path AS abs_path, taken_at,
                   daylight, condition, cluster, score, score_pct, verdict
            FROM sel WHERE {cond} ORDER BY taken_at, frame_id""", params)
    sql, params = _filtered(flt, need=_export_need(mode))
    params["limit"] = int(limit)
    return _query(con, sql + f"""
        , page AS MATERIALIZED (
            SELECT frame_id, path, root, taken_at, taken_at_utc, daylight, verdict
            FROM sel WHERE {cond} ORDER BY taken_at, frame_id LIMIT $limit)
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.root,
               rtrim(page.root, '/') || '/' || page.path AS abs_path, page.taken_at,
               page.daylight,
               CASE WHEN wp.within THEN coalesce(wp.condition, 'unknown') ELSE 'unknown' END
                   AS condition,
               pc.cluster, ps.score, ps.score_pct, page.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        LEFT JOIN clusters pc ON pc.run_id = $run_id AND pc.frame_id = page.frame_id
        LEFT JOIN outlier_scores ps ON ps.run_id = $run_id AND ps.detector = $detector
                                   AND ps.frame_id = page.frame_id
        ORDER BY page.taken_at, page.frame_id""", params)


def export_count(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk"
                 ) -> int:
    """How many frames `export_frames` would return (without the weather join)."""
    cond = _export_condition(mode)
    sql, params = _filtered(flt, need=_export_need(mode))
    return int(_query(con, sql + f"SELECT count(*) AS n FROM sel WHERE {cond}",
                      params)["n"].iloc[0])


def export_left_out(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk"
                    ) -> dict[str, int]:
    """Why the store's other frames are not in `export_frames`, counted in the order the export
    applies its rules: `filters` (outside the dates, hours, daylight, weather, cluster or
    selection), `threshold` (left out by the detector threshold: not flagged, under the
    percentile, not in the top k), then the export mode's `junk` (marked junk), `not_keep` (not
    marked keep) and `flagged` (flagged by the detector, not marked keep). Also `n_frames`
    (every frame in the store) and `exported`; the reasons and `exported` add up to
    `n_frames`."""
    cond = _export_condition(mode)
    n_frames = int(scalar(con, "SELECT count(*) FROM frames") or 0)
    sql, params = _filtered(flt.replace(threshold_kind="all"), need=())
    n_kept = int(_query(con, sql + "SELECT count(*) AS n FROM sel", params)["n"].iloc[0])
    sql, params = _filtered(flt, need=_export_need(mode))
    df = _query(con, sql + f"""
        SELECT CASE WHEN {cond} THEN 'exported' ELSE {_EXPORT_REASONS[mode]} END AS reason,
               count(*) AS n
        FROM sel GROUP BY ALL""", params)
    counts = {"n_frames": n_frames, "filters": n_frames - n_kept, "threshold": 0, "junk": 0,
              "not_keep": 0, "flagged": 0, "exported": 0}
    counts.update({str(r): int(n) for r, n in zip(df["reason"], df["n"])})
    counts["threshold"] = n_kept - int(df["n"].sum())
    return counts


def review_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT verdict, count(*) FROM reviews GROUP BY verdict").fetchall()
    counts = {"junk": 0, "keep": 0}
    counts.update({verdict: int(n) for verdict, n in rows})
    return counts


def next_unreviewed(con: duckdb.DuckDBPyConnection, flt: FrameFilter, skip: tuple[int, ...] = ()
                    ) -> int | None:
    """The highest-ranked filtered frame without a verdict (not in `skip`), or None."""
    sql, params = _filtered(flt, need=("score", "review"))
    params["skip"] = [int(i) for i in skip]
    df = _query(con, sql + f"""
        SELECT frame_id FROM sel
        WHERE verdict IS NULL AND NOT list_contains($skip, frame_id)
        ORDER BY {GALLERY_ORDERS['score']} LIMIT 1""", params)
    return None if df.empty else int(df["frame_id"].iloc[0])


def next_unreviewed_row(con: duckdb.DuckDBPyConnection, flt: FrameFilter,
                        skip: tuple[int, ...] = ()) -> pd.DataFrame:
    """`next_unreviewed` as a one-row gallery page (with its weather and `thumb`), or an empty
    frame when every filtered frame has a verdict."""
    fid = next_unreviewed(con, flt, skip)
    if fid is None:
        return pd.DataFrame(columns=["frame_id"])
    page, _ = frames_page(con, flt.replace(frame_ids=(fid,)), 0, 1, "score", thumbs=True)
    return page


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
