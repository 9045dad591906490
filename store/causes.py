"""The consensus over causes of junk a reader chooses, recombined in SQL from a run's cause scores.

`analyze` stores one score per cause of junk beside the detectors (detector `cause:<cause>`)
and a consensus that sums the causes the run counts (its params' `junk_causes`). A reader that
counts other causes (the dashboard's "Junk causes", `export --junk-causes`) gets the consensus
`pipeline.detectors.consensus.sum_causes` would have given, without a new run:

- score: the chosen causes' scores added in the order given, a cause with no opinion on a
  frame (NULL) adding 0 (NumPy's `nansum` along a row adds left to right: the same doubles);
- score_pct: the share of the run's frames scoring <= it (`Scorer.percentile`);
- is_outlier: above the linear quantile at 1 - the run's `contamination` of the run's scores
  (`Scorer._process_decision_scores`; NumPy's interpolation step for step, so the same
  double);
- incidents: found again from those flags by `pipeline.incidents`' rule (daylight frames in
  camera-clock order; at most the run's `incident_gap_frames` unflagged frames between two
  flags; a night frame ends one), each named by the chosen cause with the most score summed
  over its flagged frames (ties: the first in the order given), that cause's share of the sum
  as `cause_share`.

`with_causes` puts CTEs named `outlier_scores`, `incidents` and `incident_frames` in front of a
query: they shadow the tables for that query only, so a reader's SQL is the same whichever
consensus it reads (DuckDB plans only the CTEs a query uses). The reference is every frame of
the run (frames `score-new` added included; after a fresh `analyze`, the fit's frames), so for
the run's own causes in the run's order the result equals the stored rows. The caller decides
when to recombine (`FrameFilter.junk_causes` set: the store's readers, which then skip the
run's aggregates, see `store.aggregates.covers`); values are bound, never pasted.
"""

from __future__ import annotations

from typing import Any

CAUSE_PREFIX = "cause:"  # a cause's score is stored as detector cause:<cause>
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


def _ctes(n_causes: int) -> str:
    """The shadowing CTEs for `n_causes` causes bound as $rc_cause0.. (names) and $rc_key0..
    (detector keys), for run $rc_run."""
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
           coalesce(TRY_CAST(params->>'incident_gap_frames' AS BIGINT), 2) AS gap
    FROM analysis_runs WHERE run_id = $rc_run)
, _rc_causes AS (
    SELECT frame_id, {picks}
    FROM main.outlier_scores
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
    SELECT s.*, count(*) OVER (ORDER BY s.score) / count(*) OVER () AS score_pct,
           coalesce(s.score > (SELECT threshold FROM _rc_limit), FALSE) AS is_outlier
    FROM _rc_summed s)
, outlier_scores AS (
    SELECT run_id, detector, frame_id, score, score_pct, is_outlier FROM main.outlier_scores
    WHERE run_id <> $rc_run OR detector <> '{CONSENSUS}'
    UNION ALL
    SELECT $rc_run, '{CONSENSUS}', frame_id, score, score_pct, is_outlier FROM _rc_consensus)
, _rc_ordered AS MATERIALIZED (
    SELECT c.*, f.taken_at, coalesce(f.daylight IN ('day', 'twilight'), FALSE) AS eligible,
           row_number() OVER w AS pos,
           sum(CASE WHEN coalesce(f.daylight IN ('day', 'twilight'), FALSE) THEN 0 ELSE 1 END)
               OVER (w ROWS UNBOUNDED PRECEDING) AS segment
    FROM _rc_consensus c JOIN frames f USING (frame_id)
    WHERE f.taken_at IS NOT NULL
    WINDOW w AS (ORDER BY f.taken_at, c.frame_id))
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
, incidents AS MATERIALIZED (
    SELECT $rc_run AS run_id, incident_id, started_at, ended_at,
           epoch(ended_at) - epoch(started_at) AS duration_s, hi - lo + 1 AS n_frames,
           n_flagged,
           CASE WHEN {summed} > 0 THEN CASE {named} END ELSE '{NO_CAUSE}' END AS cause,
           CASE WHEN {summed} > 0 THEN {best} / ({summed}) ELSE 0.0 END AS cause_share,
           peak_score, peak_pct, frame_id
    FROM _rc_spans)
"""


def with_causes(
    sql: str, params: dict[str, Any], run_id: int | None, causes: tuple[str, ...]
) -> tuple[str, dict[str, Any]]:
    """`sql` reading the consensus of `causes` (names, in the order they are added) for run
    `run_id` in place of the stored one, with the parameters the CTEs bind added; unchanged
    when `causes` is empty."""
    if not causes or run_id is None:
        return sql, params
    causes = tuple(dict.fromkeys(causes))
    params = dict(params, rc_run=int(run_id), rc_keys=[cause_key(c) for c in causes])
    for i, cause in enumerate(causes):
        params[f"rc_cause{i}"], params[f"rc_key{i}"] = cause, cause_key(cause)
    body = sql.lstrip()
    if body[:5].upper() == "WITH ":
        return f"WITH {_ctes(len(causes))}, {body[5:]}", params
    return f"WITH {_ctes(len(causes))}\n{body}", params
