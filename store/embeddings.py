"""All SQL for the `models` and `embeddings` tables (and the embed stage's `ingest_errors` rows).

Vectors go in and out in bulk as Arrow/NumPy: `insert_vectors` writes one batch in one
statement, `load_vectors` returns `(frame_ids int64[n], matrix float32[n, dim])` without a
Python loop, fast enough for 750k x 512; `iter_vectors` streams them in batches when the matrix
would not fit in memory (750k x 4,608 is 14 GB).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from store.db import StoreError, fetch_one, log_failed, scalar
from store.db import execute as _run
from store.db import ids_table as _ids_table

EMBED_STAGE = "embed"


@dataclass(frozen=True)
class ModelRow:
    """One row of `models`: which model made a set of vectors, with which weights, and the
    precision of its latest embedding (each vector records its own: `precision_counts`)."""

    model: str
    family: str
    weights: str
    dim: int
    input_size: int | None
    precision: str = "float32"


@dataclass(frozen=True)
class PendingFrame:
    """A frame that still lacks a vector for a model: where its original file is."""

    frame_id: int
    root: str
    path: str


# --- models -------------------------------------------------------------------------------------


def get_model_row(con: duckdb.DuckDBPyConnection, model: str) -> ModelRow | None:
    """The `models` row of a model key, or None when it has never been used in this store."""
    row = fetch_one(
        con,
        "SELECT model, family, weights, dim, input_size, precision FROM models WHERE model = ?",
        [model],
    )
    return None if row is None else ModelRow(*row)


def list_model_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[ModelRow, int]]:
    """Every model used in this store with its number of vectors, by key."""
    rows = con.execute(
        """
        SELECT m.model, m.family, m.weights, m.dim, m.input_size, m.precision, coalesce(e.n, 0)
        FROM models m
        LEFT JOIN (SELECT model, count(*) AS n FROM embeddings GROUP BY model) e USING (model)
        ORDER BY m.model
        """
    ).fetchall()
    return [(ModelRow(*row[:6]), int(row[6])) for row in rows]


def record_model(con: duckdb.DuckDBPyConnection, row: ModelRow) -> None:
    """Insert or update the `models` row (the caller checked that the weights are the same)."""
    sql = """
        INSERT INTO models (model, family, weights, dim, input_size, precision)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (model) DO UPDATE SET
            family = excluded.family, weights = excluded.weights, dim = excluded.dim,
            input_size = excluded.input_size, precision = excluded.precision
    """
    _run(con, sql, [row.model, row.family, row.weights, row.dim, row.input_size, row.precision])


def precision_counts(
    con: duckdb.DuckDBPyConnection, model: str, frame_ids: Sequence[int] | None = None
) -> dict[str, int]:
    """How many of `model`'s vectors (of frames still in the store; of `frame_ids` when given)
    each precision made, most first."""
    base = """
        SELECT e.precision, count(*) AS n FROM embeddings e SEMI JOIN frames f USING (frame_id)
        WHERE e.model = $model {only} GROUP BY e.precision ORDER BY n DESC, e.precision
    """
    if frame_ids is None:
        rows = con.execute(base.format(only=""), {"model": model}).fetchall()
    else:
        con.register("_precision_ids", _ids_table(frame_ids))
        try:
            rows = con.execute(
                base.format(only="AND e.frame_id IN (SELECT frame_id FROM _precision_ids)"),
                {"model": model},
            ).fetchall()
        finally:
            con.unregister("_precision_ids")
    return {precision: int(n) for precision, n in rows}


def delete_model(con: duckdb.DuckDBPyConnection, model: str) -> int:
    """Remove a model's vectors and its `models` row; returns the number of vectors removed."""
    n = scalar(con, "SELECT count(*) FROM embeddings WHERE model = ?", [model]) or 0
    con.execute("BEGIN TRANSACTION")
    try:
        _run(con, "DELETE FROM embeddings WHERE model = ?", [model])
        _run(con, "DELETE FROM models WHERE model = ?", [model])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(n)


# --- which frames need work ----------------------------------------------------------------------


def count_frames(con: duckdb.DuckDBPyConnection, frame_ids: Sequence[int] | None = None) -> int:
    """Frames in the store (only those in `frame_ids` when given)."""
    if frame_ids is None:
        return int(scalar(con, "SELECT count(*) FROM frames") or 0)
    con.register("_count_ids", _ids_table(frame_ids))
    try:
        return int(
            scalar(
                con,
                "SELECT count(*) FROM frames WHERE frame_id IN (SELECT frame_id FROM _count_ids)",
            )
            or 0
        )
    finally:
        con.unregister("_count_ids")


def pending_frames(
    con: duckdb.DuckDBPyConnection, model: str, frame_ids: Sequence[int] | None = None
) -> list[PendingFrame]:
    """Frames without a vector for `model` (restricted to `frame_ids` when given), by frame_id."""
    base = """
        SELECT f.frame_id, f.root, f.path FROM frames f
        WHERE NOT EXISTS (
            SELECT 1 FROM embeddings e WHERE e.frame_id = f.frame_id AND e.model = $model)
    """
    if frame_ids is None:
        rows = con.execute(base + " ORDER BY f.frame_id", {"model": model}).fetchall()
    else:
        ids = _ids_table(frame_ids)
        con.register("_pending_ids", ids)
        try:
            rows = con.execute(
                base + " AND f.frame_id IN (SELECT frame_id FROM _pending_ids) ORDER BY f.frame_id",
                {"model": model},
            ).fetchall()
        finally:
            con.unregister("_pending_ids")
    return [PendingFrame(int(r[0]), r[1], r[2]) for r in rows]


# --- writing a batch -----------------------------------------------------------------------------


def _vector_table(frame_ids: np.ndarray, vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32), type=pa.int32())
    values = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "frame_id": pa.array(np.asarray(frame_ids, dtype=np.int64), type=pa.int64()),
            "vector": pa.ListArray.from_arrays(offsets, values),
        }
    )


def insert_vectors(
    con: duckdb.DuckDBPyConnection,
    model: str,
    frame_ids: Sequence[int],
    vectors: np.ndarray,
    errors: Sequence[tuple[PendingFrame, str]] = (),
    precision: str = "float32",
) -> int:
    """Write one batch in one transaction: vectors (made at `precision`), plus `ingest_errors`
    rows for failed frames.

    A vector that already exists is left as it is (a resumed run never duplicates). A frame
    that now has a vector loses any old 'embed' error row. Returns the number of vectors added.
    """
    frame_ids = np.asarray(frame_ids, dtype=np.int64)
    if len(frame_ids) != len(vectors):
        raise ValueError(f"{len(frame_ids)} frame ids but {len(vectors)} vectors")
    con.execute("BEGIN TRANSACTION")
    try:
        added = 0
        if len(frame_ids):
            batch = _vector_table(frame_ids, vectors)
            con.register("_embed_batch", batch)
            try:
                sql = """
                    INSERT INTO embeddings (frame_id, model, vector, precision)
                    SELECT frame_id, $model, vector, $precision FROM _embed_batch
                    ON CONFLICT DO NOTHING
                    RETURNING frame_id
                """
                params = {"model": model, "precision": precision}
                try:
                    added = len(con.execute(sql, params).fetchall())
                except duckdb.Error as exc:
                    log_failed(sql, params, exc)
                    raise
                _run(
                    con,
                    f"""
                    DELETE FROM ingest_errors
                    WHERE stage = '{EMBED_STAGE}' AND location IN (
                        SELECT f.location FROM frames f
                        WHERE f.frame_id IN (SELECT frame_id FROM _embed_batch))
                """,
                )
            finally:
                con.unregister("_embed_batch")
        if errors:
            record_errors(con, errors)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(added)


def record_errors(
    con: duckdb.DuckDBPyConnection, errors: Sequence[tuple[PendingFrame, str]]
) -> None:
    """Upsert one `ingest_errors` row (stage 'embed') per frame whose file could not be used."""
    import pandas as pd

    rows = pd.DataFrame(
        {
            "frame_id": pd.Series([frame.frame_id for frame, _ in errors], dtype="int64"),
            "message": [message for _, message in errors],
        }
    )
    con.register("_embed_errors", rows)
    try:
        _run(
            con,
            f"""
            INSERT INTO ingest_errors (location, stage, path, message, root, occurred_at)
            SELECT f.location, '{EMBED_STAGE}', f.path, e.message, f.root, now()
            FROM _embed_errors e JOIN frames f USING (frame_id)
            ON CONFLICT (location, stage) DO UPDATE SET
                message = excluded.message, path = excluded.path, root = excluded.root,
                occurred_at = excluded.occurred_at
        """,
        )
    finally:
        con.unregister("_embed_errors")


# --- reading -------------------------------------------------------------------------------------


def count_vectors(con: duckdb.DuckDBPyConnection, model: str) -> int:
    """Vectors stored for `model` (of frames still in the store)."""
    return int(
        scalar(
            con,
            """
        SELECT count(*) FROM embeddings e SEMI JOIN frames f USING (frame_id) WHERE e.model = ?
    """,
            [model],
        )
        or 0
    )


def vector_ids(con: duckdb.DuckDBPyConnection, model: str) -> np.ndarray:
    """Frame ids (sorted int64) of the frames still in `frames` that have a `model` vector."""
    rows = con.sql(
        "SELECT e.frame_id FROM embeddings e SEMI JOIN frames f USING (frame_id) "
        "WHERE e.model = $model ORDER BY e.frame_id",
        params={"model": model},
    ).fetchnumpy()["frame_id"]
    return np.asarray(rows, dtype=np.int64)


def vector_dim(con: duckdb.DuckDBPyConnection, model: str) -> int | None:
    """Length of `model`'s stored vectors (None when there are none)."""
    dim = scalar(con, "SELECT len(vector) FROM embeddings WHERE model = ? LIMIT 1", [model])
    return None if dim is None else int(dim)


def _vector_query(dim: int, source: str) -> str:
    return f"""
        SELECT e.frame_id, CAST(e.vector AS FLOAT[{int(dim)}]) AS vector FROM embeddings e
        WHERE e.model = $model AND e.frame_id IN (SELECT frame_id FROM {source})
    """


@contextlib.contextmanager
def _vectors_probe_the_frames(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Plan the vector queries with the frames (the ids) as the hash join's build side.

    DuckDB picks the build side by its estimates: where it cannot prove from the column's
    statistics that every vector is the model's (a model key longer than the 8 bytes a string
    statistic keeps, such as `vgg16-hed-grid`), it guesses a fifth of them and builds the hash
    table on the vectors instead, holding every 4,608-d vector at once: at 50,000 frames that is
    900 MB, and under the streaming bound (`bound_memory`) the read failed with DuckDB's "Out
    of Memory". The `build_side_probe_side` optimizer is turned off while these queries are
    planned and run, so the vectors stream past a table of ids."""
    previous = scalar(con, "SELECT current_setting('disabled_optimizers')") or ""
    off = ",".join(dict.fromkeys([*filter(None, previous.split(",")), "build_side_probe_side"]))
    _run(con, f"SET disabled_optimizers = '{off}'")
    try:
        yield
    finally:
        # a stream left unfinished closes after its connection: nothing is left to plan then
        with contextlib.suppress(duckdb.ConnectionException):
            con.execute(f"SET disabled_optimizers = '{previous}'")


def _wrong_dim(model: str, dim: int) -> StoreError:
    return StoreError(
        f"the {model} vectors in the store do not all have {dim} values: re-embed with "
        f"`python -m pipeline embed --model {model} --replace`"
    )


def _as_matrix(ids_column, vector_column, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrow frame_id and FLOAT[dim] columns (arrays or chunked) -> int64 ids, float32 matrix."""
    ids = np.asarray(ids_column.to_numpy(), dtype=np.int64)
    chunks = getattr(vector_column, "chunks", [vector_column])
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in chunks]
    values = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0)
    return ids, np.asarray(values, dtype=np.float32).reshape(len(ids), dim)


def load_vectors(
    con: duckdb.DuckDBPyConnection, model: str, frame_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of `model` as `(frame_ids int64[n], matrix float32[n, dim])`, ordered by frame_id.

    Only frames still in `frames` are returned (restricted to `frame_ids` when given). With no
    vectors the matrix is `(0, dim)` (dim from `models`, else 0). The vectors come out of
    DuckDB as one fixed-size Arrow list, so the matrix is a reshape, not a Python loop; no
    ORDER BY on the wide rows either (rows come in insertion order, re-sorted only if needed).
    For more vectors than fit in memory at once, `iter_vectors` streams them.
    """
    dim = vector_dim(con, model)
    if dim is None:
        row = get_model_row(con, model)
        return np.zeros(0, dtype=np.int64), np.zeros((0, row.dim if row else 0), dtype=np.float32)
    query = _vector_query(dim, "frames")
    try:
        with _vectors_probe_the_frames(con):
            if frame_ids is None:
                table = con.sql(query, params={"model": model}).to_arrow_table()
            else:
                con.register("_load_ids", _ids_table(frame_ids))
                try:
                    table = con.sql(
                        _vector_query(
                            dim,
                            "(SELECT frame_id FROM frames SEMI JOIN _load_ids USING (frame_id))",
                        ),
                        params={"model": model},
                    ).to_arrow_table()
                finally:
                    con.unregister("_load_ids")
    except duckdb.ConversionException as exc:
        raise _wrong_dim(model, dim) from exc
    except duckdb.Error as exc:
        log_failed(query, {"model": model}, exc)
        raise
    ids, matrix = _as_matrix(table.column("frame_id"), table.column("vector"), dim)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, matrix = ids[order], matrix[order]
    return ids, matrix


def bound_memory(con: duckdb.DuckDBPyConnection, megabytes: int) -> None:
    """Bound DuckDB's buffers while this connection streams vectors. DuckDB keeps every block
    it reads cached up to its memory limit (80% of RAM by default), so a 14 GB matrix read
    once would stay resident; bounded, reading evicts what is done."""
    _run(con, f"SET memory_limit = '{int(megabytes)}MB'")


def iter_vectors(
    con: duckdb.DuckDBPyConnection, model: str, batch_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every vector of `model` (frames still in `frames`), streamed in one query as batches of
    at most `batch_rows`: `(frame_ids int64[m], matrix float32[m, dim])` in stored order, not
    sorted. Memory is one batch, whatever the number of vectors."""
    dim = vector_dim(con, model)
    if dim is None:
        return
    query = _vector_query(dim, "frames")
    try:
        with _vectors_probe_the_frames(con):
            reader = con.sql(query, params={"model": model}).to_arrow_reader(int(batch_rows))
            for batch in reader:
                if batch.num_rows:
                    yield _as_matrix(batch.column("frame_id"), batch.column("vector"), dim)
    except duckdb.ConversionException as exc:
        raise _wrong_dim(model, dim) from exc
    except duckdb.Error as exc:
        log_failed(query, {"model": model}, exc)
        raise
