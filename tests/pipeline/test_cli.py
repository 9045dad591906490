"""The command line as a user meets it: help, and expected problems as one line + exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ["ingest", "info", "run", "demo", "embed", "models", "analyze", "evaluate",
                    "score-new", "weather", "locate", "migrate", "prune"]:
        assert f"  {command}" in result.stdout, command


def test_each_command_has_help():
    for command in ["ingest", "info", "run", "demo"]:
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "--db" in result.stdout or command == "demo"


def test_locked_store_is_one_clear_line_and_exit_1(tmp_path):
    db = tmp_path / "s.duckdb"
    code = textwrap.dedent(f"""
        import time, store
        con = store.connect({str(db)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("info", "--db", str(db), env={"TIMELAPSE_LOCK_TIMEOUT_S": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the store")
    assert str(db) in lines[0] and "locked" in lines[0]


def test_store_from_newer_schema_is_refused_by_the_cli(tmp_path):
    import store
    from store import migrations

    db = tmp_path / "s.duckdb"
    with store.connect(db) as con:
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, 'future')",
                    [migrations.LATEST + 1])
    result = run_cli("info", "--db", str(db))
    assert result.returncode == 1
    assert "newer than this code knows" in result.stderr
    assert "Traceback" not in result.stderr



HEAVY_MODULES = ("tensorflow", "keras", "torch", "sklearn", "scipy", "pyod", "faiss", "PIL")


def run_cli_timed_imports(*args: str) -> tuple[subprocess.CompletedProcess, list[str], set[str]]:
    """Run the CLI with `-X importtime`: (result, stderr lines but the import lines, the heavy
    modules it imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", *args],
                            cwd=REPO, text=True, capture_output=True, timeout=60)
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines
                if line.startswith("import time:")}
    assert "store.db" in imported  # the -X importtime listing is there
    heavy = {name for name in imported if name.split(".")[0] in HEAVY_MODULES}
    return result, [line for line in lines if not line.startswith("import time:")], heavy


@pytest.mark.parametrize("command", [["analyze"], ["embed"], ["score-new", "{folder}"],
                                     ["prune"]])
def test_busy_store_is_refused_before_the_heavy_imports(tmp_path, command):
    """With another run holding the store, analyze / embed / score-new / prune say so and exit 1
    without loading TensorFlow, scikit-learn, PyOD, faiss or PIL (analyze took ~2.6 s)."""
    import store

    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    folder = tmp_path / "new"
    folder.mkdir()
    args = [part.format(folder=folder) for part in command]
    # flock locks conflict between processes: the CLI below is refused while this one holds it
    with store.writer_lock(db):
        result, messages, heavy = run_cli_timed_imports(*args, "--db", str(db))
    assert result.returncode == 1
    assert messages == [(f"error: another run is writing to {db} (PID {os.getpid()}); wait "
                         "for it to finish or stop it, then run again. Nothing was changed.")]
    assert not heavy, sorted(heavy)[:10]


def test_score_new_missing_folder_is_refused_before_the_heavy_imports(tmp_path):
    import store

    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    result, messages, heavy = run_cli_timed_imports("score-new", str(tmp_path / "nope"),
                                                    "--db", str(db))
    assert result.returncode == 1
    assert messages == [f"error: the folder {tmp_path / 'nope'} does not exist"]
    assert not heavy, sorted(heavy)[:10]


def test_a_store_embedded_with_another_model_keeps_it(tmp_path, small_folder):
    """Without --model, `run` and `embed` go on with the one model a store already has vectors
    of: a store made before the default changed is not embedded again from scratch."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    db = tmp_path / "s.duckdb"
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(small_folder), "--db", str(db), "--model", "pixels",
                                "--detectors", "iforest,dark"])
    assert first.exit_code == 0, first.output
    (small_folder / "extra").mkdir()
    source = next(small_folder.rglob("*.jpg"))
    (small_folder / "extra" / "copy.jpg").write_bytes(source.read_bytes())
    again = runner.invoke(cli, ["run", str(small_folder), "--db", str(db),
                                "--detectors", "iforest,dark"])
    assert again.exit_code == 0, again.output
    assert "embed pixels: 1 frames embedded in" in again.output
    assert "12 already had vectors" in again.output and "analysis run 2 (pixels)" in again.output
    assert "vgg16-hed-grid" not in again.output
    embedded = runner.invoke(cli, ["embed", "--db", str(db), "--no-progress"])
    assert embedded.output.startswith("embed pixels: 0 frames embedded"), embedded.output
    import store
    from store import analysis as sa

    with store.connect(db, read_only=True) as con:
        assert sa.embedded_models(con) == {"pixels": 13}
        assert set(sa.latest_complete_runs(con)) == {"pixels"}
