"""`python -m pipeline ingest` and `info` as a user meets them: exit codes and message text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
from click.testing import CliRunner

from pipeline.cli import cli
from tests.conftest import REPO, write_jpeg


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_ingest_then_info_describe_the_store(small_folder, tmp_path, db_path):
    (small_folder / "a" / "broken.jpg").write_text("not a jpeg")
    result = _invoke(
        "ingest",
        str(small_folder),
        "--db",
        str(db_path),
        "--workers",
        "1",
        "--timezone",
        "Europe/London",
        "--lat",
        "51.5",
        "--lon",
        "-0.1",
    )
    assert result.exit_code == 0, result.output
    assert f"ingest {small_folder}: 12 added, 0 changed, 0 unchanged, 1 failed" in result.stdout

    again = _invoke("ingest", str(small_folder), "--db", str(db_path), "--workers", "1")
    assert "0 added, 0 changed, 12 unchanged, 1 failed" in again.stdout

    with duckdb.connect(str(db_path)) as con:  # another helper's clock check result
        con.execute(
            "INSERT INTO settings (key, value) VALUES ('clock_check', ?)",
            [json.dumps({"summary": "camera clock about 0 min off (12 days)"})],
        )
    info = _invoke("info", "--db", str(db_path))
    assert info.exit_code == 0, info.output
    text = info.stdout
    assert "frames: 12 from " + str(small_folder) in text
    assert "camera time: 2024-04-10 11:00:00 .. 2024-04-10 12:50:00" in text
    assert "UTC:         2024-04-10 10:00:00 .. 2024-04-10 11:50:00" in text  # BST = UTC+1
    assert "time sources: exif 12" in text
    assert "daylight: day (sun) 12" in text
    assert "place: timezone Europe/London; location 51.5000, -0.1000" in text
    assert "errors: 1 (ingest 1)" in text
    assert "[ingest] a/broken.jpg: not an image" in text
    assert "clock check: camera clock about 0 min off (12 days)" in text
    for empty in ["models: none", "analysis runs: none", "weather: none", "reviews: none"]:
        assert empty in text


def test_info_lists_models_runs_weather_and_reviews(small_folder, db_path):
    _invoke("ingest", str(small_folder), "--db", str(db_path), "--workers", "1")
    with duckdb.connect(str(db_path)) as con:
        con.execute(
            "INSERT INTO models (model, family, weights, dim) "
            "VALUES ('pixels', 'baseline', 'none', 2)"
        )
        con.execute(
            "INSERT INTO embeddings (frame_id, model, vector) "
            "SELECT frame_id, 'pixels', [0.1, 0.2] FROM frames"
        )
        con.execute(
            "INSERT INTO analysis_runs (run_id, model, params, status, n_frames) VALUES "
            "(1, 'pixels', '{}', 'complete', 12), (2, 'pixels', '{}', 'failed', NULL)"
        )
        con.execute(
            "INSERT INTO weather (station, observed_at, temperature_c, source) VALUES "
            "('EGLL', TIMESTAMPTZ '2024-04-10 10:00:00+00', 12.5, 'csv'), "
            "('EGLL', TIMESTAMPTZ '2024-04-10 11:00:00+00', 13.0, 'csv')"
        )
        con.execute(
            "INSERT INTO reviews (frame_id, verdict) VALUES (1, 'junk'), (2, 'keep'), (3, 'keep')"
        )
    text = _invoke("info", "--db", str(db_path)).stdout
    assert "models: pixels (2-d, 12 vectors, float32)" in text  # made before precision: float32
    assert "analysis runs: 2" in text
    assert "run 2: pixels, failed, ? frames" in text
    assert "run 1: pixels, complete, 12 frames" in text
    assert "weather: 2 observations from 1 station(s)" in text
    assert "EGLL: 2 rows 2024-04-10 .. 2024-04-10 (csv)" in text
    assert "reviews: 1 junk, 2 keep" in text


def test_ingest_flags_reach_the_settings(tmp_path, db_path):
    folder = tmp_path / "f"

    write_jpeg(folder / "small.jpg", size=(20, 20))
    write_jpeg(folder / "large.jpg", size=(80, 60))
    result = _invoke(
        "ingest",
        str(folder),
        "--db",
        str(db_path),
        "--no-progress",
        "--max-image-pixels",
        "1000",
        "--batch-size",
        "1",
        "--workers",
        "1",
    )
    assert result.exit_code == 0
    assert "1 added, 0 changed, 0 unchanged, 1 failed" in result.stdout
    assert "frame/s" not in result.stderr  # no progress bar
    info = _invoke("info", "--db", str(db_path)).stdout
    assert "[ingest] large.jpg: refused as a decompression bomb" in info


def test_ingest_names_pictures_it_does_not_read_and_a_folder_without_frames(tmp_path, db_path):
    folder = tmp_path / "card"
    write_jpeg(folder / "a.jpg")
    for name in ("b.gif", "c.TIFF", "d.tif", "raw/e.CR2", "notes.txt"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"not read")
    result = _invoke("ingest", str(folder), "--db", str(db_path), "--no-progress")
    assert result.exit_code == 0
    assert "1 added, 0 changed, 0 unchanged, 0 failed" in result.stdout
    assert (
        "4 picture(s) in formats not read (.cr2 1, .gif 1, .tif 1, .tiff 1): convert them to "
        "JPEG, PNG, WebP or BMP to include them" in result.stdout
    )
    assert "no JPEG" not in result.stdout

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    result = _invoke("ingest", str(empty), "--db", str(db_path), "--no-progress")
    assert result.exit_code == 0
    assert "0 added, 0 changed, 0 unchanged, 0 failed" in result.stdout
    assert "no JPEG, PNG, WebP or BMP files were found in this folder or below it" in result.stdout


def test_frames_timed_by_a_copy_are_named_and_a_copy_that_keeps_the_dates_ends_it(
    tmp_path, db_path
):
    """Counter names and no EXIF: the files' mtimes are all the frames have. When a copy wrote
    them all within a second, `ingest` and `info` say so and how to mend it; once the files
    carry their own times again (cp -p), the next ingest reads them and the advice is gone."""
    folder = tmp_path / "card"
    files = [write_jpeg(folder / f"image{i:04d}.jpg", seed=i) for i in range(12)]
    copied = 1_700_000_000
    for path in files:
        os.utime(path, (copied, copied))
    result = _invoke("ingest", str(folder), "--db", str(db_path), "--no-progress")
    assert result.exit_code == 0
    advice = (
        f"the 12 frames of {folder} take their time from their files' modification times, "
        "all within 0 s: the time they were copied, not taken"
    )
    assert advice in result.stdout and "cp -p, rsync -t" in result.stdout
    assert advice in _invoke("info", "--db", str(db_path)).stdout

    for i, path in enumerate(files):  # the camera's own times: one frame an hour
        os.utime(path, (copied + 3600 * (i + 1), copied + 3600 * (i + 1)))
    result = _invoke("ingest", str(folder), "--db", str(db_path), "--no-progress")
    assert "12 read again (new mtime, same content)" in result.stdout
    assert "copied, not taken" not in result.stdout
    info = _invoke("info", "--db", str(db_path)).stdout
    assert "copied, not taken" not in info and "time sources: mtime 12" in info
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT taken_at) FROM frames").fetchall() == [(12,)]

    few = tmp_path / "few"  # fewer frames than the check needs: a handful copied is no sign
    for i in range(3):
        os.utime(write_jpeg(few / f"image{i:04d}.jpg", seed=i), (copied, copied))
    result = _invoke("ingest", str(few), "--db", str(db_path), "--no-progress")
    assert "copied, not taken" not in result.stdout


def test_a_card_of_only_bad_files_exits_1_naming_the_first_and_keeps_them_listed(tmp_path):
    card, db = tmp_path / "card", tmp_path / "s.duckdb"
    card.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (card / name).write_bytes(b"not a jpeg at all")
    result = _invoke("ingest", str(card), "--db", str(db), "--no-progress")
    assert result.exit_code == 1
    assert "0 added, 0 changed, 0 unchanged, 2 failed" in result.stdout
    assert result.stderr.startswith(
        "error: none of the 2 file(s) tried could be read, the first: a.jpg: not an image"
    )
    assert "listed by `python -m pipeline info`" in result.stderr
    assert "[ingest] b.jpg: not an image" in _invoke("info", "--db", str(db)).stdout

    again = _invoke("ingest", str(card), "--db", str(db), "--no-progress")  # known bad: left
    assert again.exit_code == 0 and "2 failed" in again.stdout and not again.stderr

    write_jpeg(card / "c.jpg")  # one good file among new bad ones: not an error
    (card / "d.jpg").write_bytes(b"bad too")
    mixed = _invoke("ingest", str(card), "--db", str(db), "--no-progress")
    assert mixed.exit_code == 0 and "1 added, 0 changed, 0 unchanged, 3 failed" in mixed.stdout

    # `run` stops after ingest only when the store has no frame to embed or analyze
    result = _invoke("run", str(_only_bad(tmp_path)), "--db", str(tmp_path / "r.duckdb"))
    assert result.exit_code == 1
    assert "error: none of the 1 file(s) tried could be read, the first: e.jpg" in result.stderr
    assert "embed" not in result.stdout


def _only_bad(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "e.jpg").write_bytes(b"bad")
    return folder


def test_a_missing_folder_is_one_line_and_leaves_no_file_beside_the_store(tmp_path):
    db = tmp_path / "new.duckdb"
    for command in ("ingest", "run"):
        result = _invoke(command, str(tmp_path / "nosuch"), "--db", str(db))
        assert result.exit_code == 1
        assert result.stderr.strip() == f"error: the folder {tmp_path / 'nosuch'} does not exist"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no run-lock file


def test_info_on_an_empty_store(db_path):
    import store

    with store.connect(db_path):
        pass
    text = _invoke("info", "--db", str(db_path)).stdout
    assert "frames: none yet" in text and "errors: none" in text


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ},
    )


def test_missing_folder_and_missing_store_are_one_line_and_exit_1(tmp_path):
    result = _run("ingest", str(tmp_path / "nope"), "--db", str(tmp_path / "s.duckdb"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: the folder {tmp_path / 'nope'} does not exist"
    ]
    result = _run("info", "--db", str(tmp_path / "missing.duckdb"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no store at {tmp_path}")


def test_store_in_a_missing_folder_is_one_line_and_exit_1(garden_monz, tmp_path):
    db = tmp_path / "no" / "such" / "s.duckdb"
    result = _run("ingest", str(garden_monz), "--db", str(db))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(db.parent) in lines[0]
    assert not db.parent.exists()


def test_bad_timezone_is_one_line_and_exit_1(garden_monz, tmp_path):
    result = _run(
        "ingest",
        str(garden_monz),
        "--db",
        str(tmp_path / "s.duckdb"),
        "--timezone",
        "Europe/Atlantis",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown time zone 'Europe/Atlantis': use an IANA name such as Europe/London "
        "or America/New_York"
    ]


def test_real_frames_through_the_cli(garden_monz, tmp_path):
    db = tmp_path / "garden.duckdb"
    result = _run("ingest", str(garden_monz), "--db", str(db), "--timezone", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    assert "13 added, 0 changed, 0 unchanged, 0 failed" in result.stdout
    assert "frame/s" in result.stderr  # the progress bar shows a rate
    info = _run("info", "--db", str(db))
    assert info.returncode == 0
    assert "frames: 13" in info.stdout and "time sources: exif 13" in info.stdout
    assert "UTC:         2017-04-13 04:12:49 .. 2018-02-14 12:06:59" in info.stdout


def test_the_first_ingest_says_how_day_and_night_are_told_where_they_could_be_told_better(
    tmp_path,
):
    """By the time zone's sun (a guess at the place; wrong for a camera lit by its own lights)
    or by brightness for want of a time zone, the first card's closing line says so and names
    the flags; with the camera's place, or brightness asked for, and on later cards, it says
    nothing of it."""
    card, later = tmp_path / "card", tmp_path / "later"
    write_jpeg(card / "2021-05-01_12-30-00.jpg")
    write_jpeg(later / "2021-05-02_12-30-00.jpg", seed=1)

    def closing(db: str, folder, *flags: str) -> str:
        result = _invoke("ingest", str(folder), "--db", str(tmp_path / db), "--no-progress", *flags)
        assert result.exit_code == 0, result.output
        return result.stdout

    zone = closing("zone.duckdb", card, "--timezone", "Europe/Amsterdam")
    assert (
        "day and night by the sun at the time zone's own place (Europe/Amsterdam, 52.37, 4.90; "
        "--lat/--lon for the camera's own); a camera lit by its own lights (indoors): "
        "--daylight-from brightness" in zone
    )
    assert "day and night" not in closing("zone.duckdb", later)  # a later card of the store
    assert "no time zone to place the sun: --timezone or --lat/--lon" in closing(
        "none.duckdb", card
    )
    placed = closing(
        "placed.duckdb", card, "--timezone", "Europe/Amsterdam", "--lat", "52.1", "--lon", "5.1"
    )
    assert "day and night" not in placed
    lit = closing(
        "lit.duckdb", card, "--timezone", "Europe/Amsterdam", "--daylight-from", "brightness"
    )
    assert "day and night" not in lit
