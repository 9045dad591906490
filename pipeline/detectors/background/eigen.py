"""The eigen-background of one daylight class, each pixel's noise by time of day, and the stand-out.

`BackgroundModel` is the principal components of a class's log-RGB frames (Oliver, Rosario &
Pentland 2000) and each pixel's typical residual against them; `TimeOfDayNoise` that pixel's
residual at each time of day; `stand_out` scores how far a frame's highest pixel z-scores stand
out from the rest of the same frame. `project_by_class` projects decoded frames on their
class's background.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import scipy.ndimage
import scipy.stats
from sklearn.decomposition import PCA

from pipeline.detectors.background.grids import SUBSAMPLE, by_class, edge_map, log_rgb
from pipeline.versioned import FittedFormatError, Versioned

MAX_REFITS = 3  # fits of a class's background after the first, each without its owners
RARE_SHARE = 0.01  # after the first refit, a component far out for at most this share is owned
NOISE_SPREAD = 0.9  # a pixel's range at its time of day: 90th percentile of its deviations
#: OpenBLAS sums a row's products in an order that depends on how many rows come with it (on an
#: AMD EPYC, rows 1..m of an m-row product differ in the last bits from the same rows in a batch
#: of 1,100 for most m; on an Intel Xeon for 1-3 rows), but not on a row's place in a product of
#: exactly 4 or 8 rows (measured on the EPYC; `tests/pipeline/test_detectors.py` checks it on
#: the machine it runs on). So `rows_times` multiplies in blocks of exactly this many rows, the
#: last padded with zeros.
BLAS_ROWS = 8


def rows_times(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`rows @ matrix`, each row's result the same bits whatever other rows come with it (a
    frame scored alone, or among a day's frames on a cluster's worker, as in one big batch),
    for one BLAS thread or for the same number of threads (OpenBLAS with more threads sums in
    another order again; the detectors score with one, `threads.one_blas_thread`)."""
    n = len(rows)
    out = np.empty((n, matrix.shape[1]), np.result_type(rows, matrix))
    whole = n - n % BLAS_ROWS
    for lo in range(0, whole, BLAS_ROWS):
        np.matmul(rows[lo : lo + BLAS_ROWS], matrix, out=out[lo : lo + BLAS_ROWS])
    if whole < n:
        padded = np.zeros((BLAS_ROWS, rows.shape[1]), rows.dtype)
        padded[: n - whole] = rows[whole:]
        out[whole:] = (padded @ matrix)[: n - whole]
    return out


def project_by_class(
    grids: np.ndarray, classes: np.ndarray, model_of: Callable
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Decoded frames projected on their class's background: per class (name, positions,
    coefficients, log-RGB residuals, alignment gains)."""
    flat = log_rgb(grids)
    for name, rows in by_class(classes):
        whole = len(rows) == len(classes)
        model = model_of(name)
        coef, residual = model.project(flat if whole else flat[rows])
        yield name, rows, coef, residual, model.alignment_gain(grids if whole else grids[rows])


class BackgroundModel(Versioned):
    """One daylight class's eigen-background: the principal components of its log-RGB frames
    (as many as explain `variance` of it, at most `n_components`) and each pixel's residual
    median and MAD."""

    def __init__(self, n_components: int, variance: float, random_state: int):
        self.n_components = n_components
        self.variance = variance
        self.random_state = random_state

    def fit(
        self,
        flat: np.ndarray,
        shape: tuple[int, int],
        max_outlyingness: float = 8.0,
        minutes: np.ndarray | None = None,
        max_refits: int = MAX_REFITS,
        noise_spread: float = NOISE_SPREAD,
    ) -> "BackgroundModel":
        """Fit, then refit without the frames that own a component (a coefficient more than
        `max_outlyingness` robust deviations from that component's median, the outlyingness
        of ROBPCA), so that a rare object or a short event does not become part of the
        background: a fit that absorbed it would explain it well. The later refits (up to
        `max_refits` in all) leave out only the few frames (at most `RARE_SHARE` of those
        fitted, at least two) that are that far out on a component of the last fit: with the
        frames far out on the first fit's components gone, a rarer object can take a
        component of the next (two frames with a figure among 150, found measuring a
        64-pixel grid). A component far out for more frames is a usual kind of day, not an
        object, and stays. A frame once left out stays out. With the frames' `minutes` of
        day, each pixel's residual is also measured per time of day (`TimeOfDayNoise`, with
        `noise_spread` as its `spread`)."""
        self.shape_ = shape
        keep = np.ones(len(flat), bool)
        for refit in range(max_refits + 1):
            k = int(min(self.n_components, keep.sum() - 1, flat.shape[1]))
            pca = PCA(
                n_components=max(1, k),
                svd_solver="randomized",
                copy=False,
                random_state=self.random_state,
            ).fit(flat[keep])  # a copy already
            explained = np.cumsum(pca.explained_variance_ratio_)
            k = int(min(len(explained), np.searchsorted(explained, self.variance) + 1))
            self.mean_ = pca.mean_.astype(np.float32)
            self.components_ = pca.components_[:k].astype(np.float32)
            if refit == max_refits:
                break
            coded = (flat - self.mean_) @ self.components_.T
            centre = np.median(coded, axis=0)
            spread = 1.4826 * np.median(np.abs(coded - centre), axis=0) + 1e-6
            far = np.abs(coded - centre) / spread > max_outlyingness  # [frames, components]
            if refit:  # later fits: only the few frames that took a component of their own
                few = max(2, int(np.ceil(RARE_SHARE * keep.sum())))
                far &= (far & keep[:, None]).sum(axis=0) <= few
            left = keep & ~far.any(axis=1)
            if left.sum() < 3 or (left == keep).all():
                break  # too few frames left to fit, or none owns a component: this fit
            keep = left
        res = self.residual(flat[keep])
        self.median_ = np.median(res, axis=0)
        self.mad_ = np.median(np.abs(res - self.median_), axis=0) + 1e-3
        self.n_fit_ = int(keep.sum())
        self.time_noise_ = None
        if minutes is not None:
            res -= self.median_
            res /= self.mad_
            self.time_noise_ = TimeOfDayNoise(spread=noise_spread).fit(
                res, np.asarray(minutes)[keep]
            )
        return self

    def project(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coefficients [n, k], log-RGB residual [n, height * width * 3]): where each frame
        sits on the background's components, and what is left after rebuilding it from them.
        The residual is computed in place of `flat` (log-RGB is made fresh for each use)."""
        centred = flat
        centred -= self.mean_
        coef = rows_times(centred, self.components_.T)
        centred -= rows_times(coef, self.components_)  # minus the rebuilt frame
        return coef, centred

    def alignment_gain(self, grids: np.ndarray) -> np.ndarray:
        """`Alignment.gain` of frames against this class's scene (`alignment_`, set by the
        detector's fit with its alignment part; NaN without one)."""
        if self.alignment_ is None:
            return np.full(len(grids), np.nan)
        return self.alignment_.gain(edge_map(grids))

    def residual(self, flat: np.ndarray) -> np.ndarray:
        """Per-pixel absolute residual (summed over R, G, B): [n, height * width]."""
        return _abs_rgb_sum(self.project(flat)[1], self.shape_)

    def pixel_z(self, residual_rgb: np.ndarray, minutes: np.ndarray | None = None) -> np.ndarray:
        """Robust per-pixel z-scores of a log-RGB residual: [n, height * width]. Given the
        frames' minutes of day, measured against the pixel's residual at that time of day
        where the fit had enough frames then (`TimeOfDayNoise`)."""
        z = _abs_rgb_sum(residual_rgb, self.shape_)
        z -= self.median_
        z /= self.mad_
        if minutes is not None and self.time_noise_ is not None:
            self.time_noise_.standardise(z, minutes)
        return z

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0: fitted before the alignment part (no alignment_) cannot be scored now;
        # fitted before pixels were measured per time of day, it has no time_noise_
        if "alignment_" not in state:
            raise FittedFormatError(
                "its background detector was fitted before the alignment "
                "part, which this version scores every frame with"
            )
        return {"time_noise_": None, **state}


def check_spread(spread: float, name: str) -> None:
    """A spread is a quantile strictly between 0 and 1 (0.5: the MAD)."""
    if not 0 < spread < 1:
        raise ValueError(
            f"{name} must be a quantile between 0 and 1 (0.5 is the MAD), got {spread}"
        )


class TimeOfDayNoise(Versioned):
    """Each pixel's typical scene residual at each time of day.

    The scene part's components cannot follow a shadow edge that sweeps across the lawn, and
    where the edge falls depends on the time of day: at 9:00 in November the shed's shadow
    crosses the lawn where at noon there is none. Measured against the pixel's residual over
    the whole day, that edge stands out like an object on every sunny morning. Measured against
    the pixel's residual at that time of day (the fit frames within `window` minutes of it, on
    any day), it is the usual noise of that place at that hour, and an object is not. Per
    `slot` minutes of the day with at least `min_frames` fit frames in the window, `fit` keeps
    each pixel's median and spread of the z-scores; `standardise` re-scores a frame against its
    slot's (frames in other slots, or of unknown time, keep their z-scores).

    The spread is the `spread` quantile of the pixel's absolute deviations from its median,
    scaled to a standard deviation for normal noise (0.5 is the MAD). The default 0.9 is the
    deviation the pixel exceeds in one fit frame in ten at that hour: a pixel that is calm on
    most days and far off on some (the sky when clouds break, the lawn where a low winter sun
    draws a shadow edge on sunny days only, snow) gets the wide range it really has, which the
    MAD of its calm majority hides; a pixel that varies evenly gets the same scale as with the
    MAD. A spread is floored at `floor` times the slot's median spread, so a pixel that barely
    varies at that hour does not turn its faintest change into a large z-score.
    """

    def __init__(
        self,
        slot: float = 20.0,
        window: float = 40.0,
        min_frames: int = 12,
        floor: float = 0.5,
        max_frames: int = 120,
        spread: float = NOISE_SPREAD,
        random_state: int = 0,
    ):
        self.slot, self.window, self.min_frames = slot, window, min_frames
        self.floor, self.max_frames, self.random_state = floor, max_frames, random_state
        self.spread = spread

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0 fitted before the spread was a setting measured the MAD
        return {"spread": 0.5, **state}

    def fit(self, z: np.ndarray, minutes: np.ndarray) -> "TimeOfDayNoise":
        """From fit frames' z-scores [n, pixels] and their minutes of day (NaN: unknown). At
        most `max_frames` frames (a seeded sample) per slot, which bounds the fit's time
        whatever the camera's rate (the renders measured have under 120 per slot, so the cap
        never applied there)."""
        check_spread(self.spread, "spread")
        rng = np.random.default_rng(self.random_state)
        to_sigma = 1 / scipy.stats.norm.ppf((1 + self.spread) / 2)  # 1.4826 for the MAD
        n_slots = int(np.ceil(1440 / self.slot))
        self.row_ = np.full(n_slots, -1, np.int64)
        known = np.flatnonzero(np.isfinite(minutes))
        medians, scales = [], []
        for slot in range(n_slots):
            gap = np.abs(minutes[known] - (slot + 0.5) * self.slot)
            near = known[np.minimum(gap, 1440 - gap) <= self.window]
            if len(near) < self.min_frames:
                continue
            if len(near) > self.max_frames:
                near = np.sort(rng.choice(near, self.max_frames, replace=False))
            some = np.ascontiguousarray(z[near].T)  # [pixels, frames]: partitions along rows
            middle = some.shape[1] // 2
            median = np.partition(some, middle, axis=1)[:, middle].copy()
            some -= median[:, None]
            np.abs(some, out=some)
            at = min(some.shape[1] - 1, int(self.spread * some.shape[1]))
            some.partition(at, axis=1)
            scale = to_sigma * some[:, at]
            self.row_[slot] = len(medians)
            medians.append(median)
            scales.append(np.maximum(scale, self.floor * np.median(scale) + 1e-3))
        width = z.shape[1]  # float16: half the pickle, and z-scores need no more digits
        self.median_ = np.array(medians, np.float16).reshape(-1, width)
        self.scale_ = np.array(scales, np.float16).reshape(-1, width)
        return self

    def standardise(self, z: np.ndarray, minutes: np.ndarray) -> None:
        """Re-score z [n, pixels] in place against each frame's time of day."""
        minutes = np.asarray(minutes, dtype=float)
        slots = np.floor(np.nan_to_num(minutes, nan=-1.0) / self.slot).astype(np.int64)
        ok = (slots >= 0) & (slots < len(self.row_))
        rows = np.where(ok, self.row_[np.clip(slots, 0, len(self.row_) - 1)], -1)
        for row in np.unique(rows[rows >= 0]):
            median = self.median_[row].astype(np.float32)  # float16 in arithmetic is slow
            inverse = 1 / self.scale_[row].astype(np.float32)
            at = np.flatnonzero(rows == row)
            if len(at) == len(z):  # the usual case: a piece of frames within one slot
                z -= median
                z *= inverse
                continue
            part = z[at]
            part -= median
            part *= inverse
            z[at] = part


def _abs_rgb_sum(residual_rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """|R| + |G| + |B| per pixel (three strided passes: faster than .sum(axis=2), and the
    residual is left as it was)."""
    width, height = shape
    rgb = residual_rgb.reshape(len(residual_rgb), height * width, 3)
    out = np.abs(rgb[:, :, 0])
    part = np.abs(rgb[:, :, 1])
    out += part
    np.abs(rgb[:, :, 2], out=part)
    out += part
    return out


def stand_out(
    z: np.ndarray, top: int, shape: tuple[int, int] | None = None, surround: int = 0
) -> np.ndarray:
    """How far each frame's `top` highest pixel z-scores stand out from its own typical
    residual: (mean of the top - median) / (90th percentile - median + 1). A local object scores
    high; a change all over the frame (rain streaks everywhere, fog, a dropped exposure) raises
    the median and the 90th percentile with the top, and does not. Given the grid's `shape`
    (width, height) and a `surround` of 3 pixels or more, each z-score is first measured
    against its surroundings (`less_surroundings`). Consumes `z`."""
    if shape is not None and surround >= 3:
        less_surroundings(z, shape, surround)
    n_pixels = z.shape[1]
    top = min(top, n_pixels)
    median, p90 = np.quantile(z[:, ::SUBSAMPLE], [0.5, 0.9], axis=1, method="lower")
    return (_top_mean(z, top) - median) / (p90 - median + 1)


def less_surroundings(z: np.ndarray, shape: tuple[int, int], size: int) -> None:
    """Each pixel's z-score less the mean z-score of the `size` x `size` pixels around it, in
    place. A drop on the lens, a fox or a person is smaller than the window and keeps most of
    its height (a bird right at the lens, nearly as large, keeps less); a whole region that is
    off (a frosted lawn, a shadowed wall, the sky of an unusual day) is its own surroundings
    and sinks to zero, so it no longer hides a small object in the same frame. A box mean (two running sums, without the GIL) instead of a median: the
    renders scored better with it than with a median filter of 7 or 11 pixels, at a fraction
    of the cost."""
    width, height = shape
    grids = z.reshape(len(z), height, width)
    grids -= scipy.ndimage.uniform_filter(grids, size=(1, size, size), mode="nearest")


def _top_mean(z: np.ndarray, top: int, group: int = 16) -> np.ndarray:
    """Mean of each row's `top` highest values. They lie in the `top` groups of `group`
    neighbours with the highest maxima, so only those groups are searched: the same result
    as partitioning the whole row, in a third of the time."""
    n, n_pixels = z.shape
    if n_pixels % group or top * group >= n_pixels:
        z.partition(n_pixels - top, axis=1)  # in place
        return z[:, n_pixels - top :].mean(axis=1)
    groups = z.reshape(n, -1, group)
    maxima = z[:, 0::group].copy()  # strided maxima: faster than .max(axis=2) over a short axis
    for offset in range(1, group):
        np.maximum(maxima, z[:, offset::group], out=maxima)
    best = np.argpartition(maxima, -top, axis=1)[:, -top:]
    candidates = np.take_along_axis(groups, best[:, :, None], axis=1).reshape(n, -1)
    candidates.partition(candidates.shape[1] - top, axis=1)
    return candidates[:, -top:].mean(axis=1)
