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
decoded once, mapped and correlated a piece at a time in threads (NumPy and the FFTs release
the GIL), and the fit's own gains are its scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft

from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import FrameBatch, daylight_classes
from pipeline.pixels import grid_size
from pipeline.threads import bounded_map, one_blas_thread

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
        frames."""
        fine = (2 * self.size_[0], 2 * self.size_[1])
        for pos, grids in batch.pixels.grids(batch.frame_ids[rows], fine):
            for lo in range(0, len(pos), CHUNK):  # luma in the threads, not in the reader's
                yield pos[lo : lo + CHUNK], grids[lo : lo + CHUNK]

    def _gradient_maps(self, grids: np.ndarray) -> np.ndarray:
        """Maps of the frames of RGB grids [m, h, w, 3], each from that frame alone: the
        Sobel gradient magnitude of its luma (`_luma`, `_gradient`), glare cut out, averaged
        over 2 x 2 cells, on a log scale. (Until format 2 the Sobel filter ran over the stack of
        frames as the reader gave them, and so also smoothed each frame with the frames next to
        it: a frame's map, and a new frame's score, depended on the frames read with it.)"""
        luma = _luma(grids)
        gradient = _gradient(luma)
        glare = luma >= self.saturated
        if glare.any():
            gradient[_dilate(glare, 2)] = 0
        n, height, width = gradient.shape
        even = gradient[:, : height // 2 * 2, : width // 2 * 2]
        # the mean of each 2 x 2 cell, summed in the order `mean(axis=(2, 4))` of the cells'
        # reshape sums them (the same float32 maps, bit for bit, at a fifth of its time)
        cells = even[:, 0::2, 0::2] + even[:, 0::2, 1::2]
        cells += even[:, 1::2, 0::2] + even[:, 1::2, 1::2]
        cells *= np.float32(0.25)
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
        chunk at a time in threads, holding no maps."""
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
        less `margin` cells on each side) with each map's window at each shift. The dot
        products by FFT at the window's own size: the centre, zero-padded to it, never wraps
        round at these shifts, so the circular correlation is the plain one."""
        s, m = self.max_shift, self.margin
        height, width = self.view_.shape
        centre = self.view_[m : height - m, m : width - m]
        centre = centre - centre.mean()
        centre /= max(float(np.sqrt((centre**2).sum())), 1e-9)
        windows = maps[:, m - s : height - m + s, m - s : width - m + s].astype(np.float64)
        shape = windows.shape[1:]
        padded = np.zeros(shape)
        padded[: centre.shape[0], : centre.shape[1]] = centre
        spectrum = scipy.fft.rfft2(windows)
        spectrum *= np.conj(scipy.fft.rfft2(padded))
        dot = scipy.fft.irfft2(spectrum, s=shape)[:, : 2 * s + 1, : 2 * s + 1]
        n_cells = centre.size
        total = _box_sums(windows, centre.shape)
        squares = _box_sums(windows**2, centre.shape)
        spread = np.sqrt(np.maximum(squares - total**2 / n_cells, 1e-12))
        return dot / spread


CHUNK = 64  # frames mapped and correlated at a time (a thread's piece; its float64 passes
#            stay within the core's cache)


def _luma(grids: np.ndarray) -> np.ndarray:
    """float32 luma [m, h, w] of RGB grids [m, h, w, 3] (`grids @ LUMA`). Three 256-entry
    tables of each channel's weighted values gave the same float32s on this project's AVX2
    machine at a third of the time, but the product is BLAS's, which may fuse the multiply-adds
    on another CPU (the recorded scores' AVX-512), so the tables are not used."""
    return np.asarray(grids, np.float32) @ LUMA


def _gradient(luma: np.ndarray) -> np.ndarray:
    """float32 Sobel gradient magnitude of each frame of a stack [m, h, w] (never across
    frames; `ndimage.sobel`'s two passes along the frame's own axes, times 4: the scale the
    maps had when the filter also ran across frames, [1, 2, 1] over a still camera's identical
    frames, so views and thresholds keep their scale).

    The very numbers `ndimage.correlate1d` and `np.hypot` give, computed with whole-array
    arithmetic (a fifth of their time on a 64-frame piece): `correlate1d` in "reflect" mode
    repeats the edge pixel, works in float64 and rounds to float32 (the [-1, 0, 1] pass is one
    float32 difference, exact in float64; the [1, 2, 1] pass, 2 x + (left + right) in float64,
    rounded); `hypot` of float32 is glibc's hypotf, the float64 square root of the float64 sum
    of squares, rounded."""
    padded = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="edge")
    along_x = (padded[:, :, 2:] - padded[:, :, :-2]).astype(np.float64)  # rows edge-padded
    along_y = (padded[:, 2:, :] - padded[:, :-2, :]).astype(np.float64)  # columns edge-padded
    smoothed = along_x[:, 1:-1] * 2
    smoothed += along_x[:, :-2] + along_x[:, 2:]
    del along_x
    gx = smoothed.astype(np.float32)
    smoothed = along_y[:, :, 1:-1] * 2
    smoothed += along_y[:, :, :-2] + along_y[:, :, 2:]
    del along_y
    gy = smoothed.astype(np.float32)
    gx *= np.float32(4)  # the scale the maps had when the filter also ran across frames
    gy *= np.float32(4)  # ([1, 2, 1] over a still camera's identical frames)
    total = np.square(gx, dtype=np.float64)
    total += np.square(gy, dtype=np.float64)
    return np.sqrt(total, out=total).astype(np.float32)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Each frame's mask grown by a (2 radius + 1)-square: `binary_dilation` frame by frame,
    as shifted ORs (the same mask, 30 times faster on a 64-frame piece of 72 x 128)."""
    rows = mask.copy()
    for step in range(1, radius + 1):
        rows[:, step:] |= mask[:, :-step]
        rows[:, :-step] |= mask[:, step:]
    out = rows.copy()
    for step in range(1, radius + 1):
        out[:, :, step:] |= rows[:, :, :-step]
        out[:, :, :-step] |= rows[:, :, step:]
    return out


def _box_sums(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sums of every `shape` window of each map (the 'valid' positions): running sums along
    the rows, then along the columns of what is left; each window's sum the running sum at
    its end less the one before its start (the first window's, the running sum itself)."""
    h, w = shape
    c = x.cumsum(axis=2)
    rows = c[:, :, w - 1 :].copy()
    rows[:, :, 1:] -= c[:, :, :-w]
    c = rows.cumsum(axis=1)
    out = c[:, h - 1 :].copy()
    out[:, 1:] -= c[:, :-h]
    return out


def _zoomed(maps: np.ndarray, zoom: float) -> np.ndarray:
    """Maps magnified by `zoom` about their centre (bilinear, edges held), all at once."""
    _, height, width = maps.shape
    rows, cols = _interpolation(height, zoom), _interpolation(width, zoom)
    return rows @ maps @ cols.T


def _interpolation(size: int, zoom: float) -> np.ndarray:
    """[size, size]: linear interpolation of a line magnified by `zoom` about its centre."""
    centre = (size - 1) / 2
    source = np.clip((np.arange(size) - centre) / zoom + centre, 0, size - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size - 1)
    frac = source - low
    matrix = np.zeros((size, size), np.float32)
    matrix[np.arange(size), low] += 1 - frac
    matrix[np.arange(size), high] += frac
    return matrix
