"""The command line as a user meets it: help, and expected problems as one line + exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in [
        "ingest",
        "info",
        "run",
        "demo",
        "embed",
        "models",
        "analyze",
        "evaluate",
        "score-new",
        "weather",
        "locate",
        "migrate",
        "prune",
        "export",
    ]:
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
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
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
        con.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, 'future')",
            [migrations.LATEST + 1],
        )
    result = run_cli("info", "--db", str(db))
    assert result.returncode == 1
    assert "newer than this code knows" in result.stderr
    assert "Traceback" not in result.stderr


HEAVY_MODULES = ("tensorflow", "keras", "torch", "sklearn", "scipy", "pyod", "faiss", "PIL")


def run_cli_timed_imports(*args: str) -> tuple[subprocess.CompletedProcess, list[str], set[str]]:
    """Run the CLI with `-X importtime`: (result, stderr lines but the import lines, the heavy
    modules it imported)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert "store.db" in imported  # the -X importtime listing is there
    heavy = {name for name in imported if name.split(".")[0] in HEAVY_MODULES}
    return result, [line for line in lines if not line.startswith("import time:")], heavy


@pytest.mark.parametrize("command", [["analyze"], ["embed"], ["score-new", "{folder}"], ["prune"]])
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
    assert messages == [
        (
            f"error: another run is writing to {db} (PID {os.getpid()}); wait "
            "for it to finish or stop it, then run again. Nothing was changed."
        )
    ]
    assert not heavy, sorted(heavy)[:10]


def test_score_new_missing_folder_is_refused_before_the_heavy_imports(tmp_path):
    import store

    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    result, messages, heavy = run_cli_timed_imports(
        "score-new", str(tmp_path / "nope"), "--db", str(db)
    )
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
    first = runner.invoke(
        cli,
        [
            "run",
            str(small_folder),
            "--db",
            str(db),
            "--model",
            "pixels",
            "--detectors",
            "iforest,dark",
        ],
    )
    assert first.exit_code == 0, first.output
    (small_folder / "extra").mkdir()
    source = next(small_folder.rglob("*.jpg"))
    (small_folder / "extra" / "copy.jpg").write_bytes(source.read_bytes())
    again = runner.invoke(
        cli, ["run", str(small_folder), "--db", str(db), "--detectors", "iforest,dark"]
    )
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


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("demo", "--frames", "99999999999999", "--no-serve"),
            "the demo renders 1 to 100,000 frames, not 99,999,999,999,999",
        ),
        (
            ("demo", "--frames", "30", "--size", "99999x3", "--no-serve"),
            "demo frame size must be between 32x24 and 8192x8192",
        ),
        (
            ("demo", "--frames", "30", "--seed", "-1", "--no-serve"),
            "'--seed': -1 is not in the range",
        ),
        (
            ("ingest", "FOLDER", "--db", "DB", "--batch-size", "10000000000"),
            "setting ingest_batch_size must be between 1 and 100000, not 10000000000:",
        ),
        (
            ("ingest", "FOLDER", "--db", "DB", "--workers", "100000"),
            "setting workers must be between 1 and 512",
        ),
    ],
)
def test_size_like_options_are_bounded_with_one_clear_line(tmp_path, args, message):
    folder = tmp_path / "frames"
    folder.mkdir()
    args = [
        str(folder) if a == "FOLDER" else str(tmp_path / "s.duckdb") if a == "DB" else a
        for a in args
    ]
    result = (
        run_cli(*args, "--out", str(tmp_path / "demo")) if args[0] == "demo" else run_cli(*args)
    )
    assert result.returncode in (1, 2), result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "demo" / "frames").exists()


def test_a_settings_file_is_held_to_the_same_bounds(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text("thumbnail_size = 100000\n")
    folder = tmp_path / "frames"
    folder.mkdir()
    result = run_cli(
        "--config", str(config), "ingest", str(folder), "--db", str(tmp_path / "s.duckdb")
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: setting thumbnail_size must be between 16 and 4096")


def test_a_clock_offset_of_millennia_is_refused_and_info_survives_one_stored_before(tmp_path):
    from datetime import datetime

    import store
    from store import kv
    from tests.conftest import write_jpeg

    folder = tmp_path / "frames"
    for i in range(3):
        write_jpeg(folder / f"x{i}.jpg", when=datetime(2024, 4, 1, 12, i))
    db = tmp_path / "s.duckdb"
    assert run_cli("ingest", str(folder), "--db", str(db), "--no-progress").returncode == 0
    result = run_cli("locate", "--db", str(db), "--clock-offset", "-99999999999")
    assert result.returncode == 1
    assert "setting clock_offset_minutes must be between -527040 and 527040" in result.stderr
    # a store written by an older version that accepted it: times 188,000 years BC
    with store.connect(db) as con:
        kv.put(con, "clock_offset_minutes", -99999999999)
        con.execute("UPDATE frames SET taken_at_utc = taken_at_utc - to_minutes(99999999999)")
    info = run_cli("info", "--db", str(db))
    assert info.returncode == 0, info.stderr
    assert "(BC)" in info.stdout and "(out of range)" in info.stdout
    assert "check the camera clock and the clock offset" in info.stdout
    refused = run_cli("ingest", str(folder), "--db", str(db))
    assert refused.returncode == 1
    assert "the store's clock offset (-1e+11 minutes) is beyond 366 days" in refused.stderr
    fixed = run_cli("locate", "--db", str(db), "--clock-offset", "30")
    assert fixed.returncode == 0, fixed.stderr
    assert (
        "  UTC:         2024-04-01 12:30:00 .. 2024-04-01 12:32:00"
        in run_cli("info", "--db", str(db)).stdout
    )


# --- the --config file: every command checks it -----------------------------------------------


def _command_paths(group, prefix=()) -> set[tuple[str, ...]]:
    import click

    paths = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths |= _command_paths(command, (*prefix, name))
        else:
            paths.add((*prefix, name))
    return paths


# One ordinary invocation of every command (a store, a folder, a weather CSV), so that without
# the --config check it would go on and do its work.
EVERY_COMMAND = {
    ("ingest",): ["FOLDER", "--db", "DB", "--no-progress"],
    ("info",): ["--db", "DB"],
    ("run",): ["FOLDER", "--db", "DB", "--model", "pixels"],
    ("demo",): ["--frames", "20", "--out", "OUT", "--no-serve"],
    ("embed",): ["--db", "DB", "--model", "pixels", "--no-progress"],
    ("models",): [],
    ("weather", "import"): ["CSV", "--db", "DB"],
    ("weather", "fetch"): ["--db", "DB", "--lat", "51.5", "--lon", "0", "--url", "URL"],
    ("weather", "stations"): ["--db", "DB"],
    ("locate",): ["--db", "DB"],
    ("clock",): ["--db", "DB"],
    ("analyze",): ["--db", "DB"],
    ("evaluate",): ["--db", "DB"],
    ("score-new",): ["FOLDER", "--db", "DB"],
    ("export",): ["--db", "DB", "--out", "OUT/x.csv"],
    ("serve",): ["--db", "DB"],
    ("watch",): ["FOLDER", "--db", "DB"],
    ("migrate",): ["--db", "DB"],
    ("prune",): ["--db", "DB"],
}


def test_the_list_of_commands_checked_for_a_bad_settings_file_is_complete():
    from pipeline.cli import cli

    assert _command_paths(cli) == set(EVERY_COMMAND)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("missing", "error: settings file {path} does not exist"),
        ("csv", "error: settings file {path} is not valid TOML"),
        ("unknown", "error: unknown setting(s): nosuch_setting; known settings:"),
    ],
)
@pytest.mark.parametrize("command", sorted(EVERY_COMMAND), ids=" ".join)
def test_every_command_refuses_a_bad_settings_file(tmp_path, command, bad, message):
    """A missing file, a CSV given by mistake and an unknown key are refused by every command
    (info, prune, migrate, evaluate and weather ignored --config), before it does anything."""
    from click.testing import CliRunner

    import store
    from pipeline.cli import cli

    config = {
        "missing": tmp_path / "missing.toml",
        "csv": tmp_path / "weather.csv",
        "unknown": tmp_path / "typo.toml",
    }[bad]
    (tmp_path / "weather.csv").write_text("time,temperature_c\n2024-04-10T11:00Z,12\n")
    (tmp_path / "typo.toml").write_text("nosuch_setting = 1\n")
    db = tmp_path / "s.duckdb"
    store.connect(db).close()
    (tmp_path / "frames").mkdir()
    where = {
        "DB": db,
        "FOLDER": tmp_path / "frames",
        "CSV": tmp_path / "weather.csv",
        "OUT": tmp_path / "out",
        "OUT/x.csv": tmp_path / "out.csv",
        "URL": "http://127.0.0.1:9/v1/archive",
    }
    args = [str(where.get(a, a)) for a in EVERY_COMMAND[command]]
    result = CliRunner().invoke(cli, ["--config", str(config), *command, *args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(message.format(path=config)), result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.csv").exists()
    with store.connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM weather").fetchone() == (0,)


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND), ids=" ".join)
def test_every_command_shows_its_help_whatever_the_settings_file_holds(tmp_path, command):
    """--help runs nothing and reads no settings: a broken --config does not hide it, also when
    the help flag follows other arguments. The same command without --help still refuses it."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    broken = tmp_path / "broken.toml"
    broken.write_text("x = [\n")
    for help_flag in (["--help"], ["--db", "s.duckdb", "-h"]):
        result = CliRunner().invoke(cli, ["--config", str(broken), *command, *help_flag])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"Usage: cli {' '.join(command)} "), result.output
    refused = CliRunner().invoke(cli, ["--config", str(broken), "info", "--db", "s.duckdb"])
    assert refused.exit_code == 1 and "is not valid TOML" in refused.output
    # after `--` a help flag is a value, not a request for help
    value = CliRunner().invoke(cli, ["--config", str(broken), "info", "--", "--help"])
    assert value.exit_code == 1 and "is not valid TOML" in value.output


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND), ids=" ".join)
def test_a_command_reached_without_the_group_keeps_both_help_flags(command):
    """Click builds a command's help option once and keeps it: a command first parsed on its
    own (a test's `make_context`) must not lose `-h` for every later call through `cli`."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    target = cli
    for name in command:
        target = target.commands[name]
    target._help_option = None  # as if nothing in this process had built it yet
    with target.make_context(command[-1], [], resilient_parsing=True) as ctx:
        assert set(target.get_help_option(ctx).opts) == {"-h", "--help"}
    result = CliRunner().invoke(cli, [*command, "-h"])
    assert result.exit_code == 0 and result.output.startswith("Usage: cli "), result.output


# --- run: the weather file and the settings are checked before ingest ------------------------


def _n_frames(db) -> int:
    import store

    if not db.exists():
        return 0
    with store.connect(db, read_only=True) as con:
        return con.execute("SELECT count(*) FROM frames").fetchone()[0]


def test_run_checks_the_weather_file_before_ingest_and_takes_its_columns(tmp_path, small_folder):
    """A weather file whose columns the importer does not recognise stops `run` before any frame
    is ingested, with advice `run` itself takes (--columns, as `weather import`)."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    db = tmp_path / "s.duckdb"
    weather = tmp_path / "wrongcols.csv"
    weather.write_text(
        "when,temp\n" + "".join(f"2024-04-10 {hour:02d}:00,{hour}\n" for hour in range(10, 14))
    )
    runner = CliRunner()
    base = ["run", str(small_folder), "--db", str(db), "--model", "pixels"]
    refused = runner.invoke(cli, [*base, "--weather", str(weather)])
    assert refused.exit_code == 1
    assert refused.output == (
        "error: no time column in wrongcols.csv (columns: when, temp); name it with "
        "--columns time=COLUMN\n"
    )
    assert _n_frames(db) == 0  # nothing ingested, nothing embedded

    lone = runner.invoke(cli, [*base, "--columns", "time=when"])
    assert lone.exit_code == 1
    assert "--columns and --units describe the --weather file: give --weather CSV" in lone.output
    assert _n_frames(db) == 0

    done = runner.invoke(
        cli,
        [
            *base,
            "--weather",
            str(weather),
            "--columns",
            "time=when,temperature_c=temp",
            "--units",
            "si",
            "--detectors",
            "iforest,dark",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "4 rows read, 1 station(s) (wrongcols 4)" in done.output
    assert "added 4, already in the store 0" in done.output
    assert "weather: frames joined to station wrongcols within 90 min" in done.output
    assert "analysis run 1 (pixels)" in done.output
    assert _n_frames(db) == 12


def test_run_checks_the_detectors_and_the_model_before_ingest(tmp_path, small_folder):
    from click.testing import CliRunner

    from pipeline.cli import cli

    db = tmp_path / "s.duckdb"
    base = ["run", str(small_folder), "--db", str(db)]
    result = CliRunner().invoke(cli, [*base, "--model", "pixels", "--detectors", "iforest,nosuch"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown detector(s) nosuch; known: iforest, lof")
    assert _n_frames(db) == 0
    config = tmp_path / "s.toml"
    config.write_text('model = "nosuch"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), *base])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown model 'nosuch'; known models:")
    assert not db.exists()  # refused before the folder is walked
