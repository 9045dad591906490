"""Readers for the dashboard: parameterised, filtered queries over frames, runs, scores and reviews.

Every function takes an open (read-only) connection and returns a pandas DataFrame or plain
values. A `FrameFilter` describes the frames a page looks at; `_filtered()` turns it into a
`WITH sel AS (...)` clause built only from fixed SQL fragments, with every value bound as a
named parameter, so nothing a user typed (or put in a URL) is ever pasted into SQL.
Scores: higher = more abnormal; `score_pct` is the 0..1 rank within the run.

Readers whose answer the run's aggregates hold (counts per period x hour x daylight x cluster
and per detector, a fixed sample, each detector's top frames: `store.aggregates`) read them when
`aggregates.covers(con, flt)` says they may, the one rule for it, and scan the filtered frames
otherwise; both paths give the same answer (tests compare them). A reader that needs more
rows than the sample or the top list holds for a narrow filter scans too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from store import aggregates, causes
from store.causes import stored_causes, with_causes
from store.db import fetch_one, log_failed, scalar

THRESHOLD_KINDS = ("all", "flagged", "pct", "topk")
DAYLIGHT_VALUES = ("day", "twilight", "night")


@dataclass(frozen=True)
class FrameFilter:
    """Which frames a page shows. Empty tuples mean "any"; dates are camera-clock days.

    `threshold_kind`: 'all' (no score filter), 'flagged' (the detector's is_outlier),
    'pct' (score_pct >= threshold/100) or 'topk' (the `threshold` highest-scoring frames
    among those the other filters keep). `frame_ids` restricts to a selection (e.g. from the map).
    `junk_causes`: the causes of junk the consensus counts, recombined from the run's cause
    scores (`store.causes`); empty = the run's own consensus as stored. The readers then scan
    the frames (the run's aggregates hold its own consensus) and find its incidents again;
    the dashboard instead reads that consensus materialised once with its own aggregates
    (`store.causes.shadow`, with `junk_causes` empty).
    """

    run_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None  # inclusive
    hour_from: int = 0
    hour_to: int = 23  # inclusive; hour_from > hour_to wraps past midnight
    daylight: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    clusters: tuple[int, ...] = ()
    detector: str = "consensus"
    threshold_kind: str = "all"
    threshold: float = 0.0
    frame_ids: tuple[int, ...] = field(default=())
    junk_causes: tuple[str, ...] = ()

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


_WEATHER_COLUMNS = (
    "temperature_c",
    "precipitation_mm",
    "cloud_cover_pct",
    "wind_speed_ms",
    "visibility_km",
)


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
    return (
        flt.date_from is None
        and flt.date_to is None
        and (flt.hour_from, flt.hour_to) == (0, 23)
        and flt.threshold_kind == "all"
        and not (flt.daylight or flt.conditions or flt.clusters or flt.frame_ids)
    )


def _filtered(
    flt: FrameFilter, weather: bool = False, need: tuple[str, ...] = _GROUPS
) -> tuple[str, dict[str, Any]]:
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
        qualify = (
            "QUALIFY row_number() OVER (ORDER BY s.score DESC NULLS LAST, f.frame_id) <= $topk"
        )
        params["topk"] = int(flt.threshold)
        groups.add("score")
    if weather or flt.conditions:
        weather_cols = "coalesce(fw.condition, 'unknown') AS condition, " + ", ".join(
            f"fw.{c}" for c in _WEATHER_COLUMNS
        )
        weather_join = "LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id"
    else:
        weather_cols = "'unknown' AS condition, " + ", ".join(
            f"CAST(NULL AS DOUBLE) AS {c}" for c in _WEATHER_COLUMNS
        )
        weather_join = ""
    cols = {g: (_COLUMNS[g] if g in groups else _NULL_COLUMNS[g]) for g in _GROUPS}
    joins = "\n    ".join(_JOINS[g] for g in ("cluster", "score") if g in groups)
    review_join = _JOINS["review"] if "review" in groups else ""
    sql = f"""
WITH sel AS (
    SELECT f.frame_id, f.path, f.root, f.taken_at, f.taken_at_utc, f.daylight,
           f.sun_elevation, f.mean_luma,
           {cols["cluster"]},
           {cols["score"]},
           {weather_cols},
           {cols["review"]}
    FROM frames f
    {joins}
    {weather_join}
    {review_join}
    WHERE {" AND ".join(where)}
    {qualify}
)
"""
    return with_causes(sql, params, flt.run_id, flt.junk_causes)


def _cells(
    flt: FrameFilter, detector: bool = False, con: duckdb.DuckDBPyConnection | None = None
) -> tuple[str, dict[str, Any]]:
    """`WITH fc AS (...)`: the run's frame cells the filter keeps (`store.aggregates`), and
    with `detector` also `dc`: the filter's detector's cells. A reader that reads no `period`
    passes `con`: a filter without dates then reads the cells summed over every period
    (`_cell_tables`), as many at any archive length."""
    where, params = aggregates.cell_filter(flt)
    params.update(run_id=flt.run_id, detector=flt.detector)
    frames, detectors = _cell_tables(con, flt)
    sql = f"WITH fc AS (SELECT * FROM {frames} WHERE run_id = $run_id AND {where})\n"
    if detector:
        sql += (
            f", dc AS (SELECT * FROM {detectors} WHERE run_id = $run_id "
            f"AND detector = $detector AND {where})\n"
        )
    return sql, params


def _cell_tables(con: duckdb.DuckDBPyConnection | None, flt: FrameFilter) -> tuple[str, str]:
    """The frame and detector cell tables a reader that reads no `period` reads for a covered
    filter: the cells summed over every period (`run_frame_hours`, `run_detector_hours`,
    migration 9) when the filter has no dates and the run has them, else the cells (no `con`:
    the cells)."""
    if (
        con is not None
        and flt.date_from is None
        and flt.date_to is None
        and aggregates.hour_cells(con, flt.run_id)
    ):
        return "run_frame_hours", "run_detector_hours"
    return "run_frame_cells", "run_detector_cells"


def _cell_count(con: duckdb.DuckDBPyConnection, flt: FrameFilter, run_only: bool = False) -> int:
    """Frames the (covered) filter keeps, from the cells; `run_only`: only the run's frames."""
    sql, params = _cells(flt, con=con)
    tail = " WHERE cluster IS NOT NULL" if run_only else ""
    return int(
        _query(
            con,
            sql + f"SELECT CAST(coalesce(sum(n_frames), 0) AS BIGINT) AS n FROM fc{tail}",
            params,
        )["n"].iloc[0]
    )


def _reviews_in(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> dict[str, int]:
    """Junk and keep verdicts among the frames a covered filter keeps (reviews are not
    aggregated: they change all the time; there are few of them, so this join is small). Each
    review carries its frame's time and daylight (`frame_taken_at`, `frame_daylight`:
    `store.reviews`), so a date, hour or daylight filter needs no join with `frames`."""
    where, params = aggregates.cell_filter(flt, "v", timed=True)
    params["run_id"] = flt.run_id
    cols = "r.frame_taken_at AS taken_at, r.frame_daylight AS daylight"
    clusters, cluster = "", "NULL AS cluster"
    if flt.clusters:
        clusters = "LEFT JOIN clusters c ON c.run_id = $run_id AND c.frame_id = r.frame_id"
        cluster = "c.cluster"
    # the reviewed frames' conditions, from the stored join (`frame_weather`)
    joined, condition = "", "NULL AS condition"
    if flt.conditions:
        joined = "LEFT JOIN frame_weather fw ON fw.frame_id = r.frame_id"
        condition = "coalesce(fw.condition, 'unknown') AS condition"
    # materialised: the filter is applied to the few reviewed frames after the join, not to
    # every frame before it (750k frames: 10 ms of hour() calls)
    df = _query(
        con,
        f"""
        WITH v AS MATERIALIZED (SELECT r.verdict, {cols}, {cluster}, {condition}
                                     FROM reviews r {clusters} {joined})
        SELECT count(*) FILTER (WHERE v.verdict = 'junk') AS n_junk,
               count(*) FILTER (WHERE v.verdict = 'keep') AS n_keep
        FROM v WHERE {where}""",
        params,
    )
    return {k: int(v) for k, v in df.iloc[0].items()}


def _listed(
    flt: FrameFilter, table: str, detector: str | None = None, key: str = "list_detector"
) -> tuple[str, dict[str, Any]]:
    """`FROM <stored list> t WHERE ...`: the rows of a run's `run_samples` (a fixed sample) or
    `run_top` (`detector`'s highest-scoring frames, bound as `$key`) that a covered filter
    keeps. Both hold frame_id, taken_at, daylight, cluster; run_top also score, score_pct,
    is_outlier, rank. The sample's rows are the run's frames with the smallest hashes, and
    under a filter on one weather condition also that condition's own first frames in hash
    order (`run_condition_samples`, `aggregates.CONDITION_SAMPLE`): either way the first
    frames in hash order of those the filter keeps."""
    where, params = aggregates.cell_filter(flt, "t", timed=True)
    params["run_id"] = flt.run_id
    if table == "run_top":
        params[key] = detector
        return (
            f"FROM run_top t WHERE t.run_id = $run_id AND t.detector = ${key} AND {where}"
        ), params
    return f"FROM {_samples(flt)} t WHERE t.run_id = $run_id AND {where}", params


_SAMPLE_COLUMNS = (
    "run_id, frame_id, taken_at, daylight, cluster, map_x, map_y, condition, path, "
    "temperature_c, precipitation_mm"
)
_SCORE_COLUMNS = "run_id, detector, frame_id, score, score_pct, is_outlier"


def _samples(flt: FrameFilter) -> str:
    """The stored sample a covered filter reads: with one weather condition, the run's sample
    and that condition's own first frames (the conditions' first frames are prefixes of single
    conditions in hash order, so several conditions read the sample alone)."""
    if len(flt.conditions) != 1:
        return "run_samples"
    return (
        f"(SELECT {_SAMPLE_COLUMNS} FROM run_samples UNION ALL "
        f"SELECT {_SAMPLE_COLUMNS} FROM run_condition_samples)"
    )


def _sample_scores(flt: FrameFilter) -> str:
    """The stored scores of `_samples(flt)`' frames."""
    if len(flt.conditions) != 1:
        return "run_sample_scores"
    return (
        f"(SELECT {_SCORE_COLUMNS} FROM run_sample_scores UNION ALL "
        f"SELECT {_SCORE_COLUMNS} FROM run_condition_sample_scores)"
    )


def _list_answers(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    table: str,
    detector: str | None,
    need: int,
    every: int,
) -> bool:
    """Whether a stored list holds the first `need` of the frames a covered filter keeps, or
    all `every` of them: a narrow filter can keep fewer of its rows, and then the caller scans
    the filtered frames instead."""
    source, params = _listed(flt, table, detector)
    kept = int(_query(con, f"SELECT count(*) AS n {source}", params)["n"].iloc[0])
    return kept >= min(need, every)


# Weather for a few frames (a page of the gallery, one frame): their rows of the stored join
# (`frame_weather`, migration 8: the ASOF join's rows, kept by the writers), for the `page`
# rows only. A frame without a UTC time has no row: `within` is then NULL and its condition
# 'unknown', as the join gives it.
_PAGE_WEATHER = """
, wpick AS (
    SELECT fw.frame_id, fw.station, fw.weather_observed_at AS observed_at, fw.condition,
           fw.temperature_c, fw.precipitation_mm, fw.cloud_cover_pct, fw.wind_speed_ms,
           fw.visibility_km, TRUE AS within
    FROM frame_weather fw SEMI JOIN page ON page.frame_id = fw.frame_id)
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
    params = run_params(con, run_id)
    recorded = params.get("detector_facts")
    if recorded:
        return {key: fact["order"] for key, fact in recorded.items()}
    ran = ["consensus", *params.get("detectors", [])]
    return {key: place for place, key in enumerate(ran)}


# --- runs, options, counts --------------------------------------------------------------------


def run_params(con: duckdb.DuckDBPyConnection, run_id: int | None) -> dict[str, Any]:
    """A run's parameters (settings, and what analyze recorded: detector facts, incidents...);
    {} for no such run."""
    params = scalar(
        con,
        "SELECT CAST(params AS VARCHAR) FROM analysis_runs WHERE run_id = $run_id",
        {"run_id": run_id},
    )
    return json.loads(params) if params else {}


def runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every analysis run, newest first, with params and timings parsed from JSON. Detectors
    and clusters are counted in the run's aggregates when it has them (its rows otherwise:
    a scan of every score of those runs)."""
    df = _query(
        con,
        """
        WITH bare AS (SELECT run_id FROM analysis_runs ANTI JOIN run_aggregates USING (run_id))
        , dets AS (
            SELECT run_id, count(DISTINCT detector) AS n FROM run_top GROUP BY run_id
            UNION ALL
            SELECT o.run_id, count(DISTINCT o.detector) FROM outlier_scores o
            SEMI JOIN bare USING (run_id) GROUP BY o.run_id)
        , clus AS (
            SELECT run_id, count(DISTINCT cluster) FILTER (WHERE cluster >= 0) AS n
            FROM run_frame_cells GROUP BY run_id
            UNION ALL
            SELECT c.run_id, count(DISTINCT c.cluster) FILTER (WHERE c.cluster >= 0)
            FROM clusters c SEMI JOIN bare USING (run_id) GROUP BY c.run_id)
        SELECT r.run_id, r.model, r.status, r.n_frames, r.started_at, r.finished_at,
               date_diff('millisecond', r.started_at, r.finished_at) / 1000.0 AS seconds,
               r.code_version, CAST(r.params AS VARCHAR) AS params,
               CAST(r.timings AS VARCHAR) AS timings, r.error,
               m.family, m.weights, m.dim,
               coalesce(d.n, 0) AS n_detectors, coalesce(c.n, 0) AS n_clusters
        FROM analysis_runs r LEFT JOIN models m USING (model)
        LEFT JOIN dets d USING (run_id) LEFT JOIN clus c USING (run_id)
        ORDER BY r.started_at DESC, r.run_id DESC""",
        {},
    )
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
        "ORDER BY finished_at DESC, run_id DESC"
    ).fetchall()
    return [int(r[0]) for r in rows]


def detectors(con: duckdb.DuckDBPyConnection, run_id: int | None) -> list[str]:
    """Detector keys scored in a run, display order (consensus first); read from the run's
    top lists when it has aggregates (a run's detectors never change)."""
    source = "run_top" if aggregates.grain(con, run_id) else "outlier_scores"
    rows = con.execute(
        f"SELECT DISTINCT detector FROM {source} WHERE run_id = $run_id", {"run_id": run_id}
    ).fetchall()
    return sort_detectors([r[0] for r in rows], detector_order(con, run_id))


def options(con: duckdb.DuckDBPyConnection, run_id: int | None = None) -> dict[str, Any]:
    """What the filters can choose from: days, clusters, conditions, daylight values, detectors,
    complete runs (newest first). `run_id` None = the latest complete run (returned as run_id)."""
    if run_id is None:
        run_id = latest_run_id(con)
    span = fetch_one(con, "SELECT min(taken_at)::DATE, max(taken_at)::DATE, count(*) FROM frames")
    source = "run_frame_cells" if aggregates.grain(con, run_id) else "clusters"
    clusters = [
        int(r[0])
        for r in con.execute(
            f"SELECT DISTINCT cluster FROM {source} WHERE run_id = $run_id "
            "AND cluster IS NOT NULL ORDER BY cluster",
            {"run_id": run_id},
        ).fetchall()
    ]
    # Conditions observed at the station frames are joined to, and 'unknown' (no observation
    # within the tolerance); cheaper than the ASOF join over every frame.
    conditions = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT coalesce(condition, 'unknown') FROM weather "
            "WHERE station = (SELECT station FROM weather_station_used)"
        ).fetchall()
    ]
    if span and span[2]:
        conditions = sorted(set(conditions) | {"unknown"})
    daylight = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT daylight FROM frames WHERE daylight IS NOT NULL"
        ).fetchall()
    ]
    daylight = [d for d in DAYLIGHT_VALUES if d in daylight] + sorted(
        set(daylight) - set(DAYLIGHT_VALUES)
    )
    scored = detectors(con, run_id)
    params = run_params(con, run_id)
    return {
        "date_min": span[0] if span else None,
        "date_max": span[1] if span else None,
        "n_frames": int(span[2]) if span else 0,
        "clusters": clusters,
        "conditions": conditions,
        "daylight": daylight,
        "detectors": scored,
        "runs": complete_run_ids(con),
        "run_id": run_id,
        # the causes of junk the run's consensus counts (`--junk-causes`); [] before causes
        "junk_causes": own_causes(con, run_id, params),
        # the causes the run stored a score for: what a reader can count instead
        "causes": stored_causes(scored),
        # cause -> Spearman with the quality cause, for the counted causes that rank this
        # camera's frames against it (`analyze`'s advice); {} before it was recorded
        "causes_at_odds": dict(params.get("causes_at_odds") or {}),
        # cause -> share of its daylight ranking between days, for each cause the run left
        # out by itself (`junk_causes` unset: a scene cause that says what kind of day it is)
        "causes_left_out": dict(params.get("causes_left_out") or {}),
        # what `learned` learned from (reviews, the model's share, its cross-validated check;
        # `pipeline.detectors.learned`); None for a run without it
        "learned": params.get("learned"),
        # whether the run would learn from reviews, and from how many of each verdict
        "learns": params.get("learn_from_reviews", True) is not False,
        "learn_min_reviews": int(params.get("learn_min_reviews") or 5),
    }


def own_causes(
    con: duckdb.DuckDBPyConnection, run_id: int | None, params: dict[str, Any] | None = None
) -> list[str]:
    """The causes of junk a run's consensus counts, in the order it added them (its
    `junk_causes`; a run made before the setting summed every cause it stored); [] for a run
    made before causes were stored. `params`: the run's, when the caller has read them."""
    recorded = (run_params(con, run_id) if params is None else params).get("junk_causes")
    return list(recorded) if recorded else stored_causes(detectors(con, run_id))


def summary(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> dict[str, Any]:
    """Counts for the filtered frames: frames, span, days with frames (`n_days`, camera clock),
    share of night, clusters, reviews; and the store's frames and errors, and how it told day
    from night (`daylight_source`)."""
    if aggregates.covers(con, flt):
        sql, params = _cells(flt, detector=True, con=con)
        row = (
            _query(
                con,
                sql
                + """
            SELECT CAST(coalesce(sum(n_frames), 0) AS BIGINT) AS n_frames,
                   min(first_at) AS first, max(last_at) AS last,
                   coalesce(sum(n_frames) FILTER (WHERE daylight = 'night'), 0)
                       / sum(n_frames) AS night_share,
                   count(DISTINCT cluster) FILTER (WHERE cluster >= 0) AS n_clusters,
                   (SELECT CAST(coalesce(sum(n_flagged), 0) AS BIGINT) FROM dc) AS n_flagged
            FROM fc""",
                params,
            )
            .iloc[0]
            .to_dict()
        )
        row["night_share"] = row["night_share"] if row["n_frames"] else float("nan")
        row["n_days"] = _days_with_frames(con, flt)
        row.update(_reviews_in(con, flt))
    else:
        row = _summary_scan(con, flt)
    row["n_total"] = int(scalar(con, "SELECT count(*) FROM frames"))
    row["n_errors"] = int(scalar(con, "SELECT count(*) FROM ingest_errors"))
    # how the store told day from night ('sun', 'timezone' or 'brightness'): one way for every
    # frame, as `pipeline.daylight` classifies them all again whenever the way changes
    row["daylight_source"] = scalar(
        con, "SELECT daylight_source FROM frames WHERE daylight_source IS NOT NULL LIMIT 1"
    )
    return row


def _summary_scan(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> dict[str, Any]:
    sql, params = _filtered(flt)
    df = _query(
        con,
        sql
        + """
        SELECT count(*) AS n_frames, min(taken_at) AS first, max(taken_at) AS last,
               count(DISTINCT CAST(taken_at AS DATE)) AS n_days,
               avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0.0 END) AS night_share,
               count(DISTINCT cluster) FILTER (WHERE cluster >= 0) AS n_clusters,
               count(*) FILTER (WHERE coalesce(is_outlier, FALSE)) AS n_flagged,
               count(*) FILTER (WHERE verdict = 'junk') AS n_junk,
               count(*) FILTER (WHERE verdict = 'keep') AS n_keep
        FROM sel""",
        params,
    )
    return df.iloc[0].to_dict()


def _days_with_frames(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> int:
    """Camera-clock days holding at least one frame a covered filter keeps: from the cells
    when their period is a day; a week's or a month's cells cannot tell a day without frames,
    so then from the frames' days (a scan that joins only what the filter needs)."""
    if aggregates.grain(con, flt.run_id) == "day":
        sql, params = _cells(flt)  # by period: a period is a day
        sql += "SELECT count(DISTINCT period) AS n FROM fc WHERE n_frames > 0"
    else:
        sql, params = _filtered(flt, need=())
        sql += "SELECT count(DISTINCT CAST(taken_at AS DATE)) AS n FROM sel"
    return int(_query(con, sql, params)["n"].iloc[0])


def outliers_per_detector(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Per detector: frames flagged (is_outlier) among the filtered frames, and the share."""
    if aggregates.covers(con, flt.replace(threshold_kind="all")):
        where, params = aggregates.cell_filter(flt)
        params["run_id"] = flt.run_id
        df = _query(
            con,
            f"""
            SELECT detector, CAST(sum(n_flagged) AS BIGINT) AS n_flagged,
                   CAST(sum(n_rows) AS BIGINT) AS n_scored,
                   sum(n_flagged) / greatest(sum(n_rows), 1) AS flagged_share
            FROM {_cell_tables(con, flt)[1]} WHERE run_id = $run_id AND {where}
            GROUP BY detector""",
            params,
        )
    else:
        df = _outliers_scan(con, flt)
    order = sort_detectors(list(df["detector"]), detector_order(con, flt.run_id))
    return df.set_index("detector").loc[order].reset_index() if len(df) else df


def _outliers_scan(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    sql, params = _filtered(flt.replace(threshold_kind="all"), need=())
    everything = _keeps_every_frame(flt.replace(threshold_kind="all"))
    return _query(
        con,
        sql
        + f"""
        SELECT o.detector, count(*) FILTER (WHERE o.is_outlier) AS n_flagged,
               count(*) AS n_scored,
               count(*) FILTER (WHERE o.is_outlier) / greatest(count(*), 1) AS flagged_share
        FROM outlier_scores o {"" if everything else "SEMI JOIN sel ON sel.frame_id = o.frame_id"}
        WHERE o.run_id = $run_id
        GROUP BY o.detector""",
        params,
    )


def _dates(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> tuple[Any, Any]:
    """The first and last camera-clock day the filter's dates reach among the store's frames
    (the store's span from the run's aggregates when they are fresh: no scan)."""
    span = None
    if aggregates.covers(con, flt.replace(date_from=None, date_to=None)):
        span = fetch_one(
            con, "SELECT first_day, last_day FROM run_aggregates WHERE run_id = ?", [flt.run_id]
        )
    if span is None:
        span = fetch_one(con, "SELECT min(taken_at)::DATE, max(taken_at)::DATE FROM frames")
    first, last = span if span else (None, None)
    if first is not None:
        first = max(first, flt.date_from) if flt.date_from else first
        last = min(last, flt.date_to) if flt.date_to else last
    return first, last


def _period(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> str:
    """The period the date charts count by for a filter: the finest of day, week and month
    giving at most `aggregates.MAX_PERIODS` periods over the filter's dates (its first and
    last date, else the store's)."""
    return aggregates.period_unit(*_dates(con, flt))


def _cells_by(con: duckdb.DuckDBPyConnection, flt: FrameFilter, unit: str) -> bool:
    """Whether a covered filter's cells can be counted by `unit` periods (the cells' own
    period, or whole numbers of them)."""
    grain = aggregates.grain(con, flt.run_id)
    return grain is not None and aggregates.coarser(unit, grain)


def calendar(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Period x hour of day: frame count, the share flagged by the filter's detector and the
    mean percentile. `day` is the first day of a period: a day, or a week (from Monday) or a
    month when the filter's dates span more than `aggregates.MAX_PERIODS` days (weeks); the
    `period` column says which."""
    unit = _period(con, flt)
    if aggregates.covers(con, flt) and _cells_by(con, flt, unit):
        sql, params = _cells(flt, detector=True)
        start = aggregates.period_start(unit, "period")
        df = _query(
            con,
            sql
            + f"""
            , f AS (SELECT {start} AS day, hour, CAST(sum(n_frames) AS BIGINT) AS n_frames
                    FROM fc WHERE period IS NOT NULL GROUP BY ALL)
            , d AS (SELECT {start} AS day, hour, sum(n_flagged) AS n_flagged,
                           sum(sum_pct) AS sum_pct, sum(n_pct) AS n_pct
                    FROM dc WHERE period IS NOT NULL GROUP BY ALL)
            SELECT f.day, f.hour, f.n_frames,
                   coalesce(d.n_flagged, 0) / f.n_frames AS outlier_rate,
                   d.sum_pct / nullif(d.n_pct, 0) AS mean_pct
            FROM f LEFT JOIN d USING (day, hour) ORDER BY f.day, f.hour""",
            params,
        )
    else:
        sql, params = _filtered(flt, need=("score",))
        df = _query(
            con,
            sql
            + f"""
            SELECT {aggregates.period_start(unit, "taken_at")} AS day, hour(taken_at) AS hour,
                   count(*) AS n_frames,
                   avg(CASE WHEN is_outlier THEN 1.0 ELSE 0.0 END) AS outlier_rate,
                   avg(score_pct) AS mean_pct
            FROM sel WHERE taken_at IS NOT NULL
            GROUP BY ALL ORDER BY day, hour""",
            params,
        )
    return df.assign(period=unit)


# Timeline buckets shorter than a day (minutes); longer ones are days, weeks or months.
_TIMELINE_MINUTES = (10, 30, 60, 180, 360, 720)
_PERIOD_MINUTES = {"day": 1440, "week": 10080, "month": 43200}
TIMELINE_COLUMNS = [
    "bucket",
    "n_frames",
    "n_flagged",
    "mean_score",
    "max_score",
    "bucket_minutes",
    "bucket_label",
]


def timeline(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, max_buckets: int = 120
) -> pd.DataFrame:
    """Frames per time bucket with the mean and max score. The bucket grows with the filter's
    dates: the shortest of 10 min, 30 min, 1 h, 3 h, 6 h and 12 h giving at most
    `max_buckets` buckets, else the period `calendar` counts by (a day, week or month).
    `bucket_minutes` is its length (a month counts as 30 days), `bucket_label` its name.
    From the run's cells when they hold whole buckets (an hour or more)."""
    first, last = _dates(con, flt)
    unit = aggregates.period_unit(first, last)
    minutes = None
    if first is not None:
        days = max(1, (last - first).days + 1)
        minutes = next((m for m in _TIMELINE_MINUTES if days * 1440 / m <= max_buckets), None)
    if minutes is not None:
        label = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
        size = minutes
    else:
        label, size = f"1 {unit}" if unit != "day" else "1 d", _PERIOD_MINUTES[unit]
    covered = aggregates.covers(con, flt) and (
        _cells_by(con, flt, "day") and minutes >= 60
        if minutes is not None
        else _cells_by(con, flt, unit)
    )
    if covered:
        sql, params = _cells(flt, detector=True)
        at = "CAST(period AS TIMESTAMP) + to_hours(hour)"
        rows = "fc"
    else:
        sql, params = _filtered(flt, need=("score",))
        at, rows = "taken_at", "sel"
    bucket = (
        f"to_timestamp(floor(epoch({at}) / {size * 60}) * {size * 60})::TIMESTAMP"
        if minutes is not None
        else f"CAST({aggregates.period_start(unit, at)} AS TIMESTAMP)"
    )
    if covered:
        df = _query(
            con,
            sql
            + f"""
            , f AS (SELECT {bucket} AS bucket, sum(n_frames) AS n_frames FROM fc
                    WHERE period IS NOT NULL GROUP BY ALL)
            , d AS (SELECT {bucket} AS bucket, sum(n_flagged) AS n_flagged,
                           sum(sum_score) AS sum_score, sum(n_pct) AS n_pct,
                           max(max_score) AS max_score
                    FROM dc WHERE period IS NOT NULL GROUP BY ALL)
            SELECT f.bucket, CAST(f.n_frames AS BIGINT) AS n_frames,
                   CAST(coalesce(d.n_flagged, 0) AS BIGINT) AS n_flagged,
                   d.sum_score / nullif(d.n_pct, 0) AS mean_score, d.max_score
            FROM f LEFT JOIN d USING (bucket) ORDER BY f.bucket""",
            params,
        )
    else:
        df = _query(
            con,
            sql
            + f"""
            SELECT {bucket} AS bucket, count(*) AS n_frames,
                   count(*) FILTER (WHERE is_outlier) AS n_flagged,
                   avg(score) AS mean_score, max(score) AS max_score
            FROM {rows} WHERE taken_at IS NOT NULL GROUP BY 1 ORDER BY 1""",
            params,
        )
    if df.empty:
        return pd.DataFrame(columns=TIMELINE_COLUMNS)
    return df.assign(bucket_minutes=int(size), bucket_label=label)


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


# A gallery card's columns but frame_id and verdict, as a stored list (`t`: `run_top`,
# `run_samples`, `incident_frames`; `aggregates.cards`) holds them; run_top's own scores (the
# other lists' are joined as `ps`).
_CARD_COLUMNS = """t.path, t.taken_at, t.daylight, t.cluster, t.score, t.score_pct, t.is_outlier,
    coalesce(t.condition, 'unknown') AS condition, t.temperature_c, t.precipitation_mm"""
_CARD_COLUMNS_SCORED = _CARD_COLUMNS.replace("t.score", "ps.score").replace(
    "t.is_outlier", "ps.is_outlier"
)


def _with_thumbs(con: duckdb.DuckDBPyConnection, df: pd.DataFrame) -> pd.DataFrame:
    """Add a `thumb` column (JPEG bytes, None without one) to a page of frames: one lookup by
    id on the same connection (a join would read the blob column of every thumbnail)."""
    found = thumbnails(con, [int(i) for i in df["frame_id"]]) if len(df) else {}
    return df.assign(thumb=[found.get(int(i)) for i in df["frame_id"]])


def frames_page(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    page: int = 0,
    page_size: int = 24,
    order: str = "score",
    thumbs: bool = False,
) -> tuple[pd.DataFrame, int]:
    """One page of filtered frames (ranked by the filter's detector), with their weather, and
    the total count. `thumbs=True` adds a `thumb` column (JPEG bytes or None), so a page
    needs no second query for its pictures. Ranked by score, a covered filter's first pages
    come from the detector's stored top frames (`run_top`)."""
    limit, offset = int(page_size), int(page) * int(page_size)
    just_ids = flt.frame_ids and _keeps_every_frame(flt.replace(frame_ids=()))
    # a few frames by id (a strip, neighbours) on one page: the page itself is the count
    total = None if just_ids and offset == 0 and len(flt.frame_ids) <= limit else count(con, flt)
    if (
        order == "score"
        and aggregates.covers(con, flt)
        and _list_answers(con, flt, "run_top", flt.detector, offset + limit, total)
    ):
        source, params = _listed(flt, "run_top", flt.detector)
        params.update(limit=limit, offset=offset)
        if aggregates.cards(con, flt):
            # the stored list has each frame's card: only the verdicts are joined
            df = _query(
                con,
                f"""
                SELECT t.frame_id, {_CARD_COLUMNS}, pr.verdict
                FROM (SELECT t.* {source} ORDER BY t.rank LIMIT $limit OFFSET $offset) t
                LEFT JOIN reviews pr ON pr.frame_id = t.frame_id
                ORDER BY t.rank""",
                params,
            )
            return (_with_thumbs(con, df) if thumbs else df), total
        # the stored list has each frame's cluster and score: frames, weather, reviews joined
        df = _query(
            con,
            f"""
            WITH page AS MATERIALIZED (
                SELECT f.frame_id, f.path, f.taken_at, f.taken_at_utc, f.daylight, t.cluster,
                       t.score, t.score_pct, t.is_outlier, t.rank
                FROM (SELECT t.* {source} ORDER BY t.rank LIMIT $limit OFFSET $offset) t
                JOIN frames f ON f.frame_id = t.frame_id)
            {_PAGE_WEATHER}
            SELECT page.frame_id, page.path, page.taken_at, page.daylight, page.cluster,
                   page.score, page.score_pct, page.is_outlier, {_PAGE_WEATHER_COLUMNS},
                   pr.verdict
            FROM page LEFT JOIN wpick wp USING (frame_id)
            LEFT JOIN reviews pr ON pr.frame_id = page.frame_id
            ORDER BY page.rank""",
            params,
        )
    else:
        sql, params = _filtered(flt, need=("score",) if order.startswith("score") else ())
        params.update(limit=limit, offset=offset)
        df = _query(
            con,
            sql
            + f"""
            , page AS MATERIALIZED (
                SELECT frame_id, path, taken_at, taken_at_utc, daylight, score
                FROM sel ORDER BY {GALLERY_ORDERS[order]} LIMIT $limit OFFSET $offset)
            {_PAGE_WEATHER}
            SELECT page.frame_id, page.path, page.taken_at, page.daylight, pc.cluster, ps.score,
                   ps.score_pct, ps.is_outlier, {_PAGE_WEATHER_COLUMNS}, pr.verdict
            FROM page LEFT JOIN wpick wp USING (frame_id){_PAGE_EXTRAS}
            ORDER BY {GALLERY_ORDERS[order].replace("score", "page.score")}""",
            params,
        )
    df = df.drop(
        columns=[
            "weather_station",
            "weather_observed_at",
            "cloud_cover_pct",
            "wind_speed_ms",
            "visibility_km",
        ]
    )
    return (_with_thumbs(con, df) if thumbs else df), len(df) if total is None else total


def count(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> int:
    """How many frames the filter keeps (only the joins the filter itself needs)."""
    if aggregates.covers(con, flt):
        return _cell_count(con, flt)
    sql, params = _filtered(flt, need=())
    return int(_query(con, sql + "SELECT count(*) AS n FROM sel", params)["n"].iloc[0])


def gallery_page(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    page: int = 0,
    page_size: int = 24,
    order: str = "score",
) -> dict[str, Any]:
    """What the Gallery draws, on one connection: `rows` (a `frames_page` with `thumb`) and
    `total`. Every detector's score of a card is read when its details are opened
    (`scores_for`)."""
    rows, total = frames_page(con, flt, page, page_size, order, thumbs=True)
    return {"rows": rows, "total": total}


def frame_ids(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, limit: int | None = None, order: str = "score"
) -> list[int]:
    """Ids of the filtered frames in gallery order (all of them, or the first `limit`)."""
    sql, params = _filtered(flt, need=("score",) if order.startswith("score") else ())
    tail = ""
    if limit is not None:
        tail, params["limit"] = "LIMIT $limit", int(limit)
    df = _query(
        con, sql + f"SELECT frame_id FROM sel ORDER BY {GALLERY_ORDERS[order]} {tail}", params
    )
    return [int(i) for i in df["frame_id"]]


def scores_for(
    con: duckdb.DuckDBPyConnection,
    run_id: int | None,
    ids: list[int],
    junk_causes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Long form: every detector's score and percentile for some frames (one frame: by
    equality, which the scan can skip to); the consensus of `junk_causes` when given
    (`FrameFilter.junk_causes`)."""
    ids = [int(i) for i in ids]
    match = "frame_id = $id" if len(ids) == 1 else "frame_id IN (SELECT unnest($ids))"
    sql, params = with_causes(
        f"""
        SELECT frame_id, detector, score, score_pct, is_outlier FROM outlier_scores
        WHERE run_id = $run_id AND {match}
        ORDER BY frame_id, detector""",
        {"run_id": run_id, "ids": ids, "id": ids[0] if ids else None},
        run_id,
        junk_causes,
    )
    return _query(con, sql, params)


def thumbnails(con: duckdb.DuckDBPyConnection, ids: list[int]) -> dict[int, bytes]:
    """JPEG thumbnails by frame id (frames without one are absent)."""
    rows = con.execute(
        "SELECT frame_id, jpeg FROM thumbnails WHERE frame_id IN (SELECT unnest($ids))",
        {"ids": [int(i) for i in ids]},
    ).fetchall()
    return {int(fid): bytes(jpeg) for fid, jpeg in rows}


def frame_detail(
    con: duckdb.DuckDBPyConnection, frame_id: int, run_id: int | None
) -> dict[str, Any] | None:
    """Everything known about one frame: file, time, image statistics, cluster, weather, review."""
    df = _query(
        con,
        f"""
        WITH page AS (SELECT frame_id, taken_at_utc FROM frames WHERE frame_id = $frame_id)
        {_PAGE_WEATHER}
        SELECT f.* EXCLUDE (sharpness_cells), c.cluster, c.map_x, c.map_y,
               {_PAGE_WEATHER_COLUMNS}, r.verdict, r.note AS review_note, r.reviewed_at,
               g.is_anomaly AS truth_is_anomaly, g.kind AS truth_kind,
               t.width AS thumb_width, t.height AS thumb_height
        FROM frames f
        LEFT JOIN clusters c ON c.run_id = $run_id AND c.frame_id = f.frame_id
        LEFT JOIN wpick wp ON wp.frame_id = f.frame_id
        LEFT JOIN reviews r ON r.frame_id = f.frame_id
        LEFT JOIN ground_truth g ON g.frame_id = f.frame_id
        LEFT JOIN thumbnails t ON t.frame_id = f.frame_id
        WHERE f.frame_id = $frame_id""",
        {"run_id": run_id, "frame_id": int(frame_id)},
    )
    return None if df.empty else df.iloc[0].to_dict()


def neighbors(con: duckdb.DuckDBPyConnection, run_id: int | None, frame_id: int) -> pd.DataFrame:
    """A frame's nearest neighbours in the run's embedding space (rank 1 = nearest)."""
    return _query(
        con,
        """
        SELECT n.rank, n.neighbor_id AS frame_id, n.distance, f.taken_at, f.daylight,
               c.cluster
        FROM neighbors n
        JOIN frames f ON f.frame_id = n.neighbor_id
        LEFT JOIN clusters c ON c.run_id = n.run_id AND c.frame_id = n.neighbor_id
        WHERE n.run_id = $run_id AND n.frame_id = $frame_id
        ORDER BY n.rank""",
        {"run_id": run_id, "frame_id": int(frame_id)},
    )


def neighbor_page(
    con: duckdb.DuckDBPyConnection,
    run_id: int | None,
    frame_id: int,
    detector: str = "consensus",
    junk_causes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A frame's nearest neighbours (rank, distance) with the gallery columns of each (time,
    weather, cluster, `detector`'s score, verdict) and its `thumb`, nearest first; the
    consensus of `junk_causes` when given."""
    nb = _query(
        con,
        """
        SELECT rank, neighbor_id AS frame_id, distance FROM neighbors
        WHERE run_id = $run_id AND frame_id = $frame_id ORDER BY rank""",
        {"run_id": run_id, "frame_id": int(frame_id)},
    )
    if nb.empty:
        return nb
    ids = tuple(int(i) for i in nb["frame_id"])
    rows, _ = frames_page(
        con,
        FrameFilter(run_id=run_id, detector=detector, frame_ids=ids, junk_causes=junk_causes),
        0,
        len(ids),
        "time",
        thumbs=True,
    )
    out = nb[["frame_id", "rank", "distance"]].merge(rows, on="frame_id", how="left")
    return out.sort_values("rank").reset_index(drop=True)


def adjacent_frames(con: duckdb.DuckDBPyConnection, frame_id: int) -> dict[str, int | None]:
    """The frames just before and after one in time (for stepping through the sequence).
    Looked for within a day first (a time range the scan can skip to), then anywhere."""
    me = fetch_one(con, "SELECT taken_at FROM frames WHERE frame_id = ?", [int(frame_id)])
    if me is None:
        return {"prev": None, "next": None}
    out: dict[str, int | None] = {}
    for side, op, order in (("prev", "<", "DESC"), ("next", ">", "")):
        for reach in ((timedelta(days=1),) if me[0] is not None else ()) + (None,):
            near = ""
            params: dict[str, Any] = {"frame_id": int(frame_id), "at": me[0]}
            if reach is not None:  # plain comparisons first: the scan skips to them
                near = (
                    f"f.taken_at {op}= $at AND f.taken_at {'>=' if op == '<' else '<='} $bound AND "
                )
                params["bound"] = me[0] - reach if op == "<" else me[0] + reach
            df = _query(
                con,
                f"""
                SELECT f.frame_id FROM frames f
                WHERE {near}(f.taken_at, f.frame_id) {op} ($at, $frame_id)
                ORDER BY f.taken_at {order}, f.frame_id {order} LIMIT 1""",
                params,
            )
            out[side] = None if df.empty else int(df["frame_id"].iloc[0])
            if out[side] is not None:
                break
    return out


# --- map and clusters -------------------------------------------------------------------------


def map_points(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    max_points: int = 20_000,
    weather: bool = False,
) -> tuple[pd.DataFrame, int]:
    """2-D map points of the filtered frames, and how many there are in all.

    Above `max_points` a deterministic sample is returned, flagged frames first, then by a
    hash of the frame id, so the picture is stable between reruns: from every filtered frame,
    or, for a covered filter, from the run's stored sample (`run_samples`, the frames with
    the smallest hashes). `weather=True` fills `condition` (for colouring by weather).
    """
    if aggregates.covers(con, flt):
        n = _cell_count(con, flt, run_only=True)
        if _list_answers(con, flt, "run_samples", None, max_points, n):
            return _map_sample(con, flt, max_points, weather), n
    sql, params = _filtered(flt, weather=weather, need=("cluster",))
    n = int(
        _query(con, sql + "SELECT count(*) AS n FROM sel WHERE map_x IS NOT NULL", params)[
            "n"
        ].iloc[0]
    )
    sql, params = _filtered(flt, weather=weather, need=("cluster", "score"))
    params["max_points"] = int(max_points)
    df = _query(
        con,
        sql
        + """
        SELECT frame_id, map_x, map_y, cluster, score, score_pct, is_outlier, daylight,
               condition, taken_at
        FROM sel WHERE map_x IS NOT NULL
        ORDER BY coalesce(is_outlier, FALSE) DESC, hash(frame_id)
        LIMIT $max_points""",
        params,
    )
    return df, n


def _map_sample(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, max_points: int, weather: bool
) -> pd.DataFrame:
    """`map_points`' rows from the run's stored sample."""
    source, params = _listed(flt, "run_samples")
    params.update(detector=flt.detector, max_points=int(max_points))
    condition = "'unknown' AS condition"
    utc, frames_join, weather_join = "CAST(NULL AS TIMESTAMPTZ)", "", ""
    if flt.conditions or (weather and aggregates.cards(con, flt)):
        # the sample's conditions are still the frames' (aggregates.covers with a condition,
        # aggregates.cards without): no weather join
        condition, weather = "page.condition", False
    if weather:  # the page's weather (an ASOF join over those rows only)
        condition = (
            "CASE WHEN wp.within THEN coalesce(wp.condition, 'unknown') "
            "ELSE 'unknown' END AS condition"
        )
        utc, frames_join = "f.taken_at_utc", "JOIN frames f ON f.frame_id = k.frame_id"
        weather_join = "LEFT JOIN wpick wp USING (frame_id)"
    return _query(
        con,
        f"""
        WITH kept AS (SELECT t.* {source})
        , page AS MATERIALIZED (
            SELECT k.frame_id, k.map_x, k.map_y, k.cluster, s.score, s.score_pct,
                   s.is_outlier, k.daylight, k.condition, k.taken_at, {utc} AS taken_at_utc
            FROM kept k {frames_join}
            LEFT JOIN {_sample_scores(flt)} s ON s.run_id = $run_id
                 AND s.detector = $detector AND s.frame_id = k.frame_id
            ORDER BY coalesce(s.is_outlier, FALSE) DESC, hash(k.frame_id)
            LIMIT $max_points)
        {_PAGE_WEATHER if weather else ""}
        SELECT page.frame_id, page.map_x, page.map_y, page.cluster, page.score,
               page.score_pct, page.is_outlier, page.daylight, {condition}, page.taken_at
        FROM page {weather_join}
        ORDER BY coalesce(page.is_outlier, FALSE) DESC, hash(page.frame_id)""",
        params,
    )


def cluster_sizes(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Per cluster: frames, share of night, mean score percentile, flagged frames, time span."""
    if aggregates.covers(con, flt):
        sql, params = _cells(flt, detector=True, con=con)
        return _query(
            con,
            sql
            + """
            , f AS (SELECT cluster, sum(n_frames) AS n_frames,
                           coalesce(sum(n_frames) FILTER (WHERE daylight = 'night'), 0)
                               / sum(n_frames) AS night_share,
                           min(first_at) AS first, max(last_at) AS last
                    FROM fc WHERE cluster IS NOT NULL GROUP BY cluster)
            , d AS (SELECT cluster, sum(sum_pct) / nullif(sum(n_pct), 0) AS mean_pct,
                           sum(n_flagged) AS n_flagged
                    FROM dc WHERE cluster IS NOT NULL GROUP BY cluster)
            SELECT f.cluster, CAST(f.n_frames AS BIGINT) AS n_frames, f.night_share,
                   d.mean_pct, CAST(coalesce(d.n_flagged, 0) AS BIGINT) AS n_flagged,
                   f.first, f.last
            FROM f LEFT JOIN d USING (cluster) ORDER BY f.cluster""",
            params,
        )
    sql, params = _filtered(flt, need=("cluster", "score"))
    return _query(
        con,
        sql
        + """
        SELECT cluster, count(*) AS n_frames,
               avg(CASE WHEN daylight = 'night' THEN 1.0 ELSE 0.0 END) AS night_share,
               avg(score_pct) AS mean_pct,
               count(*) FILTER (WHERE is_outlier) AS n_flagged,
               min(taken_at) AS first, max(taken_at) AS last
        FROM sel WHERE cluster IS NOT NULL GROUP BY cluster ORDER BY cluster""",
        params,
    )


def cluster_profiles(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """Frames per cluster x hour of day and per cluster x period (column `kind`: hour/day;
    the period, as `calendar` counts by, in column `period`). One scan: the frames are counted
    per cluster, period and hour, and both profiles are sums of those few thousand rows (the
    run's cells for a covered filter)."""
    unit = _period(con, flt)
    if aggregates.covers(con, flt) and _cells_by(con, flt, unit):
        sql, params = _cells(flt)
        sql += f"""
        , cdh AS (
            SELECT cluster, {aggregates.period_start(unit, "period")} AS day, hour,
                   CAST(sum(n_frames) AS BIGINT) AS n
            FROM fc WHERE cluster IS NOT NULL AND period IS NOT NULL GROUP BY ALL)"""
    else:
        sql, params = _filtered(flt, need=("cluster",))
        sql += f"""
        , cdh AS (
            SELECT cluster, {aggregates.period_start(unit, "taken_at")} AS day,
                   hour(taken_at) AS hour, count(*) AS n
            FROM sel WHERE cluster IS NOT NULL AND taken_at IS NOT NULL GROUP BY ALL)"""
    df = _query(
        con,
        sql
        + """
        SELECT 'hour' AS kind, cluster, CAST(hour AS VARCHAR) AS key, sum(n) AS n_frames
        FROM cdh GROUP BY ALL
        UNION ALL
        SELECT 'day' AS kind, cluster, strftime(day, '%Y-%m-%d') AS key, sum(n)
        FROM cdh GROUP BY ALL
        ORDER BY kind, cluster, key""",
        params,
    )
    return df.assign(period=unit)


def cluster_samples(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    n: int = 6,
    seed: int = 0,
    thumbs: bool = False,
) -> pd.DataFrame:
    """A random (seeded, repeatable) sample of up to `n` filtered frames from every cluster,
    with the gallery columns (and a `thumb` column with `thumbs=True`); one query for the
    whole page. For a covered filter the frames come from the run's stored sample when it
    holds `n` of every cluster's filtered frames (or all of them)."""
    if aggregates.covers(con, flt) and _samples_per_cluster(con, flt, n):
        sql, params = _listed(flt, "run_samples")
        params.update(detector=flt.detector, n=int(n), seed=int(seed))
        if aggregates.cards(con, flt):  # the sample holds each frame's card
            df = _query(
                con,
                f"""
                WITH t AS (
                    SELECT t.* {sql} AND t.cluster IS NOT NULL
                    QUALIFY row_number() OVER (PARTITION BY t.cluster
                                               ORDER BY hash(t.frame_id + $seed)) <= $n)
                SELECT t.frame_id, {_CARD_COLUMNS_SCORED}, pr.verdict
                FROM t
                LEFT JOIN {_sample_scores(flt)} ps ON ps.run_id = $run_id
                     AND ps.detector = $detector AND ps.frame_id = t.frame_id
                LEFT JOIN reviews pr ON pr.frame_id = t.frame_id
                ORDER BY t.cluster, t.taken_at, t.frame_id""",
                params,
            )
            return _with_thumbs(con, df) if thumbs else df
        sql = f"""
        WITH chosen AS (
            SELECT t.frame_id, t.cluster {sql} AND t.cluster IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY t.cluster
                                       ORDER BY hash(t.frame_id + $seed)) <= $n)
        , page AS MATERIALIZED (
            SELECT f.frame_id, f.path, f.taken_at, f.taken_at_utc, f.daylight, c.cluster
            FROM chosen c JOIN frames f ON f.frame_id = c.frame_id)"""
        params.update(detector=flt.detector)
        scores = _sample_scores(flt)  # the sample's scores: a few rows per detector
    else:
        sql, params = _filtered(flt, need=("cluster",))
        sql += """
        , page AS MATERIALIZED (
            SELECT frame_id, path, taken_at, taken_at_utc, daylight, cluster
            FROM sel WHERE cluster IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY cluster
                                       ORDER BY hash(frame_id + $seed)) <= $n)"""
        scores = "outlier_scores"
    params.update(n=int(n), seed=int(seed))
    df = _query(
        con,
        sql
        + f"""
        {_PAGE_WEATHER}
        SELECT page.frame_id, page.path, page.taken_at, page.daylight, page.cluster, ps.score,
               ps.score_pct, ps.is_outlier,
               {_PAGE_WEATHER_BRIEF},
               pr.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        LEFT JOIN {scores} ps ON ps.run_id = $run_id AND ps.detector = $detector
                                   AND ps.frame_id = page.frame_id
        LEFT JOIN reviews pr ON pr.frame_id = page.frame_id
        ORDER BY page.cluster, page.taken_at, page.frame_id""",
        params,
    )
    return _with_thumbs(con, df) if thumbs else df


def _samples_per_cluster(con: duckdb.DuckDBPyConnection, flt: FrameFilter, n: int) -> bool:
    """Whether the run's stored sample holds `n` of each cluster's frames that a covered
    filter keeps (or all of a smaller cluster's)."""
    source, params = _listed(flt, "run_samples")
    cells, cell_params = _cells(flt, con=con)
    params.update(cell_params, n=int(n))
    short = _query(
        con,
        cells
        + f"""
        , s AS (SELECT t.cluster, count(*) AS k {source} GROUP BY t.cluster)
        , c AS (SELECT cluster, sum(n_frames) AS m FROM fc WHERE cluster IS NOT NULL
                GROUP BY cluster)
        SELECT count(*) AS n FROM c LEFT JOIN s USING (cluster)
        WHERE coalesce(s.k, 0) < least(c.m, $n)""",
        params,
    )["n"].iloc[0]
    return int(short) == 0


# --- detector comparison ----------------------------------------------------------------------


def detector_matrix(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    names: list[str],
    max_rows: int | None = None,
    labels: bool = False,
) -> pd.DataFrame:
    """Wide form for the filtered frames: one `<detector>` score-percentile column and one
    `<detector>_flag` (is_outlier) column per detector, plus frame_id and taken_at.

    Above `max_rows` frames, a fixed pseudo-random sample (by a hash of the frame id).
    `labels=True` adds the known answer of each frame as `label_is_anomaly` and
    `label_source`: its review ('review': junk = anomaly) or else its imported ground truth
    ('ground_truth'); NULL for unlabelled frames. For a covered filter the sample comes from
    the run's stored one (the same frames: both take the smallest hashes)."""
    whole = flt.replace(threshold_kind="all")
    scores = "outlier_scores"
    if (
        max_rows is not None
        and aggregates.covers(con, whole)
        and _list_answers(
            con, whole, "run_samples", None, max_rows, _cell_count(con, whole, run_only=True)
        )
    ):
        source, params = _listed(whole, "run_samples")
        sql = f"WITH sel AS (SELECT t.frame_id, t.taken_at {source})\n"
        scores = _sample_scores(whole)  # the sample's scores: a few rows per detector
    else:
        sql, params = _filtered(whole, need=())
    names = list(dict.fromkeys(names))
    # Column aliases are fixed (d0, d1, ...); detector names are bound values. One join per
    # detector on the sampled ids (each a hash join on the run's rows of that detector).
    cols, joins = [], []
    for i, name in enumerate(names):
        params[f"d{i}"] = name
        cols.append(f"o{i}.score_pct AS d{i}, o{i}.is_outlier AS f{i}")
        joins.append(
            f"LEFT JOIN {scores} o{i} ON o{i}.run_id = $run_id "
            f"AND o{i}.detector = $d{i} AND o{i}.frame_id = ids.frame_id"
        )
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
    df = _query(
        con,
        sql
        + f"""
        , ids AS (SELECT frame_id, taken_at FROM sel {tail})
        SELECT ids.frame_id, ids.taken_at, {", ".join(cols)}{label_cols}
        FROM ids
        {" ".join(joins)}{label_join}
        WHERE {where}
        ORDER BY ids.frame_id""",
        params,
    )
    rename = {f"d{i}": name for i, name in enumerate(names)}
    rename.update({f"f{i}": f"{name}_flag" for i, name in enumerate(names)})
    return df.rename(columns=rename)


def _top_k(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, a: str, b: str, top_k: int
) -> tuple[str, dict[str, Any], bool]:
    """`ta`/`tb`: A's and B's `top_k` filtered frames (frame_id, score, score_pct, is_outlier,
    rank, cluster), and whether they also hold each frame's card (path, taken_at, daylight,
    condition, temperature_c, precipitation_mm). Each is a top-N over the filtered frames (no
    sort of every frame; cluster NULL, to be joined for the few shown), or, for a covered
    filter, the first of the detector's stored top frames (with their cluster, and their cards
    when `aggregates.cards` allows)."""
    whole = flt.replace(threshold_kind="all")
    if aggregates.covers(con, whole):
        every = _cell_count(con, whole, run_only=True)
        if all(_list_answers(con, whole, "run_top", d, top_k, every) for d in (a, b)):
            carded = aggregates.cards(con, whole)
            card = (
                ", path, taken_at, daylight, coalesce(condition, 'unknown') AS condition, "
                "temperature_c, precipitation_mm"
                if carded
                else ""
            )
            parts, params = [], {"k": int(top_k)}
            for key, det in (("a", a), ("b", b)):
                source, more = _listed(whole, "run_top", det, key=key)
                params.update(more)
                parts.append(f"""t{key} AS (
                    SELECT frame_id, score, score_pct, is_outlier,
                           row_number() OVER (ORDER BY rank) AS rank, cluster{card}
                    FROM (SELECT t.* {source} ORDER BY t.rank LIMIT $k))""")
            return "WITH " + "\n, ".join(parts) + "\n", params, carded
    sql, params = _filtered(whole, need=())
    params.update(a=a, b=b, k=int(top_k))
    semi = (
        ""
        if _keeps_every_frame(flt.replace(threshold_kind="all"))
        else "SEMI JOIN sel ON sel.frame_id = o.frame_id"
    )
    # The rank is numbered after the LIMIT: a window in the same SELECT would sort every row.
    top = """SELECT *, row_number() OVER (ORDER BY score DESC NULLS LAST, frame_id) AS rank,
                    CAST(NULL AS INTEGER) AS cluster
             FROM (SELECT o.frame_id, o.score, o.score_pct, o.is_outlier
                   FROM outlier_scores o {semi}
                   WHERE o.run_id = $run_id AND o.detector = ${d}
                   ORDER BY o.score DESC NULLS LAST, o.frame_id LIMIT $k)"""
    return (
        sql
        + f"""
        , ta AS ({top.format(d="a", semi=semi)})
        , tb AS ({top.format(d="b", semi=semi)})
""",
        params,
        False,
    )


def top_k_differences(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    a: str,
    b: str,
    top_k: int,
    limit: int = 12,
    thumbs: bool = True,
) -> dict[str, tuple[pd.DataFrame, int]]:
    """Both "flags it, the other does not" galleries in one query: `{"a": (rows, n),
    "b": (rows, n)}`. Rows are the first `limit` frames of A's top-k missing from B's top-k
    (and the reverse), in that detector's rank order, with the gallery columns (score,
    score_pct and is_outlier are that detector's), their weather and, with `thumbs=True`, a
    `thumb` column; n is how many there are in all."""
    sql, params, carded = _top_k(con, flt, a, b, top_k)
    params["limit"] = int(limit)
    diff = """
        , diff AS (
            SELECT 'a' AS side, ta.* FROM ta ANTI JOIN tb USING (frame_id)
            UNION ALL
            SELECT 'b' AS side, tb.* FROM tb ANTI JOIN ta USING (frame_id))
        , shown AS (
            SELECT *, count(*) OVER (PARTITION BY side) AS n_side FROM diff
            QUALIFY row_number() OVER (PARTITION BY side ORDER BY rank) <= $limit)"""
    if carded:  # the stored top lists hold the cards: only the verdicts are joined
        df = _query(
            con,
            sql
            + diff
            + f"""
            SELECT t.side, t.n_side, t.frame_id, {_CARD_COLUMNS}, pr.verdict
            FROM shown t LEFT JOIN reviews pr ON pr.frame_id = t.frame_id
            ORDER BY t.side, t.rank""",
            params,
        )
    else:
        df = _top_k_scan(con, sql + diff, params)
    if thumbs:
        df = _with_thumbs(con, df)
    out = {}
    for side in ("a", "b"):
        part = df[df["side"] == side]
        n = int(part["n_side"].iloc[0]) if len(part) else 0
        out[side] = (part.drop(columns=["side", "n_side"]).reset_index(drop=True), n)
    return out


def _top_k_scan(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """`top_k_differences`' rows when `shown` lacks the cards: joined with the frames, their
    weather and their clusters."""
    return _query(
        con,
        sql
        + f"""
        , page AS MATERIALIZED (
            SELECT d.side, d.frame_id, d.score, d.score_pct, d.is_outlier, d.rank, d.n_side,
                   d.cluster, f.path, f.taken_at, f.taken_at_utc, f.daylight
            FROM shown d JOIN frames f USING (frame_id))
        {_PAGE_WEATHER}
        SELECT page.side, page.n_side, page.frame_id, page.path, page.taken_at, page.daylight,
               coalesce(page.cluster, pc.cluster) AS cluster, page.score, page.score_pct,
               page.is_outlier,
               {_PAGE_WEATHER_BRIEF},
               pr.verdict
        FROM page LEFT JOIN wpick wp USING (frame_id)
        LEFT JOIN clusters pc ON pc.run_id = $run_id AND pc.frame_id = page.frame_id
        LEFT JOIN reviews pr ON pr.frame_id = page.frame_id
        ORDER BY page.side, page.rank""",
        params,
    )


# --- review and export ------------------------------------------------------------------------

EXPORT_MODES = ("not_junk", "keep", "clean")
# What each export mode keeps of the filtered frames, and the reason it gives a frame it leaves
# out ('junk': marked junk; 'not_keep': not marked keep; 'flagged': flagged by the detector).
_EXPORT_CONDITIONS = {
    "not_junk": "verdict IS DISTINCT FROM 'junk'",
    "keep": "verdict = 'keep'",
    "clean": "verdict = 'keep' OR (verdict IS NULL AND NOT coalesce(is_outlier, FALSE))",
}
_EXPORT_REASONS = {
    "not_junk": "'junk'",
    "keep": "CASE WHEN verdict = 'junk' THEN 'junk' ELSE 'not_keep' END",
    "clean": "CASE WHEN verdict = 'junk' THEN 'junk' ELSE 'flagged' END",
}


def _export_condition(mode: str) -> str:
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; choose one of {EXPORT_MODES}")
    return _EXPORT_CONDITIONS[mode]


def _export_need(mode: str) -> tuple[str, ...]:
    """The column groups an export mode reads ('clean' also reads the detector's flag)."""
    return ("review", "score") if mode == "clean" else ("review",)


def export_frames(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    mode: str = "not_junk",
    limit: int | None = None,
) -> pd.DataFrame:
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
        return _query(
            con,
            sql
            + f"""
            SELECT frame_id, path, root, rtrim(root, '/') || '/' || path AS abs_path, taken_at,
                   daylight, condition, cluster, score, score_pct, verdict
            FROM sel WHERE {cond} ORDER BY taken_at, frame_id""",
            params,
        )
    until = _preview_until(con, flt, mode, int(limit))
    sql, params = _filtered(
        flt if until is None else flt.replace(date_to=until), need=_export_need(mode)
    )
    params["limit"] = int(limit)
    return _query(
        con,
        sql
        + f"""
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
        ORDER BY page.taken_at, page.frame_id""",
        params,
    )


def _preview_until(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str, limit: int
) -> date | None:
    """For a preview (the first `limit` frames to export in time order) of a covered filter:
    the last day of the first cell periods that surely hold `limit` exported frames, counted
    from the run's cells (frames, less every junk verdict in the store, and for 'clean' less
    the frames the detector flags in those periods), so the preview reads the frames up to
    then and not every frame. None: no such day ('keep' mode; not enough frames; a filter the
    cells do not answer)."""
    if mode == "keep" or not aggregates.covers(con, flt):
        return None
    n_junk = int(scalar(con, "SELECT count(*) FROM reviews WHERE verdict = 'junk'") or 0)
    sql, params = _cells(flt, detector=True)
    flagged = "sum(d.n_flagged)" if mode == "clean" else "0"
    params.update(need=int(limit) + n_junk)
    df = _query(
        con,
        sql
        + f"""
        , per AS (SELECT period, sum(n_frames) AS n FROM fc WHERE period IS NOT NULL
                  GROUP BY period)
        , fl AS (SELECT d.period, {flagged} AS n FROM dc d WHERE d.period IS NOT NULL
                 GROUP BY d.period)
        , cum AS (SELECT per.period,
                         sum(per.n - coalesce(fl.n, 0)) OVER (ORDER BY per.period) AS kept
                  FROM per LEFT JOIN fl USING (period))
        SELECT min(period) AS period FROM cum WHERE kept >= $need""",
        params,
    )
    start = df["period"].iloc[0] if len(df) else None
    if start is None or pd.isna(start):
        return None
    start = pd.Timestamp(start).date()
    last = aggregates.period_end(start, aggregates.grain(con, flt.run_id))
    return last if flt.date_to is None else min(last, flt.date_to)


def export_count(con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk") -> int:
    """How many frames `export_frames` would return (without the weather join)."""
    cond = _export_condition(mode)
    if mode != "clean" and aggregates.covers(con, flt):
        reviewed = _reviews_in(con, flt)
        return (
            _cell_count(con, flt) - reviewed["n_junk"] if mode == "not_junk" else reviewed["n_keep"]
        )
    sql, params = _filtered(flt, need=_export_need(mode))
    return int(
        _query(con, sql + f"SELECT count(*) AS n FROM sel WHERE {cond}", params)["n"].iloc[0]
    )


def export_left_out(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, mode: str = "not_junk"
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
    df = _query(
        con,
        sql
        + f"""
        SELECT CASE WHEN {cond} THEN 'exported' ELSE {_EXPORT_REASONS[mode]} END AS reason,
               count(*) AS n
        FROM sel GROUP BY ALL""",
        params,
    )
    counts = {
        "n_frames": n_frames,
        "filters": n_frames - n_kept,
        "threshold": 0,
        "junk": 0,
        "not_keep": 0,
        "flagged": 0,
        "exported": 0,
    }
    counts.update({str(r): int(n) for r, n in zip(df["reason"], df["n"])})
    counts["threshold"] = n_kept - int(df["n"].sum())
    return counts


def reviewed_cause_scores(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, stored: list[str]
) -> pd.DataFrame:
    """The filtered frames the run scored that have a junk/keep review (the threshold and the
    chosen junk causes play no part): frame_id, `junk` (the verdict) and the stored score of
    each cause in `stored` (a column per cause, `quality`, ...; NaN where the run has none for
    the frame). What `dashboard.metrics.suggest_causes` weighs."""
    sql, params = _filtered(flt.replace(threshold_kind="all", junk_causes=()), need=())
    keys = [causes.cause_key(c) for c in stored]
    params["keys"] = keys
    long = _query(
        con,
        sql
        + """
        SELECT s.frame_id, r.verdict = 'junk' AS junk, o.detector, o.score
        FROM sel s
        JOIN reviews r ON r.frame_id = s.frame_id
        JOIN outlier_scores o ON o.run_id = $run_id AND o.frame_id = s.frame_id
            AND list_contains($keys, o.detector)
        WHERE r.verdict IN ('junk', 'keep')""",
        params,
    )
    wide = long.pivot(index=["frame_id", "junk"], columns="detector", values="score")
    wide = wide.reindex(columns=keys).astype(float).set_axis(list(stored), axis=1)
    return wide.reset_index().sort_values("frame_id", ignore_index=True)


def review_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT verdict, count(*) FROM reviews GROUP BY verdict").fetchall()
    counts = {"junk": 0, "keep": 0}
    counts.update({verdict: int(n) for verdict, n in rows})
    return counts


# The orders "One by one" offers frames in: the highest-ranked first, a review that teaches
# `learned` both verdicts (the highest-ranked and a frame drawn at random, in turn), at random
# alone (an unbiased draw), or where `learned` is least sure (`doubt_rank`; until the run has
# `learned`, the teaching order's turns).
REVIEW_ORDERS = ("score", "teach", "random", "doubt")
LEARNED = "learned"  # the detector key of the consensus re-weighed by the reviews


def review_turn(
    con: duckdb.DuckDBPyConnection, order: str = "score", run_id: int | None = None
) -> str:
    """Where the next frame to review comes from: "top" (the highest-ranked), "random" (the
    first in hash order, a fixed random order) or "doubt" (the frame whose `learned` rank is
    nearest `doubt_rank`). `teach` takes top and random in turn, by the number of verdicts
    given so far; so does `doubt` while run `run_id` has no `doubt_rank`."""
    return _turn(con, order, run_id)[0]


def _turn(
    con: duckdb.DuckDBPyConnection, order: str, run_id: int | None
) -> tuple[str, float | None]:
    """(`review_turn`, and for "doubt" the `doubt_rank` it found)."""
    if order not in REVIEW_ORDERS:
        raise ValueError(f"unknown review order {order!r}; choose from {REVIEW_ORDERS}")
    if order in ("score", "random"):
        return ("top" if order == "score" else "random"), None
    meet = doubt_rank(con, run_id) if order == "doubt" else None
    if meet is not None:
        return "doubt", meet
    n = fetch_one(con, "SELECT count(*) FROM reviews WHERE verdict IN ('junk', 'keep')")[0]
    return ("random" if int(n) % 2 else "top"), None


def doubt_rank(con: duckdb.DuckDBPyConnection, run_id: int | None) -> float | None:
    """The `learned` rank (0..1) where run `run_id`'s reviewed junk and keep frames meet
    (`meeting_rank` of their ranks): the frames ranked nearest it are those the reviews leave
    it least sure of. None for a run without `learned`, or without both verdicts among its
    reviewed frames."""
    if run_id is None:
        return None
    got = _query(
        con,
        """
        SELECT l.score_pct AS pct, r.verdict = 'junk' AS junk
        FROM outlier_scores l JOIN reviews r USING (frame_id)
        WHERE l.run_id = $run_id AND l.detector = $learned AND l.score_pct IS NOT NULL
          AND r.verdict IN ('junk', 'keep')""",
        {"run_id": run_id, "learned": LEARNED},
    )
    if got.empty or got["junk"].all() or not got["junk"].any():
        return None
    return meeting_rank(got["pct"].to_numpy(float), got["junk"].to_numpy(bool))


def meeting_rank(ranks: np.ndarray, junk: np.ndarray) -> float:
    """The rank where reviewed junk and keep meet: of the reviews' own ranks, the lowest `t`
    with the largest share of the junk at or above it plus share of the kept below it (the
    best-balanced cut between the verdicts). Needs both verdicts."""
    ranks, junk = np.asarray(ranks, dtype=float), np.asarray(junk, dtype=bool)
    cuts = np.unique(ranks)
    high = np.sort(ranks[junk])
    low = np.sort(ranks[~junk])
    junk_above = 1 - np.searchsorted(high, cuts, side="left") / len(high)
    keep_below = np.searchsorted(low, cuts, side="left") / len(low)
    return float(cuts[int(np.argmax(junk_above + keep_below))])


def next_unreviewed(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    skip: tuple[int, ...] = (),
    order: str = "score",
) -> int | None:
    """The next filtered frame to review: without a verdict, not in `skip`, and by
    `review_turn` the highest-ranked, the first in hash order (the run's scored frames
    first) or the one `learned` is least sure of (`_least_sure`), or None. For a covered
    filter, the first two are looked up first among the run's stored lists (the detector's
    top frames, or its sample: the first frames in hash order)."""
    turn, meet = _turn(con, order, flt.run_id)
    skip_ids = [int(i) for i in skip]
    if turn == "doubt":
        return _least_sure(con, flt, skip_ids, meet)
    if aggregates.covers(con, flt):
        if turn == "top":
            source, params = _listed(flt, "run_top", flt.detector)
            ranked = "t.rank"
        else:
            source, params = _listed(flt, "run_samples")
            ranked = "hash(t.frame_id), t.frame_id"
        params["skip"] = skip_ids
        df = _query(
            con,
            f"""
            SELECT t.frame_id {source}
            AND t.frame_id NOT IN (SELECT frame_id FROM reviews)
            AND NOT list_contains($skip, t.frame_id)
            ORDER BY {ranked} LIMIT 1""",
            params,
        )
        if len(df):
            return int(df["frame_id"].iloc[0])
        if turn == "top":
            listed = int(_query(con, f"SELECT count(*) AS n {source}", params)["n"].iloc[0])
            if listed >= _cell_count(con, flt):  # the list holds every filtered frame
                return None
    sql, params = _filtered(flt, need=("score", "review"))
    params["skip"] = skip_ids
    ranked = GALLERY_ORDERS["score"] if turn == "top" else "score IS NULL, hash(frame_id), frame_id"
    df = _query(
        con,
        sql
        + f"""
        SELECT frame_id FROM sel
        WHERE verdict IS NULL AND NOT list_contains($skip, frame_id)
        ORDER BY {ranked} LIMIT 1""",
        params,
    )
    return None if df.empty else int(df["frame_id"].iloc[0])


def _least_sure(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, skip: list[int], meet: float
) -> int | None:
    """The filtered frame without a verdict, not in `skip`, whose `learned` rank is nearest
    `meet` (the run's `doubt_rank`; ties in hash order), or None: a scan of the run's
    `learned` scores."""
    sql, params = _filtered(flt, need=("review",))
    params.update(skip=skip, learned=LEARNED, meet=meet)
    df = _query(
        con,
        sql
        + """
        SELECT sel.frame_id FROM sel
        JOIN outlier_scores l
          ON l.frame_id = sel.frame_id AND l.run_id = $run_id AND l.detector = $learned
        WHERE sel.verdict IS NULL AND NOT list_contains($skip, sel.frame_id)
          AND l.score_pct IS NOT NULL
        ORDER BY abs(l.score_pct - $meet), hash(sel.frame_id), sel.frame_id LIMIT 1""",
        params,
    )
    return None if df.empty else int(df["frame_id"].iloc[0])


def next_unreviewed_row(
    con: duckdb.DuckDBPyConnection,
    flt: FrameFilter,
    skip: tuple[int, ...] = (),
    order: str = "score",
) -> pd.DataFrame:
    """`next_unreviewed` as a one-row gallery page (with its weather and `thumb`), or an empty
    frame when every filtered frame has a verdict."""
    fid = next_unreviewed(con, flt, skip, order)
    if fid is None:
        return pd.DataFrame(columns=["frame_id"])
    # the frame is one the filter keeps, and its row does not depend on the filter: read it by
    # its id alone (the filter again would count the filtered frames, a scan under a
    # selection of frames)
    just = FrameFilter(
        run_id=flt.run_id, detector=flt.detector, frame_ids=(fid,), junk_causes=flt.junk_causes
    )
    page, _ = frames_page(con, just, 0, 1, "score", thumbs=True)
    return page


# --- incidents and the archive mosaic ---------------------------------------------------------

# The stored columns, then the frames' verdicts now.
INCIDENT_COLUMNS = [*aggregates.INCIDENT_COLUMNS, "n_junk", "n_keep"]


def incidents(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> pd.DataFrame:
    """The run's incidents that hold at least one frame the filter keeps, in time order, with
    their frames' verdicts now (`n_junk`, `n_keep`). `frame_id` is the representative frame
    (the peak's). For a covered filter, the frames' time, daylight and cluster stored with
    the incident decide; otherwise the filtered frames."""
    sql, params = _incident_rows(con, flt)
    return _query(con, sql + "SELECT * FROM listed ORDER BY started_at, incident_id", params)


def incident_list(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, limit: int = 1000, include: int | None = None
) -> dict[str, Any]:
    """What the Incidents page lists: `rows`, the `limit` longest incidents of `incidents`
    (most frames, then highest peak) and incident `include` when the filter keeps it, in
    time order; over all of them: `n`, `n_frames`, `longest` (frames) and `n_marked`
    (incidents every frame of which has a verdict); and `include_known`: whether the run has
    an incident `include` at all (so a page can tell a filtered-out one from a wrong id)."""
    if aggregates.covers(con, flt) and aggregates.incident_groups(con, flt.run_id):
        df = _incident_list_grouped(con, flt, limit, include)
    else:
        df = _incident_list_scan(con, flt, limit, include)
    totals = df.iloc[0] if len(df) else pd.Series(dtype=float)
    out = {
        key: int(totals.get(f"all_{key}", 0) or 0) if len(df) else 0
        for key in ("n", "frames", "longest", "marked")
    }
    rows = df.drop(columns=[c for c in df.columns if c.startswith("all_")])
    known = include is not None and (
        bool((rows["incident_id"] == include).any())
        or bool(
            _query(
                con,
                *with_causes(
                    "SELECT count(*) AS n FROM incidents "
                    "WHERE run_id = $run_id AND incident_id = $include",
                    {"run_id": flt.run_id, "include": int(include)},
                    flt.run_id,
                    flt.junk_causes,
                ),
            )["n"].iloc[0]
        )
    )
    return {
        "rows": rows,
        "n": out["n"],
        "n_frames": out["frames"],
        "longest": out["longest"],
        "n_marked": out["marked"],
        "include_known": known,
    }


_INCIDENT_SHOWN = """i.incident_id, i.started_at, i.ended_at, i.duration_s, i.n_frames,
                   i.n_flagged, i.cause, i.cause_share, i.peak_score, i.peak_pct, i.frame_id"""


def _incident_list_grouped(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, limit: int, include: int | None
) -> pd.DataFrame:
    """`incident_list`'s rows and totals for a covered filter from the run's incident groups
    (migration 9): the groups with a cell the filter keeps give the counts, and the rows shown
    are the first `limit` of `incident_ranks` (stored in the page's order) those groups hold,
    read from the first `4 * limit` ranks when they hold enough (else from all of them): the
    page reads about as much at any archive size. The verdicts are joined live."""
    where, params = aggregates.cell_filter(flt, "g")
    params.update(run_id=flt.run_id, limit=int(limit), include=include)
    # without dates, the groups of cells summed over every period (fewer, and as many at any
    # archive length)
    params["dated"] = flt.date_from is not None or flt.date_to is not None
    group = "group_id" if params["dated"] else "hour_group_id"
    for upto in (4 * int(limit), None):
        params["upto"] = upto
        ranks = "" if upto is None else "AND i.rank <= $upto"  # a constant: zone maps prune
        df = _query(
            con,
            f"""
            WITH hit AS MATERIALIZED (
                SELECT DISTINCT g.group_id FROM incident_group_cells g
                WHERE g.run_id = $run_id AND g.dated = $dated AND {where})
            , totals AS (
                SELECT sum(n_incidents) AS all_n, sum(n_frames) AS all_frames,
                       max(longest) AS all_longest
                FROM incident_groups SEMI JOIN hit USING (group_id)
                WHERE run_id = $run_id AND dated = $dated)
            , {_INCIDENT_VERDICTS}
            , marked AS (
                SELECT count(*) AS all_marked
                FROM verdicts v JOIN incident_ranks i ON i.run_id = $run_id
                     AND i.incident_id = v.incident_id
                SEMI JOIN hit ON hit.group_id = i.{group}
                WHERE v.n_junk + v.n_keep >= i.n_frames)
            , top AS MATERIALIZED (
                SELECT {_INCIDENT_SHOWN} FROM incident_ranks i
                SEMI JOIN hit ON hit.group_id = i.{group}
                WHERE i.run_id = $run_id {ranks}
                ORDER BY i.rank LIMIT $limit)
            , shown AS (
                SELECT * FROM top
                UNION
                SELECT {_INCIDENT_SHOWN} FROM incident_ranks i
                SEMI JOIN hit ON hit.group_id = i.{group}
                WHERE i.run_id = $run_id AND i.incident_id IS NOT DISTINCT FROM $include)
            SELECT shown.*, coalesce(v.n_junk, 0) AS n_junk,
                   coalesce(v.n_keep, 0) AS n_keep, totals.*, marked.*,
                   (SELECT count(*) FROM top) AS ranked
            FROM shown LEFT JOIN verdicts v USING (incident_id), totals, marked
            ORDER BY shown.started_at, shown.incident_id""",
            params,
        )
        # no row: no kept incident among the first ranks (and the totals with them), maybe
        # further on
        if upto is None or (
            len(df) and int(df["ranked"].iloc[0]) >= min(limit, int(df["all_n"].iloc[0]))
        ):
            break  # the first `upto` ranks held `limit` kept incidents (or every kept one)
    return df.drop(columns=["ranked"])


def _incident_list_scan(
    con: duckdb.DuckDBPyConnection, flt: FrameFilter, limit: int, include: int | None
) -> pd.DataFrame:
    """`incident_list`'s rows and totals from the incident frames the filter keeps."""
    # The counts read the few columns they need of the incidents hit, the verdicts only the
    # reviewed frames' incidents, and the rows shown (a top-N, not a sort of every incident)
    # are joined with their verdicts after they are chosen.
    sql, params = _incident_hits(con, flt)
    params.update(limit=int(limit), include=include)
    return _query(
        con,
        sql
        + f"""
        , inc AS MATERIALIZED (
            SELECT i.incident_id, i.started_at, i.ended_at, i.duration_s, i.n_frames,
                   i.n_flagged, i.cause, i.cause_share, i.peak_score, i.peak_pct, i.frame_id
            FROM incidents i SEMI JOIN hit USING (incident_id)
            WHERE i.run_id = $run_id)
        , {_INCIDENT_VERDICTS}
        , totals AS (
            SELECT count(*) AS all_n, sum(n_frames) AS all_frames,
                   max(n_frames) AS all_longest FROM inc)
        , marked AS (
            SELECT count(*) AS all_marked FROM inc JOIN verdicts v USING (incident_id)
            WHERE v.n_junk + v.n_keep >= inc.n_frames)
        , shown AS (
            (SELECT * FROM inc ORDER BY n_frames DESC, peak_score DESC, incident_id
             LIMIT $limit)
            UNION
            SELECT * FROM inc WHERE incident_id IS NOT DISTINCT FROM $include)
        SELECT shown.*, coalesce(v.n_junk, 0) AS n_junk, coalesce(v.n_keep, 0) AS n_keep,
               totals.*, marked.*
        FROM shown LEFT JOIN verdicts v USING (incident_id), totals, marked
        ORDER BY shown.started_at, shown.incident_id""",
        params,
    )


# Each incident's frames' verdicts now (`n_junk`, `n_keep`): the reviewed frames only.
_INCIDENT_VERDICTS = """verdicts AS (
            SELECT m.incident_id, count(*) FILTER (WHERE r.verdict = 'junk') AS n_junk,
                   count(*) FILTER (WHERE r.verdict = 'keep') AS n_keep
            FROM incident_frames m JOIN reviews r ON r.frame_id = m.frame_id
            WHERE m.run_id = $run_id GROUP BY m.incident_id)"""


def _incident_hits(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> tuple[str, dict[str, Any]]:
    """`WITH ... hit AS (...)`: the ids of the run's incidents with a frame the filter keeps
    (from the frames stored with the incidents for a covered filter)."""
    if aggregates.covers(con, flt):
        where, params = aggregates.cell_filter(flt, "m", timed=True)
        sql = f"""WITH hit AS (SELECT DISTINCT m.incident_id FROM incident_frames m
                               WHERE m.run_id = $run_id AND {where})"""
    else:
        sql, params = _filtered(flt, need=())
        sql += """, hit AS (SELECT DISTINCT m.incident_id FROM incident_frames m
                            SEMI JOIN sel ON sel.frame_id = m.frame_id
                            WHERE m.run_id = $run_id)"""
    params["run_id"] = flt.run_id
    return sql, params


def _incident_rows(con: duckdb.DuckDBPyConnection, flt: FrameFilter) -> tuple[str, dict[str, Any]]:
    """`WITH ... listed AS (...)`: the run's incidents with a frame the filter keeps, with
    their verdicts now."""
    sql, params = _incident_hits(con, flt)
    return (
        sql
        + f"""
        , {_INCIDENT_VERDICTS}
        , listed AS (
            SELECT i.incident_id, i.started_at, i.ended_at, i.duration_s, i.n_frames,
                   i.n_flagged, i.cause, i.cause_share, i.peak_score, i.peak_pct, i.frame_id,
                   coalesce(v.n_junk, 0) AS n_junk, coalesce(v.n_keep, 0) AS n_keep
            FROM incidents i SEMI JOIN hit USING (incident_id)
            LEFT JOIN verdicts v USING (incident_id)
            WHERE i.run_id = $run_id)
""",
        params,
    )


def incident_frame_ids(
    con: duckdb.DuckDBPyConnection, run_id: int | None, incident_id: int
) -> list[int]:
    """Every frame of one incident, in time order (what marking it marks)."""
    df = _query(
        con,
        """
        SELECT frame_id FROM incident_frames
        WHERE run_id = $run_id AND incident_id = $incident_id
        ORDER BY taken_at, frame_id""",
        {"run_id": run_id, "incident_id": int(incident_id)},
    )
    return [int(i) for i in df["frame_id"]]


def incident_strip(
    con: duckdb.DuckDBPyConnection,
    run_id: int | None,
    incident_id: int,
    n: int = 12,
    detector: str = "consensus",
    junk_causes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """What the incident view draws, on one connection: `ids` (every frame of the incident,
    in time order), `rows` (up to `n` of them spread evenly over it, first and last included,
    as a gallery page in time order with `thumb`) and `flagged` (the ids the consensus
    flagged). With `junk_causes`, an incident of the consensus of those causes
    (`FrameFilter.junk_causes`)."""
    sql, params = with_causes(
        """
        SELECT frame_id, is_flagged FROM incident_frames
        WHERE run_id = $run_id AND incident_id = $incident_id
        ORDER BY taken_at, frame_id""",
        {"run_id": run_id, "incident_id": int(incident_id)},
        run_id,
        junk_causes,
    )
    df = _query(con, sql, params)
    ids = [int(i) for i in df["frame_id"]]
    if len(ids) > n:
        picks = sorted({round(i * (len(ids) - 1) / (n - 1)) for i in range(n)})
    else:
        picks = list(range(len(ids)))
    chosen = tuple(ids[i] for i in picks)
    rows = pd.DataFrame(columns=["frame_id"])
    carded = FrameFilter(run_id=run_id, detector=detector, junk_causes=tuple(junk_causes))
    if chosen and aggregates.cards(con, carded):
        # the incident's stored frames hold their cards (the run's own causes only): the
        # detector's scores and the verdicts are joined
        rows = _with_thumbs(
            con,
            _query(
                con,
                f"""
                SELECT t.frame_id, {_CARD_COLUMNS_SCORED}, pr.verdict
                FROM incident_frames t
                LEFT JOIN outlier_scores ps ON ps.run_id = $run_id
                     AND ps.detector = $detector AND ps.frame_id = t.frame_id
                LEFT JOIN reviews pr ON pr.frame_id = t.frame_id
                WHERE t.run_id = $run_id AND t.incident_id = $incident_id
                  AND list_contains($chosen, t.frame_id)
                ORDER BY t.taken_at, t.frame_id""",
                {
                    "run_id": run_id,
                    "incident_id": int(incident_id),
                    "detector": detector,
                    "chosen": list(chosen),
                },
            ),
        )
    elif chosen:
        rows, _ = frames_page(
            con,
            FrameFilter(
                run_id=run_id, detector=detector, frame_ids=chosen, junk_causes=junk_causes
            ),
            0,
            len(chosen),
            "time",
            thumbs=True,
        )
    flagged = [int(i) for i, f in zip(df["frame_id"], df["is_flagged"]) if f]
    return {"ids": ids, "rows": rows, "flagged": flagged}


def mosaic(
    con: duckdb.DuckDBPyConnection, run_id: int | None, junk_causes: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The run's archive mosaic (`store.aggregates.Mosaic`): `png`, `days` (each row's first
    day), `cell_width`, `cell_height` and `outlined` (cells row * 24 + hour at least half of
    whose frames are in incidents; with `junk_causes`, the incidents of the consensus of those
    causes, `FrameFilter.junk_causes`). None when the run has no mosaic."""
    row = fetch_one(
        con,
        "SELECT mosaic_png, mosaic_days, mosaic_cell_width, mosaic_cell_height, "
        "mosaic_outlined FROM run_aggregates "
        "WHERE run_id = ? AND mosaic_png IS NOT NULL",
        [run_id],
    )
    if row is None:
        return None
    return {
        "png": bytes(row[0]),
        "days": list(row[1]),
        "cell_width": int(row[2]),
        "cell_height": int(row[3]),
        "outlined": (
            causes.outlined(con, run_id, list(row[1]), tuple(junk_causes))
            if junk_causes
            else [int(c) for c in row[4] or []]
        ),
    }


# --- runs and errors --------------------------------------------------------------------------


def ingest_errors(con: duckdb.DuckDBPyConnection, limit: int = 5000) -> pd.DataFrame:
    """Files that could not be used, newest first."""
    return _query(
        con,
        """
        SELECT occurred_at, stage, path, message, root, file_bytes FROM ingest_errors
        ORDER BY occurred_at DESC, path LIMIT $limit""",
        {"limit": int(limit)},
    )


def store_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row counts of the main tables (for the Runs page)."""
    tables = (
        "frames",
        "thumbnails",
        "embeddings",
        "analysis_runs",
        "outlier_scores",
        "clusters",
        "neighbors",
        "weather",
        "reviews",
        "ground_truth",
        "ingest_errors",
    )
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables)
    return {t: int(n) for t, n in con.execute(sql).fetchall()}
