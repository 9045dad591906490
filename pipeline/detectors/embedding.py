"""The embedding family: `iforest`, `lof`, `regions`, `knn`, `ecod`, `copod`, `hbos` on the run's
PCA space (`regions` on each region's own).

`iforest` is PyOD's model. `lof` and `knn` follow PyOD's definitions (LOF of Breunig et al.;
kNN 'largest' distance) but read one shared exact neighbour index (`pipeline.neighbors`), so one
k-NN pass serves lof, knn and the neighbours table. `ecod` and `copod` are PyOD's formulas with
the per-dimension ECDFs frozen at fit time (PyOD refits them on train + new data, which would
change scores of new frames with the batch); `hbos` is PyOD's static-bin formula vectorised
(PyOD scores frame by frame in Python). Tests check all five equal PyOD on the fit.

They are generalists: they rank frames by any difference, weather and light included, so the
consensus counts only their top tenth (`evidence_from`). `lof` and `regions` need a density
to compare with: fitted on fewer than `min_frames` frames (30, as `background` and
`alignment`) every frame's neighbourhood is most of the archive, and they score nothing. And
they learn it from the frames at the camera's usual pace (`usual_pace`): a burst (a frame a
minute for two hours from a camera that takes one an hour) is the densest place in the vector
space, and the ordinary frames beside it would rank as the rarest of all.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import skew

from pipeline.detectors.base import Detector, register
from pipeline.neighbors import NeighborIndex


class EmbeddingDetector(Detector):
    """The family's facts: on the PCA space, a generalist whose top tenth is evidence."""

    family = "embedding"
    cause = "rarity"
    plain_cause = "unusual"  # it knows a frame is rare, not why
    needs: frozenset[str] = frozenset({"embeddings"})
    evidence_from = 0.9


@register
class IForestDetector(EmbeddingDetector):
    key = "iforest"
    summary = "Isolation Forest (PyOD): frames isolated by few random splits"
    order = 30

    def __init__(
        self,
        contamination: float = 0.05,
        n_estimators: int = 100,
        max_samples: int | str = "auto",
        random_state: int = 0,
    ):
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def _fit(self, batch):
        from pyod.models.iforest import IForest

        self.model_ = IForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            contamination=self.contamination,
            random_state=self.random_state,
        )
        self.model_.fit(batch.z)

    def decision_function(self, batch):
        return self.model_.decision_function(batch.z).astype(float)


class _NeighborDetector(EmbeddingDetector):
    """Reads `batch.nn_dist` / `batch.nn_idx` (the shared index); stores the fit's own."""

    @property
    def n_neighbors_needed(self) -> int:  # type: ignore[override]
        return self.n_neighbors

    def _fit(self, batch):
        if batch.nn_dist is None or batch.nn_dist.shape[1] < self.n_neighbors:
            raise ValueError(
                f"{self.key} needs {self.n_neighbors} neighbours attached to the batch"
            )


def lof_fit(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit frames' k-distances and local reachability densities (LOF's state) from their k
    nearest other fit frames (`dist`, `idx`)."""
    dist = dist[:, :k].astype(np.float64)
    idx = idx[:, :k]
    k_distance = dist[:, k - 1]
    reach = np.maximum(dist, k_distance[idx])
    return k_distance, 1.0 / (reach.mean(axis=1) + 1e-10)


def lof_scores(
    dist: np.ndarray, idx: np.ndarray, k: int, k_distance: np.ndarray, lrd_fit: np.ndarray
) -> np.ndarray:
    """LOF of frames whose k nearest fit frames are `dist`, `idx`, against the fit's state."""
    dist = dist[:, :k].astype(np.float64)
    idx = idx[:, :k]
    reach = np.maximum(dist, k_distance[idx])
    lrd = 1.0 / (reach.mean(axis=1) + 1e-10)
    return lrd_fit[idx].mean(axis=1) / lrd


def paced_lof(
    points: np.ndarray,
    frame_ids: np.ndarray,
    paced: np.ndarray,
    k: int,
    index_kind: str,
    random_state: int,
    codes: str = "flat",
) -> tuple[NeighborIndex, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """LOF learned from the frames at the camera's usual pace (`paced`, `usual_pace`) and
    every frame's LOF against them: (their neighbour index, their LOF state, every frame's
    LOF). A paced frame's neighbours are the other paced frames, so its LOF is the one it
    would have had in a fit of those alone; with every frame paced, it is the LOF of a fit of
    them all."""
    every = bool(paced.all())  # a steady camera: no copy of its points
    fit_points = points if every else points[paced]
    fit_ids = frame_ids if every else frame_ids[paced]
    index = NeighborIndex(index_kind, random_state=random_state, codes=codes)
    index.fit(fit_points, fit_ids).calibrate(fit_points, fit_ids, k)
    dist, idx = index.query(fit_points, fit_ids, k)
    state = lof_fit(dist, idx, k)
    lof = np.empty(len(points))
    lof[paced] = lof_scores(dist, idx, k, *state)  # each frame queried once
    del dist, idx
    if not every:
        rest = ~paced
        lof[rest] = lof_scores(*index.query(points[rest], frame_ids[rest], k), k, *state)
    return index, state, lof


class _DensityDetector(_NeighborDetector):
    """A local density needs neighbourhoods that are not the whole archive: fitted on fewer
    than `min_frames` frames it scores nothing (NaN), as `background` and `alignment` do. (On
    the 13 real garden frames of ../shared/realdata every frame's k nearest are all the others,
    and `lof` ranked the five with the shutters closed below the open ones: ROC-AUC 0.11.)

    Nor can a density be learned from a burst: where the camera took frames far faster than
    its usual pace for a while, the density is learned from the frames at its usual pace alone
    (`usual_pace`) and every frame is scored against them, through an index of those frames
    the detector keeps (`paced_index_`; None when every frame is at the usual pace, and the
    run's shared neighbours serve)."""

    in_consensus = True
    unscorable = "(it needs at least {min_frames} frames to learn what is usual)"
    format_version = 3

    def _upgrade(self, state: dict, version: int) -> dict:
        # format 1 (before `min_frames`): it scored every fit; format 2 (before
        # `paced_index_`): every fit frame was in the density
        return {"min_frames": 0, "paced_index_": None, **state}

    def _enough(self, batch) -> bool:
        return len(batch) >= self.min_frames


@register
class LOFDetector(_DensityDetector):
    key = "lof"
    summary = "Local Outlier Factor (PyOD/scikit-learn definition, k=20)"
    order = 20

    def __init__(
        self,
        contamination: float = 0.05,
        n_neighbors: int = 20,
        min_frames: int = 30,
        index_kind: str = "auto",
        random_state: int = 0,
    ):
        self.contamination = contamination
        self.n_neighbors = n_neighbors
        self.min_frames = min_frames
        self.index_kind = index_kind  # for its own index of the frames at the usual pace
        self.random_state = random_state

    def _fit(self, batch) -> np.ndarray | None:  # a paced fit scores every frame as it learns
        super()._fit(batch)
        self.k_distance_, self.lrd_, self.paced_index_ = None, None, None
        if not self._enough(batch):
            return None
        paced = batch.paced
        if paced.all():
            self.k_distance_, self.lrd_ = lof_fit(batch.nn_dist, batch.nn_idx, self.n_neighbors)
            return None
        self.paced_index_, (self.k_distance_, self.lrd_), scores = paced_lof(
            batch.z, batch.frame_ids, paced, self.n_neighbors, self.index_kind, self.random_state
        )
        return scores

    def decision_function(self, batch):
        if self.lrd_ is None:
            return np.full(len(batch), np.nan)
        k = self.n_neighbors
        if self.paced_index_ is None:
            found = batch.nn_dist, batch.nn_idx
        else:
            found = self.paced_index_.query(batch.z, batch.frame_ids, k)
        return lof_scores(*found, k, self.k_distance_, self.lrd_)


@register
class RegionLOFDetector(_DensityDetector):
    """LOF in each region of the view against the same region of the fit's frames, as a rank
    among the fit's LOFs of that region; a frame scores its rarest region's rank.

    The run's PCA space gives the parts of the view that vary most together the most say: on
    Kat Kam, two thirds sky, `lof`'s top tenth is banks of cloud and clear blue afternoons
    (its ranking of the labelled sample is at chance, 0.47). Each region in its own space
    (`pipeline.projection.RegionProjection`: the default model's 3x3 grid) and ranked against
    itself, a quay that is rare counts as much as a sky that is. A model without regions
    (`batch.regions` None) is one region, the whole frame, read from the run's shared
    neighbour index: its ranking is `lof`'s. The consensus counts both, their evidence averaged
    (one family): a fox or a bird in one cell competes with every ordinary frame's rarest cell,
    and over the whole frame `lof` still sees it.

    Each region has its own neighbour index (`pipeline.neighbors.NeighborIndex`, exact up to
    100,000 frames, IVF with half-float codes above: nine indexes of 32 dims at 750,000 frames
    are 0.43 GB so, 0.86 GB as float32), kept with the fitted run so `score-new` ranks a new
    frame's regions the same way."""

    key = "regions"
    summary = (
        "LOF of the frame's rarest region: each region of the view (the default model's 3x3 "
        "grid) against the same region of other frames, as a rank (0-1); the whole frame's "
        "LOF rank for a model without regions"
    )
    order = 21
    needs = frozenset({"embeddings", "regions"})

    def __init__(
        self,
        contamination: float = 0.05,
        n_neighbors: int = 20,
        index_kind: str = "auto",
        random_state: int = 0,
        min_frames: int = 30,
    ):
        self.contamination = contamination
        self.n_neighbors = n_neighbors
        self.index_kind = index_kind
        self.random_state = random_state
        self.min_frames = min_frames

    def fit(self, batch):
        self._check_contamination()
        k = self.n_neighbors
        if not self._enough(batch):
            self.indexes_, self.states_, self.sorted_lofs_ = None, None, None
            self.paced_index_ = None
            self.decision_scores_ = np.full(len(batch), np.nan)
            self._process_decision_scores()
            return self
        paced = batch.paced
        self.paced_index_ = None
        if batch.regions is None:
            super()._fit(batch)  # the shared index's neighbours must be attached
            self.indexes_ = None
            if paced.all():
                self.states_ = [lof_fit(batch.nn_dist, batch.nn_idx, k)]
                lofs = [lof_scores(batch.nn_dist, batch.nn_idx, k, *self.states_[0])]
            else:
                self.paced_index_, state, lof = paced_lof(
                    batch.z, batch.frame_ids, paced, k, self.index_kind, self.random_state
                )
                self.states_, lofs = [state], [lof]
        else:
            self.indexes_, self.states_, lofs = [], [], []
            for points in batch.regions:  # one region's neighbours at a time (0.18 GB at 750k)
                index, state, lof = paced_lof(
                    points, batch.frame_ids, paced, k, self.index_kind, self.random_state, "fp16"
                )
                self.indexes_.append(index)
                self.states_.append(state)
                lofs.append(lof)
        # a frame's rank in a region: among the LOFs of the frames the density was learned from
        self.sorted_lofs_ = [np.sort(lof[paced]) for lof in lofs]
        self.decision_scores_ = self._rarest(lofs)
        self._process_decision_scores()
        return self

    def _rarest(self, lofs: list[np.ndarray]) -> np.ndarray:
        """Each frame's highest rank among its regions: the share of the fit's frames whose
        LOF in that region is at most the frame's."""
        ranks = [
            np.searchsorted(ref, lof, side="right") / len(ref)
            for ref, lof in zip(self.sorted_lofs_, lofs)
        ]
        return np.max(np.column_stack(ranks), axis=1)

    def decision_function(self, batch):
        k = self.n_neighbors
        if self.states_ is None:  # fitted on too few frames
            return np.full(len(batch), np.nan)
        if self.indexes_ is None and self.paced_index_ is not None:
            found = [self.paced_index_.query(batch.z, batch.frame_ids, k)]
        elif self.indexes_ is None:
            found = [(batch.nn_dist, batch.nn_idx)]
        else:
            if batch.regions is None or len(batch.regions) != len(self.indexes_):
                raise ValueError(
                    f"{self.key} was fitted on {len(self.indexes_)} regions; these frames "
                    "come without their region points (FittedRun.transform_regions)"
                )
            found = [
                index.query(points, batch.frame_ids, k)
                for index, points in zip(self.indexes_, batch.regions)
            ]
        return self._rarest(
            [lof_scores(d, i, k, *state) for (d, i), state in zip(found, self.states_)]
        )


@register
class KNNDetector(_NeighborDetector):
    key = "knn"
    summary = "distance to the k-th nearest frame (PyOD KNN 'largest', k=5)"
    order = 40

    def __init__(self, contamination: float = 0.05, n_neighbors: int = 5):
        self.contamination = contamination
        self.n_neighbors = n_neighbors

    def decision_function(self, batch):
        return batch.nn_dist[:, self.n_neighbors - 1].astype(float)


class _FrozenECDF(EmbeddingDetector):
    """PyOD's ECOD/COPOD tail probabilities with the per-dimension ECDFs frozen at fit."""

    def _fit(self, batch):
        self.sorted_ = np.sort(np.asarray(batch.z, dtype=np.float32), axis=0)  # z is float32
        self.skew_sign_ = np.sign(np.nan_to_num(skew(batch.z.astype(np.float64), axis=0)))

    def _tails(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each value's left and right tail in its fit column (how many fit values are at or
        below it, at or above it) as -log of their share, and the skew-aware one of the two.
        Each column is searched as one contiguous run with the values in order: a strided
        column searched for values in frame order missed the cache on nearly every step
        (750,000 x 58: 95 s against 5.5 s; docs/PERFORMANCE.md)."""
        n = self.sorted_.shape[0]
        z = np.asarray(z, dtype=np.float32)
        left = np.empty(z.shape)
        right = np.empty(z.shape)
        for j in range(z.shape[1]):
            col = np.ascontiguousarray(self.sorted_[:, j])
            order = np.argsort(z[:, j])
            values = z[order, j]
            left[order, j] = np.searchsorted(col, values, side="right")
            right[order, j] = n - np.searchsorted(col, values, side="left")
        floor = 0.5  # new frames beyond every fit value: half a frame, not log(0)
        u_l = -np.log(np.maximum(left, floor) / n)
        u_r = -np.log(np.maximum(right, floor) / n)
        u_skew = u_l * -np.sign(self.skew_sign_ - 1) + u_r * np.sign(self.skew_sign_ + 1)
        return u_l, u_r, u_skew


@register
class ECODDetector(_FrozenECDF):
    key = "ecod"
    summary = "ECOD (PyOD formula): tail probabilities per PCA dimension, skew-aware"
    order = 50

    def decision_function(self, batch):
        u_l, u_r, u_skew = self._tails(batch.z)
        return np.maximum(np.maximum(u_l, u_r), u_skew).sum(axis=1)


@register
class COPODDetector(_FrozenECDF):
    key = "copod"
    summary = "COPOD (PyOD formula): empirical copula tail probabilities"
    order = 60

    def decision_function(self, batch):
        u_l, u_r, u_skew = self._tails(batch.z)
        return np.maximum(u_skew, (u_l + u_r) / 2).sum(axis=1)


@register
class HBOSDetector(EmbeddingDetector):
    key = "hbos"
    summary = "Histogram-based outlier score (PyOD formula): rare values per PCA dimension"
    order = 70

    def __init__(
        self, contamination: float = 0.05, n_bins: int = 20, alpha: float = 0.1, tol: float = 0.5
    ):
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
                batch.z[:, i], bins=self.n_bins, density=True
            )

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
            score = np.where(
                inds == 0,
                np.where(below, log_density[0], log_density.min()),
                np.where(
                    inds == self.n_bins + 1,
                    np.where(above, log_density[-1], log_density.min()),
                    inner,
                ),
            )
            total += score
        return -total
