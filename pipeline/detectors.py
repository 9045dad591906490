"""Outlier detectors: one registry whose keys are the same in settings, CLI, store and dashboard.

Every detector scores frames with *higher = more abnormal* and follows the PyOD / scikit-learn
habits: `__init__` only stores keyword parameters, `fit(batch)` does the work and returns self,
learned state ends in `_` (`decision_scores_`, `threshold_`, `labels_`, `reference_`), and
`decision_function(batch)` scores new frames against the frozen fit without refitting. A frame
that was in the fit gets exactly the score it got in the fit (neighbour searches exclude the
frame itself by frame_id), so `score-new` agrees with the run.

Families:
- embedding (`iforest`, `lof`, `knn`, `ecod`, `copod`, `hbos`): on the run's PCA space. `iforest`
  is PyOD's model. `lof` and `knn` follow PyOD's definitions (LOF of Breunig et al.; kNN
  'largest' distance) but read one shared exact neighbour index (`NeighborIndex`, FAISS), so one
  k-NN pass serves lof, knn and the neighbours table. `ecod` and `copod` are PyOD's formulas with
  the per-dimension ECDFs frozen at fit time (PyOD refits them on train + new data, which would
  change scores of new frames with the batch); `hbos` is PyOD's static-bin formula vectorised
  (PyOD scores frame by frame in Python). Tests check all five equal PyOD on the fit.
- time-lapse (`temporal`, `same_time`): distance to the frames just before and after in time,
  and to the nearest frames at the same time of day on other days, each divided by the typical
  value for that hour of day (so dusk, when every frame changes fast, is not flagged).
- `background`: what the fixed camera's learned background (an eigen-background per daylight
  class, from the stored thumbnails; `pipeline.background`) cannot explain, scored as how far a
  frame's strongest pixels stand out from the rest of it: a person, an animal, a bird at the
  lens, water drops, a knocked camera. Each pixel is measured against its usual residual at
  that time of day, and a second score explains the residual by the same time of day on other
  days too, so a shadow that moves with the sun is not taken for an object.
- quality (`dark`, `overexposed`, `blurry`, `low_information`, `haze`): from the frame statistics
  ingest computed (mean luma, contrast, sharpness, colourfulness).
- `consensus` combines detectors' percentile ranks (see `consensus_scores`).

The consensus rule (default `family_tail`, measured in docs/PERFORMANCE.md "Detection quality"):
each detector's percentile p becomes tail evidence -log(1 - p) (so one confident detector counts
more than several lukewarm ones; 1 - p is floored at 1/(n + 1) for n ranked frames), evidence is
averaged within a family (embedding, time-lapse, background, quality) and summed over families.
Families see different anomalies (quality: black, fog, washed-out; background: people, animals,
drops, a knocked camera; embedding: a frame unlike any other), so a family mean keeps a weak
member from drowning a strong one only within its family, and the sum lets one family alone
flag a frame. The embedding and time-lapse detectors are generalists that rank frames by any
difference, weather and light included, so only their top tenth counts (`EVIDENCE_FROM`). A
plain mean of all ranks lets one-sided checks (`dark` knows nothing of fog) drag real anomalies
down. By default consensus combines `lof`, `background` and the quality
checks (`consensus_detectors`); the other detectors are computed for side-by-side comparison:
on the demo and its harder variants adding them lowered the consensus (iforest, ecod, copod and
hbos are global or per-dimension detectors on data whose normal frames follow a daily cycle;
knn, temporal and same_time repeat what lof and background see, with more noise).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import pandas as pd
from scipy.stats import skew
from sklearn.base import BaseEstimator

if TYPE_CHECKING:
    from pipeline.background import GridReader

log = logging.getLogger(__name__)

DETECTORS: dict[str, type["Detector"]] = {}
CONSENSUS = "consensus"


def register(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator: add a detector class to the registry under its `key`."""
    if cls.key in DETECTORS:
        raise ValueError(f"detector {cls.key!r} registered twice")
    DETECTORS[cls.key] = cls
    return cls


def make_detector(key: str, contamination: float = 0.05, random_state: int = 0) -> "Detector":
    """A new unfitted detector from its registry key."""
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise KeyError(f"unknown detector {key!r}; known: {', '.join(DETECTORS)}") from None
    params = {"contamination": contamination}
    if "random_state" in cls._get_param_names():
        params["random_state"] = random_state
    return cls(**params)


# --- the data detectors see ---------------------------------------------------------------------

@dataclass
class FrameBatch:
    """Frames as the detectors see them (rows in the same order everywhere).

    `z` is the run's PCA space; `order_time` orders frames in time (UTC when known, else camera
    time) and `local_time` is the camera wall clock (time of day, date); both datetime64[ns] with
    NaT allowed. `stats` holds mean_luma, contrast, sharpness, colorfulness (NaN allowed).
    `nn_dist`/`nn_idx` are each frame's nearest fit frames (itself excluded), indexes into the
    fit batch, filled by `NeighborIndex.attach`. `daylight` is 'day', 'twilight', 'night' or
    None per frame; `pixels` reads the frames' images (`pipeline.background.GridReader`) for the
    detectors that look at pixels; without one they cannot score.
    """

    frame_ids: np.ndarray
    z: np.ndarray
    order_time: np.ndarray
    local_time: np.ndarray
    stats: pd.DataFrame
    nn_dist: np.ndarray | None = None
    nn_idx: np.ndarray | None = None
    daylight: np.ndarray | None = None
    pixels: "GridReader | None" = None

    def __len__(self) -> int:
        return len(self.frame_ids)

    @classmethod
    def from_frames(cls, frame_ids: np.ndarray, z: np.ndarray, frames: pd.DataFrame,
                    pixels: "GridReader | None" = None) -> "FrameBatch":
        """Build from PCA vectors and `store.analysis.load_frames` rows (same frame ids)."""
        frames = frames.set_index("frame_id").reindex(frame_ids)
        local = _to_naive_ns(frames["taken_at"])
        utc = _to_naive_ns(frames["taken_at_utc"])
        order = np.where(np.isnat(utc), local, utc)
        stats = frames[["mean_luma", "contrast", "sharpness", "colorfulness"]].astype(float)
        daylight = frames["daylight"].to_numpy(object) if "daylight" in frames else None
        return cls(np.asarray(frame_ids, dtype=np.int64), np.ascontiguousarray(z, np.float32),
                   order, local, stats.reset_index(drop=True), daylight=daylight, pixels=pixels)


def _to_naive_ns(column: pd.Series) -> np.ndarray:
    values = pd.to_datetime(column)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ns]")


# --- the shared nearest-neighbour index ---------------------------------------------------------

class NeighborIndex:
    """Nearest fit frames in the PCA space: exact (KD-tree or FAISS flat) or, for big runs, IVF.

    `kind` 'auto' uses a KD-tree (exact, about n log n) when the PCA space has at most
    `kdtree_max_dims` dims and more than 5,000 frames, else exact FAISS search up to `exact_max`
    frames and an inverted-file index (about 4*sqrt(n) lists, 24 probed) above, where exact
    all-pairs search grows as n^2. Distances are
    Euclidean. Queries exclude the frame itself (same frame_id), so a fit frame queried again
    gets the same neighbours it had in the fit.
    """

    def __init__(self, kind: str = "auto", exact_max: int = 200_000, kdtree_max_dims: int = 12,
                 random_state: int = 0):
        self.kind = kind
        self.exact_max = exact_max
        self.kdtree_max_dims = kdtree_max_dims
        self.random_state = random_state

    def fit(self, z: np.ndarray, frame_ids: np.ndarray) -> "NeighborIndex":
        import faiss

        z = np.ascontiguousarray(z, dtype=np.float32)
        n, dim = z.shape
        kind = self.kind
        if kind == "auto":
            if dim <= self.kdtree_max_dims and n > 5_000:
                kind = "kdtree"   # exact, n log n in few dims (all-pairs flat search is n^2)
            else:
                kind = "exact" if n <= self.exact_max else "ivf"
        if kind == "kdtree":
            from sklearn.neighbors import KDTree

            index = KDTree(z, leaf_size=40)
        elif kind == "exact":
            index = faiss.IndexFlatL2(dim)
        elif kind == "ivf":
            n_lists = int(min(max(16, 4 * np.sqrt(n)), max(1, n // 39)))
            quantizer = faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, n_lists)
            rng = np.random.default_rng(self.random_state)
            sample = z[rng.choice(n, size=min(n, 256 * n_lists), replace=False)]
            index.cp.seed = self.random_state
            index.train(sample)
            index.nprobe = min(24, n_lists)
        else:
            raise ValueError(f"unknown neighbour index {self.kind!r}: use auto, exact, kdtree "
                             "or ivf")
        if kind != "kdtree":
            index.add(z)
        self.kind_ = kind
        self.index_ = index
        self.frame_ids_ = np.asarray(frame_ids, dtype=np.int64)
        self.n_ = n
        return self

    def query(self, z: np.ndarray, frame_ids: np.ndarray, k: int,
              chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indexes into the fit) of the k nearest fit frames, itself excluded."""
        z = np.ascontiguousarray(z, dtype=np.float32)
        k = min(k, self.n_ - 1) if np.isin(frame_ids, self.frame_ids_).any() else min(k, self.n_)
        n = len(z)
        dist = np.empty((n, k), np.float32)
        idx = np.empty((n, k), np.int64)
        fit_pos = pd.Index(self.frame_ids_)
        own = fit_pos.get_indexer(np.asarray(frame_ids, dtype=np.int64))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            if self.kind_ == "kdtree":
                d1, found = self.index_.query(z[start:stop], k=k + 1)
                d2 = d1.astype(np.float64) ** 2
            else:
                d2, found = self.index_.search(z[start:stop], k + 1)
            is_self = found == own[start:stop, None]
            # drop the frame itself where found, else the farthest of the k + 1
            drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
            keep = np.ones_like(found, dtype=bool)
            keep[np.arange(stop - start), drop] = False
            found = found[keep].reshape(stop - start, k)
            d2 = d2[keep].reshape(stop - start, k)
            missing = found < 0  # IVF may return fewer than asked
            d2[missing] = np.inf
            found[missing] = 0
            dist[start:stop] = np.sqrt(np.maximum(d2, 0))
            idx[start:stop] = found
        return dist, idx

    def attach(self, batch: FrameBatch, k: int) -> FrameBatch:
        batch.nn_dist, batch.nn_idx = self.query(batch.z, batch.frame_ids, k)
        return batch

    def __getstate__(self):
        import faiss

        state = self.__dict__.copy()
        if "index_" in state and state.get("kind_") != "kdtree":
            state["index_"] = faiss.serialize_index(state["index_"])
        return state

    def __setstate__(self, state):
        import faiss

        if "index_" in state and state.get("kind_") != "kdtree":
            state["index_"] = faiss.deserialize_index(state["index_"])
            if state.get("kind_") == "ivf":
                state["index_"].nprobe = min(24, state["index_"].nlist)
        self.__dict__.update(state)


# --- the base class ---------------------------------------------------------------------------

class Detector(BaseEstimator):
    """Shared behaviour: scores of the fit, percentile ranks against them, the threshold."""

    key: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    n_neighbors_needed: ClassVar[int] = 0

    def __init__(self, contamination: float = 0.05):
        self.contamination = contamination

    def fit(self, batch: FrameBatch) -> "Detector":
        self._check_contamination()
        self._fit(batch)
        scores = self.decision_function(batch)
        self._set_reference(scores)
        return self

    def _check_contamination(self) -> None:
        if not 0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {self.contamination}")

    def _set_reference(self, scores: np.ndarray) -> None:
        self.decision_scores_ = scores
        finite = scores[np.isfinite(scores)]
        self.reference_ = np.sort(finite)
        self.threshold_ = (float(np.quantile(finite, 1 - self.contamination))
                           if len(finite) else np.inf)
        self.labels_ = self.predict_scores(scores)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Share of fit frames scoring <= each score (0..1); NaN stays NaN."""
        out = np.full(len(scores), np.nan)
        ok = np.isfinite(scores)
        if len(self.reference_):
            out[ok] = np.searchsorted(self.reference_, scores[ok], side="right") / len(self.reference_)
        return out

    def predict_scores(self, scores: np.ndarray) -> np.ndarray:
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold_

    def _fit(self, batch: FrameBatch) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def decision_function(self, batch: FrameBatch) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


# --- embedding detectors ------------------------------------------------------------------------

@register
class IForestDetector(Detector):
    key = "iforest"
    family = "embedding"
    summary = "Isolation Forest (PyOD): frames isolated by few random splits"

    def __init__(self, contamination: float = 0.05, n_estimators: int = 100,
                 max_samples: int | str = "auto", random_state: int = 0):
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def _fit(self, batch):
        from pyod.models.iforest import IForest

        self.model_ = IForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                              contamination=self.contamination, random_state=self.random_state)
        self.model_.fit(batch.z)

    def decision_function(self, batch):
        return self.model_.decision_function(batch.z).astype(float)


@register
class HBOSDetector(Detector):
    key = "hbos"
    family = "embedding"
    summary = "Histogram-based outlier score (PyOD formula): rare values per PCA dimension"

    def __init__(self, contamination: float = 0.05, n_bins: int = 20, alpha: float = 0.1,
                 tol: float = 0.5):
        self.contamination = contamination
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol

    def _fit(self, batch):
        # PyOD's static-bin HBOS, vectorised (PyOD loops over frames in Python: 10 s per 1k)
        n_dims = batch.z.shape[1]
        self.hist_ = np.zeros((self.n_bins, n_dims))
        self.bin_edges_ = np.zeros((self.n_bins + 1, n_dims))
        for i in range(n_dims):
            self.hist_[:, i], self.bin_edges_[:, i] = np.histogram(
                batch.z[:, i], bins=self.n_bins, density=True)

    def decision_function(self, batch):
        z = batch.z
        total = np.zeros(len(z))
        for i in range(z.shape[1]):
            edges = self.bin_edges_[:, i]
            log_density = np.log2(self.hist_[:, i] + self.alpha)
            inds = np.digitize(z[:, i], edges, right=True)
            inner = log_density[np.clip(inds - 1, 0, self.n_bins - 1)]
            below = (edges[0] - z[:, i]) <= (edges[1] - edges[0]) * self.tol
            above = (z[:, i] - edges[-1]) <= (edges[-1] - edges[-2]) * self.tol
            score = np.where(inds == 0, np.where(below, log_density[0], log_density.min()),
                             np.where(inds == self.n_bins + 1,
                                      np.where(above, log_density[-1], log_density.min()), inner))
            total += score
        return -total


class _NeighborDetector(Detector):
    """Reads `batch.nn_dist` / `batch.nn_idx` (the shared index); stores the fit's own."""

    @property
    def n_neighbors_needed(self) -> int:  # type: ignore[override]
        return self.n_neighbors

    def _fit(self, batch):
        if batch.nn_dist is None or batch.nn_dist.shape[1] < self.n_neighbors:
            raise ValueError(f"{self.key} needs {self.n_neighbors} neighbours attached to the batch")


@register
class KNNDetector(_NeighborDetector):
    key = "knn"
    family = "embedding"
    summary = "distance to the k-th nearest frame (PyOD KNN 'largest', k=5)"

    def __init__(self, contamination: float = 0.05, n_neighbors: int = 5):
        self.contamination = contamination
        self.n_neighbors = n_neighbors

    def decision_function(self, batch):
        return batch.nn_dist[:, self.n_neighbors - 1].astype(float)


@register
class LOFDetector(_NeighborDetector):
    key = "lof"
    family = "embedding"
    summary = "Local Outlier Factor (PyOD/scikit-learn definition, k=20)"

    def __init__(self, contamination: float = 0.05, n_neighbors: int = 20):
        self.contamination = contamination
        self.n_neighbors = n_neighbors

    def _fit(self, batch):
        super()._fit(batch)
        k = self.n_neighbors
        dist = batch.nn_dist[:, :k].astype(np.float64)
        idx = batch.nn_idx[:, :k]
        self.k_distance_ = dist[:, k - 1]
        reach = np.maximum(dist, self.k_distance_[idx])
        self.lrd_ = 1.0 / (reach.mean(axis=1) + 1e-10)

    def decision_function(self, batch):
        k = self.n_neighbors
        dist = batch.nn_dist[:, :k].astype(np.float64)
        idx = batch.nn_idx[:, :k]
        reach = np.maximum(dist, self.k_distance_[idx])
        lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
        return self.lrd_[idx].mean(axis=1) / lrd


class _FrozenECDF(Detector):
    """PyOD's ECOD/COPOD tail probabilities with the per-dimension ECDFs frozen at fit."""

    def _fit(self, batch):
        self.sorted_ = np.sort(np.asarray(batch.z, dtype=np.float32), axis=0)  # z is float32
        self.skew_sign_ = np.sign(np.nan_to_num(skew(batch.z.astype(np.float64), axis=0)))

    def _tails(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.sorted_.shape[0]
        z = np.asarray(z, dtype=np.float32)
        left = np.empty(z.shape)
        right = np.empty(z.shape)
        for j in range(z.shape[1]):
            col = self.sorted_[:, j]
            left[:, j] = np.searchsorted(col, z[:, j], side="right")
            right[:, j] = n - np.searchsorted(col, z[:, j], side="left")
        floor = 0.5  # new frames beyond every fit value: half a frame, not log(0)
        u_l = -np.log(np.maximum(left, floor) / n)
        u_r = -np.log(np.maximum(right, floor) / n)
        u_skew = u_l * -np.sign(self.skew_sign_ - 1) + u_r * np.sign(self.skew_sign_ + 1)
        return u_l, u_r, u_skew


@register
class ECODDetector(_FrozenECDF):
    key = "ecod"
    family = "embedding"
    summary = "ECOD (PyOD formula): tail probabilities per PCA dimension, skew-aware"

    def decision_function(self, batch):
        u_l, u_r, u_skew = self._tails(batch.z)
        return np.maximum(np.maximum(u_l, u_r), u_skew).sum(axis=1)


@register
class COPODDetector(_FrozenECDF):
    key = "copod"
    family = "embedding"
    summary = "COPOD (PyOD formula): empirical copula tail probabilities"

    def decision_function(self, batch):
        u_l, u_r, u_skew = self._tails(batch.z)
        return np.maximum(u_skew, (u_l + u_r) / 2).sum(axis=1)


# --- time-lapse aware detectors -----------------------------------------------------------------

class _TimelapseDetector(Detector):
    """Distances in the PCA space, divided by the fit's median for that hour of day when
    `hour_normalised` (same_time: other days differ more at dusk, when light changes fast)."""

    hour_normalised: ClassVar[bool] = True

    def _fit(self, batch):
        self.fit_ids_ = batch.frame_ids
        self.fit_z_ = batch.z
        self.fit_order_ = batch.order_time
        self.fit_local_ = batch.local_time
        self._prepare(batch)
        raw = self._raw(batch)
        hours = _hour_of_day(batch.local_time)
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
        hours = _hour_of_day(batch.local_time)
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


def _hour_of_day(local: np.ndarray) -> np.ndarray:
    hours = ((local - local.astype("datetime64[D]")) // np.timedelta64(1, "h")).astype(np.int64)
    return np.where(np.isnat(local), -1, hours)


def day_and_minute(local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-clock day number and minute of day; NaT gives day -1 and minute NaN."""
    known = ~np.isnat(local)
    days = np.where(known, local.astype("datetime64[D]").astype(np.int64), -1)
    minutes = (local - local.astype("datetime64[D]")) / np.timedelta64(1, "m")
    return days, np.where(known, minutes, np.nan)


@register
class TemporalDetector(_TimelapseDetector):
    key = "temporal"
    family = "timelapse"
    summary = "differs from the frames just before and after it (sudden change)"

    def __init__(self, contamination: float = 0.05, window: int = 3, scale_window: int = 12,
                 max_gap_minutes: float = 180.0):
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
        res = np.column_stack([
            self._pair_residual(z, order, sort, pos, batch.z, batch.order_time, o)
            for o in range(1, self.window + 1)])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            around = np.nanmedian(np.column_stack(
                [self._residuals(z, order, sort, o) for o in range(1, self.window + 1)]), axis=1)
        local = np.full((len(batch), 2 * self.scale_window), np.nan)
        offsets = [o for o in range(-self.scale_window - 1, self.scale_window + 2)
                   if abs(o) > 1][:2 * self.scale_window]
        for col, offset in enumerate(offsets):
            k = pos + offset
            ok = (pos >= 0) & (k >= 0) & (k < n_sorted)
            local[ok, col] = around[k[ok]]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = np.nanmedian(res, axis=1)
            one_sided = ~np.isfinite(raw)  # first/last frame, or next to a gap in time
            if one_sided.any():
                raw[one_sided] = np.nanmedian(self._side_distances(
                    z, order, sort, pos[one_sided], batch.z[one_sided],
                    batch.order_time[one_sided]), axis=1)
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
    family = "timelapse"
    summary = "differs from the same time of day on other days"

    def __init__(self, contamination: float = 0.05, n_neighbors: int = 3,
                 window_minutes: float = 30.0, max_days: int | None = 30):
        self.contamination = contamination
        self.n_neighbors = n_neighbors
        self.window_minutes = window_minutes
        self.max_days = max_days

    def _raw(self, batch):
        bound = getattr(self, "max_days", None)  # a fit pickled before the bound compared all
        if bound is not None and bound < 1:
            raise ValueError(f"same_time max_days must be at least 1 (or None for every day), "
                             f"got {bound}")
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
            cand = np.flatnonzero(np.isfinite(m) & (
                ((m >= lo) & (m <= hi)) | (m - 1440 >= lo) | (m + 1440 <= hi)))
            if not len(cand):
                continue
            # candidates sorted by day: a block of rows spanning a few days meets one slice
            cand = cand[np.argsort(days[cand], kind="stable")]
            rows = rows[np.argsort(b_days[rows], kind="stable")]
            cz = z32[cand]
            c_zz, c_min, c_day = zz[cand], minutes32[cand], days[cand]
            for r in _day_blocks(rows, b_days[rows], bound):
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


# --- the fixed camera's background -------------------------------------------------------------

@register
class BackgroundDetector(Detector):
    """What the fixed camera's background cannot explain (see `pipeline.background`), in three
    parts whose evidence is summed:

    - scene: the residual against an eigen-background fitted per daylight class with at least
      `min_class_frames` frames, on at most `max_fit_frames` of them (a seeded sample), plus one
      over all frames when some class is smaller. With `time_of_day_noise`, each pixel's
      residual is measured against that pixel's residual at the frame's time of day
      (`TimeOfDayNoise`: where a shadow edge usually falls at 9:00, an edge there is noise),
      its range there being the deviation it stays within in a `noise_spread` share of the
      fit's frames at that hour (0.9: all but one frame in ten; 0.5 is the MAD);
    - same time: that residual after also rebuilding the frame from its `same_time_neighbors`
      nearest reference frames (one per class per `slot_minutes` slot of a day, from the fit)
      taken within `same_time_minutes` of its time of day on other days at most
      `same_time_days` days away. The sun stands where it stood then, so the shadows do too;
      a frame without such references counts its scene part twice (`same_time_neighbors=0`
      turns this part off);
    - alignment: whether the frame still lines up with its class's scene (`Alignment`: a
      knocked camera). A frame that lines up counts nothing; one that lines up better shifted
      counts its gain (how many standard deviations of the correlation surface the shifted
      peak stands above no shift), whatever the number of frames shifted with it. In a class
      where under `min_lines_up` of the fit's frames line up (night: the edges are sensor
      noise, and the peak wanders by chance), the part says nothing.

    The scene and same-time parts score how far a frame's highest pixel z-scores stand out
    (`stand_out`), each z-score first measured against the mean of the pixels around it, in a
    window `surround` of the grid's width across (0 turns this off): a drop on the lens
    stands out of a frosted lawn that is off all over. They are ranked among the fit's frames
    (p) and count -log(1 - p). Frames without a readable thumbnail get NaN. With fewer than
    `min_frames` readable thumbnails there is no background to learn (a dozen frames are a
    sample, not a scene's normal range), and it scores nothing.
    """

    key = "background"
    family = "background"
    summary = "something the fixed camera's learned background cannot explain (a person, " \
              "an animal, drops on the lens), or a camera that no longer lines up with it"

    def __init__(self, contamination: float = 0.05, n_components: int = 12,
                 variance: float = 0.9, width: int = 128, top_share: float = 0.001,
                 max_fit_frames: int = 1500, min_class_frames: int = 60, min_frames: int = 30,
                 same_time_neighbors: int = 6, same_time_minutes: float = 30.0,
                 same_time_days: int = 7, slot_minutes: float = 10.0,
                 min_lines_up: float = 0.9, time_of_day_noise: bool = True,
                 noise_spread: float = 0.9, surround: float = 0.16, random_state: int = 0):
        self.contamination = contamination
        self.n_components = n_components
        self.variance = variance
        self.width = width
        self.top_share = top_share
        self.max_fit_frames = max_fit_frames
        self.min_class_frames = min_class_frames
        self.min_frames = min_frames
        self.same_time_neighbors = same_time_neighbors
        self.same_time_minutes = same_time_minutes
        self.same_time_days = same_time_days
        self.slot_minutes = slot_minutes
        self.min_lines_up = min_lines_up
        self.time_of_day_noise = time_of_day_noise
        self.noise_spread = noise_spread
        self.surround = surround
        self.random_state = random_state

    def fit(self, batch):
        from pipeline.background import by_class

        self._check_contamination()
        self._fit(batch)
        parts = self._parts(batch)
        self.part_reference_ = [np.sort(p[np.isfinite(p)]) for p in parts[:, :2].T]
        keys = self._class_keys(batch)
        self.lines_up_ = {}  # class -> share of its fit frames that line up at no shift
        for key, rows in by_class(keys):
            gains = parts[rows, 2][np.isfinite(parts[rows, 2])]
            self.lines_up_[key] = float((gains == 0).mean()) if len(gains) else 0.0
        self._set_reference(self._combine(parts, keys))
        return self

    def decision_function(self, batch):
        parts = self._parts(batch)
        if not hasattr(self, "part_reference_"):  # fitted before the same-time part
            return parts[:, 0]
        return self._combine(parts, self._class_keys(batch))

    def _fit(self, batch):
        from pipeline.background import (
            Alignment,
            BackgroundModel,
            bounded_map,
            check_spread,
            edge_map,
            grid_size,
            log_rgb,
            one_blas_thread,
            reference_slots,
        )

        check_spread(self.noise_spread, "noise_spread")  # before any thumbnail is decoded
        self.models_: dict[str, BackgroundModel] = {}
        self.size_ = None
        self.references_ = None
        if batch.pixels is None or len(batch) < self.min_frames:
            return
        self.size_ = grid_size(batch.pixels.aspect(batch.frame_ids), self.width)
        rng = np.random.default_rng(self.random_state)
        classes = _daylight_classes(batch)
        samples = {}
        for name in dict.fromkeys(classes):
            members = np.flatnonzero(classes == name)
            if len(members) >= self.min_class_frames:
                samples[name] = _sample(members, self.max_fit_frames, rng)
        if len(samples) < len(set(classes)):  # frames of a small class: one model over all
            samples["all"] = _sample(np.arange(len(batch)), self.max_fit_frames, rng)
        wanted = np.unique(np.concatenate(list(samples.values())))
        have = np.zeros(len(batch), bool)
        row_of = np.full(len(batch), -1)
        parts = []
        for pos, grids in batch.pixels.grids(batch.frame_ids[wanted], self.size_):
            have[wanted[pos]] = True
            parts.append((wanted[pos], log_rgb(grids), edge_map(grids)))
        if not parts:
            return
        order = np.concatenate([p for p, _, _ in parts])
        flat = np.concatenate([f for _, f, _ in parts])
        edges = np.concatenate([e for _, _, e in parts])
        row_of[order] = np.arange(len(order))
        jobs = [(name, row_of[members[have[members]]]) for name, members in samples.items()]
        days, minutes = day_and_minute(batch.local_time)
        flat_minutes = minutes[order] if self.time_of_day_noise else None

        def fit_one(job):
            name, rows = job
            model = BackgroundModel(self.n_components, self.variance, self.random_state).fit(
                flat[rows], self.size_, noise_spread=self.noise_spread,
                minutes=None if flat_minutes is None else flat_minutes[rows])
            model.alignment_ = Alignment(edges[rows])
            return name, model

        with one_blas_thread():  # the classes are fitted in threads instead
            self.models_ = dict(bounded_map(
                fit_one, [(name, rows) for name, rows in jobs if len(rows) >= self.min_frames]))
        if self.models_:
            by_time = np.argsort(batch.local_time, kind="stable")
            refs = reference_slots(classes, days, minutes, by_time, self.slot_minutes)
            self.references_ = {"frame_id": batch.frame_ids[refs], "daylight": classes[refs],
                                "day": days[refs], "minute": minutes[refs]}

    def _model(self, name: str):
        return (self.models_.get(name) or self.models_.get("all")
                or next(iter(self.models_.values())))  # a class the fit never saw

    def _top(self) -> int:
        return max(1, int(round(self.top_share * self.size_[0] * self.size_[1])))

    def _surround(self) -> int:
        """The odd side in grid pixels of the window a pixel is measured against (0: none,
        as in runs fitted before it existed)."""
        share = getattr(self, "surround", 0.0)
        return 2 * int(round(share * self.size_[0] / 2)) + 1 if share > 0 else 0

    def _parts(self, batch: FrameBatch) -> np.ndarray:
        """[frames, 3]: the scene part, the same-time part and the alignment gain (NaN without
        an image; the same-time part also without references, the gain also without structure
        to line up)."""
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.background import (
            SameTimeReferences,
            bounded_map,
            one_blas_thread,
            project_by_class,
            split_chunks,
            stand_out,
        )

        out = np.full((len(batch), 3), np.nan)
        if batch.pixels is None or not getattr(self, "models_", None):
            return out
        days, minutes = day_and_minute(batch.local_time)
        known = getattr(self, "references_", None)
        refs = None
        if known is not None and self.same_time_neighbors >= 1:
            ref_classes = np.array([self._class_key(n) for n in known["daylight"]], dtype=object)
            models = {n: self._model(n) for n in set(ref_classes)}
            refs = SameTimeReferences(known["frame_id"], ref_classes, known["day"],
                                      known["minute"], models, batch.pixels, self.size_,
                                      self.same_time_neighbors, self.same_time_minutes,
                                      self.same_time_days)
        top, surround = self._top(), self._surround()

        def score(projected):
            """The parts for frames of one class: positions, class, coefficients, residuals
            and alignment gains."""
            pos, name, coef, residual, gains = projected
            scores = np.full((len(pos), 3), np.nan)
            scores[:, 2] = gains
            model = self._model(name)
            if refs is not None:
                found, left = refs.explain(name, days[pos], minutes[pos], coef, residual)
                if found.any():
                    scores[found, 1] = stand_out(model.pixel_z(left), top, self.size_,
                                                 surround)
            scores[:, 0] = stand_out(model.pixel_z(residual, minutes[pos]), top, self.size_,
                                     surround)
            return pos, scores

        def decode_and_score(piece):
            # pieces of 128 frames: each temporary is 14 MB instead of 113 MB for a chunk of
            # 1,024, so it is reused from the heap instead of mapped and faulted in anew
            pos, grids = piece
            return [score((pos[rows], name, coef, residual, gains))
                    for name, rows, coef, residual, gains
                    in project_by_class(grids, ref_class[pos], self._model)]

        # frames in time order, a few days at a time, so that the references in memory are
        # those days' +- same_time_days. A frame that is a held reference is scored from its
        # held residual; the others are decoded. Pieces are scored in threads (NumPy releases
        # the GIL).
        ref_class = self._class_keys(batch)
        done = np.zeros(len(batch), bool)
        span = max(1, int(self.same_time_days))
        by_time = np.argsort(days, kind="stable")
        dated = days[by_time] >= 0  # frames of unknown days (-1) last, in a block of their own
        blocks = list(_day_blocks(by_time[dated], days[by_time][dated], span, size=None))
        blocks += [by_time[~dated]] if (~dated).any() else []

        def window(block):  # the days whose references a block needs (None: unknown days)
            block_days = days[block]
            return (block_days[0] - span, block_days[-1] + span) if block_days[0] >= 0 else None

        # while a block is scored, the next block's references are decoded in another thread
        with one_blas_thread(), ThreadPoolExecutor(1) as loader:
            ahead = None
            if refs is not None and blocks and window(blocks[0]):
                ahead = loader.submit(refs.load, *window(blocks[0]))
            for i, block in enumerate(blocks):
                if ahead is not None:
                    ahead.result()
                    ahead = None
                    if i + 1 < len(blocks) and window(blocks[i + 1]):
                        ahead = loader.submit(refs.load, *window(blocks[i + 1]),
                                              keep_from=window(block)[0])
                if refs is not None and window(block):
                    held = ((block[pos], name, coef, res, gains) for pos, name, coef, res, gains
                            in refs.take(batch.frame_ids[block]))
                    for pos, scores in bounded_map(score, held):
                        out[pos] = scores
                        done[pos] = True
                rest = block[~done[block]]
                chunks = ((rest[pos], grids) for pos, grids
                          in split_chunks(batch.pixels.grids(batch.frame_ids[rest], self.size_)))
                for scored in bounded_map(decode_and_score, chunks):
                    for pos, scores in scored:
                        out[pos] = scores
        return out

    def _class_key(self, name: str) -> str:
        """The model (and reference pool) a daylight class is scored with."""
        return name if name in self.models_ else "all" if "all" in self.models_ else name

    def _class_keys(self, batch: FrameBatch) -> np.ndarray:
        names, inverse = np.unique(_daylight_classes(batch), return_inverse=True)
        return np.array([self._class_key(n) for n in names], dtype=object)[inverse]

    def _combine(self, parts: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Sum of the parts' tail evidence. Scene and same-time parts: -log(1 - p), p the
        part's rank among the fit's frames (over n + 1, so the top fit frame counts
        log(n + 1)); without a same-time part, the scene part counts twice. Alignment: 0 for a
        frame that lines up (or has nothing to line up), else its gain, in the classes whose
        fit frames line up (`min_lines_up`)."""
        evidence = np.full((len(parts), 2), np.nan)
        for j, reference in enumerate(getattr(self, "part_reference_", [])[:2]):
            ok = np.isfinite(parts[:, j])
            if len(reference) and ok.any():
                p = np.searchsorted(reference, parts[ok, j], side="right") / (len(reference) + 1)
                evidence[ok, j] = -np.log1p(-p)
        scene, same_time = evidence.T
        local = scene + np.where(np.isfinite(same_time), same_time, scene)
        return local + self._alignment_evidence(parts[:, 2], keys)

    def _alignment_evidence(self, gains: np.ndarray, keys: np.ndarray) -> np.ndarray:
        lines_up = getattr(self, "lines_up_", None)
        if not lines_up:  # fitted before the alignment part
            return np.zeros(len(gains))
        reliable = np.isin(keys, [k for k, share in lines_up.items()
                                  if share >= self.min_lines_up])
        shifted = reliable & np.isfinite(gains) & (gains > 0)
        return np.where(shifted, gains, 0.0)


def _day_blocks(rows: np.ndarray, row_days: np.ndarray, max_days: int | None,
                size: int | None = 1024):
    """Blocks of at most `size` rows (sorted by day) spanning at most `max_days` days, so each
    block's candidates are its days +- max_days (about 3 x max_days days, not every day)."""
    if not len(rows):
        return
    if max_days is None:
        keys = np.zeros(len(rows), np.int64)
    else:
        keys = (row_days - row_days[0]) // max_days
    edges = np.flatnonzero(np.diff(keys)) + 1
    size = size or max(1, len(rows))
    for start, stop in zip(np.r_[0, edges], np.r_[edges, len(rows)]):
        for s in range(start, stop, size):
            yield rows[s:min(stop, s + size)]


def _daylight_classes(batch: FrameBatch) -> np.ndarray:
    if batch.daylight is None:
        return np.full(len(batch), "unknown", dtype=object)
    return np.array([d if isinstance(d, str) else "unknown" for d in batch.daylight], dtype=object)


def _sample(positions: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if len(positions) <= k:
        return positions
    return np.sort(rng.choice(positions, size=k, replace=False))


# --- image quality detectors --------------------------------------------------------------------

class _QualityDetector(Detector):
    """A fixed formula of the frame statistics; only the reference distribution is learned."""

    formula: ClassVar[Callable[[pd.DataFrame], np.ndarray]]

    def _fit(self, batch):
        pass

    def decision_function(self, batch):
        return np.asarray(type(self).formula(batch.stats), dtype=float)


def _log(x):
    return np.log1p(np.maximum(np.asarray(x, dtype=float), 0))


@register
class DarkDetector(_QualityDetector):
    key = "dark"
    family = "quality"
    summary = "dark frame: low mean luma"
    formula = staticmethod(lambda s: 1 - s["mean_luma"].to_numpy(float) / 255)


@register
class OverexposedDetector(_QualityDetector):
    key = "overexposed"
    family = "quality"
    summary = "washed-out frame: bright with little contrast"
    formula = staticmethod(lambda s: s["mean_luma"].to_numpy(float) / 255
                           - s["contrast"].to_numpy(float) / 64)


@register
class BlurryDetector(_QualityDetector):
    key = "blurry"
    family = "quality"
    summary = "blurry frame: low variance of the Laplacian"
    formula = staticmethod(lambda s: -_log(s["sharpness"]))


@register
class LowInformationDetector(_QualityDetector):
    key = "low_information"
    family = "quality"
    summary = "little to see: low contrast and low colourfulness"
    formula = staticmethod(lambda s: -(_log(s["contrast"]) + 0.5 * _log(s["colorfulness"])))


@register
class HazeDetector(_QualityDetector):
    key = "haze"
    family = "quality"
    summary = "haze or fog: not dark, yet flat and colourless"
    formula = staticmethod(lambda s: np.minimum(s["mean_luma"].to_numpy(float), 120) / 120
                           - _log(s["contrast"]) / np.log(65) - _log(s["colorfulness"]) / np.log(65))


# --- consensus ---------------------------------------------------------------------------------
# Each rule takes (percentiles [frames x detectors], families, floor); `floor` bounds 1 - pct
# from below so the tail evidence of a top rank is finite and fits the number of frames ranked.

def _rule_mean(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmean(pct, axis=1)


def _rule_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmax(pct, axis=1)


def _rule_family_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Average of maximum: mean rank within each family, then the highest family."""
    groups = [np.nanmean(pct[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
              for fam in dict.fromkeys(families)]
    return np.nanmax(np.column_stack(groups), axis=1)


def _rule_top2(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Mean of each frame's two highest ranks (one detector alone is not enough)."""
    filled = np.where(np.isfinite(pct), pct, -np.inf)
    top = -np.sort(-filled, axis=1)[:, :2]
    top = np.where(np.isfinite(top), top, np.nan)
    return np.nanmean(top, axis=1)


def _evidence(pct: np.ndarray, floor: float) -> np.ndarray:
    return -np.log(np.clip(1 - pct, floor, 1))


def _rule_tail(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Mean of tail evidence: -log(1 - pct) per detector, so one confident detector counts more
    than several lukewarm ones, but a single noisy top rank does not decide alone."""
    return np.nanmean(_evidence(pct, floor), axis=1)


def _rule_family_tail(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Tail evidence averaged within each family, then summed over families."""
    evidence = _evidence(pct, floor)
    groups = [np.nanmean(evidence[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
              for fam in dict.fromkeys(families)]
    stacked = np.column_stack(groups)
    return np.nansum(stacked, axis=1)


# Ranks below these count as no evidence in the consensus (see `consensus_scores`).
EVIDENCE_FROM = {"embedding": 0.9, "timelapse": 0.9}

CONSENSUS_RULES: dict[str, Callable[[np.ndarray, list[str], float], np.ndarray]] = {
    "mean": _rule_mean,
    "max": _rule_max,
    "family_max": _rule_family_max,
    "top2": _rule_top2,
    "tail": _rule_tail,
    "family_tail": _rule_family_tail,
}


def consensus_scores(pcts: dict[str, np.ndarray], rule: str,
                     n_reference: int | None = None) -> np.ndarray:
    """Combine detectors' percentile ranks (key -> 0..1 per frame, NaN = no opinion).

    `n_reference` is how many frames the percentiles were ranked among (the fit): the top
    frame of n is 1 - 1/(n + 1) of the way up, not certain, so a detector's top rank among 13
    frames counts as far less evidence than among 100,000 (default: the frames given here).

    A detector's ranks below its family's `EVIDENCE_FROM` count as none: p becomes
    (p - start) / (1 - start), floored at 0. The generalists on the CNN
    embedding (embedding and time-lapse families: 0.9) rank frames by any difference, weather and
    light included, so only their top tenth says "junk"; below it their rank is noise that would
    drown a specialist's evidence (on the harder demo renders `lof` ranks a half-hidden person or
    drops on the lens at random).
    """
    if rule not in CONSENSUS_RULES:
        raise KeyError(f"unknown consensus rule {rule!r}; known: {', '.join(CONSENSUS_RULES)}")
    keys = [k for k in pcts if k != CONSENSUS]
    if not keys:
        raise ValueError("consensus needs at least one detector")
    pct = np.column_stack([pcts[k] for k in keys]).astype(float)
    start = np.array([EVIDENCE_FROM.get(DETECTORS[k].family, 0.0) for k in keys])
    pct = np.clip((pct - start) / (1 - start), 0, 1)  # NaN stays NaN
    families = [DETECTORS[k].family for k in keys]
    floor = 1.0 / ((n_reference or len(pct)) + 1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = CONSENSUS_RULES[rule](pct, families, floor)
    return np.asarray(out, dtype=float)


@dataclass
class Consensus:
    """The fitted consensus: which detectors, which rule, and its fit score distribution."""

    keys: list[str]
    rule: str
    contamination: float
    reference_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    threshold_: float = np.inf
    n_reference_: int | None = None

    def fit(self, pcts: dict[str, np.ndarray]) -> np.ndarray:
        self.n_reference_ = len(next(iter(pcts.values()))) if pcts else None
        scores = self.score(pcts)
        finite = scores[np.isfinite(scores)]
        self.reference_ = np.sort(finite)
        self.threshold_ = float(np.quantile(finite, 1 - self.contamination)) if len(finite) else np.inf
        return scores

    def score(self, pcts: dict[str, np.ndarray]) -> np.ndarray:
        # runs fitted before n_reference_ existed used a fixed floor of 1e-4
        n_reference = getattr(self, "n_reference_", None) or 9999
        return consensus_scores({k: pcts[k] for k in self.keys}, self.rule, n_reference)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        out = np.full(len(scores), np.nan)
        ok = np.isfinite(scores)
        if len(self.reference_):
            out[ok] = np.searchsorted(self.reference_, scores[ok], side="right") / len(self.reference_)
        return out

    def predict_scores(self, scores: np.ndarray) -> np.ndarray:
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold_
