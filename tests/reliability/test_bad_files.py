"""Scenario 2: every kind of bad file, generated here, through `python -m pipeline run` end to end.

tests/pipeline/test_ingest.py and test_imagestats.py check the decoder and the ingest stage one
case at a time; this folder mixes all of them with ordinary frames and runs every stage (ingest,
embed with the `pixels` model, analyze): odd-but-valid images must be frames with a vector and
scores, broken ones exactly one clear `ingest_errors` row, and nothing may stop the run.

Unreadable files: the tests run as root, which reads a chmod-000 file anyway, so the unreadable
entries here are a FIFO named .jpg (open() would block for ever) and a dangling symlink; the
permission case itself is covered by test_ingest.py (a forked child that drops to `nobody`).
"""

from __future__ import annotations

import os
import shutil
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_jpeg
from tests.reliability.conftest import make_frames, one, query, run_ok, run_pipeline

pytestmark = pytest.mark.slow

NON_UTF8 = b"caf\xe9_20240410_150000.jpg"


def _exif_jpeg(path: Path, exif_date: str | None = None, orientation: int | None = None,
               size=(80, 40), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 4] = (250, 20, 20)  # a red band on the left: shows the orientation
    exif = Image.Exif()
    if exif_date is not None:
        exif.get_ifd(0x8769)[0x9003] = exif_date
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=90, exif=exif)
    return path


def _huge_jpeg(path: Path, source: Path) -> Path:
    """A small JPEG whose frame header claims 60000 x 60000 pixels (3.6 gigapixels)."""
    data = bytearray(source.read_bytes())
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    struct.pack_into(">HH", data, at + 5, 60000, 60000)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """The folder of good and bad files, run once through the CLI; (folder, db, process)."""
    tmp = tmp_path_factory.mktemp("bad")
    folder = tmp / "frames"
    make_frames(folder, 12)
    # odd but valid images
    cmyk = Image.new("CMYK", (64, 48), (0, 200, 255, 30))
    cmyk.save(folder / "cmyk_20240410_120000.jpg", "JPEG", exif=_date_exif("2024:04:10 12:00:00"))
    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen_bit_20240410_121000.png")
    Image.fromarray(deep).save(folder / "png_named_as_20240410_122000.jpg", "PNG")
    _exif_jpeg(folder / "rotated.jpg", "2024:04:10 12:30:00", orientation=6)
    write_jpeg(folder / "copy_a.jpg", when=datetime(2024, 4, 10, 12, 40), seed=99)
    shutil.copy(folder / "copy_a.jpg", folder / "copy_b.jpg")
    write_jpeg(Path(os.fsdecode(os.path.join(os.fsencode(folder), NON_UTF8))), seed=98)
    _exif_jpeg(folder / "garbage_date_20240410_130000.jpg", "yesterday-ish at noon", seed=2)
    _exif_jpeg(folder / "future_date.jpg", "2999:12:31 23:59:59", seed=3)
    # broken files
    (folder / "zero.jpg").write_bytes(b"")
    whole = (folder / "f_000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("a text file that only looks like a JPEG\n")
    _huge_jpeg(folder / "huge.jpg", folder / "f_001.jpg")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    os.symlink("no_such_file.jpg", folder / "dangling.jpg")
    os.mkfifo(folder / "fifo.jpg")
    db = tmp / "store.duckdb"
    proc = run_pipeline("run", folder, "--db", db, "--model", "pixels",
                        "--detectors", "iforest,lof,hbos")
    return folder, db, proc


def _date_exif(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = text
    return exif


GOOD = {f"f_{i:03d}.jpg" for i in range(12)} | {
    "cmyk_20240410_120000.jpg", "sixteen_bit_20240410_121000.png",
    "png_named_as_20240410_122000.jpg", "rotated.jpg", "copy_a.jpg", "copy_b.jpg",
    "caf\\xe9_20240410_150000.jpg", "garbage_date_20240410_130000.jpg", "future_date.jpg"}
BROKEN = {  # path -> how its message starts
    "zero.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated image",
    "text.jpg": "not an image",
    "huge.jpg": "refused as a decompression bomb",
    "loop_a.jpg": "symlink loop",
    "loop_b.jpg": "symlink loop",
    "dangling.jpg": "the file disappeared or is a broken link",
    "fifo.jpg": "not a regular file",
}


def test_the_run_finishes_and_reports_the_failures(bad_run):
    _, _, proc = bad_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(GOOD)} added, 0 changed, 0 unchanged, {len(BROKEN)} failed" in proc.stdout
    assert f"embed pixels: {len(GOOD)} frames embedded" in proc.stdout
    assert f"analysis run 1 (pixels): {len(GOOD)} frames" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_valid_odd_images_are_frames_with_a_vector_and_scores(bad_run):
    _, db, _ = bad_run
    assert {p for (p,) in query(db, "SELECT path FROM frames")} == GOOD
    assert one(db, "SELECT count(*) FROM embeddings WHERE model = 'pixels'") == len(GOOD)
    assert one(db, "SELECT count(DISTINCT frame_id) FROM outlier_scores WHERE run_id = 1") \
        == len(GOOD)
    assert one(db, "SELECT count(*) FROM frames WHERE mean_luma IS NULL OR sharpness IS NULL") == 0
    # every thumbnail decodes and is RGB, whatever the original mode
    import io
    for (blob,) in query(db, "SELECT jpeg FROM thumbnails"):
        assert Image.open(io.BytesIO(blob)).mode == "RGB"


def test_orientation_cmyk_and_sixteen_bit_are_read_right(bad_run):
    _, db, _ = bad_run
    rows = {p: (w, h, luma) for p, w, h, luma in query(
        db, "SELECT path, width, height, mean_luma FROM frames")}
    assert rows["rotated.jpg"][:2] == (40, 80)  # EXIF orientation 6: stored upright
    assert rows["cmyk_20240410_120000.jpg"][:2] == (64, 48)
    # a 0..65535 ramp scaled to 8 bits has a mid-grey mean, not a clipped white one
    assert 100 < rows["sixteen_bit_20240410_121000.png"][2] < 155
    assert rows["png_named_as_20240410_122000.jpg"] == rows["sixteen_bit_20240410_121000.png"]


def test_timestamps_from_bad_exif_fall_back_and_warn(bad_run):
    _, db, _ = bad_run
    sources = dict(query(db, "SELECT path, time_source FROM frames"))
    assert sources["garbage_date_20240410_130000.jpg"] == "filename"
    assert sources["future_date.jpg"] == "mtime"
    assert sources["caf\\xe9_20240410_150000.jpg"] == "filename"
    warnings = dict(query(db, "SELECT path, message FROM ingest_errors WHERE stage = 'timestamp'"))
    assert set(warnings) == {"garbage_date_20240410_130000.jpg", "future_date.jpg"}
    assert "yesterday-ish" in warnings["garbage_date_20240410_130000.jpg"]
    assert "future" in warnings["future_date.jpg"]


def test_same_image_under_two_names_is_two_frames_with_one_hash(bad_run):
    _, db, _ = bad_run
    hashes = dict(query(db, "SELECT path, content_hash FROM frames"))
    assert hashes["copy_a.jpg"] == hashes["copy_b.jpg"]
    assert len(set(hashes.values())) == len(GOOD) - 2  # the 16-bit PNG is there twice too


def test_each_broken_file_is_one_clear_error_row(bad_run):
    _, db, _ = bad_run
    rows = query(db, "SELECT path, message FROM ingest_errors WHERE stage = 'ingest' ORDER BY 1")
    assert [p for p, _ in rows] == sorted(BROKEN)
    for path, message in rows:
        assert message.startswith(BROKEN[path]), (path, message)
    assert one(db, "SELECT count(*) FROM ingest_errors WHERE stage = 'embed'") == 0


def test_a_second_run_records_nothing_twice(bad_run):
    folder, db, _ = bad_run
    before = query(db, "SELECT path, stage, message FROM ingest_errors ORDER BY 1, 2")
    proc = run_ok("run", folder, "--db", db, "--model", "pixels",
                  "--detectors", "iforest,lof,hbos")
    assert f"0 added, 0 changed, {len(GOOD)} unchanged, {len(BROKEN)} failed" in proc.stdout
    assert query(db, "SELECT path, stage, message FROM ingest_errors ORDER BY 1, 2") == before
    assert one(db, "SELECT count(*) FROM embeddings") == len(GOOD)


def test_the_smallest_folder_an_analysis_takes_runs_end_to_end(tmp_path):
    """Ten frames (the analysis minimum): neighbour detectors use at most n - 1 neighbours
    instead of failing the run (LOF asks for 20 by default)."""
    from pipeline.analyze import MIN_FRAMES

    folder = tmp_path / "few"
    make_frames(folder, MIN_FRAMES)
    db = tmp_path / "few.duckdb"
    run_ok("run", folder, "--db", db, "--model", "pixels",
           "--detectors", "iforest,lof,knn")
    assert query(db, "SELECT status, n_frames FROM analysis_runs") == [("complete", MIN_FRAMES)]
    assert one(db, "SELECT count(*) FROM outlier_scores WHERE detector = 'lof' "
                   "AND score IS NOT NULL") == MIN_FRAMES


def test_the_frame_page_shows_the_original_of_a_name_that_is_not_utf8(bad_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.reliability.test_hostile_dashboard import APP

    _, db, _ = bad_run
    frame_id = one(db, "SELECT frame_id FROM frames WHERE path = 'caf\\xe9_20240410_150000.jpg'")
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["frame"] = str(frame_id)
    at.switch_page("views/frame.py").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.image[0].captions[0] == "original file"
