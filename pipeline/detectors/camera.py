"""The camera family: `alignment`, whether the frame still lines up with the camera's usual view.

A knocked, turned or zoomed camera shows every edge of the scene a little off, all over the
frame: no local detector sees it, and no change of light causes it. The edges of a fixed
camera's view (the horizon, roofs, the shore) stay where they are whatever the weather, so each
frame's gradient map (log of 1 + the Sobel gradient magnitude of luma, at `width` cells across)
is correlated with the median gradient map of the fit's daylight frames, in place and shifted
by up to `max_shift` cells and zoomed by each of `zooms`: the score is how much better the best
shifted or zoomed correlation is than the correlation in place (0 when the frame lines up
best where it is). The normalised correlation of the ranked gradient maps (not the phase
correlation `background` used, which follows shifts only) also follows a camera that was
turned and zoomed at once (measured on the Kat Kam webcam's May 2017 move, docs/PERFORMANCE.md).

The sun in the frame draws strong edges of its own (the disc, flare, its reflection) that can
line up better shifted: saturated pixels (luma `saturated` and up) and the pixels around them
carry no edges. Frames with too little structure to line up (under a quarter of the fit's
median edge strength: black, a covered lens) get NaN; in a daylight class where fewer than
`min_lines_up` of the fit's frames line up in place (within `in_place_within` of their best
correlation: a real camera's frames rarely peak exactly in place, their shifted correlations
differ by a hundredth; night: the edges are sensor noise and the best shift wanders by chance),
the score is 0.

The usual view is learned from at most `max_view_frames` frames (a seeded sample; below that
every frame), so its memory is bounded whatever the footage's length; every frame is then
decoded once, mapped and correlated a piece at a time in threads (compiled loops that release
the GIL), and the fit's own gains are its scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import FrameBatch, daylight_classes
from pipeline.pixels import grid_size
from pipeline.threads import bounded_map, one_blas_thread, read_ahead

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@register
class AlignmentDetector(Detector):
    """How much better the frame lines up with the camera's usual view shifted or zoomed than
    in place (see `pipeline.detectors.camera`)."""

    key = "alignment"
    summary = "the camera moved, was knocked or zoomed: the view lines up better shifted"
    family = "camera"
    cause = "camera"
    plain_cause = "camera moved"
    order = 8
    needs = frozenset({"thumbnails"})
    in_consensus = True
    # A one-sided check (as `exposure`): a real camera's frames line up a hundredth better
    # shifted by chance, so only its top twentieth counts (Kat Kam, quality,camera: from 0.9
    # 0.921 / AP 0.747, from 0.95 0.926 / 0.772, from 0.98 0.931 / 0.783; docs/PERFORMANCE.md).
    evidence_from = 0.95
    unscorable = (
        "(it compares the stored thumbnails with the usual view and needs at least "
        "{min_frames} readable ones)"
    )

    format_version = 2

    def __init__(
        self,
        contamination: float = 0.05,
        width: int = 64,
        max_shift: int = 4,
        margin: int = 6,
        zooms: tuple = (0.9, 0.95, 1.0, 1.05, 1.1),
        saturated: float = 250.0,
        min_lines_up: float = 0.5,
        in_place_within: float = 0.02,
        min_frames: int = 30,
        max_view_frames: int = 20000,
        random_state: int = 0,
    ):
        self.contamination = contamination
        self.width = width
        self.max_shift = max_shift
        self.margin = margin
        self.zooms = zooms
        self.saturated = saturated
        self.min_lines_up = min_lines_up
        self.in_place_within = in_place_within
        self.min_frames = min_frames
        self.max_view_frames = max_view_frames
        self.random_state = random_state

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 1 learned the usual view from every frame (no cap, no sample)
        return {"max_view_frames": None, "random_state": 0, **state}

    # --- gradient maps ------------------------------------------------------------------------

    def _maps(self, batch: FrameBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions among `rows` of the frames with an image, their log gradient maps
        [m, h, w]); decoded and mapped a chunk at a time in threads."""
        got = list(
            bounded_map(
                lambda chunk: (chunk[0], self._gradient_maps(chunk[1])), self._chunks(batch, rows)
            )
        )
        if not got:
            return np.empty(0, np.int64), np.empty((0, self.size_[1], self.size_[0]), np.float32)
        return np.concatenate([p for p, _ in got]), np.concatenate([m for _, m in got])

    def _chunks(self, batch: FrameBatch, rows: np.ndarray):
        """(positions among `rows`, RGB grids [m, h, w, 3]) in pieces of at most `CHUNK`
        frames; the reader's next chunk is read and decoded while the threads map this one."""
        fine = (2 * self.size_[0], 2 * self.size_[1])
        for pos, grids in read_ahead(batch.pixels.grids(batch.frame_ids[rows], fine)):
            for lo in range(0, len(pos), CHUNK):  # luma in the threads, not in the reader's
                yield pos[lo : lo + CHUNK], grids[lo : lo + CHUNK]

    def _gradient_maps(self, grids: np.ndarray) -> np.ndarray:
        """Maps of the frames of RGB grids [m, h, w, 3], each from that frame alone: the
        Sobel gradient magnitude of its luma (`luma`), glare cut out, averaged over 2 x 2
        cells (`_gradient_cells`, which also computes the luma), on a log scale. (Until format
        2 the Sobel filter ran over the stack of frames as the reader gave them, and so also
        smoothed each frame with the frames next to it: a frame's map, and a new frame's
        score, depended on the frames read with it.)"""
        cells = _gradient_cells(_rgb(grids), LUMA, np.float32(self.saturated), GLARE_RADIUS)
        return np.log1p(cells, out=cells)

    # --- fit and score ------------------------------------------------------------------------

    def fit(self, batch: FrameBatch) -> "AlignmentDetector":
        """As `Detector.fit`, with the fit frames' gains kept from the fit's own pass (each
        thumbnail is decoded once or twice, not three times)."""
        self._check_contamination()
        with one_blas_thread():  # the pieces run in threads: BLAS threads in them would spin
            self._fit(batch)
        self.decision_scores_ = self._scores(batch, *self._fit_gains)
        del self._fit_gains
        self._process_decision_scores()
        return self

    def _fit(self, batch: FrameBatch) -> None:
        """The usual view is the median map of the fit's day frames (all frames when under
        `min_frames` are day frames), from at most `max_view_frames` frames (a seeded sample:
        the maps of every frame of 750k would take 7 GB)."""
        self.view_ = None
        self._fit_gains = (np.empty(0, np.int64), np.empty(0))
        if batch.pixels is None or len(batch) < self.min_frames:
            return
        self.size_ = grid_size(batch.pixels.aspect(batch.frame_ids), self.width)
        n, cap = len(batch), self.max_view_frames
        rows = np.arange(n)
        if cap is not None and n > cap:
            rows = np.sort(np.random.default_rng(self.random_state).choice(n, cap, replace=False))
        positions, maps = self._maps(batch, rows)
        positions = rows[positions]
        if len(positions) < self.min_frames:
            return
        classes = daylight_classes(batch)
        day = classes[positions] == "day"
        usual = maps[day] if day.sum() >= self.min_frames else maps
        self.view_ = np.median(usual, axis=0)
        self.energy_ = float(np.median(usual.mean(axis=(1, 2))))
        del usual
        if len(rows) == n:  # every frame mapped already (len(maps) >= min_frames)
            pieces = np.array_split(maps, max(1, len(maps) // CHUNK))
            gains = np.concatenate(list(bounded_map(self._gains, pieces)))
        else:
            del maps
            positions, gains = self._scan(batch)
        self._fit_gains = (positions, gains)
        self.lines_up_ = {}  # daylight class -> share of its fit frames lined up in place
        for name in np.unique(classes[positions]):
            got = gains[classes[positions] == name]
            got = got[np.isfinite(got)]
            self.lines_up_[str(name)] = (
                float((got <= self.in_place_within).mean()) if len(got) else 0.0
            )

    def _scan(self, batch: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the frames with an image, their gains): every frame decoded once, a
        chunk at a time in threads, holding no maps; here or by the batch's `spread`."""
        if batch.spread is None:
            return self._scan_here(batch)
        found = batch.spread.run(self._found_gains, batch)
        positions = np.flatnonzero(found[:, 0] > 0)
        return positions, found[positions, 1]

    def _found_gains(self, batch: FrameBatch) -> np.ndarray:
        """[frames, 2]: 1 where the frame has an image (else 0), and its gain (else NaN)."""
        out = np.zeros((len(batch), 2))
        out[:, 1] = np.nan
        positions, gains = self._scan_here(batch)
        out[positions, 0], out[positions, 1] = 1.0, gains
        return out

    def _scan_here(self, batch: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        with one_blas_thread():
            got = list(
                bounded_map(
                    lambda chunk: (chunk[0], self._gains(self._gradient_maps(chunk[1]))),
                    self._chunks(batch, np.arange(len(batch))),
                )
            )
        if not got:
            return np.empty(0, np.int64), np.empty(0)
        return np.concatenate([p for p, _ in got]), np.concatenate([g for _, g in got])

    def decision_function(self, batch: FrameBatch) -> np.ndarray:
        if batch.pixels is None or self.view_ is None:
            return np.full(len(batch), np.nan)
        return self._scores(batch, *self._scan(batch))

    def _scores(self, batch: FrameBatch, positions: np.ndarray, gains: np.ndarray) -> np.ndarray:
        out = np.full(len(batch), np.nan)
        if self.view_ is None:
            return out
        classes = daylight_classes(batch)[positions]
        reliable = np.isin(
            classes, [c for c, share in self.lines_up_.items() if share >= self.min_lines_up]
        )
        out[positions] = np.where(reliable | np.isnan(gains), gains, 0.0)
        return out

    def _gains(self, maps: np.ndarray) -> np.ndarray:
        """Best correlation with the reference over shifts and zooms, less the correlation in
        place; NaN for maps with too little structure."""
        best, in_place = None, None
        for zoom in self.zooms:
            corr = self._correlations(_zoomed(maps, zoom) if zoom != 1 else maps)
            peak = corr.reshape(len(maps), -1).max(axis=1)
            best = peak if best is None else np.maximum(best, peak)
            if zoom == 1:
                in_place = corr[:, self.max_shift, self.max_shift]
        if in_place is None:  # no zoom of 1 among `zooms`: compare with the map as it is
            in_place = self._correlations(maps)[:, self.max_shift, self.max_shift]
        out = np.maximum(best - in_place, 0.0)
        out[maps.mean(axis=(1, 2)) < 0.25 * self.energy_] = np.nan
        return out

    def _correlations(self, maps: np.ndarray) -> np.ndarray:
        """[n, 2s + 1, 2s + 1]: the normalised correlation of the reference's centre (the map
        less `margin` cells on each side) with each map's window at each shift, in float64
        (`_correlate`)."""
        s, m = self.max_shift, self.margin
        height, width = self.view_.shape
        centre = self.view_[m : height - m, m : width - m]
        centre = centre - centre.mean()
        centre /= max(float(np.sqrt((centre**2).sum())), 1e-9)
        windows = maps[:, m - s : height - m + s, m - s : width - m + s]
        return _correlate(np.ascontiguousarray(windows), centre.astype(np.float64), 2 * s + 1)


GLARE_RADIUS = 2  # pixels around a saturated one that carry no edges (a 5 x 5 square)
CHUNK = 64  # frames mapped and correlated at a time (a thread's piece; its float64 passes
#            stay within the core's cache)


def luma(grids: np.ndarray) -> np.ndarray:
    """float32 luma [m, h, w] of RGB grids [m, h, w, 3], as `_gradient_cells` computes it:
    (R x 0.299 + G x 0.587) + B x 0.114 in float32, every product and sum rounded on its own
    (IEEE, no fused multiply-add), so the same on every CPU. (Until 2026-12-05 it was BLAS's
    `grids @ LUMA`: the same floats on this project's AVX2 machine, perhaps not where BLAS
    fuses the multiply-adds, and a separate pass that cost twice the gradient itself.)"""
    rgb = np.asarray(grids, np.float32)
    out = rgb[..., 0] * LUMA[0]
    out += rgb[..., 1] * LUMA[1]
    out += rgb[..., 2] * LUMA[2]
    return out


def _rgb(grids: np.ndarray) -> np.ndarray:
    """Grids as the kernel takes them: uint8 as they are (the reader's), anything else as
    float32."""
    grids = np.asarray(grids)
    return grids if grids.dtype == np.uint8 else grids.astype(np.float32)


# Compiled per-frame loops (numba): each frame's map and correlations in one pass over its
# pixels instead of a dozen whole-array NumPy passes
# (docs/experiments/2026-12-03-pixel-detectors-compiled.md). `nogil`: the pieces are mapped and
# correlated in threads.


@njit(cache=True, nogil=True)
def _gradient_cells(
    grids: np.ndarray, weights: np.ndarray, saturated: np.float32, radius: int
) -> np.ndarray:
    """[m, h // 2, w // 2] float32: each frame's Sobel gradient magnitude of its luma (of RGB
    grids [m, h, w, 3], uint8 or float32, never across frames; the luma as `luma` computes it
    with `weights`, `LUMA`), zero within `radius` pixels of a pixel whose luma is at or above
    `saturated` (glare), averaged over 2 x 2 cells (an odd last row or column left out).

    The very floats of `ndimage.correlate1d` in "reflect" mode (the edge pixel repeated), in
    float64 and rounded to float32, along the frame's two axes ([-1, 0, 1] then [1, 2, 1]:
    `ndimage.sobel`'s passes), times 4 (the scale the maps had when the filter also ran across
    frames, [1, 2, 1] over a still camera's identical frames, so that views and thresholds keep
    their scale); then `np.hypot` (the float64 square root of the float64 sum of squares,
    rounded), glare cut by a (2 radius + 1)-square dilation, and each cell's mean summed as
    `mean(axis=(2, 4))` of the cells' reshape sums them ((a00 + a01) + (a10 + a11), times 0.25).
    No fast-math: every operation is IEEE's, so the maps are the same on every CPU
    (tests/pipeline/test_pixel_kernels.py checks them against that NumPy/SciPy computation)."""
    n, height, width = grids.shape[0], grids.shape[1], grids.shape[2]
    h, w = height // 2, width // 2
    out = np.empty((n, h, w), np.float32)
    pad = np.empty((height + 2, width + 2), np.float32)
    along_x = np.empty((height + 2, width), np.float64)  # [-1, 0, 1] along x, rows padded
    along_y = np.empty((height, width + 2), np.float64)  # [-1, 0, 1] along y, columns padded
    gradient = np.empty((height, width), np.float32)
    glare = np.zeros((height + 2 * radius, width), np.bool_)
    near = np.zeros((height, width + 2 * radius), np.bool_)
    four, quarter = np.float32(4.0), np.float32(0.25)
    red, green, blue = weights[0], weights[1], weights[2]
    for i in range(n):
        frame = grids[i]
        for y in range(height):
            for x in range(width):
                value = np.float32(frame[y, x, 0]) * red
                value += np.float32(frame[y, x, 1]) * green
                value += np.float32(frame[y, x, 2]) * blue
                pad[y + 1, x + 1] = value
            pad[y + 1, 0] = pad[y + 1, 1]
            pad[y + 1, width + 1] = pad[y + 1, width]
        pad[0] = pad[1]
        pad[height + 1] = pad[height]
        for y in range(height + 2):
            for x in range(width):
                along_x[y, x] = pad[y, x + 2] - pad[y, x]  # exact in float32
        for y in range(height):
            for x in range(width + 2):
                along_y[y, x] = pad[y + 2, x] - pad[y, x]
        for y in range(height):
            for x in range(width):
                sx = along_x[y + 1, x] * 2.0
                sx += along_x[y, x] + along_x[y + 2, x]
                sy = along_y[y, x + 1] * 2.0
                sy += along_y[y, x] + along_y[y, x + 2]
                gx = np.float64(np.float32(sx) * four)
                gy = np.float64(np.float32(sy) * four)
                total = gx * gx
                total += gy * gy
                gradient[y, x] = np.float32(np.sqrt(total))
        saturated_any = False
        for y in range(height):
            for x in range(width):
                hit = pad[y + 1, x + 1] >= saturated
                glare[y + radius, x] = hit
                saturated_any |= hit
        if saturated_any:
            for y in range(height):
                for x in range(width):
                    hit = False
                    for k in range(2 * radius + 1):
                        hit |= glare[y + k, x]
                    near[y, x + radius] = hit
            for y in range(height):
                for x in range(width):
                    hit = False
                    for k in range(2 * radius + 1):
                        hit |= near[y, x + k]
                    if hit:
                        gradient[y, x] = 0
        for cy in range(h):
            for cx in range(w):
                top = gradient[2 * cy, 2 * cx] + gradient[2 * cy, 2 * cx + 1]
                bottom = gradient[2 * cy + 1, 2 * cx] + gradient[2 * cy + 1, 2 * cx + 1]
                out[i, cy, cx] = (top + bottom) * quarter
    return out


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _correlate(windows: np.ndarray, centre: np.ndarray, shifts: int) -> np.ndarray:
    """[n, shifts, shifts]: the correlation of `centre` [ch, cw] (zero mean, unit norm) with
    each window [n, ch + shifts - 1, cw + shifts - 1] at each shift, over the spread of the
    window's cells there: sqrt(sum of squares - sum^2 / cells), at least 1e-6. In float64;
    the dot products are summed in whatever order vectorises (`reassoc`), so they agree with
    an exact sum to ~1e-14, not bit for bit; the windows' sums come from integral images.

    Each dot product is one run over `ch` whole rows of the window (the centre padded with
    zeros to the window's width, the window with a spare row the last shift's run ends in):
    one long loop vectorises where `ch` short ones of `cw` did not (twice as fast)."""
    n = windows.shape[0]
    ch, cw = centre.shape
    wh, ww = windows.shape[1], windows.shape[2]
    n_cells = ch * cw
    out = np.empty((n, shifts, shifts))
    ones = np.zeros((wh + 1, ww + 1))
    squares = np.zeros((wh + 1, ww + 1))
    span = ch * ww  # a run: the centre's rows at the window's width
    padded = np.zeros(span)
    for a in range(ch):
        for b in range(cw):
            padded[a * ww + b] = centre[a, b]
    flat = np.zeros((wh + 1) * ww)  # this window's rows, then a spare row of zeros
    for i in range(n):
        window = windows[i]
        for y in range(wh):
            row_sum, row_squares = 0.0, 0.0
            for x in range(ww):
                value = np.float64(window[y, x])
                flat[y * ww + x] = value
                row_sum += value
                row_squares += value * value
                ones[y + 1, x + 1] = ones[y, x + 1] + row_sum
                squares[y + 1, x + 1] = squares[y, x + 1] + row_squares
        for dy in range(shifts):
            for dx in range(shifts):
                run = flat[dy * ww + dx : dy * ww + dx + span]
                dot = 0.0
                for k in range(span):
                    dot += padded[k] * run[k]
                bottom, right = dy + ch, dx + cw
                total = ones[bottom, right] - ones[dy, right] - ones[bottom, dx] + ones[dy, dx]
                square = (
                    squares[bottom, right]
                    - squares[dy, right]
                    - squares[bottom, dx]
                    + squares[dy, dx]
                )
                out[i, dy, dx] = dot / np.sqrt(max(square - total * total / n_cells, 1e-12))
    return out


def _zoomed(maps: np.ndarray, zoom: float) -> np.ndarray:
    """Maps magnified by `zoom` about their centre (bilinear, edges held): `_zoom` with each
    axis's taps (`_taps`)."""
    _, height, width = maps.shape
    return _zoom(np.ascontiguousarray(maps, np.float32), *_taps(height, zoom), *_taps(width, zoom))


def _taps(size: int, zoom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, low's weight, high's weight) of each point of a line of `size` magnified by
    `zoom` about its centre: the two source points it lies between (the edge held), weighted by
    nearness, float32 as the maps."""
    centre = (size - 1) / 2
    source = np.clip((np.arange(size) - centre) / zoom + centre, 0, size - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    frac = source - low
    return low, high, (1 - frac).astype(np.float32), frac.astype(np.float32)


@njit(cache=True, nogil=True)
def _zoom(maps, row_low, row_high, row_wl, row_wh, col_low, col_high, col_wl, col_wh):
    """[n, h, w] float32: each map interpolated along its rows, then its columns, each point
    from its two taps (low x its weight + high x its weight, each operation rounded; where the
    edge is held both taps are the same point with weights 1 and 0). Until 2026-12-05 the two
    passes were interpolation matrices multiplied by BLAS (a product of [h, h] and [w, w]
    matrices mostly of zeros): the same sums to within an ulp, at four times the cost."""
    n, height, width = maps.shape
    out = np.empty((n, height, width), np.float32)
    along = np.empty((height, width), np.float32)
    for i in range(n):
        for y in range(height):
            low, high, wl, wh = row_low[y], row_high[y], row_wl[y], row_wh[y]
            for x in range(width):
                along[y, x] = maps[i, low, x] * wl + maps[i, high, x] * wh
        for y in range(height):
            for x in range(width):
                out[i, y, x] = along[y, col_low[x]] * col_wl[x] + along[y, col_high[x]] * col_wh[x]
    return out
