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

import io

import pytest
from PIL import Image

from tests.reliability.conftest import make_frames, one, query, run_ok, run_pipeline
from tests.reliability.corpus import MARKDOWN_NAME, build_corpus

# the whole module on one xdist worker (`make test`): its module fixtures are built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bad_files")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("bad") / "frames")


@pytest.fixture(scope="module")
def bad_run(corpus):
    """The corpus, run once through the CLI; (folder, db, process)."""
    db = corpus.folder.parent / "store.duckdb"
    proc = run_pipeline(
        "run",
        corpus.folder,
        "--db",
        db,
        "--model",
        "pixels",
        "--detectors",
        "iforest,lof,hbos,temporal,same_time",
    )
    return corpus.folder, db, proc


def test_the_run_finishes_and_reports_the_failures(bad_run, corpus):
    _, _, proc = bad_run
    good, broken = corpus.good, corpus.broken
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(good)} added, 0 changed, 0 unchanged, {len(broken)} failed" in proc.stdout
    assert f"{len(corpus.warned)} timestamp warning(s)" in proc.stdout
    assert "3 frame(s) without a plausible time" in proc.stdout
    assert f"embed pixels: {len(good)} frames embedded" in proc.stdout
    assert f"analysis run 1 (pixels): {len(good)} frames" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_valid_odd_images_are_frames_with_a_vector_and_scores(bad_run, corpus):
    _, db, _ = bad_run
    good = corpus.good
    assert {p for (p,) in query(db, "SELECT path FROM frames")} == good
    assert one(db, "SELECT count(*) FROM embeddings WHERE model = 'pixels'") == len(good)
    assert one(db, "SELECT count(DISTINCT frame_id) FROM outlier_scores WHERE run_id = 1") == len(
        good
    )
    assert one(db, "SELECT count(*) FROM frames WHERE mean_luma IS NULL OR sharpness IS NULL") == 0
    # every thumbnail decodes and is RGB, whatever the original mode
    for (blob,) in query(db, "SELECT jpeg FROM thumbnails"):
        assert Image.open(io.BytesIO(blob)).mode == "RGB"


def test_orientation_cmyk_and_sixteen_bit_are_read_right(bad_run):
    _, db, _ = bad_run
    rows = {
        p: (w, h, luma)
        for p, w, h, luma in query(db, "SELECT path, width, height, mean_luma FROM frames")
    }
    assert rows["rotated.jpg"][:2] == (40, 80)  # EXIF orientation 6: stored upright
    assert rows["cmyk_20240410_120000.jpg"][:2] == (64, 48)
    # a 0..65535 ramp scaled to 8 bits has a mid-grey mean, not a clipped white one
    assert 100 < rows["sixteen_bit_20240410_121000.png"][2] < 155
    assert rows["png_named_as_20240410_122000.jpg"] == rows["sixteen_bit_20240410_121000.png"]


def test_timestamps_from_bad_exif_fall_back_and_warn(bad_run, corpus):
    _, db, _ = bad_run
    sources = dict(query(db, "SELECT path, time_source FROM frames"))
    assert sources["caf\\xe9_20240410_150000.jpg"] == "filename"
    warnings = dict(query(db, "SELECT path, message FROM ingest_errors WHERE stage = 'timestamp'"))
    assert set(warnings) == set(corpus.warned)
    for path, (source, text) in corpus.warned.items():
        assert sources[path] == source, path
        assert text in warnings[path], (path, warnings[path])


def test_frames_without_a_plausible_time_are_kept_and_counted(bad_run, corpus):
    _, db, _ = bad_run
    untimed = {p for p, (source, _) in corpus.warned.items() if source == "none"}
    rows = query(db, "SELECT path, taken_at, taken_at_utc FROM frames WHERE time_source = 'none'")
    assert {p for p, _, _ in rows} == untimed
    assert all(local is None and utc is None for _, local, utc in rows)
    # scored by the detectors that need no time (no time: no time-lapse score)
    assert one(
        db,
        "SELECT count(*) FROM outlier_scores s JOIN frames f USING (frame_id) "
        "WHERE f.time_source = 'none' AND s.detector = 'iforest'",
    ) == len(untimed)
    info = run_ok("info", "--db", db).stdout
    assert f"none (no plausible date) {len(untimed)}" in info


def test_same_image_under_two_names_is_two_frames_with_one_hash(bad_run, corpus):
    _, db, _ = bad_run
    hashes = dict(query(db, "SELECT path, content_hash FROM frames"))
    assert hashes["copy_a.jpg"] == hashes["copy_b.jpg"]
    assert len(set(hashes.values())) == len(corpus.good) - 2  # the 16-bit PNG is twice too


def test_each_broken_file_is_one_clear_error_row(bad_run, corpus):
    _, db, _ = bad_run
    rows = query(db, "SELECT path, message FROM ingest_errors WHERE stage = 'ingest' ORDER BY 1")
    assert [p for p, _ in rows] == sorted(corpus.broken)
    for path, message in rows:
        assert message.startswith(corpus.broken[path]), (path, message)
    assert one(db, "SELECT count(*) FROM ingest_errors WHERE stage = 'embed'") == 0


def test_a_second_run_records_nothing_twice(bad_run, corpus):
    folder, db, _ = bad_run
    good, broken = corpus.good, corpus.broken
    before = query(db, "SELECT path, stage, message FROM ingest_errors ORDER BY 1, 2")
    proc = run_ok("run", folder, "--db", db, "--model", "pixels", "--detectors", "iforest,lof,hbos")
    assert f"0 added, 0 changed, {len(good)} unchanged, {len(broken)} failed" in proc.stdout
    assert query(db, "SELECT path, stage, message FROM ingest_errors ORDER BY 1, 2") == before
    assert one(db, "SELECT count(*) FROM embeddings") == len(good)


def test_the_smallest_folder_an_analysis_takes_runs_end_to_end(tmp_path):
    """Ten frames (the analysis minimum): `iforest` and `knn` score every frame; `lof`, which
    needs 30 frames to compare densities, says so and the run completes without it."""
    from pipeline.analyze import MIN_FRAMES

    folder = tmp_path / "few"
    make_frames(folder, MIN_FRAMES)
    db = tmp_path / "few.duckdb"
    proc = run_ok("run", folder, "--db", db, "--model", "pixels", "--detectors", "iforest,lof,knn")
    assert query(db, "SELECT status, n_frames FROM analysis_runs") == [("complete", MIN_FRAMES)]
    scored = query(
        db,
        "SELECT detector, count(*) FROM outlier_scores WHERE score IS NOT NULL "
        "AND detector IN ('iforest', 'lof', 'knn') GROUP BY detector ORDER BY detector",
    )
    assert scored == [("iforest", MIN_FRAMES), ("knn", MIN_FRAMES)]
    assert "lof skipped" in proc.stdout and "at least 30 frames" in proc.stdout


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


def test_the_frame_page_shows_a_markdown_name_as_written(bad_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.reliability.test_hostile_dashboard import APP

    _, db, _ = bad_run
    frame_id = one(db, "SELECT frame_id FROM frames WHERE path = ?", [MARKDOWN_NAME])
    monkeypatch.setenv("TIMELAPSE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["frame"] = str(frame_id)
    at.switch_page("views/frame.py").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    caption = at.caption[0].value
    # every character Markdown, LaTeX or a Streamlit directive would act on is escaped
    assert r"\*\*bold\*\* \$x\^2\$ \:red\[alert\]\_20240410\_133000\.jpg" in caption


@pytest.mark.browser
def test_a_real_browser_shows_the_markdown_name_as_written(bad_run, browser, tmp_path):
    from tests.browser.conftest import ARTIFACTS
    from tests.browser.test_dashboard_browser import settle
    from tests.conftest import dashboard_server

    _, db, _ = bad_run
    frame_id = one(db, "SELECT frame_id FROM frames WHERE path = ?", [MARKDOWN_NAME])
    with dashboard_server(db, tmp_path / "streamlit.log") as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/frame?frame={frame_id}")
            settle(page, "Frame")
            caption = page.get_by_text(f"Frame {frame_id} · ", exact=False).first.inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "frame-markdown-name.png"))
        finally:
            page.close()
    assert MARKDOWN_NAME in caption, caption
