"""The archive mosaic: a row per day, a cell per hour holding the median of its frames, hours
without frames transparent, cells mostly in incidents outlined; each frame decoded once (the
grids the detectors read fill the cells), a bounded number per cell, and long archives folded
into a bounded atlas."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline import mosaic as mosaic_module
from pipeline.mosaic import MosaicBuilder
from pipeline.pixels import ArrayReader

START = np.datetime64("2024-04-02T00:00")


class CountingReader(ArrayReader):
    """Images in memory that count how often each frame is decoded."""

    def __init__(self, images):
        super().__init__(images)
        self.decoded: list[int] = []

    def grids(self, frame_ids, size):
        self.decoded += [int(i) for i in frame_ids if int(i) in self.images]
        yield from super().grids(frame_ids, size)


def _frames(n_days: int = 2, per_hour: int = 3):
    """Frames every 20 minutes; each a flat grey whose level is its hour of the day, but frame
    5 (in hour 1 of day 1) is white."""
    times = START + np.arange(n_days * 24 * per_hour) * np.timedelta64(60 // per_hour, "m")
    ids = np.arange(1, len(times) + 1)
    hours = (times - times.astype("datetime64[D]")) // np.timedelta64(1, "h")
    images = {int(i): np.full((36, 64, 3), 10 * int(h), np.uint8) for i, h in zip(ids, hours)}
    images[5] = np.full((36, 64, 3), 255, np.uint8)
    return ids, times, images


def _atlas(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.png)).convert("RGBA"))


def test_cells_are_the_median_of_their_hour_and_missing_hours_are_transparent():
    ids, times, images = _frames()
    del images[int(ids[-1])]  # a frame without an image: its cell is made of the others
    keep = times < START + np.timedelta64(47, "h")  # no frames in the last hour of day 2
    builder = MosaicBuilder(ids[keep], times[keep], 64 / 36)
    result = builder.finish(CountingReader(images))
    assert result.days[0].isoformat() == "2024-04-02" and len(result.days) == 2
    assert (result.cell_width, result.cell_height) == (32, 18)
    atlas = _atlas(result)
    assert atlas.shape == (2 * 18, 24 * 32, 4)
    cell = atlas[0:18, 32:64]  # day 1, hour 1: grey 10, 10 and the white frame 5
    assert (cell[..., :3] == 10).all() and (cell[..., 3] == 255).all()
    assert (atlas[18:36, 23 * 32 :, 3] == 0).all()  # day 2, hour 23: no frames
    assert (atlas[18:36, 22 * 32 : 23 * 32, :3] == 220).all()


def test_frames_the_detectors_read_are_not_decoded_again():
    ids, times, images = _frames()
    reader = CountingReader(images)
    builder = MosaicBuilder(ids, times, 64 / 36)
    tapped = builder.tap(reader)
    half = ids[: len(ids) // 2]
    for _ in tapped.grids(half, (128, 72)):  # a detector reads half of the frames
        pass
    for _ in tapped.grids(half[:10], (128, 72)):  # and some of them twice
        pass
    result = builder.finish(reader)
    assert result.n_frames == len(ids)
    assert result.n_decoded == len(ids) - len(half)
    assert sorted(reader.decoded) == sorted(list(half) + list(half[:10]) + list(ids[len(half) :]))


def test_a_cell_reads_at_most_a_bounded_number_of_frames_spread_over_its_hour(monkeypatch):
    monkeypatch.setattr(mosaic_module, "MAX_PER_CELL", 4)
    ids, times, images = _frames(n_days=1, per_hour=12)  # every five minutes
    reader = CountingReader(images)
    result = MosaicBuilder(ids, times, 64 / 36).finish(reader)
    assert result.n_frames == 24 * 4 and len(reader.decoded) == 24 * 4
    first_hour = sorted(i for i in reader.decoded if i <= 12)
    assert first_hour == [1, 4, 7, 10]  # the first of each quarter of the hour


def test_cells_mostly_in_incidents_are_outlined():
    ids, times, images = _frames()
    # hour 3 of day 1 holds frames 10-12: two of three in incidents; hour 4: one of three
    result = MosaicBuilder(ids, times, 64 / 36).finish(ArrayReader(images), [10, 11, 13])
    assert result.outlined == [3]
    assert MosaicBuilder(ids, times, 64 / 36).finish(ArrayReader(images)).outlined == []


def test_a_long_archive_folds_days_into_a_bounded_atlas(monkeypatch):
    monkeypatch.setattr(mosaic_module, "ATLAS_MAX_HEIGHT", 10)
    ids, times, images = _frames(n_days=25, per_hour=1)
    result = MosaicBuilder(ids, times, 64 / 36).finish(ArrayReader(images))
    atlas = _atlas(result)
    assert atlas.shape[0] == 10 and result.cell_height == 1 and len(result.days) == 10
    assert [d.day for d in result.days[:3]] == [2, 5, 7]  # 2 or 3 days a row


def test_frame_ids_must_be_ascending():
    ids, times, _ = _frames(n_days=1)
    with pytest.raises(ValueError, match="ascending"):
        MosaicBuilder(ids[::-1], times, 16 / 9)


def test_block_means_of_bytes_are_numpys_means():
    """Cells of uint8 grids, summed in integers block by block, are the very floats NumPy's
    float32 mean gives, for blocks of every shape the thumbnails make (and the tallest whose
    sums still fit uint16); float grids take NumPy's mean itself."""
    rng = np.random.default_rng(2)
    cases = [((9, 72, 128), (32, 18)), ((9, 36, 64), (32, 18)), ((4, 90, 160), (32, 18))]
    cases += [((3, 771, 64), (32, 3)), ((5, 18, 96), (32, 18))]
    for (m, h, w), (width, height) in cases:
        grids = rng.integers(0, 256, size=(m, h, w, 3), dtype=np.uint8)
        grids[0] = 255
        want = grids.reshape(m, height, h // height, width, w // width, 3).mean(
            axis=(2, 4), dtype=np.float32
        )
        got = mosaic_module._downsample(grids, (width, height))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            mosaic_module._downsample(grids.astype(np.float32), (width, height)), want
        )
