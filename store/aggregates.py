"""Per-run aggregates and incidents: written by `analyze` in the run's transaction, and the one
rule for when the dashboard's readers may read them instead of scanning every frame.

What `write` stores for a run (tables of migration 3; the condition, migration 6):
- `run_frame_cells`: frames per camera-clock period x hour of day x daylight x cluster x
  weather condition (all frames of the store, cluster NULL for those not in the run; the
  condition of the frame's joined observation, the `frame_weather` join's, 'unknown' without
  one), with the first and last time in each cell. The period (the cells' grain, `period_unit`) is a day, or a week or a month when
  the frames span more than `MAX_PERIODS` days (weeks): the cells stay a few thousand rows
  whatever the archive's length, and so does every page that reads them;
- `run_detector_cells`: per detector the same cells over the run's rows: rows, flagged, the
  counts and sums the means need (percentile, score) and the highest score;
- `run_samples`: a fixed pseudo-random sample of the run's frames, those with the
  `SAMPLE_FRAMES` smallest hash(frame_id), with their map coordinates, and
  `run_sample_scores`: every detector's scores of them; `run_condition_samples` and
  `run_condition_sample_scores` (migration 8): each weather condition's `CONDITION_SAMPLE`
  frames with the smallest hash(frame_id) that the sample lacks, so a filter on one condition
  finds its first frames in hash order in the two together however rare the condition;
- `run_top`: each detector's `TOP_FRAMES` highest-scoring frames, in rank order;
- `incidents` and `incident_frames` (found by `pipeline.incidents`; each frame's time, daylight,
  cluster and condition are copied in, so a filter on them needs no join with `frames`); the
  sampled and top frames carry them too, and all three the rest of a gallery card (migration 7:
  the path, the temperature and precipitation of the frame's observation, `has_cards`), so a
  page of cards needs no join with `frames` or the weather either (`cards`; `move_cards` keeps
  the paths when files move);
- `run_frame_hours` and `run_detector_hours` (migration 9): the cells summed over every
  period, a few thousand rows at any archive length, which the readers that need no period
  read for a filter without dates (`hour_cells`, `store.facts._cells`);
- `incident_groups`, `incident_group_cells` and `incident_ranks` (migration 9): the incidents
  grouped by the set of cells their frames fall in (a filter keeps a group's incidents when it
  keeps one of its cells), and in the Incidents page's order, so the page counts the incidents
  a filter keeps from the groups and reads only the first ranks for its rows
  (`incident_groups`, `store.facts.incident_list`);
- `run_aggregates`: one row saying which frames they describe, and the archive mosaic (found by
  `pipeline.mosaic`).

**The rule** (`covers`): a reader answers from the aggregates when (1) its run has them, (2)
they still describe the store: no frame was added or removed since (frame count and highest
frame id as when they were written), `score-new` added no frame to the run (its frame count),
and no frame's time, daylight or pixels changed (`mark_stale`, called by the frame writers), and
(3) the filter restricts only what the cells are keyed by: dates (whole periods: any dates when
the grain is a day, Monday to Sunday for weeks, whole months for months), hours, daylight,
clusters and weather conditions; a condition only when the aggregates were written with it
(`has_conditions`) and no observation or weather-join setting changed since
(`mark_weather_stale`, called by the weather writers: observations, the join's settings). A score threshold, a
selection of frames, dates inside a period or junk causes other than the run's (the consensus
recombined, `store.causes`: the cells and lists hold the run's own; the dashboard reads
aggregates written for the chosen consensus instead, `store.causes.shadow`) are answered by the
filtered queries over every frame, as is every run without aggregates (made before them, or stale). Incidents and the mosaic are facts of the analysis and are shown
whatever (2) says. Reviews change all the time and are never aggregated: readers join them live.
The cards (`cards`) are read when the aggregates cover the filter and their weather is still the
frames' (`weather_stale` unset): they show the temperature, not only the condition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from store.db import execute as _run
from store.db import fetch_one, log_failed

if TYPE_CHECKING:
    from store.facts import FrameFilter

SAMPLE_FRAMES = 50_000  # frames in a run's sample for the scatter plots
CONDITION_SAMPLE = 50_000  # and at least this many of each weather condition (or all of them)
TOP_FRAMES = 2_000  # highest-scoring frames kept per detector (the gallery's first pages)
MAX_PERIODS = 400  # periods (days, else weeks, else months) the cells cut the frames into
PERIOD_UNITS = ("day", "week", "month")

# Tables with rows per run (deleted with the run, see `store.analysis.RUN_TABLES`).
TABLES = (
    "run_frame_cells",
    "run_detector_cells",
    "run_frame_hours",
    "run_detector_hours",
    "run_samples",
    "run_sample_scores",
    "run_condition_samples",
    "run_condition_sample_scores",
    "run_top",
    "incident_frames",
    "incidents",
    "incident_groups",
    "incident_group_cells",
    "incident_ranks",
    "run_aggregates",
)


@dataclass
class Mosaic:
    """The archive mosaic of a run (`pipeline.mosaic` makes it): an RGBA PNG with a row of 24
    hour cells per day (`days`: each row's first day), each `cell_width` x `cell_height`
    pixels, the cells to outline (`outlined`: row * 24 + hour; at least half of their frames
    in incidents), and how it was made (frames used, frames decoded for it alone, seconds)."""

    png: bytes
    days: list[date]
    cell_width: int
    cell_height: int
    outlined: list[int] = field(default_factory=list)  # cells row * 24 + hour to outline
    n_frames: int = 0
    n_decoded: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


# The `incidents` table's columns but run_id: what `pipeline.incidents` hands `write` (migration 3).
INCIDENT_COLUMNS = (
    "incident_id",
    "started_at",
    "ended_at",
    "duration_s",
    "n_frames",
    "n_flagged",
    "cause",
    "cause_share",
    "peak_score",
    "peak_pct",
    "frame_id",
)


_CONDITIONS = "_write_conditions"  # the temporary table of each frame's condition


def write(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    *,
    incidents: pd.DataFrame | None = None,
    incident_frames: pd.DataFrame | None = None,
    mosaic: Mosaic | None = None,
    sample_frames: int = SAMPLE_FRAMES,
    top_frames: int = TOP_FRAMES,
    condition_sample: int = CONDITION_SAMPLE,
    refresh_weather: bool = True,
) -> None:
    """Write a run's aggregates from its rows already in the store (clusters, outlier_scores)
    and `frames`, plus its incidents and mosaic; inside the caller's transaction.

    `incidents`: rows with the `incidents` columns but run_id; `incident_frames`: incident_id,
    frame_id, is_flagged. `refresh_weather=False` reads `frame_weather` as it is instead of
    making it the live join's again (a build over a store attached read-only)."""
    from store.weather import refresh_join  # store.weather marks aggregates stale

    for table in TABLES:
        _run(con, f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    # Each frame's joined observation made the live join's again (a store written around the
    # store's writers, e.g. by SQL, is right again after an analysis), then read once for
    # every table below.
    if refresh_weather:
        refresh_join(con)
    _sql(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE {_CONDITIONS} AS
        SELECT f.frame_id, coalesce(fw.condition, 'unknown') AS condition, f.path,
               fw.temperature_c, fw.precipitation_mm
        FROM frames f LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id""",
        {},
    )
    try:
        _write(
            con,
            int(run_id),
            incidents,
            incident_frames,
            mosaic,
            sample_frames,
            top_frames,
            condition_sample,
        )
    finally:
        _run(con, f"DROP TABLE IF EXISTS {_CONDITIONS}")


def _write(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    incidents: pd.DataFrame | None,
    incident_frames: pd.DataFrame | None,
    mosaic: Mosaic | None,
    sample_frames: int,
    top_frames: int,
    condition_sample: int,
) -> None:
    params = {"run": run_id}
    span = fetch_one(con, "SELECT min(taken_at)::DATE, max(taken_at)::DATE FROM frames")
    grain = period_unit(*span) if span else "day"
    period = period_start(grain, "f.taken_at")
    _sql(
        con,
        f"""
        INSERT INTO run_frame_cells (run_id, period, hour, daylight, cluster, condition,
                                     n_frames, first_at, last_at)
        SELECT $run, {period}, hour(f.taken_at), f.daylight, c.cluster, w.condition,
               count(*), min(f.taken_at), max(f.taken_at)
        FROM frames f LEFT JOIN clusters c ON c.run_id = $run AND c.frame_id = f.frame_id
        JOIN {_CONDITIONS} w ON w.frame_id = f.frame_id
        GROUP BY ALL ORDER BY 2, 3""",
        params,
    )
    _sql(
        con,
        f"""
        INSERT INTO run_detector_cells (run_id, detector, period, hour, daylight, cluster,
                                        condition, n_rows, n_flagged, n_pct, sum_pct,
                                        sum_score, max_score)
        SELECT $run, s.detector, {period}, hour(f.taken_at), f.daylight, c.cluster,
               w.condition, count(*), count(*) FILTER (WHERE s.is_outlier),
               count(s.score_pct), sum(s.score_pct), sum(s.score), max(s.score)
        FROM outlier_scores s JOIN frames f ON f.frame_id = s.frame_id
        LEFT JOIN clusters c ON c.run_id = $run AND c.frame_id = s.frame_id
        JOIN {_CONDITIONS} w ON w.frame_id = s.frame_id
        WHERE s.run_id = $run
        GROUP BY ALL ORDER BY 2, 3, 4""",
        params,
    )
    # the same cells summed over every period (migration 9): the readers that need no period
    # read these when the filter has no dates
    _sql(
        con,
        """
        INSERT INTO run_frame_hours (run_id, hour, daylight, cluster, condition, n_frames,
                                     first_at, last_at)
        SELECT run_id, hour, daylight, cluster, condition, sum(n_frames), min(first_at),
               max(last_at)
        FROM run_frame_cells WHERE run_id = $run GROUP BY ALL ORDER BY 2, 3""",
        params,
    )
    _sql(
        con,
        """
        INSERT INTO run_detector_hours (run_id, detector, hour, daylight, cluster, condition,
                                        n_rows, n_flagged, n_pct, sum_pct, sum_score,
                                        max_score)
        SELECT run_id, detector, hour, daylight, cluster, condition, sum(n_rows),
               sum(n_flagged), sum(n_pct), sum(sum_pct), sum(sum_score), max(max_score)
        FROM run_detector_cells WHERE run_id = $run GROUP BY ALL ORDER BY 2, 3, 4""",
        params,
    )
    _sql(
        con,
        f"""
        INSERT INTO run_samples (run_id, frame_id, taken_at, daylight, cluster, map_x, map_y,
                                 condition, path, temperature_c, precipitation_mm)
        SELECT $run, c.frame_id, f.taken_at, f.daylight, c.cluster, c.map_x, c.map_y,
               w.condition, w.path, w.temperature_c, w.precipitation_mm
        FROM clusters c JOIN frames f ON f.frame_id = c.frame_id
        JOIN {_CONDITIONS} w ON w.frame_id = c.frame_id
        WHERE c.run_id = $run
        ORDER BY hash(c.frame_id), c.frame_id LIMIT $n""",
        {**params, "n": int(sample_frames)},
    )
    _copy_scores(con, "run_sample_scores", "run_samples", params)
    # Each weather condition's own first frames (migration 8): its `condition_sample` frames
    # with the smallest hash(frame_id) that the sample lacks, and their scores. A condition's
    # frames in the sample and these are both its first frames in hash order, so together they
    # are too: a filter on one condition reads its frames from them even where the condition
    # is rare (a fifth of the frames rainy: 10,000 of the sample's 50,000, fewer than the
    # map's 20,000 points).
    _sql(
        con,
        f"""
        INSERT INTO run_condition_samples (run_id, frame_id, taken_at, daylight, cluster,
                                           map_x, map_y, condition, path, temperature_c,
                                           precipitation_mm)
        SELECT $run, k.frame_id, f.taken_at, f.daylight, k.cluster, k.map_x, k.map_y,
               k.condition, k.path, k.temperature_c, k.precipitation_mm
        FROM (SELECT c.frame_id, c.cluster, c.map_x, c.map_y, w.condition, w.path,
                     w.temperature_c, w.precipitation_mm
              FROM clusters c JOIN {_CONDITIONS} w ON w.frame_id = c.frame_id
              WHERE c.run_id = $run
              QUALIFY row_number() OVER (PARTITION BY w.condition
                                         ORDER BY hash(c.frame_id), c.frame_id) <= $k) k
        JOIN frames f ON f.frame_id = k.frame_id
        ANTI JOIN (SELECT frame_id FROM run_samples WHERE run_id = $run) u
             ON u.frame_id = k.frame_id
        ORDER BY k.condition, hash(k.frame_id), k.frame_id""",
        {**params, "k": int(condition_sample)},
    )
    _copy_scores(con, "run_condition_sample_scores", "run_condition_samples", params)
    detectors = [
        r[0]
        for r in _run(
            con,
            "SELECT DISTINCT detector FROM outlier_scores WHERE run_id = ? ORDER BY 1",
            [run_id],
        ).fetchall()
    ]
    for detector in detectors:  # a top-N per detector (a window over every row would sort)
        _sql(
            con,
            f"""
            INSERT INTO run_top (run_id, detector, rank, frame_id, score, score_pct,
                                 is_outlier, taken_at, daylight, cluster, condition, path,
                                 temperature_c, precipitation_mm)
            SELECT $run, $detector, row_number() OVER (ORDER BY t.score DESC NULLS LAST,
                                                       t.frame_id),
                   t.frame_id, t.score, t.score_pct, t.is_outlier, f.taken_at, f.daylight,
                   c.cluster, w.condition, w.path, w.temperature_c, w.precipitation_mm
            FROM (SELECT frame_id, score, score_pct, is_outlier FROM outlier_scores
                  WHERE run_id = $run AND detector = $detector
                  ORDER BY score DESC NULLS LAST, frame_id LIMIT $n) t
            JOIN frames f ON f.frame_id = t.frame_id
            JOIN {_CONDITIONS} w ON w.frame_id = t.frame_id
            LEFT JOIN clusters c ON c.run_id = $run AND c.frame_id = t.frame_id""",
            {**params, "detector": detector, "n": int(top_frames)},
        )
    if incidents is not None and len(incidents):
        _insert(
            con,
            "incidents",
            incidents.assign(run_id=run_id),
            """
            INSERT INTO incidents (run_id, incident_id, started_at, ended_at, duration_s,
                                   n_frames, n_flagged, cause, cause_share, peak_score,
                                   peak_pct, frame_id)
            SELECT run_id, incident_id, started_at, ended_at, duration_s, n_frames, n_flagged,
                   cause, cause_share, peak_score, peak_pct, frame_id FROM _new_incidents""",
        )
    if incident_frames is not None and len(incident_frames):
        _insert(
            con,
            "incidents",
            incident_frames.assign(run_id=run_id),
            f"""
            INSERT INTO incident_frames (run_id, frame_id, incident_id, is_flagged, taken_at,
                                         daylight, cluster, condition, path, temperature_c,
                                         precipitation_mm)
            SELECT m.run_id, m.frame_id, m.incident_id, m.is_flagged, f.taken_at, f.daylight,
                   c.cluster, w.condition, w.path, w.temperature_c, w.precipitation_mm
            FROM _new_incidents m JOIN frames f ON f.frame_id = m.frame_id
            JOIN {_CONDITIONS} w ON w.frame_id = m.frame_id
            LEFT JOIN clusters c ON c.run_id = m.run_id AND c.frame_id = m.frame_id""",
        )
    _write_incident_groups(con, run_id, period.replace("f.taken_at", "m.taken_at"))
    row: dict[str, Any] = {
        "png": None,
        "days": None,
        "cw": None,
        "ch": None,
        "outlined": None,
        "info": None,
    }
    if mosaic is not None:
        row = {
            "png": mosaic.png,
            "days": list(mosaic.days),
            "cw": int(mosaic.cell_width),
            "ch": int(mosaic.cell_height),
            "outlined": [int(c) for c in mosaic.outlined],
            "info": json.dumps(
                {
                    "n_frames": mosaic.n_frames,
                    "n_decoded": mosaic.n_decoded,
                    "seconds": mosaic.seconds,
                }
            ),
        }
    _sql(
        con,
        """
        INSERT INTO run_aggregates (run_id, store_frames, store_max_frame_id, run_frames,
                                    cell_grain, first_day, last_day, n_sample, n_top,
                                    mosaic_png, mosaic_days, mosaic_outlined, mosaic_cell_width,
                                    mosaic_cell_height, mosaic_info, has_conditions,
                                    has_cards, has_incident_groups, has_hour_cells)
        SELECT $run, (SELECT count(*) FROM frames), (SELECT max(frame_id) FROM frames),
               (SELECT count(*) FROM clusters WHERE run_id = $run), $grain, $first, $last,
               (SELECT count(*) FROM run_samples WHERE run_id = $run), $top,
               $png, CAST($days AS DATE[]), CAST($outlined AS INTEGER[]), $cw, $ch,
               CAST($info AS JSON), TRUE, TRUE, TRUE, TRUE""",
        {
            **params,
            **row,
            "grain": grain,
            "first": span[0] if span else None,
            "last": span[1] if span else None,
            "top": int(top_frames),
        },
    )


def _write_incident_groups(con: duckdb.DuckDBPyConnection, run_id: int, period: str) -> None:
    """The run's incidents grouped by the set of cells (`period`: SQL of a frame's period, over
    `incident_frames m`) their frames fall in, each group's cells, and the incidents in the
    Incidents page's order with their groups (`incident_groups`, `incident_group_cells`,
    `incident_ranks`, migration 9; `store.facts.incident_list` reads them). Twice: cells by
    period (`dated`) and cells summed over every period (period NULL)."""
    params = {"run": run_id}
    try:
        for dated, name, day in ((True, "group_id", period), (False, "hour_group_id", "NULL")):
            _sql(
                con,
                f"""
                CREATE OR REPLACE TEMP TABLE _incident_cells AS
                SELECT DISTINCT m.incident_id, CAST({day} AS DATE) AS period,
                       hour(m.taken_at) AS hour, m.daylight, m.cluster, m.condition
                FROM incident_frames m WHERE m.run_id = $run""",
                params,
            )
            _sql(
                con,
                f"""
                CREATE OR REPLACE TEMP TABLE _incident_{name} AS
                WITH sig AS (
                    SELECT incident_id,
                           list(struct_pack(period, hour, daylight, cluster, condition)
                                ORDER BY period NULLS FIRST, hour NULLS FIRST,
                                         daylight NULLS FIRST, cluster NULLS FIRST,
                                         condition NULLS FIRST) AS cells
                    FROM _incident_cells GROUP BY incident_id)
                SELECT i.incident_id, i.n_frames,
                       CAST(dense_rank() OVER (ORDER BY s.cells) AS INTEGER) AS group_id
                FROM incidents i JOIN sig s USING (incident_id)
                WHERE i.run_id = $run""",
                params,
            )
            _sql(
                con,
                f"""
                INSERT INTO incident_groups (run_id, dated, group_id, n_incidents, n_frames,
                                             longest)
                SELECT $run, $dated, group_id, count(*), sum(n_frames), max(n_frames)
                FROM _incident_{name} GROUP BY group_id ORDER BY group_id""",
                {**params, "dated": dated},
            )
            _sql(
                con,
                f"""
                INSERT INTO incident_group_cells (run_id, dated, group_id, period, hour,
                                                  daylight, cluster, condition)
                SELECT DISTINCT $run, $dated, s.group_id, c.period, c.hour, c.daylight,
                       c.cluster, c.condition
                FROM _incident_cells c JOIN (SELECT min(incident_id) AS incident_id, group_id
                                             FROM _incident_{name} GROUP BY group_id) s
                     USING (incident_id)
                ORDER BY 3, 4, 5""",
                {**params, "dated": dated},
            )
        # the page's order (`store.facts.incident_list`: most frames, then highest peak,
        # then lowest id), stored in that order so its first rows are the longest
        _sql(
            con,
            """
            INSERT INTO incident_ranks (run_id, rank, group_id, hour_group_id, incident_id,
                                        started_at, ended_at, duration_s, n_frames, n_flagged,
                                        cause, cause_share, peak_score, peak_pct, frame_id)
            SELECT $run, row_number() OVER (ORDER BY i.n_frames DESC, i.peak_score DESC,
                                            i.incident_id) AS rank,
                   d.group_id, h.group_id, i.incident_id, i.started_at, i.ended_at,
                   i.duration_s, i.n_frames, i.n_flagged, i.cause, i.cause_share,
                   i.peak_score, i.peak_pct, i.frame_id
            FROM incidents i JOIN _incident_group_id d USING (incident_id)
            JOIN _incident_hour_group_id h USING (incident_id)
            WHERE i.run_id = $run ORDER BY rank""",
            params,
        )
    finally:
        for table in ("_incident_cells", "_incident_group_id", "_incident_hour_group_id"):
            _run(con, f"DROP TABLE IF EXISTS {table}")


def _copy_scores(
    con: duckdb.DuckDBPyConnection, table: str, frames: str, params: dict[str, Any]
) -> None:
    """Every detector's scores of the run's frames listed in `frames` into `table` (names
    from this module)."""
    _sql(
        con,
        f"""
        INSERT INTO {table}
        SELECT $run, s.detector, s.frame_id, s.score, s.score_pct, s.is_outlier
        FROM outlier_scores s SEMI JOIN {frames} t ON t.run_id = $run AND t.frame_id = s.frame_id
        WHERE s.run_id = $run ORDER BY s.detector, s.frame_id""",
        params,
    )


def mark_stale(con: duckdb.DuckDBPyConnection) -> None:
    """Frames' times, daylight or pixels changed: no run's aggregates describe them any more
    (readers scan the frames until the next analysis)."""
    _run(con, "UPDATE run_aggregates SET is_stale = TRUE WHERE NOT is_stale")


def move_cards(con: duckdb.DuckDBPyConnection, moved: str) -> None:
    """Frames' files moved (`moved`: a registered table of frame_id, path): their stored
    cards show the new path."""
    for table in ("run_top", "run_samples", "incident_frames"):
        _run(
            con,
            f"UPDATE {table} SET path = m.path FROM {moved} m WHERE {table}.frame_id = m.frame_id",
        )


def mark_weather_stale(con: duckdb.DuckDBPyConnection) -> None:
    """Observations or the weather join's settings changed: the conditions stored with the
    runs' aggregates may no longer be the frames' (a weather filter scans until the next
    analysis; the other filters still read the aggregates)."""
    _run(con, "UPDATE run_aggregates SET weather_stale = TRUE WHERE NOT weather_stale")


def covers(con: duckdb.DuckDBPyConnection, flt: "FrameFilter") -> bool:
    """Whether the run's aggregates answer this filter (the rule in the module docstring)."""
    if flt.run_id is None or flt.frame_ids or flt.threshold_kind != "all" or flt.junk_causes:
        return False  # junk causes: another consensus than the run's, which the cells hold
    row = fetch_one(
        con,
        """
        SELECT NOT a.is_stale AND a.run_frames = r.n_frames
               AND a.store_frames = (SELECT count(*) FROM frames)
               AND a.store_max_frame_id IS NOT DISTINCT FROM (SELECT max(frame_id) FROM frames),
               a.cell_grain, a.has_conditions AND NOT a.weather_stale
        FROM run_aggregates a JOIN analysis_runs r USING (run_id)
        WHERE a.run_id = ?""",
        [int(flt.run_id)],
    )
    if not (row and row[0]) or (flt.conditions and not row[2]):
        return False
    return whole_periods(row[1], flt.date_from, flt.date_to)


def cards(con: duckdb.DuckDBPyConnection, flt: "FrameFilter") -> bool:
    """Whether a covered filter's cards (path, time, daylight, cluster, weather: what a gallery
    card shows but the score and verdict) may be read from the run's stored lists (`run_top`,
    `run_samples`, `incident_frames`): they carry them (`has_cards`, migration 7) and the
    weather they copied is still the frames' (no observation or weather setting changed)."""
    if not covers(con, flt):
        return False
    row = fetch_one(
        con,
        "SELECT has_cards AND NOT weather_stale FROM run_aggregates WHERE run_id = ?",
        [int(flt.run_id)],  # covers: a run with aggregates
    )
    return bool(row and row[0])


def incident_groups(con: duckdb.DuckDBPyConnection, run_id: int | None) -> bool:
    """Whether the run's aggregates hold its incidents grouped by cells and ranked
    (migration 9; runs analysed before it do not)."""
    row = fetch_one(
        con, "SELECT has_incident_groups FROM run_aggregates WHERE run_id = ?", [run_id]
    )
    return bool(row and row[0])


def hour_cells(con: duckdb.DuckDBPyConnection, run_id: int | None) -> bool:
    """Whether the run's aggregates hold its cells summed over every period
    (`run_frame_hours`, `run_detector_hours`: migration 9)."""
    row = fetch_one(con, "SELECT has_hour_cells FROM run_aggregates WHERE run_id = ?", [run_id])
    return bool(row and row[0])


def grain(con: duckdb.DuckDBPyConnection, run_id: int | None) -> str | None:
    """The period of a run's cells ('day', 'week', 'month'), None without aggregates."""
    row = fetch_one(con, "SELECT cell_grain FROM run_aggregates WHERE run_id = ?", [run_id])
    return None if row is None else row[0]


def period_unit(first: date | None, last: date | None) -> str:
    """The finest of day, week (from Monday) and month that cuts the days first..last into at
    most `MAX_PERIODS` periods (month past that)."""
    if first is None or last is None:
        return "day"
    if (last - first).days + 1 <= MAX_PERIODS:
        return "day"
    monday = first - timedelta(days=first.weekday())
    if (last - monday).days // 7 + 1 <= MAX_PERIODS:
        return "week"
    return "month"


def period_start(unit: str, column: str) -> str:
    """SQL for the first day of the `unit` period holding `column` (a timestamp or date)."""
    if unit not in PERIOD_UNITS:
        raise ValueError(f"unknown period {unit!r}; one of {PERIOD_UNITS}")
    return (
        f"CAST({column} AS DATE)"
        if unit == "day"
        else f"CAST(date_trunc('{unit}', {column}) AS DATE)"
    )


def period_end(start: date, unit: str) -> date:
    """The last day of the `unit` period that starts on `start`."""
    if unit == "day":
        return start
    if unit == "week":
        return start + timedelta(days=6)
    following = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return following - timedelta(days=1)


def whole_periods(unit: str, first: date | None, last: date | None) -> bool:
    """Whether the dates first..last (inclusive; None = open) are whole `unit` periods."""
    starts = (
        first is None
        or unit == "day"
        or (first.weekday() == 0 if unit == "week" else first.day == 1)
    )
    ends = (
        last is None
        or unit == "day"
        or (last.weekday() == 6 if unit == "week" else (last + timedelta(days=1)).day == 1)
    )
    return starts and ends


def coarser(unit: str, than: str) -> bool:
    """Whether periods of `unit` are made of whole `than` periods (a week is not of months)."""
    return (unit, than) in {
        ("day", "day"),
        ("week", "day"),
        ("week", "week"),
        ("month", "day"),
        ("month", "month"),
    }


def cell_filter(
    flt: "FrameFilter", alias: str = "", timed: bool = False
) -> tuple[str, dict[str, Any]]:
    """The WHERE condition on cell rows (`period`, `hour`, `daylight`, `cluster`, `condition`;
    with `timed`, rows that have a `taken_at` instead of period and hour) for the parts of `flt`
    that `covers` allows: dates (whole periods for cells), hours, daylight, clusters and
    conditions. Columns are `alias.` prefixed when given."""
    a = f"{alias}." if alias else ""
    day = f"CAST({a}taken_at AS DATE)" if timed else f"{a}period"
    hour = f"hour({a}taken_at)" if timed else f"{a}hour"
    where, params = ["TRUE"], {}
    if flt.date_from is not None:
        where.append(f"{day} >= CAST($c_from AS DATE)")
        params["c_from"] = flt.date_from
    if flt.date_to is not None:
        where.append(f"{day} <= CAST($c_to AS DATE)")
        params["c_to"] = flt.date_to
    if (flt.hour_from, flt.hour_to) != (0, 23):
        params["c_hour_from"], params["c_hour_to"] = int(flt.hour_from), int(flt.hour_to)
        if flt.hour_from <= flt.hour_to:
            where.append(f"{hour} BETWEEN $c_hour_from AND $c_hour_to")
        else:
            where.append(f"({hour} >= $c_hour_from OR {hour} <= $c_hour_to)")
    if flt.daylight:
        where.append(f"list_contains($c_daylight, {a}daylight)")
        params["c_daylight"] = list(flt.daylight)
    if flt.clusters:
        where.append(f"list_contains($c_clusters, {a}cluster)")
        params["c_clusters"] = [int(c) for c in flt.clusters]
    if flt.conditions:
        where.append(f"list_contains($c_conditions, {a}condition)")
        params["c_conditions"] = list(flt.conditions)
    return " AND ".join(where), params


def _sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> None:
    try:
        con.execute(sql, params)
    except duckdb.Error as exc:
        log_failed(sql, params, exc)
        raise


def _insert(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame, sql: str) -> None:
    con.register(f"_new_{name}", frame)
    try:
        _sql(con, sql, {})
    finally:
        con.unregister(f"_new_{name}")
