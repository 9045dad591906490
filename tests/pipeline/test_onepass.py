"""`run`'s one pass: each new file read once and decoded once for its thumbnail, statistics, time
and model input, giving what `ingest` then `embed` give; the worker processes and the writer."""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import store
from pipeline import pixels
from pipeline.embed import embed_frames, load_frame
from pipeline.executors import LocalExecutor
from pipeline.imagestats import FrameTask, read_frame
from pipeline.ingest import ingest_folder
from pipeline.models import get_model
from pipeline.onepass import ingest_and_embed
from pipeline.settings import Settings
from tests.conftest import write_jpeg


def _task(path: Path, model_size: int | None = None) -> FrameTask:
    st = path.stat()
    settings = Settings()
    return FrameTask(
        str(path),
        path.name,
        st.st_size,
        st.st_mtime_ns,
        settings.thumbnail_size,
        settings.max_image_pixels,
        settings.max_file_bytes,
        model_size,
    )


def _rotated(path: Path, size=(400, 300)) -> Path:
    """A JPEG whose EXIF says: turn 90 degrees clockwise to view (orientation 6)."""
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", quality=90, exif=exif)
    return path


@pytest.mark.parametrize(
    "size, model_size, shared",
    [
        ((1920, 1080), 224, True),  # thumbnail and model both decode at 1/4: one decode
        ((3840, 2160), 224, True),  # both at 1/8
        ((640, 360), 224, False),  # thumbnail at 1/2, model at 1/1: a second decode
        ((1280, 720), 224, False),  # thumbnail at 1/4, model at 1/2
        ((1920, 1080), 64, False),  # the pixels model: 1/8 against the thumbnail's 1/4
    ],
)
def test_one_read_gives_the_thumbnail_of_ingest_and_the_input_of_embed(
    tmp_path, size, model_size, shared
):
    path = write_jpeg(tmp_path / "f.jpg", when=datetime(2024, 4, 1, 12), size=size)
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if str(file) == str(path):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    builtins.open = counting_open
    try:
        both = read_frame(_task(path, model_size))
    finally:
        builtins.open = real_open
    assert len(opened) == 1  # the file is read once, whatever is decoded from its bytes
    alone = read_frame(_task(path))
    assert both.error is None and alone.model_input is None
    assert both.thumbnail == alone.thumbnail  # the same JPEG bytes as ingest stores
    assert (both.stats, both.time, both.content_hash, both.width, both.height) == (
        alone.stats,
        alone.time,
        alone.content_hash,
        alone.width,
        alone.height,
    )
    np.testing.assert_array_equal(both.model_input, load_frame(path, model_size))

    data = path.read_bytes()
    thumb_box = lambda w, h: (256, 256 * h // w)  # noqa: E731 - what ingest asks for
    originals = pixels.decode_originals(data, [thumb_box, pixels.square_box(model_size)])
    assert (originals[0] is originals[1]) == shared


def test_orientation_png_and_broken_files_through_the_one_read(tmp_path):
    rotated = _rotated(tmp_path / "r.jpg")
    result = read_frame(_task(rotated, 64))
    assert (result.width, result.height) == (300, 400)
    np.testing.assert_array_equal(result.model_input, load_frame(rotated, 64))
    png = tmp_path / "p.png"
    Image.new("RGB", (300, 200), (10, 200, 30)).save(png)
    result = read_frame(_task(png, 224))
    np.testing.assert_array_equal(result.model_input, load_frame(png, 224))
    broken = tmp_path / "b.jpg"  # a truncated JPEG
    broken.write_bytes(write_jpeg(tmp_path / "ok.jpg", size=(640, 360)).read_bytes()[:600])
    result = read_frame(_task(broken, 224))
    assert result.error and result.model_input is None and result.thumbnail is None


def _folder(root: Path) -> Path:
    """20 frames of three sizes, a rotated one, a PNG and two files that are not frames."""
    folder = root / "frames"
    start = datetime(2024, 4, 10, 8, 0)
    sizes = [(640, 360)] * 12 + [(1920, 1080)] * 4 + [(1280, 720)] * 4
    for i, size in enumerate(sizes):
        write_jpeg(
            folder / f"f_{i:02d}.jpg",
            when=start + timedelta(minutes=10 * i),
            size=size,
            seed=i,
            colour=(60 + 9 * i, 120, 90),
        )
    _rotated(folder / "rotated.jpg")
    Image.new("RGB", (300, 200), (10, 200, 30)).save(folder / "plain.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    return folder


def _table(db: Path, sql: str) -> dict:
    with store.connect(db, read_only=True) as con:
        return {row[0]: row[1:] for row in con.execute(sql).fetchall()}


def test_run_stores_exactly_what_ingest_then_embed_store(tmp_path):
    folder = _folder(tmp_path)
    settings = Settings(model="pixels", workers=2, batch_size=5)
    two, one = tmp_path / "two.duckdb", tmp_path / "one.duckdb"
    ingest_folder(folder, two, settings, progress=False)
    embed_frames(two, settings, progress=False)

    ingested, embedded, built = ingest_and_embed(folder, one, settings, progress=False)
    assert (ingested.added, ingested.failed) == (22, 2)
    assert (embedded.embedded, embedded.while_ingesting, embedded.failed) == (22, 22, 0)
    assert built is not None and built[1].precision == "float32"
    assert embedded.describe().startswith("embed pixels: 22 frames embedded in ")
    assert "22 of them while ingesting (one decode per frame)" in embedded.describe()
    rest = embed_frames(one, settings, progress=False, built=built)
    assert (rest.embedded, rest.already_done) == (0, 22)
    merged = embedded.merge(rest)  # what `run` prints: 22 embedded in the pass, none before
    assert (merged.embedded, merged.already_done, merged.while_ingesting) == (22, 0, 22)

    columns = (
        "path, taken_at, taken_at_utc, time_source, width, height, file_bytes, "
        "content_hash, mean_luma, contrast, sharpness, colorfulness, daylight"
    )
    frames = f"SELECT {columns} FROM frames"
    assert _table(one, frames) == _table(two, frames)
    thumbs = (
        "SELECT f.path, t.jpeg, t.width, t.height FROM thumbnails t JOIN frames f USING (frame_id)"
    )
    assert _table(one, thumbs) == _table(two, thumbs)
    vectors = (
        "SELECT f.path, e.vector, e.precision FROM embeddings e JOIN frames f USING (frame_id)"
    )
    assert _table(one, vectors) == _table(two, vectors)
    errors = "SELECT path, stage, message FROM ingest_errors"
    assert _table(one, errors) == _table(two, errors)

    again = ingest_and_embed(folder, one, settings, progress=False)
    assert (again[0].added, again[0].unchanged, again[1].embedded, again[2]) == (0, 22, 0, None)


def test_a_changed_picture_gets_its_new_vector_in_the_pass(tmp_path):
    folder = _folder(tmp_path)
    settings = Settings(model="pixels", workers=1, batch_size=8)
    db = tmp_path / "s.duckdb"
    ingest_and_embed(folder, db, settings, progress=False)
    before = _table(db, "SELECT f.path, e.vector FROM embeddings e JOIN frames f USING (frame_id)")
    write_jpeg(
        folder / "f_03.jpg",
        when=datetime(2024, 4, 10, 8, 30),
        size=(640, 360),
        seed=99,
        colour=(250, 20, 20),
    )
    ingested, embedded, _ = ingest_and_embed(folder, db, settings, progress=False)
    assert (ingested.changed, embedded.embedded) == (1, 1)
    after = _table(db, "SELECT f.path, e.vector FROM embeddings e JOIN frames f USING (frame_id)")
    assert after.keys() == before.keys()
    assert [p for p in after if after[p] != before[p]] == ["f_03.jpg"]
    # the new vector is the model on the new picture's own pixels
    vector = get_model("pixels").build().embed(load_frame(folder / "f_03.jpg", 64)[None])[0]
    np.testing.assert_array_equal(np.asarray(after["f_03.jpg"][0], np.float32), vector)


def _times_ten(item: int) -> int:  # module level: worker processes import it
    return item * 10


def test_the_process_executor_keeps_batch_order_and_every_item():
    batches = [list(range(i, i + 4)) for i in range(0, 40, 4)]
    executor = LocalExecutor(workers=2, ahead=1, processes=True, preload=["tests.pipeline"])
    results = list(executor.map_batches(batches, _times_ten, sum))
    assert results == [sum(item * 10 for item in batch) for batch in batches]
