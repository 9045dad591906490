"""The pixel detectors' fast kernels give the very numbers of the plain NumPy/SciPy code they
replace, bit for bit (the scores of `alignment` are its raw gains, so an ulp would show)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.detectors import camera
from pipeline.detectors.background import grids as background_grids


def _images(seed: int, n: int = 12, height: int = 72, width: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.uniform(0, 255, size=(n, height // 8, width // 8, 3))
    images = np.repeat(np.repeat(smooth, 8, axis=1), 8, axis=2)
    images += rng.normal(0, 20, size=images.shape)
    images = np.clip(images, 0, 255).astype(np.uint8)
    images[0, 5:15, 20:40] = 255  # glare
    images[1] = 0  # black
    images[2, :, :, 1] = 255
    return images


def _sobel(luma: np.ndarray, axis: int, other: int) -> np.ndarray:
    """The reference: each frame's Sobel gradient along `axis` of a stack [m, h, w] by
    `ndimage.correlate1d` (its two passes along the frame's own axes only), times 4."""
    diff = ndimage.correlate1d(luma, [-1, 0, 1], axis=axis, mode="reflect")
    return ndimage.correlate1d(diff, [1, 2, 1], axis=other, mode="reflect") * np.float32(4)


def test_gradient_is_sobel_and_hypot():
    """`_gradient` = hypot of `_sobel` along x and y (`ndimage.correlate1d` twice each, in
    reflect mode), on real-looking luma, on noise of every scale, and on tiny frames."""
    rng = np.random.default_rng(1)
    cases = [camera._luma(_images(seed)) for seed in range(3)]
    cases += [rng.normal(0, scale, size=(5, 36, 64)).astype(np.float32) for scale in (1e-3, 1, 1e3)]
    cases += [rng.uniform(0, 255, size=(3, 3, 4)).astype(np.float32)]
    for luma in cases:
        want = np.hypot(_sobel(luma, 2, 1), _sobel(luma, 1, 2))
        np.testing.assert_array_equal(camera._gradient(luma), want)


def test_gradient_maps_are_the_reference_computation():
    """The maps as format 2 defined them: luma, Sobel by `ndimage`, glare cut, 2 x 2 cell mean
    by reshape, log1p; odd sizes lose their last row and column as before."""
    det = camera.AlignmentDetector()
    for height, width in ((72, 128), (73, 129)):
        images = _images(4, height=height, width=width)
        luma = images.astype(np.float32) @ camera.LUMA
        gradient = np.hypot(_sobel(luma, 2, 1), _sobel(luma, 1, 2))
        gradient[camera._dilate(luma >= det.saturated, 2)] = 0
        h, w = height // 2, width // 2
        cells = gradient[:, : 2 * h, : 2 * w].reshape(len(luma), h, 2, w, 2).mean(axis=(2, 4))
        want = np.log1p(cells).astype(np.float32)
        got = det._gradient_maps(images)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_log_rgb_of_bytes_is_the_float_computation():
    """uint8 grids take their logs from a table; float grids of the same values compute them:
    the same numbers."""
    for seed in range(3):
        images = _images(seed)
        np.testing.assert_array_equal(
            background_grids.log_rgb(images), background_grids.log_rgb(images.astype(np.float32))
        )


def test_box_sums_are_the_padded_running_sums():
    rng = np.random.default_rng(3)

    def padded(x, shape):  # the reference: running sums from a zero column and row
        h, w = shape
        c = np.pad(x, ((0, 0), (0, 0), (1, 0))).cumsum(axis=2)
        c = np.pad(c[:, :, w:] - c[:, :, :-w], ((0, 0), (1, 0), (0, 0))).cumsum(axis=1)
        return c[:, h:] - c[:, :-h]

    for size, box in (((5, 32, 60), (24, 52)), ((3, 10, 11), (2, 3)), ((2, 7, 9), (7, 9))):
        x = rng.normal(2, 1, size=size)
        for values in (x, x**2):
            np.testing.assert_array_equal(camera._box_sums(values, box), padded(values, box))


def test_pixel_detectors_score_alike_whatever_the_read_chunk(demo_store):
    """`analyze` reads the thumbnails `PIXEL_CHUNK` at a time: the pieces the detectors score are
    cut from each chunk (64 and 128 frames), so with chunks that are multiples of those the
    scores are the same as with the reader's default, bit for bit."""
    import store
    from pipeline.analyze import PIXEL_CHUNK
    from pipeline.detectors import make_detector
    from pipeline.detectors.batch import FrameBatch
    from pipeline.pixels import ThumbnailReader
    from store import analysis as sa

    assert PIXEL_CHUNK % 128 == 0
    with store.connect(demo_store, read_only=True) as con:
        frames = sa.load_frames(con)
    ids = frames["frame_id"].to_numpy(np.int64)
    assert len(ids) > 128  # two chunks of 128, one of 1,024
    batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 2), np.float32), frames)
    for key in ("alignment", "background"):
        scores = []
        for chunk in (128, 1024):
            batch.pixels = ThumbnailReader(demo_store, chunk=chunk, read_only=True)
            scores.append(make_detector(key).fit(batch).decision_scores_)
        assert np.isfinite(scores[0]).sum() > 100, key
        np.testing.assert_array_equal(scores[0], scores[1], err_msg=key)
