"""The consensus over causes of junk a reader chooses, recombined in SQL from a run's cause scores.

`analyze` stores one score per cause of junk beside the detectors (detector `cause:<cause>`)
and a consensus that sums the causes the run counts (its params' `junk_causes`). A reader that
counts other causes (the dashboard's "Junk causes", `export --junk-causes`) gets the consensus
`pipeline.detectors.consensus.sum_causes` would have given, without a new run:

- score: the chosen causes' scores added in the order given, a cause with no opinion on a
  frame (NULL) adding 0 (NumPy's `nansum` along a row adds left to right: the same doubles);
- score_pct: the share of the run's frames scoring <= it, and for the frames tied at the
  lowest score 1 / n, as the lowest frame (`Scorer.percentile`; a run analysed before its
  params said `lowest_ties` ranks them as the top of their block, as it stored them);
- is_outlier: above the linear quantile at 1 - the run's `contamination` of the run's scores
  (`Scorer._process_decision_scores`; NumPy's interpolation step for step, so the same
  double);
- incidents: found again from those flags by `pipeline.incidents`' rule (daylight frames in
  camera-clock order; at most the run's `incident_gap_frames` unflagged frames between two
  flags; a night frame or a new day of the camera clock ends one, but a new day not on a
  camera that takes a frame a day or fewer, `DAILY_GAP_S`), each named as `pipeline.incidents.name_cause` names the
  run's own: the plain cause ("fog or haze", "camera moved", ...) with the most evidence summed
  over its flagged frames, counting the evidence of the chosen causes' detectors only (the
  run's `frame_cause_evidence`, migration 10: each daylight frame some choice of causes could
  flag, `pipeline.incidents.cause_evidence_rows`), near-ties (`CAUSE_TIE`) by the order of
  `PLAIN_CAUSES`, its share of the sum as `cause_share`. An incident none of whose flagged
  frames has evidence rows (a run analysed before migration 10, frames `score-new` added) is
  named by the chosen cause with the most score summed over them (ties: the first in the
  order given).

`with_causes` puts CTEs named `outlier_scores`, `incidents` and `incident_frames` in front of a
query: they shadow the tables for that query only, so a reader's SQL is the same whichever
consensus it reads (DuckDB plans only the CTEs a query uses). The reference is every frame of
the run (frames `score-new` added included; after a fresh `analyze`, the fit's frames), so for
the run's own causes in the run's order the result equals the stored rows. The caller decides
when to recombine (`FrameFilter.junk_causes` set: the store's readers, which then skip the
run's aggregates, see `store.aggregates.covers`); values are bound, never pasted.

**Materialised once** (`cached`, `materialise`, `shadow`): a dashboard recombines once per
(store file, its modification stamp, run, causes), in temporary tables on a cursor of the
reader's own connection (the store file is never opened a second time in the process: that
would let go of the readers' lock, see `materialise`), and also writes the run's aggregates
for that consensus with `store.aggregates.write` (the code `analyze` uses) and the mosaic's
outlines for its incidents (`outlined`, `pipeline.mosaic`'s rule). On by default
(`TIMELAPSE_CONSENSUS_CACHE=0` turns it off). The tables are kept as Arrow in the process;
`shadow` puts temporary views of the run's table names in front of the store's on one
connection (the store's rows but the run's consensus, and the materialised ones), so readers
called with the run's own causes read the chosen consensus and its aggregates (`covers`
holds). Only the run id and fixed names are written into those views' SQL.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import duckdb
import pyarrow as pa

from store import aggregates

log = logging.getLogger(__name__)

CAUSE_PREFIX = "cause:"  # a cause's score is stored as detector cause:<cause>
# What a detector's high score means, in a camera owner's words (`Detector.plain_cause`), in
# the order that breaks an incident's near-ties (why: `pipeline.detectors.base`), and how near
# counts as tied: the one naming rule of `pipeline.incidents.name_cause` and of the incidents
# recombined here.
PLAIN_CAUSES = (
    "too dark",
    "fog or haze",
    "too bright",
    "blur",
    "camera moved",
    "something in the scene",
    "unusual",
)
CAUSE_TIE = 0.15  # causes within this share of the largest evidence count as tied
# pipeline.incidents.DAILY_GAP in seconds: where the median gap between a run's frames in time
# order is this or more, a new day of the camera clock does not end an incident
DAILY_GAP_S = 12 * 3600
CONSENSUS = "consensus"
NO_CAUSE = "unusual"  # an incident's cause when the chosen causes carry no evidence


def cause_key(cause: str) -> str:
    """The detector name a cause's score is stored under (`cause:quality`, ...)."""
    return CAUSE_PREFIX + cause


def stored_causes(detectors: list[str]) -> list[str]:
    """The causes among a run's detector keys (`cause:quality` -> `quality`), in their order."""
    return [d[len(CAUSE_PREFIX) :] for d in detectors if d.startswith(CAUSE_PREFIX)]


def choose(chosen, stored: list[str], own: list[str]) -> tuple[str, ...]:
    """`FrameFilter.junk_causes` for a reader's choice of causes: the run's `stored` causes
    among `chosen` in the run's order (other names dropped), or () for the run's `own`
    consensus as stored: when they are its own, or none is left."""
    wanted = set(chosen)
    kept = tuple(c for c in stored if c in wanted)
    return () if not kept or set(kept) == set(own) else kept


def _as_number(column: str) -> str:
    return f"CASE WHEN {column} IS NULL OR isnan({column}) THEN 0.0 ELSE {column} END"


def _ctes(n_causes: int, scores: str = "main.outlier_scores") -> str:
    """The shadowing CTEs for `n_causes` causes bound as $rc_cause0.. (names) and $rc_key0..
    (detector keys), for run $rc_run; `scores`: the stored scores table (qualified; the
    evidence that names incidents is read from `frame_cause_evidence` beside it)."""
    evidence_table = scores.rsplit(".", 1)[0] + ".frame_cause_evidence"
    picks = ",\n               ".join(
        f"any_value(score) FILTER (WHERE detector = $rc_key{i}) AS c{i}" for i in range(n_causes)
    )
    total = " + ".join(_as_number(f"c{i}") for i in range(n_causes))
    evidence = ", ".join(f"sum({_as_number(f'c{i}')}) AS e{i}" for i in range(n_causes))
    best = f"greatest({', '.join(f'e{i}' for i in range(n_causes))})"
    named = " ".join(f"WHEN e{i} = {best} THEN $rc_cause{i}" for i in range(n_causes))
    summed = " + ".join(f"e{i}" for i in range(n_causes))
    return f"""
_rc_run AS (
    SELECT coalesce(TRY_CAST(params->>'contamination' AS DOUBLE), 0.05) AS contamination,
           coalesce(TRY_CAST(params->>'incident_gap_frames' AS BIGINT), 2) AS gap,
           coalesce(TRY_CAST(params->>'lowest_ties' AS BOOLEAN), FALSE) AS lowest_ties
    FROM analysis_runs WHERE run_id = $rc_run)
, _rc_causes AS (
    SELECT frame_id, {picks}
    FROM {scores}
    WHERE run_id = $rc_run AND list_contains($rc_keys, detector)
    GROUP BY frame_id)
, _rc_summed AS (SELECT *, {total} AS score FROM _rc_causes)
, _rc_sorted AS (SELECT score, row_number() OVER (ORDER BY score) - 1 AS i FROM _rc_summed)
, _rc_at AS (
    SELECT n, CAST(floor(v) AS BIGINT) AS lo, v - floor(v) AS t
    FROM (SELECT count(*) AS n,
                 CAST(count(*) - 1 AS DOUBLE) * (1 - (SELECT contamination FROM _rc_run)) AS v
          FROM _rc_summed))
, _rc_limit AS (
    SELECT CASE WHEN t < 0.5 THEN a + (b - a) * t ELSE b - (b - a) * (1 - t) END AS threshold
    FROM (SELECT any_value(q.t) AS t,
                 any_value(s.score) FILTER (WHERE s.i = q.lo) AS a,
                 any_value(s.score) FILTER (WHERE s.i = least(q.lo + 1, q.n - 1)) AS b
          FROM _rc_sorted s, _rc_at q))
, _rc_consensus AS MATERIALIZED (
    SELECT s.*,
           CASE WHEN (SELECT lowest_ties FROM _rc_run) AND s.score <= min(s.score) OVER ()
                THEN 1 / count(*) OVER ()
                ELSE count(*) OVER (ORDER BY s.score) / count(*) OVER () END AS score_pct,
           coalesce(s.score > (SELECT threshold FROM _rc_limit), FALSE) AS is_outlier
    FROM _rc_summed s)
, outlier_scores AS (
    SELECT run_id, detector, frame_id, score, score_pct, is_outlier FROM {scores}
    WHERE run_id <> $rc_run OR detector <> '{CONSENSUS}'
    UNION ALL
    SELECT $rc_run, '{CONSENSUS}', frame_id, score, score_pct, is_outlier FROM _rc_consensus)
, _rc_timed AS (
    SELECT c.*, f.taken_at, coalesce(f.daylight IN ('day', 'twilight'), FALSE) AS eligible,
           row_number() OVER w AS pos,
           CAST(f.taken_at AS DATE) IS DISTINCT FROM lag(CAST(f.taken_at AS DATE)) OVER w
               AND row_number() OVER w > 1 AS new_day,
           epoch(f.taken_at) - epoch(lag(f.taken_at) OVER w) AS gap_s
    FROM _rc_consensus c JOIN frames f USING (frame_id)
    WHERE f.taken_at IS NOT NULL
    WINDOW w AS (ORDER BY f.taken_at, c.frame_id))
, _rc_daily AS (  -- pipeline.incidents.takes_frames_daily: a frame a day or fewer
    SELECT coalesce(median(gap_s) >= {DAILY_GAP_S}, FALSE) AS daily FROM _rc_timed)
, _rc_ordered AS MATERIALIZED (
    SELECT *, sum(CASE WHEN eligible AND NOT (new_day AND NOT (SELECT daily FROM _rc_daily))
                       THEN 0 ELSE 1 END)
                  OVER (ORDER BY pos ROWS UNBOUNDED PRECEDING) AS segment
    FROM _rc_timed)
, _rc_hits AS (
    SELECT *, CASE WHEN lag(segment) OVER h IS DISTINCT FROM segment
                     OR pos - lag(pos) OVER h - 1 > (SELECT gap FROM _rc_run)
                   THEN 1 ELSE 0 END AS starts
    FROM _rc_ordered WHERE eligible AND is_outlier
    WINDOW h AS (ORDER BY pos))
, _rc_numbered AS (
    SELECT *, CAST(sum(starts) OVER (ORDER BY pos ROWS UNBOUNDED PRECEDING) AS INTEGER)
                  AS incident_id
    FROM _rc_hits)
, _rc_spans AS MATERIALIZED (
    SELECT incident_id, min(pos) AS lo, max(pos) AS hi, count(*) AS n_flagged,
           min(taken_at) AS started_at, max(taken_at) AS ended_at,
           first(frame_id ORDER BY score DESC, pos) AS frame_id,
           first(score ORDER BY score DESC, pos) AS peak_score,
           first(score_pct ORDER BY score DESC, pos) AS peak_pct,
           {evidence}
    FROM _rc_numbered GROUP BY incident_id)
, _rc_around AS (  -- each frame's incident before (or at) it and after (or at) it
    SELECT o.frame_id, o.taken_at, o.eligible AND o.is_outlier AS is_flagged,
           last_value(n.incident_id IGNORE NULLS) OVER (
               ORDER BY o.pos ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS before,
           first_value(n.incident_id IGNORE NULLS) OVER (
               ORDER BY o.pos ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS after
    FROM _rc_ordered o LEFT JOIN _rc_numbered n USING (pos))
, incident_frames AS MATERIALIZED (  -- the frames from an incident's first flag to its last
    SELECT $rc_run AS run_id, frame_id, before AS incident_id, is_flagged, taken_at
    FROM _rc_around WHERE before = after)
, _rc_frame_plain AS (  -- each flagged frame's evidence per plain cause, chosen causes'
    SELECT n.incident_id, e.plain_cause, max(e.evidence) AS evidence
    FROM _rc_numbered n JOIN {evidence_table} e ON e.frame_id = n.frame_id
    WHERE e.run_id = $rc_run AND list_contains($rc_causes, e.cause)
    GROUP BY n.incident_id, n.frame_id, e.plain_cause)
, _rc_plain AS (
    SELECT incident_id, plain_cause, sum(evidence) AS total,
           max(sum(evidence)) OVER (PARTITION BY incident_id) AS best,
           sum(sum(evidence)) OVER (PARTITION BY incident_id) AS whole
    FROM _rc_frame_plain GROUP BY incident_id, plain_cause)
, _rc_named AS (  -- pipeline.incidents.name_cause: the largest sum, near-ties by the order
    SELECT incident_id,
           arg_min(plain_cause, coalesce(list_position($rc_plain_order, plain_cause), 1000))
               AS plain_cause,
           arg_min(total / whole, coalesce(list_position($rc_plain_order, plain_cause), 1000))
               AS plain_share
    FROM _rc_plain WHERE whole > 0 AND total >= best * (1 - $rc_tie)
    GROUP BY incident_id)
, incidents AS MATERIALIZED (
    SELECT $rc_run AS run_id, incident_id, started_at, ended_at,
           epoch(ended_at) - epoch(started_at) AS duration_s, hi - lo + 1 AS n_frames,
           n_flagged,
           CASE WHEN plain_cause IS NOT NULL THEN plain_cause
                WHEN {summed} > 0 THEN CASE {named} END ELSE '{NO_CAUSE}' END AS cause,
           CASE WHEN plain_cause IS NOT NULL THEN plain_share
                WHEN {summed} > 0 THEN {best} / ({summed}) ELSE 0.0 END AS cause_share,
           peak_score, peak_pct, frame_id
    FROM _rc_spans LEFT JOIN _rc_named USING (incident_id))
"""


def with_causes(
    sql: str, params: dict[str, Any], run_id: int | None, causes: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """`sql` reading the consensus of `causes` (names, in the order they are added) for run
    `run_id` in place of the stored one, with the parameters the CTEs bind added; unchanged
    when `causes` is empty."""
    return _with(sql, params, run_id, causes)


def _with(
    sql: str,
    params: dict[str, Any],
    run_id: int | None,
    causes: tuple[str, ...],
    scores: str = "main.outlier_scores",
) -> tuple[str, dict[str, Any]]:
    if not causes or run_id is None:
        return sql, params
    causes = tuple(dict.fromkeys(causes))
    params = dict(
        params,
        rc_run=int(run_id),
        rc_keys=[cause_key(c) for c in causes],
        rc_causes=list(causes),
        rc_plain_order=list(PLAIN_CAUSES),
        rc_tie=CAUSE_TIE,
    )
    for i, cause in enumerate(causes):
        params[f"rc_cause{i}"], params[f"rc_key{i}"] = cause, cause_key(cause)
    body = sql.lstrip()
    if body[:5].upper() == "WITH ":
        return f"WITH {_ctes(len(causes), scores)}, {body[5:]}", params
    return f"WITH {_ctes(len(causes), scores)}\n{body}", params


# --- the chosen consensus materialised once ---------------------------------------------------

# The tables a consensus of other causes changes (or, for the run's frame cells and sample,
# which are written with them, describes afresh): `shadow` puts temporary views of these names
# in front of the store's tables on one connection.
SHADOWED = ("outlier_scores", *aggregates.TABLES)
_PER_DETECTOR = {
    "outlier_scores",
    "run_detector_cells",
    "run_detector_hours",
    "run_sample_scores",
    "run_condition_sample_scores",
    "run_top",
}
# "0" turns the cache off (every reader then recombines in SQL). On by default: a build runs
# on the reader's own connection, under the read lock it holds (`materialise`).
ENV_CACHE = "TIMELAPSE_CONSENSUS_CACHE"
MAX_CACHED = 4  # consensuses kept per process (a few MB each at 100k frames)

# Cells (row * 24 + hour) of a run's mosaic at least half of whose frames are in its
# incidents (`pipeline.mosaic`'s rule): each of the run's timed frames falls in the row of the
# last row start (`$days`) on or before its camera-clock day.
OUTLINED = """
WITH _rows AS (SELECT unnest(CAST($days AS DATE[])) AS first_day,
                      generate_subscripts(CAST($days AS DATE[]), 1) - 1 AS row_no)
, _inside AS (SELECT DISTINCT frame_id FROM incident_frames WHERE run_id = $run)
, _slots AS (
    SELECT r.row_no * 24 + hour(f.taken_at) AS slot, i.frame_id IS NOT NULL AS inside
    FROM clusters c JOIN frames f ON f.frame_id = c.frame_id
    ASOF JOIN _rows r ON CAST(f.taken_at AS DATE) >= r.first_day
    LEFT JOIN _inside i ON i.frame_id = c.frame_id
    WHERE c.run_id = $run AND f.taken_at IS NOT NULL)
SELECT slot FROM _slots GROUP BY slot
HAVING count(*) FILTER (WHERE inside) > 0 AND 2 * count(*) FILTER (WHERE inside) >= count(*)
ORDER BY slot
"""


def outlined(
    con: duckdb.DuckDBPyConnection, run_id: int, days: list, causes: tuple[str, ...] = ()
) -> list[int]:
    """The mosaic cells to outline for the incidents of the consensus of `causes` (the run's
    own when empty); `days`: the mosaic's row starts."""
    sql, params = with_causes(OUTLINED, {"run": int(run_id), "days": list(days)}, run_id, causes)
    return [int(r[0]) for r in con.execute(sql, params).fetchall()]


# What a materialised consensus is made of, but the reviews (which readers join live): the
# run (its scores and frames: `score-new` adds some), every frame's path, time and daylight
# (incidents, cells, cards) and weather (the cells' conditions, the cards). A store file whose
# stamp changed with this unchanged (a review, another run analysed) keeps its consensus.
FINGERPRINT = """
SELECT (SELECT CAST(params AS VARCHAR) || '|' || coalesce(CAST(n_frames AS VARCHAR), '')
               || '|' || status FROM analysis_runs WHERE run_id = $run),
       (SELECT count(*) FROM outlier_scores WHERE run_id = $run),
       (SELECT count(*) FROM clusters WHERE run_id = $run),
       (SELECT count(*) || ':' || coalesce(sum(hash(frame_id, path, taken_at, daylight)), 0)
        FROM frames),
       (SELECT count(*) || ':' || coalesce(sum(hash(frame_id, condition, temperature_c,
                                                    precipitation_mm)), 0)
        FROM frame_weather)
"""


def fingerprint(con: duckdb.DuckDBPyConnection, run_id: int) -> tuple:
    """What the consensus of run `run_id` is made of (`FINGERPRINT`), as a tuple."""
    return tuple(con.execute(FINGERPRINT, {"run": int(run_id)}).fetchall()[0])


@dataclass(frozen=True)
class Consensus:
    """The consensus of `causes` for run `run_id` and everything it changes: per `SHADOWED`
    table the run's rows (of the consensus only, for the per-detector tables) as Arrow;
    `made_of`: the store's `fingerprint` it was made from."""

    run_id: int
    causes: tuple[str, ...]
    tables: dict[str, pa.Table]
    seconds: float
    made_of: tuple = ()


def materialise(con: duckdb.DuckDBPyConnection, run_id: int, causes: tuple[str, ...]) -> Consensus:
    """Recombine the consensus of `causes` once (the CTEs of `with_causes`) and write what
    `analyze` writes for it (`store.aggregates.write`, the same code), the mosaic's outlines
    found again; on `con`, a connection to the store (read-only will do).

    The build runs on a cursor of `con` (the same DuckDB instance: the store file is not opened
    again, so the lock `con` holds is never let go, see below) in temporary tables named like
    the `SHADOWED` ones, which come before the store's in name resolution on that cursor only:
    `write` inserts into them and reads the consensus from the temporary `outlier_scores`,
    the store's frames and clusters from the store. They are copied out as Arrow and dropped.

    Why not a second open (an in-memory database attaching the store read-only, as before):
    DuckDB's file locks are POSIX record locks, held per process, so closing any descriptor
    of the file in the process lets go of every lock on it, the readers' included; a writer
    in another process could then open the store under a page still reading it."""
    started = time.perf_counter()
    causes = tuple(dict.fromkeys(causes))
    run_id = int(run_id)
    with con.cursor() as b:
        name = b.execute("SELECT current_database()").fetchall()[0][0]
        store_db = '"' + name.replace('"', '""') + '"'  # the store's tables, never the temporary
        made_of = fingerprint(b, run_id)
        mosaic = _mosaic(b, run_id, f"{store_db}.main.run_aggregates")
        ddls = dict(
            b.execute(
                "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = ? "
                "AND schema_name = 'main' AND list_contains(?, table_name)",
                [name, list(SHADOWED)],
            ).fetchall()
        )
        made: list[str] = []
        try:
            for table in SHADOWED:
                b.execute(_temporary(ddls[table]))  # the store's own definition, temporary
                made.append(table)
            tables = _build(b, run_id, causes, f"{store_db}.main.outlier_scores", mosaic)
        finally:
            for table in reversed(made):
                b.execute(f"DROP TABLE IF EXISTS temp.main.{table}")
    return Consensus(run_id, causes, tables, time.perf_counter() - started, made_of)


def _temporary(ddl: str) -> str:
    """The store's `CREATE TABLE name(...)` of a table as a temporary table's."""
    if not ddl.startswith("CREATE TABLE "):
        raise ValueError(f"not a table definition DuckDB wrote: {ddl[:80]!r}")
    return "CREATE TEMPORARY TABLE " + ddl[len("CREATE TABLE ") :]


def _build(
    b: duckdb.DuckDBPyConnection,
    run_id: int,
    causes: tuple[str, ...],
    scores: str,
    mosaic: aggregates.Mosaic | None,
) -> dict[str, pa.Table]:
    """On `b`, whose temporary `SHADOWED` tables are empty: the consensus of `causes` (read
    from `scores`, the store's scores table) and its aggregates written into them, read out."""
    sql, params = _with(
        f"SELECT * FROM outlier_scores WHERE run_id = $rc_run AND detector = '{CONSENSUS}'",
        {},
        run_id,
        causes,
        scores,
    )
    b.execute(f"INSERT INTO temp.main.outlier_scores BY NAME ({sql})", params)
    sql, params = _with("SELECT * FROM incidents ORDER BY incident_id", {}, run_id, causes, scores)
    found = b.execute(sql, params).df()
    sql, params = _with(
        "SELECT incident_id, frame_id, is_flagged FROM incident_frames "
        "ORDER BY incident_id, frame_id",
        {},
        run_id,
        causes,
        scores,
    )
    members = b.execute(sql, params).df()
    aggregates.write(  # its unqualified tables: the temporary ones where they exist
        b,
        run_id,
        incidents=found[list(aggregates.INCIDENT_COLUMNS)],
        incident_frames=members,
        mosaic=mosaic,
        refresh_weather=False,  # the store's writers keep its frame_weather; read as it is
    )
    if mosaic is not None:  # outlined by the incidents just written (temporary)
        b.execute(
            "UPDATE temp.main.run_aggregates SET mosaic_outlined = ?",
            [outlined(b, run_id, mosaic.days)],
        )
    return {t: b.sql(f"SELECT * FROM temp.main.{t}").to_arrow_table() for t in SHADOWED}


def _mosaic(b: duckdb.DuckDBPyConnection, run_id: int, table: str) -> aggregates.Mosaic | None:
    """The run's stored mosaic (in `table`, the store's `run_aggregates` qualified), its
    outlines to be found again."""
    row = b.execute(
        f"SELECT mosaic_png, mosaic_days, mosaic_cell_width, mosaic_cell_height, mosaic_info "
        f"FROM {table} WHERE run_id = ? AND mosaic_png IS NOT NULL",
        [run_id],
    ).fetchone()
    if row is None:
        return None
    info = json.loads(row[4]) if row[4] else {}
    days = list(row[1])
    return aggregates.Mosaic(
        bytes(row[0]),
        days,
        int(row[2]),
        int(row[3]),
        [],
        int(info.get("n_frames", 0)),
        int(info.get("n_decoded", 0)),
        dict(info.get("seconds", {})),
    )


_CACHE: OrderedDict[tuple, Consensus] = OrderedDict()
_BUILDING: dict[tuple, threading.Lock] = {}
_GUARD = threading.Lock()


def cached(
    con: duckdb.DuckDBPyConnection,
    db: str | os.PathLike,
    stamp: tuple,
    run_id: int,
    causes: tuple[str, ...],
) -> Consensus | None:
    """The consensus of `causes` for `run_id`, materialised once per (store file `db`, its
    modification `stamp`, run, causes) in this process, built on `con` (a connection to `db`,
    read-only will do: `materialise`); sessions asking for one being built wait for it. When
    the stamp changed, the store is asked for its `fingerprint`: the consensus made of the
    same is kept (a review changes the file, not the consensus). None when caching is off
    (`TIMELAPSE_CONSENSUS_CACHE=0`) or the build failed (logged; the caller recombines in
    SQL). Temporary views `install` put on `con` are not read: both run on a cursor of it."""
    if os.environ.get(ENV_CACHE, "1") == "0":
        return None
    path = os.path.realpath(db)
    key = (path, tuple(stamp), int(run_id), tuple(causes))
    which = (path, int(run_id), tuple(causes))
    with _GUARD:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        building = _BUILDING.setdefault(which, threading.Lock())
    with building:
        with _GUARD:
            if key in _CACHE:
                return _CACHE[key]
            older = [v for k, v in _CACHE.items() if (k[0], k[2], k[3]) == which]
        made = None
        if older:
            try:
                with con.cursor() as fresh:  # the store's tables, not views `install` put on con
                    now = fingerprint(fresh, run_id)
                made = next((c for c in older if c.made_of == now), None)
            except duckdb.Error as exc:  # a store of another layout: build it
                log.warning("the store's fingerprint not read: %s", exc)
        if made is None:
            try:
                made = materialise(con, run_id, causes)
            except Exception as exc:  # memory, a store of another layout: SQL answers
                log.warning(
                    "the consensus of %s for run %s not materialised: %s", causes, run_id, exc
                )
        with _GUARD:
            _BUILDING.pop(which, None)
            if made is None:
                return None
            for old in [k for k in _CACHE if (k[0], k[2], k[3]) == which]:
                del _CACHE[old]  # this consensus at an older stamp: kept or superseded
            _CACHE[key] = made
            while len(_CACHE) > MAX_CACHED:
                _CACHE.popitem(last=False)
        return made


@contextmanager
def shadow(con: duckdb.DuckDBPyConnection, consensus: Consensus) -> Iterator[None]:
    """On `con` (a store connection, read-only will do), the `SHADOWED` tables read the
    `consensus`'s rows for its run in place of the stored ones (`install`), until leaving
    (`uninstall`). A reader called inside with the run's own causes (`FrameFilter.junk_causes`
    empty) reads that consensus, its incidents and its aggregates (`store.aggregates.covers`
    holds as for the run's own)."""
    install(con, consensus)
    try:
        yield
    finally:
        uninstall(con)


def install(con: duckdb.DuckDBPyConnection, consensus: Consensus) -> None:
    """Temporary views named like the `SHADOWED` tables (found before the store's tables, on
    this connection only): the store's rows but the run's consensus ones, and the
    `consensus`'s rows. They go with the connection, or with `uninstall`."""
    catalog = con.execute("SELECT current_database()").fetchall()[0][0].replace('"', '""')
    run = int(consensus.run_id)
    views = []
    for table in SHADOWED:
        con.register(f"_rc_{table}", consensus.tables[table])
        keep = f"run_id <> {run}"
        if table in _PER_DETECTOR:
            keep += f" OR detector <> '{CONSENSUS}'"
        views.append(
            f'CREATE OR REPLACE TEMP VIEW {table} AS SELECT * FROM "{catalog}".main.{table} '
            f"WHERE {keep} UNION ALL BY NAME SELECT * FROM _rc_{table}"
        )
    con.execute(";\n".join(views))


def uninstall(con: duckdb.DuckDBPyConnection) -> None:
    """Remove what `install` put on `con`."""
    con.execute(";\n".join(f"DROP VIEW IF EXISTS temp.main.{t}" for t in SHADOWED))
    for table in SHADOWED:
        con.unregister(f"_rc_{table}")
