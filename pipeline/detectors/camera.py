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
"""

from __future__ import annotations

import numpy as np
import scipy.signal
from scipy import ndimage

from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import FrameBatch, daylight_classes
from pipeline.pixels import grid_size

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

    # --- gradient maps ------------------------------------------------------------------------

    def _maps(self, batch: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the frames with an image, their log gradient maps [m, h, w])."""
        fine = (2 * self.size_[0], 2 * self.size_[1])
        positions, maps = [], []
        for pos, grids in batch.pixels.grids(batch.frame_ids, fine):
            positions.append(pos)
            maps.append(self._gradient_maps(np.asarray(grids, np.float32)))
        if not positions:
            return np.empty(0, np.int64), np.empty((0, self.size_[1], self.size_[0]), np.float32)
        return np.concatenate(positions), np.concatenate(maps)

    def _gradient_maps(self, grids: np.ndarray) -> np.ndarray:
        luma = grids @ LUMA
        gx = ndimage.sobel(luma, axis=2)
        gy = ndimage.sobel(luma, axis=1)
        gradient = np.hypot(gx, gy)
        glare = ndimage.binary_dilation(luma >= self.saturated, structure=np.ones((1, 5, 5)))
        gradient[glare] = 0
        n, height, width = gradient.shape
        cells = (
            gradient[:, : height // 2 * 2, : width // 2 * 2]
            .reshape(n, height // 2, 2, width // 2, 2)
            .mean(axis=(2, 4))
        )
        return np.log1p(cells).astype(np.float32)

    # --- fit and score ------------------------------------------------------------------------

    def _fit(self, batch: FrameBatch) -> None:
        self.view_ = None
        if batch.pixels is None or len(batch) < self.min_frames:
            return
        self.size_ = grid_size(batch.pixels.aspect(batch.frame_ids), self.width)
        positions, maps = self._maps(batch)
        if len(positions) < self.min_frames:
            return
        classes = daylight_classes(batch)[positions]
        day = classes == "day"
        usual = maps[day] if day.sum() >= self.min_frames else maps
        self.view_ = np.median(usual, axis=0)
        self.energy_ = float(np.median(usual.mean(axis=(1, 2))))
        gains = self._gains(maps)
        self.lines_up_ = {}  # daylight class -> share of its fit frames lined up in place
        for name in np.unique(classes):
            got = gains[classes == name]
            got = got[np.isfinite(got)]
            self.lines_up_[str(name)] = (
                float((got <= self.in_place_within).mean()) if len(got) else 0.0
            )

    def decision_function(self, batch: FrameBatch) -> np.ndarray:
        out = np.full(len(batch), np.nan)
        if batch.pixels is None or self.view_ is None:
            return out
        positions, maps = self._maps(batch)
        gains = self._gains(maps)
        classes = daylight_classes(batch)[positions]
        reliable = np.isin(
            classes, [c for c, share in self.lines_up_.items() if share >= self.min_lines_up]
        )
        out[positions] = np.where(reliable | np.isnan(gains), gains, 0.0)
        return out

    def _gains(self, maps: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Best correlation with the reference over shifts and zooms, less the correlation in
        place; NaN for maps with too little structure."""
        out = np.full(len(maps), np.nan)
        for lo in range(0, len(maps), chunk):
            part = maps[lo : lo + chunk]
            best, in_place = None, None
            for zoom in self.zooms:
                corr = self._correlations(_zoomed(part, zoom) if zoom != 1 else part)
                peak = corr.reshape(len(part), -1).max(axis=1)
                best = peak if best is None else np.maximum(best, peak)
                if zoom == 1:
                    in_place = corr[:, self.max_shift, self.max_shift]
            if in_place is None:  # no zoom of 1 among `zooms`: compare with the map as it is
                in_place = self._correlations(part)[:, self.max_shift, self.max_shift]
            out[lo : lo + chunk] = np.maximum(best - in_place, 0.0)
        out[maps.mean(axis=(1, 2)) < 0.25 * self.energy_] = np.nan
        return out

    def _correlations(self, maps: np.ndarray) -> np.ndarray:
        """[n, 2s + 1, 2s + 1]: the normalised correlation of the reference's centre (the map
        less `margin` cells on each side) with each map's window at each shift."""
        s, m = self.max_shift, self.margin
        height, width = self.view_.shape
        centre = self.view_[m : height - m, m : width - m]
        centre = centre - centre.mean()
        centre /= max(float(np.sqrt((centre**2).sum())), 1e-9)
        windows = maps[:, m - s : height - m + s, m - s : width - m + s].astype(np.float64)
        dot = scipy.signal.fftconvolve(windows, centre[None, ::-1, ::-1], mode="valid", axes=(1, 2))
        n_cells = centre.size
        shape = centre.shape
        total = _box_sums(windows, shape)
        squares = _box_sums(windows**2, shape)
        spread = np.sqrt(np.maximum(squares - total**2 / n_cells, 1e-12))
        return dot / spread


def _box_sums(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sums of every `shape` window of each map (the 'valid' positions), by integral images."""
    c = np.pad(x, ((0, 0), (1, 0), (1, 0))).cumsum(axis=1).cumsum(axis=2)
    h, w = shape
    return c[:, h:, w:] - c[:, :-h, w:] - c[:, h:, :-w] + c[:, :-h, :-w]


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
