"""The same time of day on other days: reference frames whose residuals explain a frame's shadows.

The sun stands at the same place at the same time of day on the days around, and the shadows
with it. `reference_slots` picks the reference frames (one per daylight class per slot of a
day); `SameTimeReferences` holds their background residuals for the days being scored and
rebuilds a frame's residual from its nearest references taken at that time of day on other
days, leaving what no other day had there.
"""

from __future__ import annotations

import threading
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd

from pipeline.detectors.background.eigen import project_by_class
from pipeline.detectors.background.grids import split_chunks
from pipeline.pixels import GridReader
from pipeline.threads import bounded_map

WEIGHT_STRIDE = 8  # every 8th residual value fits the same-time references' weights


def reference_slots(
    classes: np.ndarray,
    days: np.ndarray,
    minutes: np.ndarray,
    order: np.ndarray,
    slot_minutes: float,
) -> np.ndarray:
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

    def __init__(
        self,
        ids: np.ndarray,
        classes: np.ndarray,
        days: np.ndarray,
        minutes: np.ndarray,
        models: dict,
        pixels: GridReader,
        size: tuple[int, int],
        n_neighbors: int,
        window_minutes: float,
        max_days: int,
    ):
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
        want = np.flatnonzero(
            (self.days >= lo) & (self.days <= hi) & ~np.isin(self.days, list(held))
        )
        for day in np.unique(self.days[want]):
            held[int(day)] = {}

        def project(chunk):
            pos, grids = chunk
            rows = want[pos]
            return [
                (name, rows[sel], coef, res, gains)
                for name, sel, coef, res, gains in project_by_class(
                    grids, self.classes[rows], self.models.__getitem__
                )
            ]

        chunks = split_chunks(self.pixels.grids(self.ids[want], self.size))
        for projected in bounded_map(project, chunks):
            for name, rows, coef, res, gains in projected:
                days = self.days[rows]
                for day in np.unique(days):
                    on = slice(None) if days[0] == days[-1] else days == day  # mostly one day
                    held[int(day)].setdefault(name, []).append(
                        (
                            self.minutes[rows[on]].astype(np.float32),
                            coef[on],
                            res[on],
                            self.ids[rows[on]],
                            gains[on],
                        )
                    )
        # the pool: small columns joined, residuals left where they are (joining them would
        # copy a few hundred MB for every block of days)
        pool = {}
        for name in {n for by_class in held.values() for n in by_class}:
            got = [
                (day, piece)
                for day, by_class in sorted(held.items())
                for piece in by_class.get(name, [])
            ]
            pool[name] = _Pool(
                np.concatenate([p[0] for _, p in got]),
                np.concatenate([np.full(len(p[0]), day, np.int64) for day, p in got]),
                np.concatenate([p[1] for _, p in got]),
                [p[2] for _, p in got],
                np.concatenate([np.full(len(p[0]), i) for i, (_, p) in enumerate(got)]),
                np.concatenate([np.arange(len(p[0])) for _, p in got]),
                pd.Index(np.concatenate([p[3] for _, p in got])),
                np.concatenate([p[4] for _, p in got]),
            )
        self.held, self.pool = held, pool

    def take(
        self, frame_ids: np.ndarray, pools: dict[str, _Pool] | None = None
    ) -> Iterator[tuple[np.ndarray, str, np.ndarray, np.ndarray, np.ndarray]]:
        """The frames among `frame_ids` that are held references, already projected (so they
        need not be decoded again): runs of (positions into frame_ids, class, coefficients,
        residuals, alignment gains), the residuals read-only views of the held ones. From
        `pools` (a `pool` taken earlier) when given, else the pool held now."""
        for name, pool in (self.pool if pools is None else pools).items():
            at = pool.ids.get_indexer(frame_ids)
            pos = np.flatnonzero(at >= 0)
            entries = at[pos]
            piece, row = pool.piece[entries], pool.row[entries]
            # runs of consecutive rows of one held piece: views, no copies
            breaks = np.flatnonzero((np.diff(piece) != 0) | (np.diff(row) != 1)) + 1
            for run in np.split(np.arange(len(entries)), breaks):
                if len(run):
                    held = pool.residuals[piece[run[0]]][row[run[0]] : row[run[-1]] + 1]
                    yield (pos[run], name, pool.coef[entries[run]], held, pool.gains[entries[run]])

    def explain(
        self,
        name: str,
        days: np.ndarray,
        minutes: np.ndarray,
        coef: np.ndarray,
        residual: np.ndarray,
        pools: dict[str, _Pool] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(which rows had references, their residuals left unexplained) for frames of one
        class: their days, minutes of day, background coefficients and log-RGB residuals. From
        `pools` (a `pool` taken earlier) when given, else the pool held now."""
        pools = self.pool if pools is None else pools
        if name not in pools or not len(days):
            return np.zeros(len(days), bool), residual[:0]
        pool = pools[name]
        gap = np.abs(minutes[:, None] - pool.minutes[None, :])
        gap = np.minimum(gap, 1440 - gap)
        day_gap = np.abs(days[:, None] - pool.days[None, :])
        usable = (gap <= self.window_minutes) & (day_gap > 0) & (day_gap <= self.max_days)
        d2 = _distances(coef, pool.coef, usable)
        k = min(self.n_neighbors, d2.shape[1])
        nearest = _nearest(d2, k)
        valid = np.isfinite(np.take_along_axis(d2, nearest, axis=1))
        found = valid.any(axis=1)
        nearest, valid, own = nearest[found], valid[found], residual[found]
        buffer = getattr(self._local, "buffer", None)  # 16 frames' references: 3 MB, kept
        if buffer is None or buffer.shape != (16, k, residual.shape[1]):  # by each thread
            buffer = self._local.buffer = np.empty((16, k, residual.shape[1]), np.float32)
        for lo in range(0, len(own), 16):
            rows = slice(lo, lo + 16)
            chosen = nearest[rows]
            refs = buffer[: len(chosen)]  # [m, k, pixels * 3]
            for i, j in np.ndindex(*chosen.shape):  # too few candidates: zero rows
                e = chosen[i, j]
                refs[i, j] = pool.residuals[pool.piece[e]][pool.row[e]] if valid[lo + i, j] else 0
            # the weights from every 8th value (3,456 of them for 6 unknowns: the same
            # weights to a few digits, at a third of the time); the residual from all
            some = np.ascontiguousarray(refs[:, :, ::WEIGHT_STRIDE])
            gram = some @ some.transpose(0, 2, 1)
            rhs = some @ np.ascontiguousarray(own[rows, ::WEIGHT_STRIDE])[:, :, None]
            ridge = 1e-6 * (np.trace(gram, axis1=1, axis2=2) + 1.0)
            gram += ridge[:, None, None] * np.eye(k, dtype=gram.dtype)
            weights = np.linalg.solve(gram, rhs)  # [m, k, 1]
            own[rows] -= (weights.transpose(0, 2, 1) @ refs)[:, 0, :]
        return found, own


def _distances(coef: np.ndarray, pool: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """[m, n] squared distances between frames' and references' background coefficients,
    infinite where not `usable`. Each is summed over the coefficients in
    their order, pair by pair (the same bits whatever else the pool holds: a product with the
    pool's matrix sums in an order that depends on the pool's width), and only for the usable
    pairs (the references at the frame's time of day on the days around: a few in a hundred)."""
    d2 = np.full(usable.shape, np.inf, np.float32)
    frame, ref = np.nonzero(usable)
    step = coef[frame] - pool[ref]  # [pairs, coefficients]
    step *= step
    total = np.zeros(len(frame), np.float32)
    for j in range(step.shape[1]):  # in the coefficients' order (not a reduction's pairwise)
        total += step[:, j]
    d2[frame, ref] = total
    return d2


def _nearest(d2: np.ndarray, k: int) -> np.ndarray:
    """[m, k]: each row's `k` smallest distances' positions, the same references whatever else
    the pool holds (a pool one block ahead holds more days, a cluster's task fewer): among
    equal distances (identical frames: a black night) the first in pool order, the usable in
    pool order, then the unusable (infinite distance, combined as zeros) last. The pool's
    order is its days' order, so the references of a frame's days come in the same order."""
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(d2, nearest, axis=1).max(axis=1, keepdims=True)
    tied = np.flatnonzero((d2 <= kth).sum(axis=1) > k)  # more than k at or under the k-th
    if len(tied):
        rows, kth = d2[tied], kth[tied]
        tie = rows == kth
        need = k - (rows < kth).sum(axis=1, keepdims=True)
        chosen = (rows < kth) | (tie & (np.cumsum(tie, axis=1) <= need))
        nearest[tied] = np.nonzero(chosen)[1].reshape(len(tied), k)  # row by row, pool order
    nearest.sort(axis=1)
    unusable = ~np.isfinite(np.take_along_axis(d2, nearest, axis=1))
    if unusable.any():  # usable first (in pool order), then the unusable
        order = np.argsort(unusable, axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
    return nearest
