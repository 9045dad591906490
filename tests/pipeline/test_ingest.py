"""Ingest on real DuckDB files: the real garden frames, bad files, incremental re-runs, odd names."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import InputError
from pipeline.ingest import frame_file, ingest_folder, walk
from pipeline.settings import Settings
from tests.conftest import write_jpeg

QUIET = dict(progress=False)


def _settings(**kw) -> Settings:
    return Settings(**{"workers": 1, **kw})


def _query(db: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(sql).df()


def _errors(db: Path) -> dict[str, tuple[str, str]]:
    rows = _query(db, "SELECT path, stage, message FROM ingest_errors ORDER BY path")
    return {p: (s, m) for p, s, m in rows.itertuples(index=False)}


# --- the real frames ----------------------------------------------------------------------------


def _epoch(path: str) -> datetime:
    seconds = int(re.search(r"pic_(\d{10})", path).group(1))
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


def test_real_garden_frames_without_timezone(garden_monz, db_path):
    summary = ingest_folder(garden_monz, db_path, _settings(), **QUIET)
    assert (summary.added, summary.changed, summary.unchanged, summary.failed) == (13, 0, 0, 0)
    frames = _query(
        db_path,
        "SELECT path, taken_at, taken_at_utc, time_source, width, height "
        "FROM frames ORDER BY frame_id",
    )
    assert len(frames) == 13 and set(frames["time_source"]) == {"exif"}
    assert set(zip(frames["width"], frames["height"])) == {(2592, 1944)}
    for path, taken_at, taken_at_utc in zip(
        frames["path"], frames["taken_at"], frames["taken_at_utc"]
    ):
        shift = taken_at.to_pydatetime() - _epoch(path)
        # the EXIF wall clock is the epoch in the name shifted by the German offset
        expected = timedelta(hours=1) if taken_at.month in (11, 2) else timedelta(hours=2)
        assert shift == expected, path
        # without a timezone the camera clock is taken as UTC
        assert taken_at_utc.tz_convert(None) == taken_at
    assert list(frames["path"]) == sorted(frames["path"])  # deterministic order
    n_thumbs = _query(
        db_path, "SELECT count(*) AS n, max(greatest(width, height)) AS side FROM thumbnails"
    )
    assert n_thumbs["n"][0] == 13 and n_thumbs["side"][0] == 256


def test_real_garden_frames_with_timezone_match_the_epoch_names(garden_monz, db_path):
    ingest_folder(
        garden_monz, db_path, _settings(timezone="Europe/Berlin", lat=49.0, lon=8.4), **QUIET
    )
    frames = _query(
        db_path,
        "SELECT path, taken_at_utc, utc_offset_min, daylight, "
        "daylight_source, mean_luma FROM frames",
    )
    for path, utc in zip(frames["path"], frames["taken_at_utc"]):
        assert utc.tz_convert(None) == _epoch(path), path
    assert set(frames["utc_offset_min"]) == {60, 120}
    assert set(frames["daylight_source"]) == {"sun"}
    midday = frames[frames["path"].str.contains("midday")]
    assert set(midday["daylight"]) == {"day"}
    # 05:32 CEST on 14 April in Germany is before dawn
    early = frames[frames["path"].str.endswith("pic_1492140729.jpg")]
    assert list(early["daylight"]) == ["night"]


# --- bad files ----------------------------------------------------------------------------------


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    write_jpeg(folder / "good_1.jpg", when=datetime(2024, 4, 10, 12), seed=1)
    write_jpeg(folder / "sub" / "good_2.JPG", when=datetime(2024, 4, 10, 12, 10), seed=2)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.jpg").write_text("not an image at all\n")
    source = write_jpeg(tmp_path / "full.jpg", size=(96, 96), seed=3)
    (folder / "truncated.jpeg").write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    write_jpeg(folder / "bomb.jpg", size=(200, 200))  # 40,000 px, limit set below
    write_jpeg(folder / "zero_date_20240410_130000.jpg", when=None, seed=4)
    _set_exif_date(folder / "zero_date_20240410_130000.jpg", "0000:00:00 00:00:00")
    write_jpeg(folder / "future.jpg", seed=5)
    _set_exif_date(folder / "future.jpg", "2999:01:01 00:00:00")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    (folder / ".hidden.jpg").write_text("ignored: hidden")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("..", folder / "sub" / "up")  # a folder link back into the tree
    os.symlink("gone.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "pipe.jpg")
    return folder


def _set_exif_date(path: Path, text: str) -> None:
    image = Image.open(path)
    image.load()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = text
    image.save(path, "JPEG", exif=exif)


def test_bad_files_become_error_rows_and_the_run_goes_on(bad_folder, db_path):
    summary = ingest_folder(bad_folder, db_path, _settings(max_image_pixels=10_000), **QUIET)
    frames = _query(db_path, "SELECT path, time_source FROM frames ORDER BY path")
    assert dict(zip(frames["path"], frames["time_source"])) == {
        "future.jpg": "mtime",
        "good_1.jpg": "exif",
        "sub/good_2.JPG": "exif",
        "zero_date_20240410_130000.jpg": "filename",
    }
    errors = _errors(db_path)
    assert errors["empty.jpg"] == ("ingest", "empty file (0 bytes)")
    assert errors["readme.jpg"][1].startswith("not an image")
    assert errors["truncated.jpeg"][1].startswith("truncated image")
    assert errors["bomb.jpg"][1].startswith("refused as a decompression bomb")
    assert errors["loop_a.jpg"][1].startswith("symlink loop")
    assert errors["loop_b.jpg"][1].startswith("symlink loop")
    assert errors["sub/up"][1].startswith("symlink loop")
    assert errors["dangling.jpg"][1] == "the file disappeared or is a broken link"
    assert errors["pipe.jpg"][1] == "not a regular file"
    stage, message = errors["zero_date_20240410_130000.jpg"]
    assert stage == "timestamp" and message.startswith("warning: EXIF DateTimeOriginal")
    assert "used the file name instead" in message
    assert errors["future.jpg"][0] == "timestamp" and "future" in errors["future.jpg"][1]
    assert (summary.added, summary.failed, summary.n_warnings) == (4, 9, 2)
    line = summary.describe()
    assert "4 added, 0 changed, 0 unchanged, 9 failed" in line and "2 timestamp warning" in line

    # a second run retries nothing that failed before and is unchanged, yet still counts it
    again = ingest_folder(bad_folder, db_path, _settings(max_image_pixels=10_000), **QUIET)
    assert (again.added, again.changed, again.unchanged, again.failed) == (0, 0, 4, 9)
    assert again.n_new_errors == 5  # only the walk problems (links, pipe) are looked at again
    assert _errors(db_path).keys() == errors.keys()


def test_a_fixed_bad_file_is_ingested_and_its_error_removed(bad_folder, db_path):
    settings = _settings(max_image_pixels=10_000)
    ingest_folder(bad_folder, db_path, settings, **QUIET)
    write_jpeg(bad_folder / "truncated.jpeg", when=datetime(2024, 4, 10, 14), seed=9)
    summary = ingest_folder(bad_folder, db_path, settings, **QUIET)
    assert summary.added == 1
    assert "truncated.jpeg" not in _errors(db_path)
    assert "truncated.jpeg" in set(_query(db_path, "SELECT path FROM frames")["path"])


def test_unreadable_file_is_an_error_row(tmp_path):
    """A file the user cannot read. Root reads everything, so as root the worker function runs
    in a forked child that has dropped to `nobody`."""
    folder = tmp_path / "perm"
    secret = write_jpeg(folder / "secret.jpg")
    secret.chmod(0o000)
    if os.geteuid() != 0:
        db = tmp_path / "s.duckdb"
        summary = ingest_folder(folder, db, _settings(), **QUIET)
        assert summary.failed == 1
        assert _errors(db)["secret.jpg"][1] == "cannot read the file: permission denied"
        return
    from pipeline.imagestats import read_frame

    parents = [p for p in secret.parents if p != Path("/")]
    modes = {p: p.stat().st_mode for p in parents}
    st = secret.stat()
    read_end, write_end = os.pipe()
    try:
        for p in parents:
            p.chmod(modes[p] | 0o001)  # `nobody` may pass through, not list or read
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgid(65534)
                os.setuid(65534)
                error = read_frame(
                    (str(secret), "secret.jpg", st.st_size, st.st_mtime_ns, 256, 10**8, 10**8)
                ).error
                os.write(write_end, (error or "no error").encode())
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        message = os.read(read_end, 1000).decode()
    finally:
        os.close(read_end)
        for p in parents:
            p.chmod(modes[p])
    assert message == "cannot read the file: permission denied"


def test_non_utf8_file_name_is_stored_and_found_again(tmp_path, db_path):
    folder = tmp_path / "names"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9_20240410_120000.jpg")
    write_jpeg(Path(os.fsdecode(raw)))
    write_jpeg(folder / "ünïcödé 20240410_120100.jpg")
    summary = ingest_folder(folder, db_path, _settings(), **QUIET)
    assert summary.added == 2 and summary.failed == 0
    frames = _query(db_path, "SELECT path, root, time_source FROM frames ORDER BY path")
    assert list(frames["path"]) == ["caf\\xe9_20240410_120000.jpg", "ünïcödé 20240410_120100.jpg"]
    assert set(frames["time_source"]) == {"filename"}
    for root, path in zip(frames["root"], frames["path"]):
        assert frame_file(root, path).is_file()
    again = ingest_folder(folder, db_path, _settings(), **QUIET)
    assert again.unchanged == 2 and again.added == 0


def test_frames_in_dated_folders_take_the_day_from_the_folder(tmp_path, db_path):
    """motionEye files a camera's frames as `%Y-%m-%d/%H-%M-%S.jpg`: the day is the folder's, the
    time of day the file's; a frame with bare digits under a dated folder (a counter) keeps its
    mtime."""
    root = tmp_path / "Camera1"
    for day, name in [("2021-05-01", "12-30-00.jpg"), ("2021-05-02", "06-05-30.jpg")]:
        (root / day).mkdir(parents=True, exist_ok=True)
        write_jpeg(root / day / name)
    write_jpeg(root / "2021-05-02" / "000123.jpg")
    summary = ingest_folder(root, db_path, _settings(), **QUIET)
    assert summary.added == 3 and summary.failed == 0
    frames = _query(db_path, "SELECT path, taken_at, time_source FROM frames ORDER BY path")
    by_path = dict(zip(frames["path"], zip(frames["taken_at"], frames["time_source"])))
    assert by_path["2021-05-01/12-30-00.jpg"] == (pd.Timestamp("2021-05-01 12:30"), "filename")
    assert by_path["2021-05-02/06-05-30.jpg"] == (pd.Timestamp("2021-05-02 06:05:30"), "filename")
    assert by_path["2021-05-02/000123.jpg"][1] == "mtime"


def test_a_card_named_day_first_is_read_day_first_and_an_undecided_one_not(tmp_path, db_path):
    """A card of frames named %d-%m-%Y_%H-%M-%S: one name with a day over 12 tells the order of
    all, the 1st of February included, and of the store's later cards; a card whose days are
    all the 12th or before says nothing alone, and its frames keep their mtimes."""
    card = tmp_path / "card"
    card.mkdir()
    for name in ("01-02-2021_08-00-00.jpg", "13-02-2021_09-30-00.jpg"):
        write_jpeg(card / name)
    ingest_folder(card, db_path, _settings(), **QUIET)
    frames = _query(db_path, "SELECT path, taken_at, time_source FROM frames ORDER BY path")
    assert dict(zip(frames["path"], zip(frames["taken_at"], frames["time_source"]))) == {
        "01-02-2021_08-00-00.jpg": (pd.Timestamp("2021-02-01 08:00"), "filename"),
        "13-02-2021_09-30-00.jpg": (pd.Timestamp("2021-02-13 09:30"), "filename"),
    }
    early = tmp_path / "early"
    early.mkdir()
    write_jpeg(early / "01-02-2021_08-00-00.jpg", seed=3)
    other_db = tmp_path / "other.duckdb"
    ingest_folder(early, other_db, _settings(), **QUIET)
    assert _query(other_db, "SELECT time_source FROM frames")["time_source"].tolist() == ["mtime"]
    ingest_folder(early, db_path, _settings(), **QUIET)  # the first card's store knows
    again = _query(db_path, "SELECT taken_at, time_source FROM frames WHERE root LIKE '%early'")
    assert again.values.tolist() == [[pd.Timestamp("2021-02-01 08:00"), "filename"]]


def test_webp_and_bmp_frames_are_read_like_jpegs(tmp_path, db_path):
    """A scraper's WebP frames (with their EXIF date) and BMP frames are frames: thumbnail,
    statistics and time, as the same picture saved as a JPEG gets them; a RIFF file that is not
    WebP is named as such."""
    folder = tmp_path / "web"
    folder.mkdir()
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2024:04:10 12:00:00"
    picture.save(folder / "a.webp", "WEBP", lossless=True, exif=exif)
    picture.save(folder / "b_20240410_121000.bmp", "BMP")
    picture.save(folder / "c.png", "PNG")
    (folder / "d.webp").write_bytes(b"RIFF\x10\x00\x00\x00AVI LIST")
    summary = ingest_folder(folder, db_path, _settings(), **QUIET)
    assert (summary.added, summary.failed) == (3, 1)
    frames = _query(
        db_path,
        "SELECT path, taken_at, time_source, width, height, mean_luma, sharpness, "
        "frame_id IN (SELECT frame_id FROM thumbnails) AS thumb FROM frames ORDER BY path",
    )
    got = frames.set_index("path")
    assert got.loc["a.webp", "taken_at"] == pd.Timestamp("2024-04-10 12:00")
    assert got.loc["a.webp", "time_source"] == "exif"
    assert got.loc["b_20240410_121000.bmp", "taken_at"] == pd.Timestamp("2024-04-10 12:10")
    assert got["thumb"].all() and (got["width"] == 64).all() and (got["height"] == 48).all()
    # lossless WebP and BMP hold the very pixels of the PNG: the same statistics
    for column in ("mean_luma", "sharpness"):
        assert got.loc["a.webp", column] == pytest.approx(got.loc["c.png", column])
        assert got.loc["b_20240410_121000.bmp", column] == pytest.approx(got.loc["c.png", column])
    assert _errors(db_path)["d.webp"] == (
        "ingest",
        "unsupported image format RIFF (not WebP: a video or sound?) "
        "(only JPEG, PNG, WebP or BMP frames)",
    )


def test_names_with_a_zone_designator_fix_the_instant(tmp_path, db_path):
    """A frame named by a UTC clock with a Z (`date -u +%Y-%m-%dT%H:%M:%SZ`, JavaScript's
    toISOString) or with an offset after a T is taken at that instant; the camera's wall clock is
    then that instant in its time zone, as for a Unix epoch in the name."""
    folder = tmp_path / "iso"
    folder.mkdir()
    for name in ("2021-07-01T12:30:00.000Z.jpg", "2021-07-01T16:40:00+04:00.jpg"):
        write_jpeg(folder / name)
    write_jpeg(folder / "2021-07-01_12-50-00.jpg")  # no zone: the camera's wall clock
    ingest_folder(folder, db_path, _settings(timezone="Europe/Amsterdam"), **QUIET)
    frames = _query(
        db_path, "SELECT path, taken_at, taken_at_utc, time_source FROM frames ORDER BY path"
    )
    got = {
        row.path: (row.taken_at, row.taken_at_utc.tz_convert(None), row.time_source)
        for row in frames.itertuples()
    }
    summer = pd.Timedelta(hours=2)  # CEST
    utc_1230, utc_1240 = pd.Timestamp("2021-07-01 12:30"), pd.Timestamp("2021-07-01 12:40")
    assert got == {
        "2021-07-01T12:30:00.000Z.jpg": (utc_1230 + summer, utc_1230, "filename"),
        "2021-07-01T16:40:00+04:00.jpg": (utc_1240 + summer, utc_1240, "filename"),
        "2021-07-01_12-50-00.jpg": (
            pd.Timestamp("2021-07-01 12:50"),
            pd.Timestamp("2021-07-01 12:50") - summer,
            "filename",
        ),
    }


def test_png_named_jpg_and_same_image_under_two_names(tmp_path, db_path):
    folder = tmp_path / "odd"
    Image.new("RGB", (30, 20), (30, 160, 30)).save(folder.mkdir() or folder / "really.jpg", "PNG")
    first = write_jpeg(folder / "one.jpg", seed=11)
    shutil.copy(first, folder / "two.jpg")
    Image.new("RGB", (30, 20)).save(folder / "upper.PNG")
    summary = ingest_folder(folder, db_path, _settings(), **QUIET)
    assert summary.added == 4 and summary.failed == 0
    hashes = _query(db_path, "SELECT path, content_hash FROM frames ORDER BY path")
    by_path = dict(zip(hashes["path"], hashes["content_hash"]))
    assert by_path["one.jpg"] == by_path["two.jpg"] != by_path["really.jpg"]


# --- incremental --------------------------------------------------------------------------------


def test_incremental_runs_add_change_and_skip(small_folder, db_path):
    first = ingest_folder(small_folder, db_path, _settings(), **QUIET)
    assert (first.added, first.unchanged) == (12, 0) and len(first.frame_ids) == 12
    ids = _query(db_path, "SELECT path, frame_id FROM frames")
    ids = dict(zip(ids["path"], ids["frame_id"]))
    with duckdb.connect(str(db_path)) as con:  # another helper's embeddings for every frame
        con.execute(
            "INSERT INTO embeddings (frame_id, model, vector) "
            "SELECT frame_id, 'pixels', [1.0, 2.0] FROM frames"
        )

    again = ingest_folder(small_folder, db_path, _settings(), **QUIET)
    assert (again.added, again.changed, again.unchanged, again.failed) == (0, 0, 12, 0)
    assert again.frame_ids == []

    touched = small_folder / "a" / "frame_002.jpg"
    write_jpeg(touched, when=datetime(2024, 4, 10, 11, 20), seed=99, colour=(250, 250, 250))
    write_jpeg(small_folder / "b" / "frame_100.jpg", when=datetime(2024, 4, 10, 13, 0), seed=100)
    third = ingest_folder(small_folder, db_path, _settings(), **QUIET)
    assert (third.added, third.changed, third.unchanged, third.failed) == (1, 1, 11, 0)
    after = _query(
        db_path,
        "SELECT f.path, f.frame_id, f.mean_luma, count(e.frame_id) AS n_vec "
        "FROM frames f LEFT JOIN embeddings e USING (frame_id) "
        "GROUP BY ALL ORDER BY f.path",
    )
    row = after[after["path"] == "a/frame_002.jpg"].iloc[0]
    assert row["frame_id"] == ids["a/frame_002.jpg"]  # kept its id
    assert row["n_vec"] == 0 and row["mean_luma"] > 200  # old vector gone, new stats
    assert after["n_vec"].sum() == 11
    assert sorted(third.frame_ids) == sorted([ids["a/frame_002.jpg"], max(after["frame_id"])])

    # a touch alone (same bytes, new mtime) is read again but changes nothing: vectors stay
    os.utime(small_folder / "a" / "frame_000.jpg", ns=(10**18, 10**18))
    fourth = ingest_folder(small_folder, db_path, _settings(), **QUIET)
    assert (fourth.changed, fourth.unchanged, fourth.n_reread) == (0, 13, 1)
    assert fourth.frame_ids == []
    assert _query(db_path, "SELECT count(*) AS n FROM embeddings")["n"][0] == 11
    assert "1 read again (new mtime, same content)" in fourth.describe()


def test_moved_folder_keeps_frames_and_updates_the_root(small_folder, tmp_path, db_path):
    ingest_folder(small_folder, db_path, _settings(), **QUIET)
    before = _query(db_path, "SELECT frame_id, path FROM frames ORDER BY frame_id")
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    small_folder.rename(moved)
    summary = ingest_folder(moved, db_path, _settings(), **QUIET)
    assert (summary.added, summary.unchanged, summary.n_moved) == (0, 12, 12)
    after = _query(db_path, "SELECT frame_id, path, root, location FROM frames ORDER BY frame_id")
    assert list(after["frame_id"]) == list(before["frame_id"])
    assert list(after["path"]) == list(before["path"])
    assert set(after["root"]) == {str(moved)}
    assert list(after["location"]) == [f"{moved}/{p}" for p in after["path"]]
    # moved again, and ingested from the folder above it this time: paths follow, no new frame
    again = ingest_folder(moved.parent, db_path, _settings(), **QUIET)
    assert (again.added, again.unchanged, again.n_moved) == (0, 12, 0)


def test_a_copy_beside_its_original_is_a_second_set_of_frames(small_folder, tmp_path, db_path):
    ingest_folder(small_folder, db_path, _settings(), **QUIET)
    copy = tmp_path / "copy"
    shutil.copytree(small_folder, copy, copy_function=shutil.copy2)
    summary = ingest_folder(copy, db_path, _settings(), **QUIET)
    assert (summary.added, summary.unchanged, summary.n_moved) == (12, 0, 0)
    assert _query(db_path, "SELECT count(*) AS n FROM frames")["n"][0] == 24


def test_process_pool_gives_the_same_result_in_path_order(tmp_path, db_path):
    folder = tmp_path / "many"
    for i in range(40):
        write_jpeg(
            folder / f"d{i % 3}" / f"img_{i:03d}.jpg",
            when=datetime(2024, 5, 1) + timedelta(minutes=i),
            seed=i,
        )
    (folder / "d1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    summary = ingest_folder(folder, db_path, Settings(workers=2, ingest_batch_size=7), **QUIET)
    assert (summary.added, summary.failed) == (40, 1)
    frames = _query(db_path, "SELECT frame_id, path FROM frames ORDER BY frame_id")
    assert list(frames["path"]) == sorted(frames["path"])
    assert _query(db_path, "SELECT count(*) AS n FROM thumbnails")["n"][0] == 40


def test_walk_is_sorted_recursive_and_case_insensitive(tmp_path):
    folder = tmp_path / "w"
    for name in ["b/2.JPEG", "a/1.jpg", "c.Png", "@eaDir/thumb.jpg", "d.gif", "A/0.jpg"]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    files, problems = walk(str(folder))
    assert [f.name for f in files] == ["A/0.jpg", "a/1.jpg", "b/2.JPEG", "c.Png"]
    assert problems == []


def test_missing_folder_is_an_input_error(tmp_path, db_path):
    with pytest.raises(InputError, match="does not exist"):
        ingest_folder(tmp_path / "nope", db_path, _settings(), **QUIET)
    file = tmp_path / "file.jpg"
    file.write_bytes(b"x")
    with pytest.raises(InputError, match="is not a folder"):
        ingest_folder(file, db_path, _settings(), **QUIET)
    assert not db_path.exists()


def test_a_killed_ingest_keeps_its_batches_and_the_next_run_continues(tmp_path, db_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    folder = tmp_path / "kill"
    for i in range(30):
        write_jpeg(
            folder / f"f_{i:04d}.jpg", when=datetime(2024, 5, 1) + timedelta(minutes=i), seed=i
        )
    (folder / "bad.jpg").write_bytes(b"nope")
    code = (
        "import sys; from pathlib import Path; from pipeline.ingest import ingest_folder; "
        "from pipeline.settings import Settings; ingest_folder(Path(sys.argv[1]), "
        "Path(sys.argv[2]), Settings(workers=1, ingest_batch_size=3), progress=False)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(folder), str(db_path)], cwd=REPO)
    n_seen = 0
    try:
        while child.poll() is None and n_seen < 3:
            try:
                with duckdb.connect(str(db_path), read_only=True) as con:
                    n_seen = con.sql("SELECT count(*) FROM frames").fetchall()[0][0]
            except duckdb.Error:
                pass  # not created yet, or the writer holds it for a moment
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    n_kept = _query(db_path, "SELECT count(*) AS n FROM frames")["n"][0]
    summary = ingest_folder(folder, db_path, _settings(), **QUIET)
    assert summary.unchanged == n_kept and summary.added == 30 - n_kept
    frames = _query(
        db_path,
        "SELECT count(*) AS n, count(DISTINCT path) AS paths, "
        "count(t.frame_id) AS thumbs FROM frames "
        "LEFT JOIN thumbnails t USING (frame_id)",
    )
    assert tuple(frames.iloc[0]) == (30, 30, 30)
    assert list(_errors(db_path)) == ["bad.jpg"]
