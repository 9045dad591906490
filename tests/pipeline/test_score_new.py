"""Scoring new frames against a frozen run: same scores for fit frames, rows, report, CLI."""

from __future__ import annotations

import pickle
import shutil
from datetime import datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner

import store
from pipeline.analyze import analyze
from pipeline.cli import cli
from pipeline.embed import embed_frames
from pipeline.errors import AnalysisError
from pipeline.fitted import FittedRun
from pipeline.ingest import ingest_folder
from pipeline.score_new import load_fitted_run, score_frames, score_new
from pipeline.settings import Settings
from store import analysis as sa
from tests.conftest import write_jpeg
from tests.pipeline.test_analyze import FAST, synthetic_store


def _settings(**changes) -> Settings:
    return Settings(
        model="pixels", detectors=FAST + ["background"], n_clusters="2", workers=1
    ).replace(**changes)


@pytest.fixture(scope="module")
def _fitted_once(tmp_path_factory):
    """30 real JPEG frames over three days, ingested, embedded (pixels) and analysed once."""
    base = tmp_path_factory.mktemp("fitted")
    folder = base / "frames"
    start = datetime(2024, 4, 10, 9, 0, 0)
    for day in range(3):
        for i in range(10):
            when = start + timedelta(days=day, minutes=30 * i)
            write_jpeg(
                folder / f"d{day}" / f"f_{i:02d}.jpg",
                when=when,
                seed=day * 10 + i,
                colour=(90 + 3 * i, 140, 60),
            )
    db = base / "store.duckdb"
    settings = _settings()
    ingest_folder(folder, db, settings, progress=False)
    embed_frames(db, settings, progress=False)
    result = analyze(db, settings, progress=False)
    return db, folder, result, settings


@pytest.fixture
def fitted_store(_fitted_once, tmp_path):
    """A private copy of the analysed store for each test."""
    db, folder, result, settings = _fitted_once
    copy = tmp_path / "store.duckdb"
    shutil.copy(db, copy)
    return copy, folder, result, settings


def test_fit_frames_get_the_scores_they_got_in_the_run(fitted_store):
    db, _, result, _ = fitted_store
    fitted, warnings = load_fitted_run(db)
    assert fitted.run_id == result.run_id and warnings == []
    assert "background" in result.detectors  # read from the real thumbnails, frozen with the run
    with store.connect(db, read_only=True) as con:
        stored = sa.run_scores(con, result.run_id)
        ids = sa.run_frame_ids(con, result.run_id)
    report, skipped = score_frames(db, fitted, ids, write=False)
    assert skipped == 0 and len(report) == len(ids)
    for detector, part in stored.groupby("detector"):
        part = part.set_index("frame_id").loc[report["frame_id"]]
        np.testing.assert_allclose(
            report[detector].to_numpy(float),
            part["score"].to_numpy(float),
            rtol=1e-6,
            atol=1e-9,
            err_msg=detector,
        )
        np.testing.assert_allclose(
            report[f"{detector}_pct"].to_numpy(float),
            part["score_pct"].to_numpy(float),
            rtol=1e-9,
            err_msg=detector,
        )


def test_new_folder_is_scored_without_refitting(fitted_store, tmp_path):
    db, _, result, settings = fitted_store
    new = tmp_path / "new"
    write_jpeg(new / "n_1.jpg", when=datetime(2024, 4, 13, 10, 0), seed=100, colour=(100, 140, 60))
    write_jpeg(
        new / "n_2.jpg", when=datetime(2024, 4, 13, 10, 30), seed=101, colour=(250, 20, 240)
    )  # nothing like the garden
    with store.connect(db, read_only=True) as con:
        runs_before = con.sql("SELECT count(*) FROM analysis_runs").fetchall()[0][0]
    out = score_new(new, db, settings, progress=False)
    assert out.run_id == result.run_id and len(out.frames) == 2
    by_path = out.frames.set_index("path")
    assert by_path.loc["n_2.jpg", "consensus_pct"] > by_path.loc["n_1.jpg", "consensus_pct"]
    assert bool(by_path.loc["n_2.jpg", "too_far"])
    assert by_path["nearest_path"].str.startswith("d").all()
    assert "score-new (run 1, pixels): 2 frames scored" in out.describe()
    with store.connect(db, read_only=True) as con:
        assert con.sql("SELECT count(*) FROM analysis_runs").fetchall()[0][0] == runs_before
        new_ids = out.frames["frame_id"].tolist()
        scores = sa.run_scores(con, result.run_id, new_ids)
        nbs = sa.run_neighbors(con, result.run_id, new_ids)
        run = sa.get_run(con, result.run_id)
    causes = {d for d in scores["detector"] if d.startswith("cause:")}
    assert set(scores["detector"]) - causes == set(result.detectors) and causes
    assert len(nbs) == 2 * 8 and run["n_frames"] == 32
    again = score_new(new, db, settings, progress=False)  # nothing new the second time
    assert len(again.frames) == 0 and "no new frames" in again.describe()


def test_other_library_versions_warn(fitted_store):
    db, _, result, _ = fitted_store
    with store.connect(db) as con:
        con.execute("UPDATE fitted_runs SET versions = json_object('numpy', '0.1')")
    _, warnings = load_fitted_run(db)
    assert warnings and "numpy 0.1 ->" in warnings[0] and "re-run analyze" in warnings[0]


def test_unloadable_fit_says_refit(fitted_store):
    db, _, _, _ = fitted_store
    with store.connect(db) as con:
        con.execute("UPDATE fitted_runs SET artifact = ?", [pickle.dumps("x")[:-2]])
    with pytest.raises(AnalysisError, match="analyze"):
        load_fitted_run(db)


def test_a_fitted_state_this_version_cannot_read_says_refit(fitted_store, monkeypatch):
    """A fitted run saved by a newer version (a format this one does not know) is refused
    with the reason and the command that refits, not scored wrongly."""
    db, _, result, _ = fitted_store
    fitted, _ = load_fitted_run(db, result.run_id)
    monkeypatch.setattr(FittedRun, "format_version", FittedRun.format_version + 1)
    artifact = fitted.to_bytes()
    monkeypatch.undo()
    with store.connect(db) as con:
        con.execute("UPDATE fitted_runs SET artifact = ?", [artifact])
    with pytest.raises(
        AnalysisError,
        match=r"run 1 cannot be used by this version.*newer "
        r"version of the pipeline.*Re-run `python -m "
        r"pipeline analyze",
    ):
        load_fitted_run(db, result.run_id)


def test_no_fitted_run(tmp_path):
    db = tmp_path / "s.duckdb"
    synthetic_store(db)
    with pytest.raises(AnalysisError, match="no complete analysis run"):
        load_fitted_run(db)


def test_cli_score_new(fitted_store, tmp_path):
    db, _, _, _ = fitted_store
    new = tmp_path / "later"
    write_jpeg(new / "x.jpg", when=datetime(2024, 4, 13, 11, 0), seed=7)
    out = CliRunner().invoke(cli, ["score-new", str(new), "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert "1 frames scored" in out.output and "x.jpg: consensus" in out.output
    empty = tmp_path / "empty.duckdb"
    with store.connect(empty):
        pass
    out = CliRunner().invoke(cli, ["score-new", str(new), "--db", str(empty)])
    assert out.exit_code == 1 and out.output.startswith("error: no complete analysis run")


def test_analyze_keeps_keep_fitted_runs_states_and_score_new_names_the_newest(
    fitted_store, tmp_path
):
    db, folder, result, settings = fitted_store
    later = [
        analyze(db, settings.replace(keep_fitted_runs=2), progress=False).run_id for _ in range(2)
    ]
    with store.connect(db, read_only=True) as con:
        fitted = [
            r[0] for r in con.execute("SELECT run_id FROM fitted_runs ORDER BY run_id").fetchall()
        ]
        n_clusters = con.execute(
            "SELECT count(*) FROM clusters WHERE run_id = ?", [result.run_id]
        ).fetchall()[0][0]
    assert fitted == later and n_clusters == 30  # the first run keeps its rows, not its fit
    with pytest.raises(
        AnalysisError,
        match=(
            f"the fitted state of run {result.run_id} was dropped by a later analysis .*"
            f"the newest pixels run with one is run {later[-1]}: pass --run-id {later[-1]}"
        ),
    ):
        score_new(folder, db, settings, progress=False, run_id=result.run_id)
    fitted_run, _ = load_fitted_run(db, later[0])  # a kept one still loads
    assert fitted_run.run_id == later[0]


def test_scoring_a_fit_frame_again_drops_its_evidence_per_plain_cause(fitted_store):
    # the evidence that names other causes' incidents described the fit's scores of a frame
    db, _, result, _ = fitted_store
    fitted, _ = load_fitted_run(db)
    query = "SELECT DISTINCT frame_id FROM frame_cause_evidence WHERE run_id = ? ORDER BY 1"
    with store.connect(db, read_only=True) as con:
        before = [r[0] for r in con.execute(query, [result.run_id]).fetchall()]
    assert len(before) > 1
    score_frames(db, fitted, before[:1], write=True)
    with store.connect(db, read_only=True) as con:
        assert [r[0] for r in con.execute(query, [result.run_id]).fetchall()] == before[1:]


def test_a_run_that_learned_from_reviews_scores_frames_with_what_it_learned(fitted_store, tmp_path):
    """`learned` is kept with the fitted run: a fit frame scored again gets the learned score
    it got in the run, and a new frame gets one."""
    from store import reviews

    db, _, _, settings = fitted_store
    with store.connect(db) as con:
        ids = sa.run_frame_ids(con, 1)
        reviews.set_verdicts(con, ids[:6].tolist(), "junk")
        reviews.set_verdicts(con, ids[10:20].tolist(), "keep")
    result = analyze(db, settings, progress=False)
    assert "learned" in result.detectors
    fitted, _ = load_fitted_run(db)
    assert fitted.run_id == result.run_id and fitted.learned is not None
    with store.connect(db, read_only=True) as con:
        stored = sa.run_scores(con, result.run_id)
    stored = stored[stored["detector"] == "learned"].set_index("frame_id")
    report, _ = score_frames(db, fitted, ids, write=False)
    np.testing.assert_allclose(
        report["learned"].to_numpy(float), stored.loc[report["frame_id"], "score"], atol=1e-9
    )
    np.testing.assert_allclose(
        report["learned_pct"].to_numpy(float), stored.loc[report["frame_id"], "score_pct"]
    )
    new = tmp_path / "new"
    write_jpeg(new / "n_1.jpg", when=datetime(2024, 4, 13, 10, 0), seed=100, colour=(100, 140, 60))
    out = score_new(new, db, settings, progress=False)
    assert out.frames["learned_pct"].between(0, 1).all()
