"""The fixed camera's background: what a frame shows that the learned background cannot explain.

A fixed camera sees the same scene under changing light. In log-RGB (where a change of light
becomes an offset) with each frame's median removed, the normal frames of one daylight class
(day, twilight, night) lie close to a low-dimensional subspace: a few principal components
describe the sun moving, clouds, shadows and seasons. This is the eigen-background of Oliver,
Rosario & Pentland (2000). A person, a fox, a bird, water drops or a knocked camera are not in
that subspace, so they remain in the residual; each pixel's residual is turned into a robust
z-score against that pixel's typical residual (the sky and the trees move every frame, the shed
does not). A frame's score is how far its highest z-scores (the top `top_share` of pixels)
stand out from the rest of the same frame (`BackgroundModel.score`): a small object counts in
full instead of being averaged over the frame, and a change all over the frame (rain, fog, a
dropped exposure: the quality checks' job) does not count. The fit is robust: frames that own
a principal component are left out of a second fit, so a foggy hour or a knocked camera does
not become part of the background.

Pixels come from the thumbnails the store already holds (`ThumbnailReader`, decoded in JPEG
draft mode and in threads, chunk by chunk, so memory stays flat with the number of frames);
`ArrayReader` serves images held in memory. Used by the `background` detector
(`pipeline.detectors.BackgroundDetector`).
"""

from __future__ import annotations

import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA

import store
from store import frames as store_frames

LOG_OFFSET = 8.0  # log(rgb + 8): dark pixels' sensor noise does not become huge log steps
_SUBSAMPLE = 5  # every 5th pixel estimates a frame's medians and 90th percentile


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
        with ThreadPoolExecutor(self.workers) as pool:  # PIL decodes without the GIL
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


def _positions(part: np.ndarray, found: np.ndarray) -> np.ndarray:
    lookup = {int(f): p for p, f in enumerate(part)}
    return np.array([lookup[int(f)] for f in found], dtype=np.int64)


def _decode(jpeg: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A thumbnail as a uint8 RGB grid of `size` (width, height); None when it is unreadable
    (a stored thumbnail is written by ingest, so this only happens to a damaged store)."""
    try:
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

    def fit(self, flat: np.ndarray, shape: tuple[int, int],
            max_outlyingness: float = 8.0) -> "BackgroundModel":
        """Fit, then refit without the frames that own a component (a coefficient more than
        `max_outlyingness` robust deviations from that component's median, the outlyingness
        of ROBPCA), so that a rare object or a short event does not become part of the
        background: a fit that absorbed it would explain it well."""
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
        return self

    def residual(self, flat: np.ndarray) -> np.ndarray:
        """Per-pixel absolute residual (summed over R, G, B): [n, height * width]."""
        centred = flat - self.mean_
        centred -= (centred @ self.components_.T) @ self.components_  # minus the rebuilt frame
        np.abs(centred, out=centred)
        width, height = self.shape_
        rgb = centred.reshape(len(flat), height * width, 3)
        out = rgb[:, :, 0] + rgb[:, :, 1]  # three strided adds: faster than .sum(axis=2)
        out += rgb[:, :, 2]
        return out

    def zscores(self, flat: np.ndarray) -> np.ndarray:
        z = self.residual(flat)
        z -= self.median_
        z /= self.mad_
        return z

    def score(self, flat: np.ndarray, top: int) -> np.ndarray:
        """How far a frame's `top` highest pixel z-scores stand out from its own typical
        residual: (mean of the top - median) / (90th percentile - median + 1). A local object
        scores high; a change all over the frame (rain streaks everywhere, fog, a dropped
        exposure) raises the median and the 90th percentile with the top, and does not."""
        z = self.zscores(flat)
        n_pixels = z.shape[1]
        top = min(top, n_pixels)
        median, p90 = np.quantile(z[:, ::_SUBSAMPLE], [0.5, 0.9], axis=1, method="lower")
        z.partition(n_pixels - top, axis=1)  # in place: z is ours
        highest = z[:, n_pixels - top:].mean(axis=1)
        return (highest - median) / (p90 - median + 1)
