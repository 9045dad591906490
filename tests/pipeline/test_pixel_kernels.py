"""The pixel detectors' fast kernels give the very numbers of the plain NumPy/SciPy code they
replace: bit for bit where they can (the maps of `alignment`: its scores are raw gains, so an
ulp would show), within 1e-12 where they sum in another order (its correlations)."""

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


def _maps_reference(luma: np.ndarray, saturated: float) -> np.ndarray:
    """The gradient cells as NumPy and SciPy compute them: `np.hypot` of the two Sobel
    gradients, zero within a 5 x 5 square of glare (`ndimage.binary_dilation` frame by frame),
    the mean of each 2 x 2 cell by reshape."""
    gradient = np.hypot(_sobel(luma, 2, 1), _sobel(luma, 1, 2))
    glare = ndimage.binary_dilation(luma >= saturated, structure=np.ones((1, 5, 5), bool))
    gradient[glare] = 0
    n, height, width = luma.shape
    h, w = height // 2, width // 2
    return gradient[:, : 2 * h, : 2 * w].reshape(n, h, 2, w, 2).mean(axis=(2, 4))


def _cells(grids: np.ndarray, saturated: float = 250) -> np.ndarray:
    return camera._gradient_cells(
        camera._rgb(grids), camera.LUMA, np.float32(saturated), camera.GLARE_RADIUS
    )


def test_luma_is_each_product_and_sum_rounded():
    """`luma` = (R x 0.299 + G x 0.587) + B x 0.114, every operation rounded to float32 on its
    own (what no fused multiply-add gives, on any CPU): checked against the same sums in
    float64, each step rounded to float32 by hand."""
    images = _images(0)
    want = np.float32(images[..., 0].astype(np.float64) * np.float64(camera.LUMA[0]))
    for channel in (1, 2):
        product = np.float32(images[..., channel] * np.float64(camera.LUMA[channel]))
        want = np.float32(want.astype(np.float64) + product.astype(np.float64))
    got = camera.luma(images)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(camera.luma(images.astype(np.float32)), want)


def test_gradient_cells_are_sobel_hypot_glare_and_cell_means():
    """`_gradient_cells` (compiled, from RGB grids) = `luma` then the NumPy/SciPy computation,
    bit for bit, on real-looking frames with glare, on noise of every scale, on tiny and
    odd-sized frames, from bytes and from floats."""
    rng = np.random.default_rng(1)
    cases = [_images(seed) for seed in range(3)]
    cases += [_images(4, height=73, width=129)]
    cases += [
        rng.normal(0, scale, size=(5, 36, 64, 3)).astype(np.float32) for scale in (1e-3, 1, 1e3)
    ]
    cases += [rng.uniform(0, 255, size=(3, 3, 4, 3)).astype(np.float32)]
    cases += [_images(5).astype(np.float32)]
    for grids in cases:
        got = _cells(grids)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, _maps_reference(camera.luma(grids), 250))
    np.testing.assert_array_equal(_cells(cases[0]), _cells(cases[0].astype(np.float64)))
    assert (_cells(cases[0])[0, 2:8, 9:21] == 0).all()


def test_gradient_maps_are_the_reference_computation():
    """The maps as format 2 defined them: `luma`, Sobel by `ndimage`, glare cut, 2 x 2 cell mean
    by reshape, log1p; odd sizes lose their last row and column as before."""
    det = camera.AlignmentDetector()
    for height, width in ((72, 128), (73, 129)):
        images = _images(4, height=height, width=width)
        want = np.log1p(_maps_reference(camera.luma(images), det.saturated)).astype(np.float32)
        got = det._gradient_maps(images)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_correlations_are_the_direct_sums():
    """`_correlate` (compiled, its dot products summed in any order) = each shift's normalised
    correlation summed directly in float64, within 1e-12, for float32 and float64 windows; a
    flat window's spread is floored (no division by zero: a correlation near 0)."""
    rng = np.random.default_rng(3)

    def direct(windows, centre, shifts):  # each shift's sums, plainly, in float64
        ch, cw = centre.shape
        out = np.empty((len(windows), shifts, shifts))
        for dy, dx in np.ndindex(shifts, shifts):
            part = windows[:, dy : dy + ch, dx : dx + cw]
            spread = np.sqrt(np.maximum(part.var(axis=(1, 2)) * part[0].size, 1e-12))
            out[:, dy, dx] = (part * centre).sum(axis=(1, 2)) / spread
        return out

    for n, (ch, cw), shifts in ((5, (24, 52), 9), (3, (2, 3), 3), (2, (7, 9), 1)):
        centre = rng.normal(size=(ch, cw))
        centre -= centre.mean()
        centre /= np.sqrt((centre**2).sum())
        windows = rng.normal(2, 1, size=(n, ch + shifts - 1, cw + shifts - 1))
        for dtype in (np.float64, np.float32):
            given = windows.astype(dtype)
            want = direct(given.astype(np.float64), centre, shifts)
            np.testing.assert_allclose(
                camera._correlate(given, centre, shifts), want, rtol=0, atol=1e-12
            )
        flat = camera._correlate(np.full((1, *windows.shape[1:]), 1.5), centre, shifts)
        assert np.isfinite(flat).all() and np.abs(flat).max() < 1e-6


def test_log_rgb_of_bytes_is_the_float_computation():
    """uint8 grids take their logs from a table; float grids of the same values compute them:
    the same numbers."""
    for seed in range(3):
        images = _images(seed)
        np.testing.assert_array_equal(
            background_grids.log_rgb(images), background_grids.log_rgb(images.astype(np.float32))
        )


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


def _interpolation(size: int, zoom: float) -> np.ndarray:
    """The reference: [size, size] linear interpolation of a line magnified by `zoom` about its
    centre, as a matrix (the edge held)."""
    centre = (size - 1) / 2
    source = np.clip((np.arange(size) - centre) / zoom + centre, 0, size - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size - 1)
    matrix = np.zeros((size, size))
    matrix[np.arange(size), low] += 1 - (source - low)
    matrix[np.arange(size), high] += source - low
    return matrix


def test_zoom_is_the_interpolation_matrices():
    """`_zoomed` (compiled, two taps a point) = the interpolation matrices' product in float64
    within float32's rounding; zoom 1 and a flat map are left exactly as they were; a ramp
    along x is magnified about its centre."""
    det = camera.AlignmentDetector()
    maps = det._gradient_maps(_images(0, height=72, width=128))
    for zoom in (0.9, 0.95, 1.05, 1.1, 1.0):
        want = _interpolation(36, zoom) @ maps.astype(np.float64) @ _interpolation(64, zoom).T
        got = camera._zoomed(maps, zoom)
        assert got.dtype == np.float32 and got.shape == maps.shape
        np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-6)
    np.testing.assert_array_equal(camera._zoomed(maps, 1.0), maps)
    flat = np.full((1, 36, 64), 1.75, np.float32)
    np.testing.assert_array_equal(camera._zoomed(flat, 1.1), flat)
    ramp = np.broadcast_to(np.arange(64, dtype=np.float32), (1, 36, 64))
    magnified = camera._zoomed(ramp, 1.1)[0, 0]
    np.testing.assert_allclose(magnified[20:44], (np.arange(20, 44) - 31.5) / 1.1 + 31.5, atol=1e-5)
