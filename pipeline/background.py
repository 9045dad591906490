"""The fixed camera's background: what a frame shows that the learned background cannot explain.

A fixed camera sees the same scene under changing light. In log-RGB (where a change of light
becomes an offset) with each frame's median removed, the normal frames of one daylight class
(day, twilight, night) lie close to a low-dimensional subspace: a few principal components
describe the sun moving, clouds, shadows and seasons. This is the eigen-background of Oliver,
Rosario & Pentland (2000). A person, a fox, a bird, water drops or a knocked camera are not in
that subspace, so they remain in the residual; each pixel's residual is turned into a robust
z-score against that pixel's typical residual (the sky and the trees move every frame, the shed
does not). A frame's score is how far its highest z-scores (the top `top_share` of pixels)
stand out from the rest of the same frame (`stand_out`): a small object counts in full instead
of being averaged over the frame, and a change all over the frame (rain, fog, a dropped
exposure: the quality checks' job) does not count. Each z-score is first measured against the
pixels around it (`less_surroundings`), so that a region that is off all over (a frosted lawn,
a shadowed wall) does not hide a small object elsewhere in the frame. The fit is robust:
frames that own a principal component are left out of a second fit, so a foggy hour or a
knocked camera does not become part of the background.

A few components cannot follow a shadow edge sweeping across the lawn, so on sunny days the
edge is what stands out most. Two things put it back in its place. Where the edge falls depends
on the time of day, so each pixel's residual is measured against that pixel's residual at the
frame's time of day (`TimeOfDayNoise`): in the band the edge crosses at 9:00, an edge at 9:00
is ordinary noise, and at noon it is not. A pixel's range at that hour is what it does on all
but one frame in ten, so a place that is calm on most days and far off on some (clouds
breaking, the edge of a low winter sun on its few sunny mornings) is not an object when it
swings again. And the sun stands at the same place at the same time
of day on the days around, and the shadows with it: `SameTimeReferences` rebuilds a frame's residual
from the residuals of its nearest reference frames taken at that time of day on other days
(one reference per class per slot of a day) and scores what is left the same way. A shadow or
a cloud bank that another day had is explained; a person, a bird or drops on the lens are not.
The detector sums the evidence of both scores (`pipeline.detectors.BackgroundDetector`).

A knocked camera shows every edge of the scene a little off, all over the frame, so it does
not stand out locally. `Alignment` asks instead whether the frame still lines up with the
scene: the phase correlation (Kuglin & Hines 1975) of the frame's edge map with the class's
median edge map peaks at no shift for a fixed camera, whatever the light, the weather or an
object in front, and elsewhere when the camera moved. That is the displacement test of camera
tampering detection (Ribnick et al. 2006); its score is how much better the frame lines up
shifted than in place.

Pixels come from the thumbnails the store already holds (`ThumbnailReader`, decoded at a
reduced DCT scale by libjpeg-turbo through simplejpeg, in threads, chunk by chunk, so memory
stays flat with the number of frames);
`ArrayReader` serves images held in memory. Frames are scored in time order, a few days at a
time, holding only the references of the days around them.
"""

from __future__ import annotations

import io
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Protocol, TypeVar

import numpy as np
import pandas as pd
import scipy.fft
import scipy.ndimage
import scipy.stats
import simplejpeg
from PIL import Image
from sklearn.decomposition import PCA

import store
from store import frames as store_frames

LOG_OFFSET = 8.0  # log(rgb + 8): dark pixels' sensor noise does not become huge log steps
_SUBSAMPLE = 5  # every 5th pixel estimates a frame's medians and 90th percentile
_WEIGHT_STRIDE = 8  # every 8th residual value fits the same-time references' weights
NOISE_SPREAD = 0.9  # a pixel's range at its time of day: 90th percentile of its deviations


class GridReader(Protocol):
    """Where the background detector gets pixels: small RGB grids of frames by frame_id."""

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        """Typical width / height of these frames' images (None when there are none)."""

    def grids(self, frame_ids: np.ndarray, size: tuple[int, int]
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of (positions into `frame_ids`, RGB grids [m, height, width, 3] in 0..255,
        uint8 or float). Frames without an image are left out."""


T = TypeVar("T")
R = TypeVar("R")


def bounded_map(func: Callable[[T], R], items: Iterable[T], workers: int | None = None
                ) -> Iterator[R]:
    """`func` over `items` in threads, in order, with at most `workers` items in flight (so a
    generator of big chunks is not read ahead into memory, as `Executor.map` would)."""
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def one_blas_thread():
    """Context in which BLAS runs single-threaded: the background fits and scores in its own
    threads, and BLAS threads nested in them (or competing with other jobs for the cores) spin
    while they wait: a class's fit took 5 CPU s with them and 2 without."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


class ThumbnailReader:
    """Thumbnails from the store, resized to a grid; `chunk` frames per short connection."""

    def __init__(self, db: Path, chunk: int = 1024, workers: int | None = None):
        self.db = Path(db)
        self.chunk = chunk
        self.workers = workers or min(4, os.cpu_count() or 1)

    def aspect(self, frame_ids: np.ndarray) -> float | None:
        with store.connect(self.db) as con:
            return store_frames.thumbnail_aspect(con, frame_ids)

    def grids(self, frame_ids, size):
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        with ThreadPoolExecutor(self.workers) as pool:  # decoding releases the GIL
            for start in range(0, len(frame_ids), self.chunk):
                part = frame_ids[start:start + self.chunk]
                with store.connect(self.db) as con:
                    thumbs = store_frames.thumbnails(con, part)
                if not len(thumbs):
                    continue
                decoded = list(pool.map(lambda b: _decode(b, size), thumbs["jpeg"]))
                ok = np.array([d is not None for d in decoded])
                if not ok.any():
                    continue
                where = _positions(part, thumbs["frame_id"].to_numpy(np.int64)[ok])
                yield start + where, np.stack([d for d in decoded if d is not None])


class ArrayReader:
    """Images held in memory (frame_id -> HxWx3 array); resized to the grid like thumbnails."""

    def __init__(self, images: dict[int, np.ndarray]):
        self.images = images

    def aspect(self, frame_ids):
        shapes = [self.images[int(i)].shape for i in frame_ids if int(i) in self.images]
        return float(np.median([w / h for h, w, *_ in shapes])) if shapes else None

    def grids(self, frame_ids, size):
        have = [p for p, i in enumerate(frame_ids) if int(i) in self.images]
        if have:
            grids = [_resize(Image.fromarray(np.asarray(self.images[int(frame_ids[p])], np.uint8)),
                             size) for p in have]
            yield np.array(have, dtype=np.int64), np.stack(grids)


def by_class(classes: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(class, positions) for each class among `classes`."""
    for name in np.unique(classes):
        yield name, np.flatnonzero(classes == name)


def project_by_class(grids: np.ndarray, classes: np.ndarray, model_of: Callable
                     ) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Decoded frames projected on their class's background: per class (name, positions,
    coefficients, log-RGB residuals, alignment gains)."""
    flat = log_rgb(grids)
    for name, rows in by_class(classes):
        whole = len(rows) == len(classes)
        model = model_of(name)
        coef, residual = model.project(flat if whole else flat[rows])
        yield name, rows, coef, residual, model.alignment_gain(grids if whole else grids[rows])


def split_chunks(chunks: Iterable[tuple[np.ndarray, np.ndarray]], size: int = 128
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, grids) chunks cut into pieces of at most `size` frames, so that threads
    share out the work of even one chunk."""
    for pos, grids in chunks:
        for lo in range(0, len(pos), size):
            yield pos[lo:lo + size], grids[lo:lo + size]


def _positions(part: np.ndarray, found: np.ndarray) -> np.ndarray:
    lookup = {int(f): p for p, f in enumerate(part)}
    return np.array([lookup[int(f)] for f in found], dtype=np.int64)


def _decode(jpeg: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A thumbnail as a uint8 RGB grid of `size` (width, height); None when it is unreadable
    (a stored thumbnail is written by ingest, so this only happens to a damaged store).

    libjpeg-turbo decodes at the smallest DCT scale that is at least `size` (simplejpeg: the
    same pixels as Pillow's draft mode, at half its CPU, and without the GIL, which Pillow
    holds while it opens a file); what simplejpeg refuses goes to Pillow."""
    try:
        grid = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_width=size[0],
                                      min_height=size[1])
    except ValueError:
        grid = None
    try:
        if grid is not None:
            return grid if grid.shape[1::-1] == size else _resize(Image.fromarray(grid), size)
        image = Image.open(io.BytesIO(jpeg))
        image.draft("RGB", size)
        return _resize(image, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB grid; no conversion or resize when the draft decode already gave it (both
    would only copy)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image)


def grid_size(aspect: float | None, width: int) -> tuple[int, int]:
    """(width, height) of the grid for images of this aspect ratio."""
    aspect = aspect if aspect and np.isfinite(aspect) and aspect > 0 else 16 / 9
    return width, int(min(4 * width, max(8, round(width / aspect))))


def log_rgb(grids: np.ndarray) -> np.ndarray:
    """Flattened log-RGB with each frame's per-channel median removed (light level cancels)."""
    grids = np.asarray(grids)
    n = len(grids)
    logs = np.asarray(grids, np.float32) + np.float32(LOG_OFFSET)
    np.log(logs, out=logs)
    rgb = logs.reshape(n, -1, 3)
    rgb -= _channel_medians(grids, rgb)[:, None, :]
    return logs.reshape(n, -1)


def _channel_medians(grids: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """[n, 3] median log value of every 5th pixel (a median needs no more), as `np.median`
    gives it. uint8 grids select their middle values on the bytes (log is increasing, so they
    are the same pixels; a byte select is twice as fast), then take the log of just those."""
    pick = grids if grids.dtype == np.uint8 else logs
    some = pick.reshape(len(pick), -1, 3)[:, ::_SUBSAMPLE].transpose(0, 2, 1)
    some = np.ascontiguousarray(some)  # the selection runs along a contiguous last axis
    if pick is logs:
        return np.median(some, axis=2, overwrite_input=True)
    half = some.shape[2] // 2
    kth = [half - 1, half] if some.shape[2] % 2 == 0 else [half]
    middle = np.partition(some, kth, axis=2)[:, :, kth].astype(np.float32)
    middle += np.float32(LOG_OFFSET)
    return np.log(middle, out=middle).mean(axis=2)  # np.median's mean of the middle two


class BackgroundModel:
    """One daylight class's eigen-background: the principal components of its log-RGB frames
    (as many as explain `variance` of it, at most `n_components`) and each pixel's residual
    median and MAD."""

    def __init__(self, n_components: int, variance: float, random_state: int):
        self.n_components = n_components
        self.variance = variance
        self.random_state = random_state

    def fit(self, flat: np.ndarray, shape: tuple[int, int], max_outlyingness: float = 8.0,
            minutes: np.ndarray | None = None, noise_spread: float = NOISE_SPREAD
            ) -> "BackgroundModel":
        """Fit, then refit without the frames that own a component (a coefficient more than
        `max_outlyingness` robust deviations from that component's median, the outlyingness
        of ROBPCA), so that a rare object or a short event does not become part of the
        background: a fit that absorbed it would explain it well. With the frames' `minutes`
        of day, each pixel's residual is also measured per time of day (`TimeOfDayNoise`, with
        `noise_spread` as its `spread`)."""
        self.shape_ = shape
        keep = np.ones(len(flat), bool)
        for final in (False, True):
            k = int(min(self.n_components, keep.sum() - 1, flat.shape[1]))
            pca = PCA(n_components=max(1, k), svd_solver="randomized", copy=False,
                      random_state=self.random_state).fit(flat[keep])  # a copy already
            explained = np.cumsum(pca.explained_variance_ratio_)
            k = int(min(len(explained), np.searchsorted(explained, self.variance) + 1))
            self.mean_ = pca.mean_.astype(np.float32)
            self.components_ = pca.components_[:k].astype(np.float32)
            if final:
                break
            coded = (flat - self.mean_) @ self.components_.T
            centre = np.median(coded, axis=0)
            spread = 1.4826 * np.median(np.abs(coded - centre), axis=0) + 1e-6
            keep = (np.abs(coded - centre) / spread).max(axis=1) <= max_outlyingness
            if keep.sum() < 3 or keep.all():
                break
        res = self.residual(flat[keep])
        self.median_ = np.median(res, axis=0)
        self.mad_ = np.median(np.abs(res - self.median_), axis=0) + 1e-3
        self.n_fit_ = int(keep.sum())
        self.time_noise_ = None
        if minutes is not None:
            res -= self.median_
            res /= self.mad_
            self.time_noise_ = TimeOfDayNoise(spread=noise_spread).fit(
                res, np.asarray(minutes)[keep])
        return self

    def project(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coefficients [n, k], log-RGB residual [n, height * width * 3]): where each frame
        sits on the background's components, and what is left after rebuilding it from them.
        The residual is computed in place of `flat` (log-RGB is made fresh for each use)."""
        centred = flat
        centred -= self.mean_
        coef = centred @ self.components_.T
        centred -= coef @ self.components_  # minus the rebuilt frame
        return coef, centred

    def alignment_gain(self, grids: np.ndarray) -> np.ndarray:
        """`Alignment.gain` of frames against this class's scene (NaN for a model fitted
        before alignment was measured)."""
        alignment = getattr(self, "alignment_", None)
        if alignment is None:
            return np.full(len(grids), np.nan)
        return alignment.gain(edge_map(grids))

    def residual(self, flat: np.ndarray) -> np.ndarray:
        """Per-pixel absolute residual (summed over R, G, B): [n, height * width]."""
        return _abs_rgb_sum(self.project(flat)[1], self.shape_)

    def pixel_z(self, residual_rgb: np.ndarray, minutes: np.ndarray | None = None
                ) -> np.ndarray:
        """Robust per-pixel z-scores of a log-RGB residual: [n, height * width]. Given the
        frames' minutes of day, measured against the pixel's residual at that time of day
        where the fit had enough frames then (`TimeOfDayNoise`)."""
        z = _abs_rgb_sum(residual_rgb, self.shape_)
        z -= self.median_
        z /= self.mad_
        noise = getattr(self, "time_noise_", None)  # None: fitted before it was measured
        if minutes is not None and noise is not None:
            noise.standardise(z, minutes)
        return z


def check_spread(spread: float, name: str) -> None:
    """A spread is a quantile strictly between 0 and 1 (0.5: the MAD)."""
    if not 0 < spread < 1:
        raise ValueError(f"{name} must be a quantile between 0 and 1 (0.5 is the MAD), "
                         f"got {spread}")


class TimeOfDayNoise:
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

    def __init__(self, slot: float = 20.0, window: float = 40.0, min_frames: int = 12,
                 floor: float = 0.5, max_frames: int = 120, spread: float = NOISE_SPREAD,
                 random_state: int = 0):
        self.slot, self.window, self.min_frames = slot, window, min_frames
        self.floor, self.max_frames, self.random_state = floor, max_frames, random_state
        self.spread = spread

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


def stand_out(z: np.ndarray, top: int, shape: tuple[int, int] | None = None,
              surround: int = 0) -> np.ndarray:
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
    median, p90 = np.quantile(z[:, ::_SUBSAMPLE], [0.5, 0.9], axis=1, method="lower")
    return (_top_mean(z, top) - median) / (p90 - median + 1)


def less_surroundings(z: np.ndarray, shape: tuple[int, int], size: int) -> None:
    """Each pixel's z-score less the mean z-score of the `size` x `size` pixels around it, in
    place. A drop on the lens, a fox or a person is smaller than the window and keeps most of
    its height (a bird right at the lens, nearly as large, keeps less); a whole region that is off (a frosted lawn, a shadowed wall, the sky of an unusual
    day) is its own surroundings and sinks to zero, so it no longer hides a small object in
    the same frame. A box mean (two running sums, without the GIL) instead of a median: the
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
        return z[:, n_pixels - top:].mean(axis=1)
    groups = z.reshape(n, -1, group)
    maxima = z[:, 0::group].copy()  # strided maxima: faster than .max(axis=2) over a short axis
    for offset in range(1, group):
        np.maximum(maxima, z[:, offset::group], out=maxima)
    best = np.argpartition(maxima, -top, axis=1)[:, -top:]
    candidates = np.take_along_axis(groups, best[:, :, None], axis=1).reshape(n, -1)
    candidates.partition(candidates.shape[1] - top, axis=1)
    return candidates[:, -top:].mean(axis=1)


# --- does the frame still line up with the scene? ------------------------------------------

_GREY_LOG = np.log(np.arange(766, dtype=np.float32) / 3 + LOG_OFFSET)  # R + G + B -> log grey


def edge_map(grids: np.ndarray) -> np.ndarray:
    """[n, height - 2, width - 2] edge strength |d/dx| + |d/dy| of each frame's log grey
    (central differences): where the scene's structure is, whatever the light level."""
    grids = np.asarray(grids)
    if grids.dtype == np.uint8:
        total = grids[..., 0].astype(np.uint16)
        total += grids[..., 1]
        total += grids[..., 2]
        grey = _GREY_LOG[total]
    else:
        grey = np.log(np.clip(grids, 0, 255).astype(np.float32).mean(axis=3) + LOG_OFFSET)
    edges = np.abs(grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2])
    edges += np.abs(grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1])
    return edges


def _fft_crop(edges: np.ndarray) -> np.ndarray:
    """The centre of edge maps cut to multiples of 8 pixels (70 x 126 -> 64 x 120): sizes the
    FFT factors well, at half the time."""
    height, width = edges.shape[1:]
    top, left = (height % 8) // 2, (width % 8) // 2
    return edges[:, top:top + height - height % 8, left:left + width - width % 8]


class Alignment:
    """Whether frames line up with one daylight class's scene, by phase correlation of their
    edge maps with the class's median edge map.

    `gain` is 0 for a frame whose correlation peaks at no shift (the camera where it was), and
    otherwise how far the peak stands above the correlation at no shift, in standard deviations
    of the correlation surface: a knocked camera scores high, a noisy night frame whose peak
    wanders by chance scores low. A frame with under a quarter of the class's typical edge
    strength (black, a covered lens) has no structure to line up: NaN.
    """

    def __init__(self, edges: np.ndarray):
        edges = _fft_crop(edges)
        height, width = edges.shape[1:]
        self.window_ = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
        scene = np.median(edges, axis=0)
        self.spectrum_ = np.conj(scipy.fft.rfft2((scene - scene.mean()) * self.window_))
        self.energy_ = float(np.median(edges.mean(axis=(1, 2))))

    def gain(self, edges: np.ndarray) -> np.ndarray:
        edges = _fft_crop(edges)
        n = len(edges)
        height, width = self.window_.shape
        energy = edges.mean(axis=(1, 2))
        centred = edges - energy[:, None, None]
        centred *= self.window_
        cross = scipy.fft.rfft2(centred)
        cross *= self.spectrum_
        cross /= np.abs(cross) + 1e-9
        surface = scipy.fft.irfft2(cross, s=(height, width)).reshape(n, -1)
        peak = surface.max(axis=1)
        at_zero = surface[:, 0]
        spread = surface.std(axis=1) + 1e-9
        out = np.where(peak > at_zero, (peak - at_zero) / spread, 0.0)
        out[energy < 0.25 * self.energy_] = np.nan
        return out


# --- the same time of day on other days ---------------------------------------------------------

def reference_slots(classes: np.ndarray, days: np.ndarray, minutes: np.ndarray,
                    order: np.ndarray, slot_minutes: float) -> np.ndarray:
    """Positions of the reference frames: the first frame (in `order`, by time) of each daylight
    class in each `slot_minutes` slot of each day. However often the camera shoots, a day holds
    at most 1440 / slot_minutes references per class."""
    known = order[days[order] >= 0]
    slots = np.floor(minutes[known] / slot_minutes).astype(np.int64)
    keys = pd.MultiIndex.from_arrays([classes[known], days[known], slots])
    return np.sort(known[~keys.duplicated()])


class _Pool(NamedTuple):
    """One daylight class's held references: per reference its minute of day, day, background
    coefficients, where its residual is (`residuals[piece][row]`), the frame ids and their
    alignment gains."""

    minutes: np.ndarray
    days: np.ndarray
    coef: np.ndarray
    residuals: list[np.ndarray]
    piece: np.ndarray
    row: np.ndarray
    ids: pd.Index
    gains: np.ndarray


class SameTimeReferences:
    """Reference frames' background residuals for the days being scored, by daylight class.

    `load(lo, hi)` keeps the references of days lo..hi (decoding those not held yet, dropping
    older ones), so memory holds a few weeks of references however long the footage is. `explain`
    rebuilds each frame's residual from its nearest references taken at the same time of day on
    other days (least squares on their residuals) and returns what is left: a shadow that stands
    where it stood at that time on a sunny day, or a cloud bank like another day's, is explained;
    a person, a bird or drops on the lens are not, because no other day has them there.
    """

    def __init__(self, ids: np.ndarray, classes: np.ndarray, days: np.ndarray,
                 minutes: np.ndarray, models: dict, pixels: GridReader, size: tuple[int, int],
                 n_neighbors: int, window_minutes: float, max_days: int):
        self.ids, self.classes, self.days, self.minutes = ids, classes, days, minutes
        self.models, self.pixels, self.size = models, pixels, size
        self.n_neighbors, self.window_minutes, self.max_days = n_neighbors, window_minutes, max_days
        # day -> class -> pieces of (minutes, coefficients, residuals, ids, alignment gains)
        self.held: dict[int, dict[str, list[tuple]]] = {}
        self.pool: dict[str, _Pool] = {}
        self._local = threading.local()

    def load(self, lo: int, hi: int, keep_from: int | None = None) -> None:
        """Hold the references of days lo..hi; drop those of days before `keep_from` (default
        lo). Another thread may score with the pool meanwhile: the pool is replaced whole."""
        keep_from = lo if keep_from is None else keep_from
        held = {day: by_class for day, by_class in self.held.items() if keep_from <= day}
        want = np.flatnonzero((self.days >= lo) & (self.days <= hi)
                              & ~np.isin(self.days, list(held)))
        for day in np.unique(self.days[want]):
            held[int(day)] = {}

        def project(chunk):
            pos, grids = chunk
            rows = want[pos]
            return [(name, rows[sel], coef, res, gains) for name, sel, coef, res, gains
                    in project_by_class(grids, self.classes[rows], self.models.__getitem__)]

        chunks = split_chunks(self.pixels.grids(self.ids[want], self.size))
        for projected in bounded_map(project, chunks):
            for name, rows, coef, res, gains in projected:
                days = self.days[rows]
                for day in np.unique(days):
                    on = slice(None) if days[0] == days[-1] else days == day  # mostly one day
                    held[int(day)].setdefault(name, []).append(
                        (self.minutes[rows[on]].astype(np.float32), coef[on], res[on],
                         self.ids[rows[on]], gains[on]))
        # the pool: small columns joined, residuals left where they are (joining them would
        # copy a few hundred MB for every block of days)
        pool = {}
        for name in {n for by_class in held.values() for n in by_class}:
            got = [(day, piece) for day, by_class in sorted(held.items())
                   for piece in by_class.get(name, [])]
            pool[name] = _Pool(
                np.concatenate([p[0] for _, p in got]),
                np.concatenate([np.full(len(p[0]), day, np.int64) for day, p in got]),
                np.concatenate([p[1] for _, p in got]),
                [p[2] for _, p in got],
                np.concatenate([np.full(len(p[0]), i) for i, (_, p) in enumerate(got)]),
                np.concatenate([np.arange(len(p[0])) for _, p in got]),
                pd.Index(np.concatenate([p[3] for _, p in got])),
                np.concatenate([p[4] for _, p in got]))
        self.held, self.pool = held, pool

    def take(self, frame_ids: np.ndarray
             ) -> Iterator[tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]]:
        """The frames among `frame_ids` that are held references, already projected (so they
        need not be decoded again): runs of (positions into frame_ids, class, coefficients,
        residuals, alignment gains), the residuals read-only views of the held ones."""
        for name, pool in self.pool.items():
            at = pool.ids.get_indexer(frame_ids)
            pos = np.flatnonzero(at >= 0)
            entries = at[pos]
            piece, row = pool.piece[entries], pool.row[entries]
            # runs of consecutive rows of one held piece: views, no copies
            breaks = np.flatnonzero((np.diff(piece) != 0) | (np.diff(row) != 1)) + 1
            for run in np.split(np.arange(len(entries)), breaks):
                if len(run):
                    held = pool.residuals[piece[run[0]]][row[run[0]]:row[run[-1]] + 1]
                    yield (pos[run], name, pool.coef[entries[run]], held,
                           pool.gains[entries[run]])

    def explain(self, name: str, days: np.ndarray, minutes: np.ndarray, coef: np.ndarray,
                residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which rows had references, their residuals left unexplained) for frames of one
        class: their days, minutes of day, background coefficients and log-RGB residuals."""
        if name not in self.pool or not len(days):
            return np.zeros(len(days), bool), residual[:0]
        pool = self.pool[name]
        gap = np.abs(minutes[:, None] - pool.minutes[None, :])
        gap = np.minimum(gap, 1440 - gap)
        day_gap = np.abs(days[:, None] - pool.days[None, :])
        usable = (gap <= self.window_minutes) & (day_gap > 0) & (day_gap <= self.max_days)
        d2 = (coef ** 2).sum(axis=1)[:, None] - 2 * coef @ pool.coef.T
        d2 += (pool.coef ** 2).sum(axis=1)[None, :]
        d2[~usable] = np.inf
        k = min(self.n_neighbors, d2.shape[1])
        # in pool order, so that the same references are combined in the same order whatever
        # else the pool holds (a pool one block ahead holds more days)
        nearest = np.sort(np.argpartition(d2, k - 1, axis=1)[:, :k], axis=1)
        valid = np.isfinite(np.take_along_axis(d2, nearest, axis=1))
        found = valid.any(axis=1)
        nearest, valid, own = nearest[found], valid[found], residual[found]
        buffer = getattr(self._local, "buffer", None)  # 16 frames' references: 11 MB, kept
        if buffer is None or buffer.shape != (16, k, residual.shape[1]):  # by each thread
            buffer = self._local.buffer = np.empty((16, k, residual.shape[1]), np.float32)
        for lo in range(0, len(own), 16):
            rows = slice(lo, lo + 16)
            chosen = nearest[rows]
            refs = buffer[:len(chosen)]                       # [m, k, pixels * 3]
            for i, j in np.ndindex(*chosen.shape):            # too few candidates: zero rows
                e = chosen[i, j]
                refs[i, j] = pool.residuals[pool.piece[e]][pool.row[e]] if valid[lo + i, j] else 0
            # the weights from every 8th value (3,456 of them for 6 unknowns: the same
            # weights to a few digits, at a third of the time); the residual from all
            some = np.ascontiguousarray(refs[:, :, ::_WEIGHT_STRIDE])
            gram = some @ some.transpose(0, 2, 1)
            rhs = some @ np.ascontiguousarray(own[rows, ::_WEIGHT_STRIDE])[:, :, None]
            ridge = 1e-6 * (np.trace(gram, axis1=1, axis2=2) + 1.0)
            gram += ridge[:, None, None] * np.eye(k, dtype=gram.dtype)
            weights = np.linalg.solve(gram, rhs)              # [m, k, 1]
            own[rows] -= (weights.transpose(0, 2, 1) @ refs)[:, 0, :]
        return found, own
