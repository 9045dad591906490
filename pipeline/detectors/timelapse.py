"""The time-lapse family: `temporal` and `same_time`, distances in time on the run's PCA space.

`temporal` scores how far a frame is from the frames just before and after it in time, and
`same_time` how far it is from the nearest frames at the same time of day on other days; each
is divided by the typical value for that hour of day (so dusk, when every frame changes fast,
is not flagged while a sudden change is). They rank frames by any difference, weather and light
included, so the consensus counts only their top tenth (`evidence_from`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import FrameBatch, day_and_minute, day_blocks, hour_of_day


class _TimelapseDetector(Detector):
    """Distances in the PCA space, divided by the fit's median for that hour of day when
    `hour_normalised` (same_time: other days differ more at dusk, when light changes fast)."""

    family = "timelapse"
    cause = "rarity"
    plain_cause = "unusual"  # it knows a frame differs from its time, not why
    needs = frozenset({"embeddings", "timestamps"})
    evidence_from = 0.9
    uses_batch_frames = True  # the batch's new frames are part of the context (`_context`)
    hour_normalised: ClassVar[bool] = True

    def _fit(self, batch):
        self.fit_ids_ = batch.frame_ids
        self.fit_z_ = batch.z
        self.fit_order_ = batch.order_time
        self.fit_local_ = batch.local_time
        self._prepare(batch)
        raw = self._raw(batch)
        hours = hour_of_day(batch.local_time)
        overall = np.nanmedian(raw) if np.isfinite(raw).any() else 1.0
        scale = np.full(24, overall)
        for h in range(24):
            sel = raw[hours == h]
            sel = sel[np.isfinite(sel)]
            if len(sel) >= 5:
                scale[h] = np.median(sel)
        self.hour_scale_ = np.maximum(scale, 1e-9 + 1e-6 * overall)

    def _prepare(self, batch: FrameBatch) -> None:
        """Learn what `_raw` needs before the hour-of-day scale is computed."""

    def decision_function(self, batch):
        raw = self._raw(batch)
        if not self.hour_normalised:
            return raw
        hours = hour_of_day(batch.local_time)
        scale = np.where(hours >= 0, self.hour_scale_[np.clip(hours, 0, 23)], np.nan)
        return raw / scale

    def _context(self, batch: FrameBatch):
        """The fit frames plus the batch's frames not in the fit: ids, z, order, local time."""
        new = ~np.isin(batch.frame_ids, self.fit_ids_)
        ids = np.concatenate([self.fit_ids_, batch.frame_ids[new]])
        z = np.concatenate([self.fit_z_, batch.z[new]]) if new.any() else self.fit_z_
        order = np.concatenate([self.fit_order_, batch.order_time[new]])
        local = np.concatenate([self.fit_local_, batch.local_time[new]])
        return ids, z, order, local

    def _raw(self, batch: FrameBatch) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@register
class TemporalDetector(_TimelapseDetector):
    key = "temporal"
    summary = "differs from the frames just before and after it (sudden change)"
    order = 80
    unscorable = "(frames need timestamps)"

    def __init__(
        self,
        contamination: float = 0.05,
        window: int = 3,
        scale_window: int = 12,
        max_gap_minutes: float = 180.0,
    ):
        self.contamination = contamination
        self.window = window
        self.scale_window = scale_window
        self.max_gap_minutes = max_gap_minutes

    def _prepare(self, batch):
        ids, z, order, sort = self._sorted(self._context(batch))
        first = self._residuals(z, order, sort, 1)
        finite = first[np.isfinite(first)] if len(first) else first
        self.floor_ = 0.5 * float(np.median(finite)) if len(finite) else 0.0

    @staticmethod
    def _sorted(context):
        ids, z, order, _ = context
        valid = ~np.isnat(order)
        sort = np.flatnonzero(valid)[np.argsort(order[valid], kind="stable")]
        return ids, z, order, sort

    def _pair_residual(self, z, order, sort, pos, zi, ti, offset):
        """||z_i - interpolation between the frames `offset` before and after it|| (NaN when
        either is missing or farther than max_gap in time)."""
        n_sorted = len(sort)
        a_pos, b_pos = pos - offset, pos + offset
        ok = (pos >= 0) & (a_pos >= 0) & (b_pos < n_sorted)
        out = np.full(len(pos), np.nan)
        if not ok.any():
            return out
        a = sort[np.clip(a_pos, 0, n_sorted - 1)]
        b = sort[np.clip(b_pos, 0, n_sorted - 1)]
        max_gap = np.timedelta64(int(self.max_gap_minutes * 60), "s")
        ok &= ((ti - order[a]) <= max_gap) & ((order[b] - ti) <= max_gap)
        span = (order[b] - order[a]) / np.timedelta64(1, "s")
        with np.errstate(all="ignore"):
            frac = np.where(span > 0, ((ti - order[a]) / np.timedelta64(1, "s")) / span, 0.5)
        frac = np.clip(np.nan_to_num(frac, nan=0.5), 0, 1)[:, None]
        pred = z[a].astype(np.float64) * (1 - frac) + z[b].astype(np.float64) * frac
        d = np.sqrt(((zi.astype(np.float64) - pred) ** 2).sum(axis=1))
        out[ok] = d[ok]
        return out

    def _side_distances(self, z, order, sort, pos, zi, ti):
        """Distances to the frames 1..window before and after (NaN beyond max_gap)."""
        n_sorted = len(sort)
        max_gap = np.timedelta64(int(self.max_gap_minutes * 60), "s")
        out = np.full((len(pos), 2 * self.window), np.nan)
        for col, offset in enumerate([*range(-self.window, 0), *range(1, self.window + 1)]):
            other = pos + offset
            ok = (pos >= 0) & (other >= 0) & (other < n_sorted)
            if not ok.any():
                continue
            j = sort[np.clip(other, 0, n_sorted - 1)]
            ok &= np.abs(order[j] - ti) <= max_gap
            d = np.sqrt(((z[j].astype(np.float64) - zi) ** 2).sum(axis=1))
            out[ok, col] = d[ok]
        return out

    def _residuals(self, z, order, sort, offset):
        """Residual of every frame in time order (index = position in `sort`)."""
        pos = np.arange(len(sort))
        return self._pair_residual(z, order, sort, pos, z[sort], order[sort], offset)

    def _raw(self, batch):
        """Median over offsets 1..window of how far a frame is from the interpolation between
        the frames that far before and after it, divided by the median such residual of the
        frames around it: a frame unlike both sides scores high; a fast but smooth change
        (dusk, dawn, clouds moving) is predicted by its neighbours and scores about 1."""
        ids, z, order, sort = self._sorted(self._context(batch))
        n_sorted = len(sort)
        pos_of = np.full(len(ids), -1)
        pos_of[sort] = np.arange(n_sorted)
        pos = pos_of[pd.Index(ids).get_indexer(batch.frame_ids)]
        res = np.column_stack(
            [
                self._pair_residual(z, order, sort, pos, batch.z, batch.order_time, o)
                for o in range(1, self.window + 1)
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            around = np.nanmedian(
                np.column_stack(
                    [self._residuals(z, order, sort, o) for o in range(1, self.window + 1)]
                ),
                axis=1,
            )
        local = np.full((len(batch), 2 * self.scale_window), np.nan)
        offsets = [o for o in range(-self.scale_window - 1, self.scale_window + 2) if abs(o) > 1][
            : 2 * self.scale_window
        ]
        for col, offset in enumerate(offsets):
            k = pos + offset
            ok = (pos >= 0) & (k >= 0) & (k < n_sorted)
            local[ok, col] = around[k[ok]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = np.nanmedian(res, axis=1)
            one_sided = ~np.isfinite(raw)  # first/last frame, or next to a gap in time
            if one_sided.any():
                raw[one_sided] = np.nanmedian(
                    self._side_distances(
                        z,
                        order,
                        sort,
                        pos[one_sided],
                        batch.z[one_sided],
                        batch.order_time[one_sided],
                    ),
                    axis=1,
                )
            scale = np.nanmedian(local, axis=1)
        scale = np.maximum(np.where(np.isfinite(scale), scale, 0.0), max(self.floor_, 1e-12))
        return raw / scale


@register
class SameTimeDetector(_TimelapseDetector):
    """Mean distance to the `n_neighbors` nearest frames taken within `window_minutes` of the
    same time of day on other days, divided by the fit's typical value for that hour of day.

    Only days at most `max_days` calendar days before or after the frame's own day are
    compared (None: every other day). The scene drifts with the seasons, so a far day is not
    the right reference anyway, and the bound keeps the cost linear in the number of frames
    (each frame meets about 2 x `max_days` days of candidates instead of every day: n^2/48
    distance pairs at ten-minute steps without it). A frame with no other day within the
    bound gets no score (NaN), like a frame whose only day is its own.
    """

    key = "same_time"
    summary = "differs from the same time of day on other days"
    order = 90
    unscorable = "(frames need timestamps, on at least two days)"

    def __init__(
        self,
        contamination: float = 0.05,
        n_neighbors: int = 3,
        window_minutes: float = 30.0,
        max_days: int | None = 30,
    ):
        self.contamination = contamination
        self.n_neighbors = n_neighbors
        self.window_minutes = window_minutes
        self.max_days = max_days

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0 fitted before the bound on days compared every other day
        return {"max_days": None, **state}

    def _raw(self, batch):
        bound = self.max_days
        if bound is not None and bound < 1:
            raise ValueError(
                f"same_time max_days must be at least 1 (or None for every day), got {bound}"
            )
        _, z, _, local = self._context(batch)
        days, minutes = day_and_minute(local)
        b_days, b_minutes = day_and_minute(batch.local_time)  # NaT rows: NaN minutes, skipped
        out = np.full(len(batch), np.nan)
        w = self.window_minutes
        width = max(w, 10.0)
        n_bins = int(np.ceil(1440 / width))
        b_bin = np.floor(np.nan_to_num(b_minutes, nan=-1) / width).astype(int)
        z32 = np.ascontiguousarray(z, dtype=np.float32)
        zz = (z32.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        minutes32 = minutes.astype(np.float32)
        for b in range(n_bins):
            rows = np.flatnonzero((b_bin == b) & np.isfinite(b_minutes))
            if not len(rows):
                continue
            lo, hi = b * width - w, (b + 1) * width + w
            m = minutes
            cand = np.flatnonzero(
                np.isfinite(m) & (((m >= lo) & (m <= hi)) | (m - 1440 >= lo) | (m + 1440 <= hi))
            )
            if not len(cand):
                continue
            # candidates sorted by day: a block of rows spanning a few days meets one slice
            cand = cand[np.argsort(days[cand], kind="stable")]
            rows = rows[np.argsort(b_days[rows], kind="stable")]
            cz = z32[cand]
            c_zz, c_min, c_day = zz[cand], minutes32[cand], days[cand]
            for r in day_blocks(rows, b_days[rows], bound):
                r_days = b_days[r]
                if bound is None:
                    s0, s1 = 0, len(cand)
                else:
                    s0 = np.searchsorted(c_day, r_days[0] - bound, side="left")
                    s1 = np.searchsorted(c_day, r_days[-1] + bound, side="right")
                if s1 <= s0:
                    continue
                # float32 blocks and masks (same day covers the frame itself): memory-bound
                rz = np.ascontiguousarray(batch.z[r], dtype=np.float32)
                d2 = rz @ cz[s0:s1].T
                d2 *= -2
                d2 += c_zz[None, s0:s1]
                d2 += (rz.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)[:, None]
                dm = np.abs(b_minutes[r].astype(np.float32)[:, None] - c_min[None, s0:s1])
                bad = np.minimum(dm, 1440 - dm) > w
                day_gap = np.abs(r_days[:, None] - c_day[None, s0:s1])
                bad |= day_gap == 0
                if bound is not None:
                    bad |= day_gap > bound
                d2[bad] = np.inf
                k = min(self.n_neighbors, s1 - s0)
                part = np.partition(d2, k - 1, axis=1)[:, :k]
                good = np.isfinite(part)
                counts = good.sum(axis=1)
                sums = np.where(good, np.sqrt(np.maximum(part, 0)), 0).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[r] = np.where(counts > 0, sums / counts, np.nan)
        return out
