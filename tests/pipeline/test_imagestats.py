"""Decoding one frame: draft mode, orientation, odd modes, statistics, and every bad-file case."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline import pixels
from pipeline.imagestats import cell_sharpness, image_stats, read_frame, thumbnail_measures
from pipeline.settings import Settings
from tests.conftest import write_jpeg

MAX_PIXELS = 120_000_000


def _task(
    path: Path,
    thumb: int = 256,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = Settings().max_file_bytes,
):
    st = path.stat()
    return (str(path), path.name, st.st_size, st.st_mtime_ns, thumb, max_pixels, max_bytes)


def _save(path: Path, image: Image.Image, fmt: str, **kwargs) -> Path:
    image.save(path, fmt, **kwargs)
    return path


def test_statistics_follow_their_definitions():
    black = image_stats(np.zeros((20, 30, 3), np.float32))
    assert black.mean_luma == 0 and black.contrast == 0 and black.sharpness == 0
    assert black.colorfulness == 0
    grey = image_stats(np.full((20, 30, 3), 128, np.float32))
    assert grey.mean_luma == pytest.approx(128, abs=1e-3) and grey.sharpness == 0
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    smooth = np.repeat(np.linspace(0, 255, 40, dtype=np.float32)[None, :, None], 40, 0)
    smooth = np.repeat(smooth, 3, 2)
    assert image_stats(noisy).sharpness > 100 * max(image_stats(smooth).sharpness, 1e-6)
    red = np.zeros((10, 10, 3), np.float32)
    red[..., 0] = 255
    assert image_stats(red).colorfulness > 50 > grey.colorfulness
    # half black, half white: contrast is half the range
    half = np.zeros((10, 10, 3), np.float32)
    half[:, 5:] = 255
    assert image_stats(half).contrast == pytest.approx(127.5, abs=0.5)


def test_jpeg_is_draft_decoded_to_a_thumbnail_and_measured(tmp_path):
    path = write_jpeg(tmp_path / "big.jpg", when=datetime(2024, 4, 1, 12), size=(1024, 768))
    result = read_frame(_task(path))
    assert result.error is None
    assert (result.width, result.height) == (1024, 768)
    assert (result.thumb_width, result.thumb_height) == (256, 192)
    thumb = Image.open(io.BytesIO(result.thumbnail))
    assert thumb.format == "JPEG" and thumb.size == (256, 192)
    assert 100 < result.stats.mean_luma < 140
    assert result.time.source == "exif" and result.time.local == datetime(2024, 4, 1, 12)
    assert len(result.content_hash) == 32


def test_draft_mode_decodes_at_reduced_scale(tmp_path):
    path = write_jpeg(tmp_path / "big.jpg", size=(2048, 1536))
    image = Image.open(path)
    image.draft("RGB", pixels.draft_box(2048, 1536, 256))
    image.load()
    assert image.size == (256, 192)  # DCT scaling 1/8: never decoded at full size


def test_exif_orientation_is_respected(tmp_path):
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = _save(tmp_path / "rotated.jpg", Image.fromarray(pixels), "JPEG", exif=exif)
    result = read_frame(_task(path))
    assert (result.width, result.height) == (40, 80)
    thumb = np.asarray(Image.open(io.BytesIO(result.thumbnail)).convert("L"), np.float32)
    assert thumb.shape == (80, 40)
    # after a 90-degree clockwise turn the white half is on top
    assert thumb[:30].mean() > 200 and thumb[50:].mean() < 50


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = _save(tmp_path / "cmyk.jpg", Image.new("CMYK", (60, 40), (0, 255, 255, 0)), "JPEG")
    result = read_frame(_task(path))
    assert result.error is None
    rgb = np.asarray(Image.open(io.BytesIO(result.thumbnail)), np.float32).mean(axis=(0, 1))
    assert rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60  # red


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.full((30, 40), 32768, np.uint16)  # mid grey in 16 bits
    image = Image.fromarray(values)  # uint16 -> mode I;16
    path = _save(tmp_path / "deep.png", image, "PNG")
    assert Image.open(path).mode in ("I;16", "I")
    result = read_frame(_task(path))
    assert result.error is None
    assert result.stats.mean_luma == pytest.approx(127.5, abs=2)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "L", "1"])
def test_palette_alpha_and_grey_images_convert(tmp_path, mode):
    base = Image.new("RGB", (30, 20), (200, 100, 50))
    if mode == "P":
        image = base.convert("P")
        image.info["transparency"] = 255
    elif mode == "LA":
        image = base.convert("LA")
    elif mode == "RGBA":
        image = base.convert("RGBA")
        image.putalpha(255)
    else:
        image = base.convert(mode)
    path = _save(tmp_path / f"img_{mode}.png", image, "PNG")
    result = read_frame(_task(path))
    assert result.error is None
    assert Image.open(io.BytesIO(result.thumbnail)).mode == "RGB"
    assert result.stats.mean_luma > 0 or mode == "1"


def test_png_named_jpg_is_read_by_its_content(tmp_path):
    path = _save(tmp_path / "actually_png.jpg", Image.new("RGB", (20, 10), (10, 200, 10)), "PNG")
    result = read_frame(_task(path))
    assert result.error is None and result.width == 20


def test_bad_files_give_clear_messages(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    good = write_jpeg(tmp_path / "good.jpg", size=(200, 150))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    gif = tmp_path / "anim.png"
    Image.new("RGB", (10, 10)).save(gif, "GIF")

    assert read_frame(_task(empty)).error == "empty file (0 bytes)"
    assert read_frame(_task(text)).error.startswith("not an image")
    assert read_frame(_task(truncated)).error.startswith("truncated image")
    assert "unsupported image format GIF" in read_frame(_task(gif)).error
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bombs_are_refused_warning_and_error(tmp_path):
    path = write_jpeg(tmp_path / "huge.jpg", size=(64, 48))  # 3072 pixels
    warned = read_frame(_task(path, max_pixels=2000))  # over the limit (Pillow would warn)
    errored = read_frame(_task(path, max_pixels=1000))  # over twice it (Pillow would raise)
    for result in (warned, errored):
        assert result.error.startswith("refused as a decompression bomb")
        assert "max_image_pixels" in result.error
    assert read_frame(_task(path, max_pixels=MAX_PIXELS)).error is None


def test_a_low_limit_stays_with_the_frames_it_was_set_for(tmp_path):
    """A low max_image_pixels (one ingest's setting) refuses those frames only: Pillow's own
    process-wide limit, which every other picture in the process meets (the dashboard's
    thumbnails, the mosaic), is not lowered, so a later, bigger picture still opens."""
    before = Image.MAX_IMAGE_PIXELS
    path = write_jpeg(tmp_path / "frame.jpg", size=(160, 90))  # 14,400 pixels
    assert read_frame(_task(path, max_pixels=1000)).error.startswith("refused")
    pixels.configure(1000)
    try:
        assert Image.MAX_IMAGE_PIXELS == before
        buf = io.BytesIO()
        Image.new("RGB", (400, 300)).save(buf, "PNG")  # 120,000 pixels: over 2x 1000
        with Image.open(io.BytesIO(buf.getvalue())) as image:
            image.load()
        assert image.size == (400, 300)
        assert read_frame(_task(path, max_pixels=MAX_PIXELS)).error is None
    finally:
        pixels.configure(MAX_PIXELS)
    assert Image.MAX_IMAGE_PIXELS == max(before, MAX_PIXELS)


def test_corrupt_exif_keeps_the_pixels(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 10:00:00"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (100, 100, 100)).save(buffer, "JPEG", exif=exif)
    data = bytearray(buffer.getvalue())
    start = data.find(b"Exif\x00\x00")
    data[start + 10 : start + 30] = b"\xff" * 20  # break the IFD offsets
    path = tmp_path / "broken_exif_20240102_030405.jpg"
    path.write_bytes(bytes(data))
    result = read_frame(_task(path))
    assert result.error is None and result.width == 40
    assert result.time.source == "filename"


def test_cell_sharpness_measures_each_cell_of_the_view():
    """`sharpness` of each of the 3 x 3 cells, row by row: a sharp texture everywhere but a
    blurred left column (water down the left of the lens) shows in cells 0, 3 and 6 only."""
    rng = np.random.default_rng(1)
    sharp = rng.uniform(0, 255, (90, 120, 3)).astype(np.float32)
    cells = cell_sharpness(sharp)
    assert len(cells) == 9 and min(cells) > 1000
    smeared = sharp.copy()
    smeared[:, :40] = sharp[:, :40].mean(axis=(0, 1))  # the left third a flat smear
    soft = cell_sharpness(smeared)
    left = [soft[i] for i in (0, 3, 6)]
    assert max(left) < 0.1 * min(cells)
    # the middle and right columns are as before, up to the border the Laplacian straddles
    for i in (2, 5, 8):
        assert soft[i] == pytest.approx(cells[i])
    assert cell_sharpness(np.zeros((8, 8, 3), np.float32)) is None  # cells under 3 x 3 pixels


def test_ingest_measures_each_cell_and_analyze_backfills_a_store_without_them(tmp_path):
    """Ingest stores each frame's cell sharpness, measured on the stored thumbnail; frames
    ingested before it get the very same values from their thumbnails."""
    import store
    from pipeline.imagestats import backfill_thumbnail_measures
    from pipeline.ingest import ingest_folder

    folder = tmp_path / "frames"
    for i in range(4):
        write_jpeg(folder / f"f{i}.jpg", when=datetime(2024, 4, 1, 10 + i), size=(320, 240), seed=i)
    db = tmp_path / "store.duckdb"
    ingest_folder(folder, db, Settings())
    with store.connect(db) as con:
        ingested = con.sql(
            "SELECT frame_id, local_contrast, sharpness_cells FROM frames ORDER BY frame_id"
        ).fetchall()
        thumbs = con.sql("SELECT jpeg FROM thumbnails ORDER BY frame_id").fetchall()
        con.execute("UPDATE frames SET sharpness_cells = NULL")
        con.execute("UPDATE frames SET local_contrast = NULL WHERE frame_id = 1")
    assert all(len(cells) == 9 and min(cells) > 0 for _, _, cells in ingested)
    for (_, contrast, cells), (jpeg,) in zip(ingested, thumbs):
        assert thumbnail_measures(bytes(jpeg)) == (contrast, cells)
    assert backfill_thumbnail_measures(db) == 4
    with store.connect(db, read_only=True) as con:
        again = con.sql(
            "SELECT frame_id, local_contrast, sharpness_cells FROM frames ORDER BY frame_id"
        ).fetchall()
    assert again == ingested
    assert backfill_thumbnail_measures(db) == 0  # nothing left to fill in
