"""All SQL for analysis runs: `analysis_runs`, `clusters`, `outlier_scores`, `neighbors`,
`fitted_runs` and `ground_truth`.

Rows go in and out in bulk (pandas / Arrow, one `INSERT ... SELECT` per table or part). A run is
written in two steps: `start_run` records it as 'running'; `writing_run` then opens the one
transaction in which a `RunWriter` inserts every row of the run, part by part (its fitted state
first, then clusters, each detector's scores, the neighbours in slices), and marks it 'complete'
with its aggregates; the transaction commits only then, and any failure (or a kill) rolls it back
and leaves nothing. `write_run` is the same with every part given at once. `fail_run` marks a run
'failed' with the reason.

A run's fitted state (a pickle of 0.1-2 GB) is kept in a table of its own, `fitted_state_<run_id>`
(`fitted_table`), its `fitted_runs` row saying that it has one: a checkpoint rewrites a table's
row group whole, and with every state in one table each new state rewrote the kept ones.

Upkeep: `write_run` can drop the fitted states of a model's older runs (`drop_old_fitted`, the
`keep_fitted_runs` setting); `prune_runs` deletes whole old runs (`python -m pipeline prune`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from store import aggregates
from store.db import execute as _run
from store.db import fetch_one, log_failed, scalar
from store.db import ids_table as _ids_table

_FRAME_COLUMNS = (
    "frame_id",
    "path",
    "taken_at",
    "taken_at_utc",
    "mean_luma",
    "contrast",
    "sharpness",
    "colorfulness",
    "local_contrast",
    "sharpness_cells",
    "daylight",
)

# Tables whose rows belong to one run (deleted with it); `analysis_runs` itself comes last.
RUN_TABLES = (
    "clusters",
    "outlier_scores",
    "frame_cause_evidence",
    "neighbors",
    "fitted_runs",
    *aggregates.TABLES,
)


# --- what there is to analyse -----------------------------------------------------------------


def embedded_models(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Model key -> number of vectors of frames still in the store."""
    rows = con.execute(
        "SELECT e.model, count(*) FROM embeddings e SEMI JOIN frames f USING (frame_id) "
        "GROUP BY e.model ORDER BY e.model"
    ).fetchall()
    return {model: int(n) for model, n in rows}


def load_frames(
    con: duckdb.DuckDBPyConnection, frame_ids: Sequence[int] | None = None, root: str | None = None
) -> pd.DataFrame:
    """Frame facts the detectors use (time, image statistics, daylight), ordered by frame_id.

    Restricted to `frame_ids` and/or to the frames ingested from folder `root` when given.
    """
    where = []
    params: dict[str, Any] = {}
    if root is not None:
        where.append("root = $root")
        params["root"] = root
    sql = f"SELECT {', '.join(_FRAME_COLUMNS)} FROM frames"
    if frame_ids is not None:
        con.register("_frame_ids", _ids_table(frame_ids))
        where.append("frame_id IN (SELECT frame_id FROM _frame_ids)")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY frame_id"
    try:
        return con.sql(sql, params=params or None).df()
    except duckdb.Error as exc:
        log_failed(sql, params, exc)
        raise
    finally:
        if frame_ids is not None:
            con.unregister("_frame_ids")


# --- runs -------------------------------------------------------------------------------------


def start_run(
    con: duckdb.DuckDBPyConnection, model: str, params: dict[str, Any], code_version: str
) -> int:
    """Record a new run as 'running' (with this process's PID and host); returns its run_id."""
    run_id = int(scalar(con, "SELECT nextval('run_id_seq')"))
    _run(
        con,
        "INSERT INTO analysis_runs (run_id, model, params, status, code_version, pid, host) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?)",
        [
            run_id,
            model,
            json.dumps(params, default=str),
            code_version,
            os.getpid(),
            socket.gethostname(),
        ],
    )
    return run_id


def running_runs(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int | None, str | None, Any]]:
    """Runs still marked 'running': (run_id, pid, host, started_at)."""
    return [
        (int(r), p, h, s)
        for r, p, h, s in con.execute(
            "SELECT run_id, pid, host, started_at FROM analysis_runs WHERE status = 'running' "
            "ORDER BY run_id"
        ).fetchall()
    ]


def fail_stale_runs(
    con: duckdb.DuckDBPyConnection, is_alive: Callable[[int | None, str | None, Any], bool]
) -> list[int]:
    """Mark 'running' runs whose process is gone (a kill, a crash, a power cut) as 'failed'.

    `is_alive(pid, host, started_at)` decides; runs it cannot judge must count as alive.
    Returns the run ids marked failed.
    """
    stale = []
    for run_id, pid, host, started_at in running_runs(con):
        if is_alive(pid, host, started_at):
            continue
        fail_run(
            con,
            run_id,
            f"interrupted: the process that ran it (PID {pid} on {host}) "
            "ended before the run was written",
        )
        stale.append(run_id)
    return stale


def fail_run(
    con: duckdb.DuckDBPyConnection, run_id: int, error: str, timings: dict[str, float] | None = None
) -> None:
    """Mark a run 'failed' with the reason; rows of the run (if any slipped in) are removed."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in RUN_TABLES:
            _run(con, f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        _run(
            con,
            "UPDATE analysis_runs SET status = 'failed', error = ?, finished_at = now(), "
            "timings = ? WHERE run_id = ?",
            [error[:2000], json.dumps(timings or {}), run_id],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _insert_frame(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[str],
    frame: pd.DataFrame | pa.Table,
) -> None:
    """Bulk insert `frame` (a DataFrame, or an Arrow table with those columns) into `table` with
    one statement."""
    if isinstance(frame, pa.Table):
        arrow = frame.select(list(columns))
    else:
        arrow = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    name = f"_new_{table}"
    con.register(name, arrow)
    cols = ", ".join(columns)
    sql = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name}"
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        log_failed(sql, {"rows": len(frame)}, exc)
        raise
    finally:
        con.unregister(name)


def insert_clusters(con: duckdb.DuckDBPyConnection, clusters: pd.DataFrame | pa.Table) -> None:
    """`clusters` rows: run_id, frame_id, cluster, map_x, map_y."""
    _insert_frame(con, "clusters", ("run_id", "frame_id", "cluster", "map_x", "map_y"), clusters)


def insert_scores(con: duckdb.DuckDBPyConnection, scores: pd.DataFrame | pa.Table) -> None:
    """`outlier_scores` rows: run_id, detector, frame_id, score, score_pct, is_outlier."""
    _insert_frame(
        con,
        "outlier_scores",
        ("run_id", "detector", "frame_id", "score", "score_pct", "is_outlier"),
        scores,
    )


def insert_neighbors(con: duckdb.DuckDBPyConnection, neighbors: pd.DataFrame | pa.Table) -> None:
    """`neighbors` rows: run_id, frame_id, rank, neighbor_id, distance."""
    _insert_frame(
        con, "neighbors", ("run_id", "frame_id", "rank", "neighbor_id", "distance"), neighbors
    )


#: `fitted_runs.artifact` of a state kept in a table of its own (`fitted_table`): an empty
#: BLOB, which no pickle is. Older stores hold their states in that column and still load.
IN_ITS_OWN_TABLE = b""


def fitted_table(run_id: int) -> str:
    """The table that holds run `run_id`'s fitted state.

    One table a state: a DuckDB checkpoint rewrites a table's row group whole, so with every
    state in `fitted_runs` each commit rewrote the states kept before it too, and the write's
    peak grew with them (four 400 MiB states one after another: 2.2, 2.6, 3.8, 5.0 GB, against
    2.2 GB each in tables of their own; `bench/fitted_blobs.py`). `fitted_runs` keeps the
    run's row (its versions, and that it has a state)."""
    return f"fitted_state_{int(run_id)}"


def insert_fitted(
    con: duckdb.DuckDBPyConnection, run_id: int, artifact: bytes, versions: dict[str, str]
) -> None:
    """A run's pickled fitted state, in a table of its own (`fitted_table`), and its
    `fitted_runs` row with the library versions.

    The bytes go in as an Arrow column over the same memory (a statement parameter would be
    copied into a value and again into the statement's rows first: measured 3x the artifact's
    size at once, 1.1 GB for a 377 MB artifact of 750,000 frames)."""
    blob = pa.py_buffer(artifact)
    offsets = pa.py_buffer(np.array([0, len(artifact)], dtype=np.int64).tobytes())
    column = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, blob])
    con.register("_new_fitted", pa.table({"artifact": column}))
    statements = [
        (
            f"CREATE TABLE {fitted_table(run_id)} AS SELECT artifact::BLOB AS artifact FROM _new_fitted",
            [],
        ),
        (
            "INSERT INTO fitted_runs (run_id, artifact, versions) VALUES (?, ?, ?::JSON)",
            [run_id, IN_ITS_OWN_TABLE, json.dumps(versions)],
        ),
    ]
    try:
        for sql, params in statements:
            try:
                con.execute(sql, params)
            except duckdb.Error as exc:
                log_failed(sql, {"run_id": run_id, "bytes": len(artifact)}, exc)
                raise
    finally:
        con.unregister("_new_fitted")


def _drop_fitted_tables(con: duckdb.DuckDBPyConnection, run_ids) -> None:
    for run_id in run_ids:
        con.execute(f"DROP TABLE IF EXISTS {fitted_table(run_id)}")


def _fitted_bytes(con: duckdb.DuckDBPyConnection, run_ids: list[int]) -> int:
    """Bytes of these runs' fitted states, in `fitted_runs` or in tables of their own."""
    total = int(
        scalar(
            con,
            "SELECT coalesce(sum(octet_length(artifact)), 0) FROM fitted_runs "
            "WHERE run_id IN (SELECT unnest(?::BIGINT[]))",
            [run_ids],
        )
    )
    own = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND list_contains(?, table_name)",
            [[fitted_table(r) for r in run_ids]],
        ).fetchall()
    }
    for table in sorted(own):
        total += int(scalar(con, f"SELECT coalesce(sum(octet_length(artifact)), 0) FROM {table}"))
    return total


class RunWriter:
    """Inserts one run's rows inside the transaction `writing_run` opened, part by part, so the
    caller can let go of each part (and of what made it) as soon as it is written.

    `complete` writes the run's status, parameters and aggregates last; without it the
    transaction is rolled back."""

    def __init__(self, con: duckdb.DuckDBPyConnection, run_id: int):
        self.con = con
        self.run_id = int(run_id)
        self.completed = False

    def add_fitted(self, artifact: bytes, versions: dict[str, str]) -> None:
        """The run's fitted state (what `score-new` and `serve` load)."""
        insert_fitted(self.con, self.run_id, artifact, versions)

    def add_clusters(self, rows: pd.DataFrame | pa.Table) -> None:
        """`clusters` rows: run_id, frame_id, cluster, map_x, map_y."""
        insert_clusters(self.con, rows)

    def add_scores(self, rows: pd.DataFrame | pa.Table) -> None:
        """`outlier_scores` rows (one detector's, or several)."""
        insert_scores(self.con, rows)

    def add_cause_evidence(self, rows: pd.DataFrame | pa.Table) -> None:
        """`frame_cause_evidence` rows: run_id, frame_id, cause, plain_cause, evidence (what
        `store.causes` names a recombined consensus's incidents by)."""
        _insert_frame(
            self.con,
            "frame_cause_evidence",
            ("run_id", "frame_id", "cause", "plain_cause", "evidence"),
            rows,
        )

    def add_neighbors(self, rows: pd.DataFrame | pa.Table) -> None:
        """`neighbors` rows (a slice of the frames, or all)."""
        insert_neighbors(self.con, rows)

    def complete(
        self,
        *,
        n_frames: int,
        timings: dict[str, float],
        params: dict[str, Any] | None = None,
        keep_fitted: int | None = None,
        incidents: pd.DataFrame | None = None,
        incident_frames: pd.DataFrame | None = None,
        mosaic: aggregates.Mosaic | None = None,
    ) -> None:
        """Status 'complete', the run's aggregates and incidents (`store.aggregates.write`, read
        from the rows inserted before) and, with `keep_fitted`, the drop of the model's older
        fitted states beyond its newest `keep_fitted` (`drop_old_fitted`)."""
        con, run_id = self.con, self.run_id
        sets = "status = 'complete', n_frames = ?, finished_at = now(), timings = ?, error = NULL"
        values: list[Any] = [n_frames, json.dumps(timings)]
        if params is not None:
            sets += ", params = ?"
            values.append(json.dumps(params, default=str))
        _run(con, f"UPDATE analysis_runs SET {sets} WHERE run_id = ?", values + [run_id])
        aggregates.write(
            con, run_id, incidents=incidents, incident_frames=incident_frames, mosaic=mosaic
        )
        if keep_fitted is not None:
            model = scalar(con, "SELECT model FROM analysis_runs WHERE run_id = ?", [run_id])
            drop_old_fitted(con, model, keep_fitted)
        self.completed = True


@contextlib.contextmanager
def writing_run(
    con: duckdb.DuckDBPyConnection, run_id: int, *, keep_fitted: int | None = None
) -> Iterator[RunWriter]:
    """One transaction for every row of run `run_id`: yields a `RunWriter`; commits when the
    block ends after `RunWriter.complete`, rolls back (and re-raises) on any error. A block that
    ends without `complete` is rolled back too, with a RuntimeError: a run is never committed
    without its status and aggregates. `keep_fitted` is checked before anything is written."""
    if keep_fitted is not None:
        check_keep(keep_fitted, "keep_fitted")
    con.execute("BEGIN TRANSACTION")
    try:
        writer = RunWriter(con, run_id)
        yield writer
        if not writer.completed:
            raise RuntimeError(f"run {run_id} was not completed: its rows are rolled back")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def write_run(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    *,
    n_frames: int,
    clusters: pd.DataFrame,
    scores: pd.DataFrame | Iterable[pd.DataFrame],
    neighbors: pd.DataFrame,
    artifact: bytes | None,
    versions: dict[str, str],
    timings: dict[str, float],
    params: dict[str, Any] | None = None,
    keep_fitted: int | None = None,
    incidents: pd.DataFrame | None = None,
    incident_frames: pd.DataFrame | None = None,
    mosaic: aggregates.Mosaic | None = None,
) -> None:
    """Every row of a run, its aggregates and incidents (`store.aggregates.write`) plus status
    'complete', in one transaction (all or nothing): `writing_run` with every part at once.

    `scores` may come in parts (one DataFrame per detector), each inserted as it comes, so the
    rows of every detector are never in memory at once.

    With `keep_fitted`, the same transaction also drops the fitted states of the run's model
    beyond its newest `keep_fitted` complete runs that have one (`drop_old_fitted`).
    """
    with writing_run(con, run_id, keep_fitted=keep_fitted) as writer:
        if artifact is not None:
            writer.add_fitted(artifact, versions)
        writer.add_clusters(clusters)
        for part in [scores] if isinstance(scores, pd.DataFrame) else scores:
            writer.add_scores(part)
        writer.add_neighbors(neighbors)
        writer.complete(
            n_frames=n_frames,
            timings=timings,
            params=params,
            keep_fitted=keep_fitted,
            incidents=incidents,
            incident_frames=incident_frames,
            mosaic=mosaic,
        )


def drop_old_fitted(con: duckdb.DuckDBPyConnection, model: str, keep: int) -> list[int]:
    """Delete the fitted states of `model`'s complete runs beyond its newest `keep` that have one.

    The runs and their rows stay; only `score-new` against them is no longer possible. Other
    models' fitted states are untouched. Returns the run ids whose fitted state was deleted.
    """
    check_keep(keep, "keep")
    rows = _run(
        con,
        """
        DELETE FROM fitted_runs WHERE run_id IN (
            SELECT run_id FROM (
                SELECT r.run_id,
                       row_number() OVER (ORDER BY r.finished_at DESC, r.run_id DESC) AS newest
                FROM analysis_runs r SEMI JOIN fitted_runs f USING (run_id)
                WHERE r.model = ? AND r.status = 'complete')
            WHERE newest > ?)
        RETURNING run_id""",
        [model, keep],
    ).fetchall()
    dropped = sorted(int(r[0]) for r in rows)
    _drop_fitted_tables(con, dropped)
    return dropped


@dataclass
class PruneReport:
    """What `prune_runs` deleted (or, on a dry run, would delete).

    `removed`: model -> run ids, oldest first; `kept`: model -> its complete runs kept, newest
    first; `running`: runs marked 'running', never touched; `rows`: table -> rows of the removed
    runs; `fitted_bytes`: size of their fitted states.
    """

    keep: int
    dry_run: bool
    removed: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, list[int]] = field(default_factory=dict)
    running: list[int] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    fitted_bytes: int = 0

    @property
    def run_ids(self) -> list[int]:
        """Every removed run id, ascending."""
        return sorted(r for ids in self.removed.values() for r in ids)


def prune_runs(con: duckdb.DuckDBPyConnection, keep: int, *, dry_run: bool = False) -> PruneReport:
    """Delete whole analysis runs but the newest `keep` complete runs of each model.

    A removed run loses its rows in every run table and its `analysis_runs` row, all in one
    transaction, followed by a CHECKPOINT (DuckDB reuses the freed blocks but does not shrink
    the file: `store.upkeep.compact` does). Failed runs older than a model's oldest kept run go
    too; newer failed runs, the failed runs of a model with no complete run, and every run still
    marked 'running' stay. Frames, embeddings, reviews and the rest are untouched. `dry_run`
    reports the same plan and changes nothing (it works on a read-only connection).
    """
    check_keep(keep, "keep")
    report = PruneReport(keep=keep, dry_run=dry_run)
    con.execute("BEGIN TRANSACTION")
    try:
        runs = con.execute(
            "SELECT run_id, model, status FROM analysis_runs "
            "ORDER BY model, finished_at DESC, run_id DESC"
        ).fetchall()
        by_model: dict[str, list[tuple[int, str]]] = {}
        for run_id, model, status in runs:
            by_model.setdefault(model, []).append((int(run_id), status))
        for model, model_runs in by_model.items():
            complete = [r for r, status in model_runs if status == "complete"]
            kept = complete[:keep]
            gone = complete[keep:]
            if kept:
                gone += [
                    r
                    for r, status in model_runs
                    if status not in ("complete", "running") and r < min(kept)
                ]
            report.running += [r for r, status in model_runs if status == "running"]
            report.kept[model] = kept
            if gone:
                report.removed[model] = sorted(gone)
        report.running.sort()
        ids = report.run_ids
        if ids:
            for table in RUN_TABLES + ("analysis_runs",):
                report.rows[table] = int(
                    scalar(
                        con,
                        f"SELECT count(*) FROM {table} WHERE run_id IN "
                        "(SELECT unnest(?::BIGINT[]))",
                        [ids],
                    )
                )
            report.fitted_bytes = _fitted_bytes(con, ids)
            if not dry_run:
                for table in RUN_TABLES + ("analysis_runs",):
                    _run(
                        con,
                        f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::BIGINT[]))",
                        [ids],
                    ).fetchall()
                _drop_fitted_tables(con, ids)
        con.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if report.run_ids and not dry_run:
        con.execute("CHECKPOINT")
    return report


def check_keep(keep: int, name: str) -> None:
    """`keep` must be a whole number >= 1 (the newest complete run, and its fitted state, are
    never dropped); ValueError naming the setting `name` otherwise."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {keep!r}")


def add_scored_frames(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    *,
    clusters: pd.DataFrame,
    scores: pd.DataFrame,
    neighbors: pd.DataFrame,
) -> None:
    """Rows for frames scored later against a frozen run (score-new), in one transaction.

    Rows those frames already had in the run are replaced (their evidence per plain cause,
    which described the fit's scores of them, is dropped).
    """
    ids = clusters["frame_id"].to_numpy()
    con.execute("BEGIN TRANSACTION")
    try:
        con.register("_scored_ids", _ids_table(ids))
        try:
            for table in ("clusters", "outlier_scores", "frame_cause_evidence", "neighbors"):
                _run(
                    con,
                    f"DELETE FROM {table} WHERE run_id = ? AND frame_id IN "
                    "(SELECT frame_id FROM _scored_ids)",
                    [run_id],
                )
        finally:
            con.unregister("_scored_ids")
        insert_clusters(con, clusters)
        insert_scores(con, scores)
        insert_neighbors(con, neighbors)
        _run(
            con,
            "UPDATE analysis_runs SET n_frames = (SELECT count(*) FROM clusters "
            "WHERE run_id = ?) WHERE run_id = ?",
            [run_id, run_id],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def get_run(con: duckdb.DuckDBPyConnection, run_id: int) -> dict[str, Any] | None:
    """One `analysis_runs` row as a dict (params and timings decoded), or None."""
    row = fetch_one(
        con,
        "SELECT run_id, model, params, status, n_frames, started_at, "
        "finished_at, code_version, timings, error FROM analysis_runs "
        "WHERE run_id = ?",
        [run_id],
    )
    if row is None:
        return None
    keys = (
        "run_id",
        "model",
        "params",
        "status",
        "n_frames",
        "started_at",
        "finished_at",
        "code_version",
        "timings",
        "error",
    )
    out = dict(zip(keys, row))
    for key in ("params", "timings"):
        out[key] = json.loads(out[key]) if out[key] else {}
    return out


def latest_complete_runs(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Model -> run_id of its newest complete run."""
    rows = con.execute(
        "SELECT model, arg_max(run_id, finished_at) FROM analysis_runs "
        "WHERE status = 'complete' GROUP BY model ORDER BY model"
    ).fetchall()
    return {model: int(run_id) for model, run_id in rows}


def latest_fitted_run(con: duckdb.DuckDBPyConnection, model: str | None = None) -> int | None:
    """The newest complete run that has a saved fitted state (for `model` when given)."""
    sql = (
        "SELECT r.run_id FROM analysis_runs r JOIN fitted_runs f USING (run_id) "
        "WHERE r.status = 'complete'"
    )
    params: list[Any] = []
    if model is not None:
        sql += " AND r.model = ?"
        params.append(model)
    sql += " ORDER BY r.finished_at DESC, r.run_id DESC LIMIT 1"
    run_id = scalar(con, sql, params)
    return None if run_id is None else int(run_id)


def fitted_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Complete runs that have a saved fitted state (what new frames can be scored against),
    newest first: run_id, model, n_frames, started_at, finished_at, code_version."""
    return con.sql(
        "SELECT r.run_id, r.model, r.n_frames, r.started_at, r.finished_at, r.code_version "
        "FROM analysis_runs r SEMI JOIN fitted_runs f USING (run_id) "
        "WHERE r.status = 'complete' ORDER BY r.finished_at DESC, r.run_id DESC"
    ).df()


def load_fitted(con: duckdb.DuckDBPyConnection, run_id: int) -> tuple[bytes, dict[str, str]] | None:
    """The pickled fitted state of a run and the library versions it was made with (None for a
    run without one). A state is read from its own table (`fitted_table`), or from
    `fitted_runs` where a store made before those tables keeps it."""
    row = fetch_one(con, "SELECT artifact, versions FROM fitted_runs WHERE run_id = ?", [run_id])
    if row is None:
        return None
    artifact = bytes(row[0])
    if artifact == IN_ITS_OWN_TABLE:
        try:
            own = fetch_one(con, f"SELECT artifact FROM {fitted_table(run_id)}")
        except duckdb.CatalogException:  # its table is gone: no state to load
            return None
        if own is None:
            return None
        artifact = bytes(own[0])
    return artifact, json.loads(row[1])


def run_frame_ids(con: duckdb.DuckDBPyConnection, run_id: int) -> np.ndarray:
    """Frame ids that have rows in a run."""
    table = con.sql(
        "SELECT frame_id FROM clusters WHERE run_id = $run ORDER BY frame_id",
        params={"run": run_id},
    ).to_arrow_table()
    return table.column("frame_id").to_numpy().astype(np.int64, copy=False)


def unscored_frames(con: duckdb.DuckDBPyConnection, run_id: int, root: str) -> np.ndarray:
    """Frames ingested from folder `root` that have no rows in run `run_id` yet and whose file
    did not fail to embed: what `watch` still has to score against the run."""
    table = con.sql(
        "SELECT f.frame_id FROM frames f WHERE f.root = $root "
        "AND NOT EXISTS (SELECT 1 FROM clusters c WHERE c.run_id = $run "
        "                AND c.frame_id = f.frame_id) "
        "AND NOT EXISTS (SELECT 1 FROM ingest_errors e WHERE e.stage = 'embed' "
        "                AND e.location = f.location) ORDER BY f.frame_id",
        params={"root": root, "run": run_id},
    ).to_arrow_table()
    return table.column("frame_id").to_numpy().astype(np.int64, copy=False)


def run_scores(
    con: duckdb.DuckDBPyConnection, run_id: int, frame_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """A run's scores in long form: detector, frame_id, score, score_pct, is_outlier."""
    sql = (
        "SELECT detector, frame_id, score, score_pct, is_outlier FROM outlier_scores "
        "WHERE run_id = $run"
    )
    if frame_ids is not None:
        con.register("_score_ids", _ids_table(frame_ids))
        sql += " AND frame_id IN (SELECT frame_id FROM _score_ids)"
    try:
        return con.sql(sql + " ORDER BY detector, frame_id", params={"run": run_id}).df()
    finally:
        if frame_ids is not None:
            con.unregister("_score_ids")


def run_clusters(con: duckdb.DuckDBPyConnection, run_id: int) -> pd.DataFrame:
    """A run's clusters rows: frame_id, cluster, map_x, map_y."""
    return con.sql(
        "SELECT frame_id, cluster, map_x, map_y FROM clusters WHERE run_id = $run "
        "ORDER BY frame_id",
        params={"run": run_id},
    ).df()


def run_neighbors(
    con: duckdb.DuckDBPyConnection, run_id: int, frame_ids: Sequence[int] | None = None
) -> pd.DataFrame:
    """A run's nearest-neighbour rows: frame_id, rank, neighbor_id, distance."""
    sql = "SELECT frame_id, rank, neighbor_id, distance FROM neighbors WHERE run_id = $run"
    if frame_ids is not None:
        con.register("_nb_ids", _ids_table(frame_ids))
        sql += " AND frame_id IN (SELECT frame_id FROM _nb_ids)"
    try:
        return con.sql(sql + " ORDER BY frame_id, rank", params={"run": run_id}).df()
    finally:
        if frame_ids is not None:
            con.unregister("_nb_ids")


# --- ground truth -----------------------------------------------------------------------------


def match_truth_paths(
    con: duckdb.DuckDBPyConnection, truth: pd.DataFrame, root: str | None = None
) -> pd.DataFrame:
    """Truth rows (path, label, kind) joined to frames: adds frame_id (NA when no frame matches).

    Paths are compared with '/' separators and without a leading './'. With `root` (the folder
    the truth paths are relative to, symlinks resolved) a path is first matched to the frame
    whose file is `root/path`. Otherwise, and for paths not found so, a truth path matches the
    frame with that stored path, or a frame whose path ends with '/<truth path>' (truth
    relative to a sub-folder of the ingest root) or is a suffix of it (truth relative to a
    folder above the root, told apart by the frames' locations), only when exactly one frame
    does: two cards that both hold IMG_0001.jpg leave a bare 'IMG_0001.jpg' unmatched rather
    than guessed.
    """
    rows = truth.copy()
    rows["path"] = (
        rows["path"]
        .astype(str)
        .str.replace("\\", "/", regex=False)
        .str.replace(r"^\./", "", regex=True)
    )
    frames = con.sql("SELECT frame_id, path, location FROM frames").df()
    ids = pd.Series(pd.NA, index=rows.index, dtype="Int64")
    if root is not None:
        by_location = dict(zip(frames["location"], frames["frame_id"]))
        ids = (root.rstrip("/") + "/" + rows["path"]).map(by_location).astype("Int64")
    counts = frames["path"].value_counts()
    unique = frames[frames["path"].map(counts) == 1]
    exact = dict(zip(unique["path"], unique["frame_id"]))
    ids = ids.fillna(rows["path"].map(exact).astype("Int64"))
    missing = ids.isna()
    if missing.any() and len(frames):
        by_name: dict[str, list[tuple[str, str, int]]] = {}
        for path, location, frame_id in zip(frames["path"], frames["location"], frames["frame_id"]):
            by_name.setdefault(path.rsplit("/", 1)[-1], []).append((path, location, int(frame_id)))
        for i in np.flatnonzero(missing.to_numpy()):
            want = rows["path"].iat[i]
            same = by_name.get(want.rsplit("/", 1)[-1], [])
            hits = [
                fid
                for path, _, fid in same
                if path == want or path.endswith("/" + want) or want.endswith("/" + path)
            ]
            if len(hits) > 1:  # truth relative to a folder above two roots: the location says
                hits = [fid for _, location, fid in same if location.endswith("/" + want)]
            if len(hits) == 1:
                ids.iat[i] = hits[0]
    rows["frame_id"] = ids.astype("Int64")
    return rows


def import_ground_truth(
    con: duckdb.DuckDBPyConnection, truth: pd.DataFrame, root: str | None = None
) -> int:
    """Replace the `ground_truth` table from a truth DataFrame (path, label, kind).

    label 1 = anomaly, 0 = normal. Rows whose path is not a frame (e.g. truncated files that
    ingest refused) are skipped. Returns the number of truth rows matched to frames.
    """
    missing = {"path", "label"} - set(truth.columns)
    if missing:
        raise ValueError(f"ground truth needs columns path,label[,kind]; missing {sorted(missing)}")
    rows = match_truth_paths(con, truth, root)
    matched = rows[rows["frame_id"].notna()].drop_duplicates("frame_id", keep="last")
    out = pd.DataFrame(
        {
            "frame_id": matched["frame_id"].astype("int64"),
            "is_anomaly": matched["label"].astype(int).astype(bool),
            "kind": (
                matched["kind"].astype(str)
                if "kind" in matched
                else np.where(matched["label"].astype(int) == 1, "anomaly", "normal")
            ),
        }
    )
    con.execute("BEGIN TRANSACTION")
    try:
        _run(con, "DELETE FROM ground_truth")
        _insert_frame(con, "ground_truth", ("frame_id", "is_anomaly", "kind"), out)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(len(out))


def load_ground_truth(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """`ground_truth` joined with each frame's daylight: frame_id, is_anomaly, kind, daylight."""
    return con.sql(
        "SELECT g.frame_id, g.is_anomaly, g.kind, f.daylight FROM ground_truth g "
        "JOIN frames f USING (frame_id) ORDER BY g.frame_id"
    ).df()


def frame_daylight(con: duckdb.DuckDBPyConnection, frame_ids: Sequence[int]) -> pd.DataFrame:
    """frame_id, daylight for the given frames."""
    con.register("_dl_ids", _ids_table(frame_ids))
    try:
        return con.sql(
            "SELECT frame_id, daylight FROM frames WHERE frame_id IN "
            "(SELECT frame_id FROM _dl_ids) ORDER BY frame_id"
        ).df()
    finally:
        con.unregister("_dl_ids")
