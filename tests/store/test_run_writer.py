"""A run written part by part in one transaction (`writing_run`): all of it or nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import store
from store import analysis as sa
from tests.store.test_prune import N_FRAMES, make_store


def _parts(run_id: int) -> dict[str, pa.Table]:
    ids = np.arange(1, N_FRAMES + 1)
    return {
        "clusters": pa.table(
            {
                "run_id": np.full(N_FRAMES, run_id),
                "frame_id": ids,
                "cluster": np.zeros(N_FRAMES, np.int32),
                "map_x": pa.array([0.5, np.nan, 1, 2, 3, 4], from_pandas=True),
                "map_y": np.zeros(N_FRAMES),
            }
        ),
        "scores": pa.table(
            {
                "run_id": np.full(N_FRAMES, run_id),
                "detector": pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(N_FRAMES, np.int32)), pa.array(["lof"])
                ),
                "frame_id": ids,
                "score": pa.array([1.0, np.nan, 3, 4, 5, 6], from_pandas=True),
                "score_pct": np.linspace(0, 1, N_FRAMES),
                "is_outlier": ids == 6,
            }
        ),
        "neighbors": pa.table(
            {
                "run_id": np.full(N_FRAMES, run_id),
                "frame_id": ids,
                "rank": np.ones(N_FRAMES, np.int32),
                "neighbor_id": np.roll(ids, 1),
                "distance": np.full(N_FRAMES, 0.25),
            }
        ),
    }


def _counts(con, run_id: int) -> dict[str, int]:
    return {
        table: int(
            con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchone()[0]
        )
        for table in sa.RUN_TABLES
    }


def test_a_run_written_part_by_part_reads_back_as_written(db_path):
    make_store(db_path)
    artifact = np.random.default_rng(0).bytes(3 << 20)
    with store.connect(db_path) as con:
        run_id = sa.start_run(con, "a", {}, "test")
        parts = _parts(run_id)
        with sa.writing_run(con, run_id, keep_fitted=1) as writer:
            writer.add_fitted(artifact, {"numpy": "x"})
            writer.add_clusters(parts["clusters"])
            writer.add_scores(parts["scores"])
            for lo in range(0, N_FRAMES, 4):  # the neighbours in slices
                writer.add_neighbors(parts["neighbors"].slice(lo, 4))
            writer.complete(n_frames=N_FRAMES, timings={"write": 1.0}, keep_fitted=1)
        assert sa.load_fitted(con, run_id) == (artifact, {"numpy": "x"})
        assert sa.get_run(con, run_id)["status"] == "complete"
        scores = sa.run_scores(con, run_id)
        assert list(scores["detector"].unique()) == ["lof"]
        assert scores["score"].isna().tolist() == [False, True] + [False] * 4  # NaN: no score
        assert scores["is_outlier"].tolist() == [False] * 5 + [True]
        assert sa.run_clusters(con, run_id)["map_x"].isna().sum() == 1
        pd.testing.assert_frame_equal(
            sa.run_neighbors(con, run_id),
            parts["neighbors"].to_pandas().drop(columns="run_id"),
            check_dtype=False,
        )
        assert _counts(con, run_id)["run_aggregates"] == 1  # written by `complete`


def test_a_failure_after_the_fitted_state_leaves_no_row_of_the_run(db_path):
    make_store(db_path)
    with store.connect(db_path) as con:
        run_id = sa.start_run(con, "a", {}, "test")
        parts = _parts(run_id)
        with pytest.raises(OSError, match="disk on fire"):
            with sa.writing_run(con, run_id) as writer:
                writer.add_fitted(b"state", {})
                writer.add_clusters(parts["clusters"])
                writer.add_scores(parts["scores"])
                raise OSError("disk on fire")
        assert set(_counts(con, run_id).values()) == {0}
        assert sa.get_run(con, run_id)["status"] == "running"  # the caller marks it failed


def test_a_run_not_completed_is_rolled_back_not_committed(db_path):
    make_store(db_path)
    with store.connect(db_path) as con:
        run_id = sa.start_run(con, "a", {}, "test")
        parts = _parts(run_id)
        with pytest.raises(RuntimeError, match="not completed"):
            with sa.writing_run(con, run_id) as writer:
                writer.add_fitted(b"state", {})
                writer.add_clusters(parts["clusters"])
        assert set(_counts(con, run_id).values()) == {0}
        assert sa.get_run(con, run_id)["status"] == "running"


def test_a_bad_keep_fitted_is_refused_before_anything_is_written(db_path):
    make_store(db_path)
    with store.connect(db_path) as con:
        run_id = sa.start_run(con, "a", {}, "test")
        with pytest.raises(ValueError, match="keep_fitted"):
            with sa.writing_run(con, run_id, keep_fitted=0):
                raise AssertionError("the block must not run")
        assert set(_counts(con, run_id).values()) == {0}
