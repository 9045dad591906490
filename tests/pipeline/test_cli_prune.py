"""`prune` and fitted-state retention as a user meets them: output, exit codes, messages."""

from __future__ import annotations

import hashlib
import re

import pytest
from click.testing import CliRunner

import store
from pipeline.cli import cli
from store import analysis as sa
from store import upkeep
from tests.store.test_prune import failed_run, make_store, write_run


@pytest.fixture
def pruneable(db_path):
    """Model a: five complete runs and an old failed one; model b: one run. Returns the ids."""
    make_store(db_path)
    with store.connect(db_path) as con:
        a = [write_run(con, "a")]
        failed = failed_run(con, "a")
        a += [write_run(con, "a") for _ in range(4)]
        b = write_run(con, "b")
    return db_path, a, failed, b


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _sizes(output: str) -> list[float]:
    return [float(x) for x in re.findall(r"(\d+\.\d) MB", output)]


def test_prune_removes_old_runs_and_says_what_and_how_big(pruneable):
    db, a, failed, b = pruneable
    out = _invoke("prune", "--db", str(db), "--keep", "2")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == (
        "prune (keep 2 per model): removed 4 run(s); rows: clusters 18, "
        "outlier_scores 36, frame_cause_evidence 0, neighbors 36, fitted_runs 3, "
        "run_frame_cells 3, run_detector_cells 6, run_frame_hours 3, run_detector_hours 6, "
        "run_samples 18, run_sample_scores 36, run_condition_samples 0, run_condition_sample_scores 0, "
        "run_top 36, incident_frames 0, incidents 0, incident_groups 0, "
        "incident_group_cells 0, incident_ranks 0, run_aggregates 3, analysis_runs 4 "
        "(fitted states 3.1 MB)"
    )  # a run's aggregates go with it
    assert lines[1] == f"  a: removed {a[0]}, {failed}, {a[1]}, {a[2]}; kept {a[4]}, {a[3]}"
    assert lines[2] == f"  b: removed none; kept {b}"
    assert lines[3].startswith("file: ") and len(_sizes(lines[3])) == 2
    with store.connect(db, read_only=True) as con:
        assert sa.latest_complete_runs(con) == {"a": a[4], "b": b}
        assert con.execute("SELECT count(*) FROM analysis_runs").fetchall()[0][0] == 3


def test_dry_run_prints_the_plan_and_leaves_the_file_byte_for_byte(pruneable):
    db, a, failed, _ = pruneable
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    out = _invoke("prune", "--db", str(db), "--keep", "2", "--dry-run", "--compact")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("prune (keep 2 per model): would remove 4 run(s)")
    assert f"  a: would remove {a[0]}, {failed}, {a[1]}, {a[2]}; kept" in out.output
    assert out.output.rstrip().endswith(
        "dry run: nothing changed (--compact would then rewrite the file)"
    )
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_compact_reports_the_smaller_file(pruneable):
    db = pruneable[0]
    out = _invoke("prune", "--db", str(db), "--keep", "1", "--compact")
    assert out.exit_code == 0, out.output
    file_line, compact_line = out.output.splitlines()[-2:]
    before, after_prune = _sizes(file_line)
    compact_from, compact_to = _sizes(compact_line)
    assert compact_line.startswith("compacted: ") and compact_from == after_prune
    assert compact_to < before - 4  # four 1 MiB fitted states went back to the disk
    assert compact_to == pytest.approx(upkeep.file_size(db) / 1e6, abs=0.05)
    again = _invoke("prune", "--db", str(db), "--keep", "1")
    assert again.exit_code == 0
    assert again.output.splitlines()[0] == "prune (keep 1 per model): nothing to remove"


def test_keep_below_one_is_a_usage_error(pruneable):
    db = pruneable[0]
    out = _invoke("prune", "--db", str(db), "--keep", "0")
    assert out.exit_code == 2 and "--keep" in out.output and "x>=1" in out.output


def test_keep_fitted_runs_below_one_is_refused_before_any_work(db_path, tmp_path):
    make_store(db_path)
    config = tmp_path / "settings.toml"
    config.write_text("keep_fitted_runs = 0\n")
    out = _invoke("--config", str(config), "analyze", "--db", str(db_path), "--model", "a")
    assert out.exit_code == 1
    assert out.output.strip().startswith(
        "error: setting keep_fitted_runs must be between 1 and 1000, not 0"
    )
    with store.connect(db_path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM analysis_runs").fetchall()[0][0] == 0


def test_score_new_on_a_dropped_fitted_state_names_the_newest_run_with_one(db_path, tmp_path):
    make_store(db_path)
    with store.connect(db_path) as con:
        runs = [write_run(con, "a", keep_fitted=2) for _ in range(3)]
        unsaved = write_run(con, "a", fitted=False, keep_fitted=2)
        sa.prune_runs(con, 3)  # removes the oldest run (its fitted state went already)
    folder = tmp_path / "new"
    folder.mkdir()

    def score_new(run_id: int) -> str:
        out = _invoke("score-new", str(folder), "--db", str(db_path), "--run-id", str(run_id))
        assert out.exit_code == 1 and len(out.output.splitlines()) == 1, out.output
        return out.output.strip()

    with store.connect(db_path) as con:
        write_run(con, "a", keep_fitted=1)  # the two fitted states before it are dropped
        newest = sa.latest_fitted_run(con, "a")
    assert score_new(runs[2]) == (
        f"error: the fitted state of run {runs[2]} was dropped by a later analysis to keep the "
        "store small (setting keep_fitted_runs: only the newest runs of each model keep theirs)"
        f"; the newest a run with one is run {newest}: pass --run-id {newest}"
    )
    assert score_new(runs[0]).startswith(
        f"error: there is no analysis run {runs[0]} in {db_path} (`prune` removes old runs); "
        f"the newest run with one is run {newest}: pass --run-id {newest}"
    )
    assert score_new(unsaved).startswith(
        f"error: run {unsaved} was analysed with save_fitted = false; the newest a run"
    )
