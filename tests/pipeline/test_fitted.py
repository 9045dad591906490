"""A run's fitted state: one scoring path, a format version in its pickle, older pickles read."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.detectors import CONSENSUS
from pipeline.fitted import FittedRun, neighbors_needed
from pipeline.versioned import FORMAT_KEY
from tests.cpu import assert_flags_agree, assert_same_ranking, same_kind_as_recorded
from tests.pipeline.test_detectors import _batch

DATA = Path(__file__).resolve().parents[1] / "data"


def _unversioned() -> tuple[bytes, pd.DataFrame]:
    """A fitted run pickled by the code before formats were recorded (commit 636c4fa, see
    tests/data/make_unversioned_fitted.py) and the scores that code gave its frames."""
    artifact = gzip.decompress((DATA / "fitted_run_unversioned.pkl.gz").read_bytes())
    return artifact, pd.read_csv(DATA / "fitted_run_unversioned_scores.csv.gz")


def test_a_run_pickled_before_formats_loads_and_scores_as_it_did():
    artifact, expected = _unversioned()
    assert FORMAT_KEY.encode() not in artifact and b"pipeline.background" in artifact
    fitted = FittedRun.from_bytes(artifact)
    batch = _batch()
    assert list(batch.frame_ids) == list(expected["frame_id"])
    fitted.index.attach(batch, neighbors_needed(fitted.detectors))
    scored = fitted.score(batch)
    assert set(scored.scores) == {c.split(":")[0] for c in expected.columns if ":" in c}
    for key in scored.scores:
        if not same_kind_as_recorded():  # made on a Sapphire Rapids: see tests/cpu.py
            assert_same_ranking(scored.scores[key], expected[f"{key}:score"], key)
            np.testing.assert_allclose(
                scored.pcts[key], expected[f"{key}:score_pct"], rtol=0, atol=0.05, err_msg=key
            )
            continue
        np.testing.assert_allclose(
            scored.scores[key], expected[f"{key}:score"], rtol=1e-9, atol=1e-12, err_msg=key
        )
        np.testing.assert_array_equal(scored.pcts[key], expected[f"{key}:score_pct"], err_msg=key)
    # what that pickle lacked was filled in by the classes' upgrades
    assert fitted.consensus.n_reference_ == len(batch)
    assert fitted.detectors["same_time"].max_days == 30


def test_a_fitted_run_round_trips_with_its_format(tmp_path):
    fitted = FittedRun.from_bytes(_unversioned()[0])
    assert fitted.__getstate__()[FORMAT_KEY] == FittedRun.format_version
    again = FittedRun.from_bytes(fitted.to_bytes())
    batch = _batch()
    fitted.index.attach(batch, neighbors_needed(fitted.detectors))
    first, second = fitted.score(batch), again.score(batch)
    for key in first.scores:
        np.testing.assert_array_equal(first.scores[key], second.scores[key], err_msg=key)
    np.testing.assert_array_equal(first.flags[CONSENSUS], second.flags[CONSENSUS])


def test_scoring_the_fit_batch_gives_the_fits_own_scores():
    """`score(batch, of_fit=True)` (what analyze writes: the scores each detector kept from its
    fit) equals scoring the fit's frames again (what score-new does): one path, two callers."""
    fitted = FittedRun.from_bytes(_unversioned()[0])
    batch = _batch()
    fitted.index.attach(batch, neighbors_needed(fitted.detectors))
    # the detectors kept their fit's scores; the consensus of that code did not
    pcts = {k: d.percentile(d.decision_scores_) for k, d in fitted.detectors.items()}
    fitted.consensus.decision_scores_ = fitted.consensus.decision_function(pcts)
    of_fit, again = fitted.score(batch, of_fit=True), fitted.score(batch)
    assert list(of_fit.scores) == [*fitted.detectors, CONSENSUS]
    for key in of_fit.scores:
        if not same_kind_as_recorded():  # kept scores made on a Sapphire Rapids: tests/cpu.py
            assert_same_ranking(of_fit.scores[key], again.scores[key], key)
            assert_flags_agree(of_fit.flags[key], again.flags[key], key)
            continue
        np.testing.assert_allclose(of_fit.scores[key], again.scores[key], rtol=1e-9, err_msg=key)
        np.testing.assert_array_equal(of_fit.flags[key], again.flags[key], err_msg=key)
    rows = of_fit.rows(7)
    assert (rows["run_id"] == 7).all() and len(rows) == len(batch) * len(of_fit.scores)
    assert rows.groupby("detector")["is_outlier"].mean().between(0.03, 0.06).all()


def test_one_detectors_arrow_rows_are_its_dataframe_rows_and_are_let_go(db_path):
    import pyarrow as pa

    import store
    from pipeline.fitted import RunScores
    from store import analysis as sa
    from tests.store.test_prune import make_store

    ids = np.arange(1, 7)
    scores = {
        "lof": np.array([0.1, np.nan, np.inf, -np.inf, 2.0, 3.0]),
        CONSENSUS: np.linspace(0, 1, 6),
    }
    pcts = {"lof": np.array([0.1, np.nan, 1.0, 0.0, 0.5, 0.9]), CONSENSUS: np.linspace(0, 1, 6)}
    flags = {"lof": np.array([0, 0, 1, 0, 0, 1], bool), CONSENSUS: ids > 4}

    def copy(d):
        return {k: v.copy() for k, v in d.items()}

    make_store(db_path)
    with store.connect(db_path) as con:
        old, new = (sa.start_run(con, "a", {}, "test") for _ in range(2))
        sa.insert_scores(con, RunScores(ids, copy(scores), copy(pcts), copy(flags)).rows(old))
        popped = RunScores(ids, copy(scores), copy(pcts), copy(flags))
        for key in list(scores):
            table = popped.pop_table(key, new)
            assert isinstance(table, pa.Table) and len(table) == len(ids)
            sa.insert_scores(con, table)
        assert popped.scores == popped.pcts == popped.flags == {}
        pd.testing.assert_frame_equal(sa.run_scores(con, old), sa.run_scores(con, new))
        assert sa.run_scores(con, new)["score"].isna().sum() == 3  # NaN and both infinities


def test_neighbor_tables_in_parts_are_the_neighbor_rows():
    from pipeline.fitted import neighbor_rows, neighbor_tables

    rng = np.random.default_rng(0)
    ids = np.arange(10, 17)
    dist = rng.random((7, 4))
    dist[2, 3] = np.inf  # fewer neighbours found: no row
    idx = rng.integers(0, 5, (7, 4))
    fit_ids = np.arange(100, 105)
    parts = list(neighbor_tables(1, ids, dist, idx, fit_ids, k=3, frames_per_part=3))
    assert len(parts) == 3
    whole = pd.concat([p.to_pandas() for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(whole, neighbor_rows(1, ids, dist, idx, fit_ids, k=3))
    parts = list(neighbor_tables(1, ids, dist, idx, fit_ids, k=4, frames_per_part=3))
    assert sum(len(p) for p in parts) == 7 * 4 - 1
