"""A run's fitted state, and the one way frames are scored against it (`FittedRun.score`).

`analyze` fits a run's projection, neighbour index, clusterer, map, detectors and consensus
(and `learned`, where the user's reviews allow) and keeps them in a `FittedRun`; it scores the
fit's frames with `FittedRun.score(batch, of_fit=True)` and saves the run pickled
(`to_bytes`) in the store. `score-new` loads it
(`from_bytes`) and scores new frames with `FittedRun.score(batch)`: the same percentiles,
consensus and flags, through the same code, so a frame of the fit gets the scores it got in
the run.

Every class pickled in a fitted run carries a format version (`pipeline.versioned`); a pickle
of an older format is upgraded by its class or refused with a message that says to analyse
again. Pickles made before the detectors became a package name the modules their classes
lived in then; `from_bytes` finds them where they live now (`_MOVED`).
"""

from __future__ import annotations

import io
import pickle
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import __version__
from pipeline.detectors import (
    CONSENSUS,
    DETECTORS,
    Consensus,
    Detector,
    FrameBatch,
    counted_ranks,
)
from pipeline.detectors.background.alignment import Alignment
from pipeline.detectors.background.eigen import BackgroundModel, TimeOfDayNoise
from pipeline.detectors.learned import LEARNED, Learned
from pipeline.neighbors import NeighborIndex
from pipeline.projection import RegionProjection, project
from pipeline.versioned import Versioned
from store.causes import cause_key

N_TABLE_NEIGHBORS = 8  # rows per frame in the `neighbors` table


@dataclass
class RunScores:
    """Every detector's, every cause's (`cause:<cause>`) and the consensus' scores of a batch's
    frames: `scores` (higher = more abnormal; NaN: no score), `pcts` (0..1 rank among the
    fit's scores) and `flags` (is_outlier), each keyed by detector, in the order of
    `frame_ids`."""

    frame_ids: np.ndarray
    scores: dict[str, np.ndarray]
    pcts: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]

    def rows(self, run_id: int) -> pd.DataFrame:
        """The `outlier_scores` rows (long form: one per detector and frame)."""
        return pd.concat(list(self.rows_by_detector(run_id)), ignore_index=True)

    def pop_table(self, key: str, run_id: int) -> pa.Table:
        """Detector `key`'s `outlier_scores` rows as an Arrow table (the rows `rows` has for it:
        a score that is not finite, or a missing percentile, is null), forgetting its arrays:
        `analyze` writes a run of millions of frames one detector at a time and lets go of
        each as it goes."""
        s, pct, flag = self.scores.pop(key), self.pcts.pop(key), self.flags.pop(key)
        n = len(self.frame_ids)
        return pa.table(
            {
                "run_id": pa.array(np.full(n, run_id, dtype=np.int64)),
                "detector": pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(n, dtype=np.int32)), pa.array([key], pa.string())
                ),
                "frame_id": pa.array(np.asarray(self.frame_ids, dtype=np.int64)),
                "score": pa.array(np.where(np.isfinite(s), s, np.nan), from_pandas=True),
                "score_pct": pa.array(np.asarray(pct, dtype=np.float64), from_pandas=True),
                "is_outlier": pa.array(np.asarray(flag, dtype=bool)),
            }
        )

    def rows_by_detector(self, run_id: int) -> Iterator[pd.DataFrame]:
        """The same rows, one detector at a time: written so, a run of millions of frames
        never holds every detector's rows at once."""
        for key, s in self.scores.items():
            yield pd.DataFrame(
                {
                    "run_id": run_id,
                    "detector": key,
                    "frame_id": self.frame_ids,
                    "score": np.where(np.isfinite(s), s, np.nan),
                    "score_pct": self.pcts[key],
                    "is_outlier": self.flags[key],
                }
            )


@dataclass
class FittedRun(Versioned):
    """Everything needed to score new frames against a run without refitting (pickled)."""

    run_id: int
    model: str
    scaler: Any
    pca: Any
    n_dims: int
    index: NeighborIndex
    detectors: dict[str, Detector]
    consensus: Consensus
    clusterer: Any
    cluster_of_fit: np.ndarray  # cluster of each fit frame (same order as index)
    too_far_distance: float  # nearest-fit-frame distance beyond which a frame is far
    versions: dict[str, str]
    map_kind: str = "pca"
    mapper: Any = None
    lat: float | None = None  # the camera's place when fitted (the sun's position)
    lon: float | None = None
    regions: RegionProjection | None = None  # each region's own PCA space (a model with a grid)
    learned: Learned | None = None  # the consensus re-weighed by the user's reviews (or none)
    format_version = 4

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # formats before 2 had no detector that reads the sun's position, before 3 no
        # region spaces, before 4 nothing learned from reviews
        return {"lat": None, "lon": None, "regions": None, "learned": None, **state}

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Raw vectors -> the run's PCA space (float32)."""
        return project(vectors, self.scaler, self.pca, self.n_dims)

    def transform_regions(self, vectors: np.ndarray) -> list[np.ndarray] | None:
        """Raw vectors -> each region's PCA space (`FrameBatch.regions`); None for a run
        without region spaces."""
        return None if self.regions is None else self.regions.transform(vectors)

    def map_xy(self, z: np.ndarray) -> np.ndarray:
        if self.map_kind == "umap" and self.mapper is not None:
            return np.asarray(self.mapper.transform(z), dtype=float)
        return (
            np.asarray(z[:, :2], dtype=float)
            if z.shape[1] >= 2
            else np.column_stack([z[:, 0], np.zeros(len(z))])
        )

    def predict_cluster(self, z: np.ndarray, nn_idx: np.ndarray) -> np.ndarray:
        """k-means: nearest centre; HDBSCAN: the cluster of the nearest fit frame."""
        if hasattr(self.clusterer, "cluster_centers_"):
            return self.clusterer.predict(z[:, : self.clusterer.cluster_centers_.shape[1]])
        return self.cluster_of_fit[nn_idx[:, 0]]

    def score(
        self, batch: FrameBatch, of_fit: bool = False, groups: np.ndarray | None = None
    ) -> RunScores:
        """Every detector's and the consensus' scores of `batch` against the frozen fit, their
        percentile ranks among the fit's scores, and the outlier flags. The batch needs its
        nearest fit frames attached (`self.index.attach(batch, neighbors_needed(...))`).

        `of_fit`: `batch` is the batch the run was fitted on; its scores are the ones the fit
        kept (`decision_scores_`, what `decision_function` would give it again), so they are
        not computed twice.

        `groups` (a label per frame): frames scored together that are not each other's
        context (`serve`: the uploads of several requests); the detectors whose scores depend
        on the other new frames (`uses_batch_frames`) score each group on its own, the others
        the whole batch at once."""
        causes = {cause_key(c): scorer for c, scorer in self.consensus.causes_.items()}
        scorers = {**self.detectors, **causes, CONSENSUS: self.consensus}
        ties = self.consensus.lowest_ties_  # a run fitted before keeps its ranks
        scores: dict[str, np.ndarray] = {}
        pcts: dict[str, np.ndarray] = {}
        for key, det in self.detectors.items():
            if of_fit:
                scores[key] = det.decision_scores_
            elif groups is not None and det.uses_batch_frames:
                scores[key] = np.full(len(batch), np.nan)
                for group in np.unique(groups):
                    rows = np.flatnonzero(groups == group)
                    scores[key][rows] = det.decision_function(batch.take(rows))
            else:
                scores[key] = det.decision_function(batch)
            pcts[key] = det.percentile(scores[key], ties)
        if of_fit:
            by_cause = {c: s.decision_scores_ for c, s in self.consensus.causes_.items()}
            scores_consensus = self.consensus.decision_scores_
        else:
            by_cause, scores_consensus = self.consensus.score_causes(
                counted_ranks(self.detectors, scores, pcts, batch)
            )
        for cause, scorer in self.consensus.causes_.items():
            key = cause_key(cause)
            scores[key] = by_cause[cause]
            pcts[key] = scorer.percentile(scores[key], ties)
        scores[CONSENSUS] = scores_consensus
        pcts[CONSENSUS] = self.consensus.percentile(scores[CONSENSUS], ties)
        if self.learned is not None:
            scorers[LEARNED] = self.learned
            scores[LEARNED] = (
                self.learned.decision_scores_
                if of_fit
                else self.learned.score(pcts, pcts[CONSENSUS], batch.z)
            )
            pcts[LEARNED] = self.learned.percentile(scores[LEARNED], ties)
        flags = {key: scorers[key].predict_scores(s) for key, s in scores.items()}
        return RunScores(batch.frame_ids, scores, pcts, flags)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(artifact: bytes) -> "FittedRun":
        """Unpickle a saved fitted run (any format this version reads or upgrades)."""
        return _Unpickler(io.BytesIO(artifact)).load()


def neighbors_needed(detectors: dict[str, Detector]) -> int:
    """How many nearest fit frames a batch needs attached: the `neighbors` table's and the
    neighbour detectors'."""
    return max([N_TABLE_NEIGHBORS] + [d.n_neighbors_needed for d in detectors.values()])


def neighbor_rows(
    run_id: int,
    ids: np.ndarray,
    dist: np.ndarray,
    idx: np.ndarray,
    fit_ids: np.ndarray,
    k: int = N_TABLE_NEIGHBORS,
) -> pd.DataFrame:
    """The `neighbors` rows (k nearest fit frames of each frame)."""
    k = min(k, dist.shape[1])
    d = dist[:, :k]
    ok = np.isfinite(d)
    rows = np.repeat(np.arange(len(ids)), k).reshape(len(ids), k)
    ranks = np.tile(np.arange(1, k + 1), (len(ids), 1))
    return pd.DataFrame(
        {
            "run_id": run_id,
            "frame_id": ids[rows[ok]],
            "rank": ranks[ok].astype(np.int32),
            "neighbor_id": fit_ids[idx[:, :k][ok]],
            "distance": d[ok].astype(float),
        }
    )


def neighbor_tables(
    run_id: int,
    ids: np.ndarray,
    dist: np.ndarray,
    idx: np.ndarray,
    fit_ids: np.ndarray,
    k: int = N_TABLE_NEIGHBORS,
    frames_per_part: int = 250_000,
) -> Iterator[pa.Table]:
    """The `neighbors` rows of `neighbor_rows`, as Arrow tables of `frames_per_part` frames each
    (2 million rows at a time rather than 24 million at 3 million frames)."""
    for lo in range(0, len(ids), frames_per_part):
        part = neighbor_rows(
            run_id,
            ids[lo : lo + frames_per_part],
            dist[lo : lo + frames_per_part],
            idx[lo : lo + frames_per_part],
            fit_ids,
            k,
        )
        yield pa.Table.from_pandas(part, preserve_index=False)


def library_versions() -> dict[str, str]:
    """The versions a fitted run is saved with (a load with others warns)."""
    import faiss
    import pyod
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "pyod": pyod.__version__,
        "faiss": faiss.__version__,
        "pipeline": __version__,
    }


# Classes that format-0 pickles name by the modules they lived in then.
_MOVED: dict[tuple[str, str], type] = {
    ("pipeline.analyze", "FittedRun"): FittedRun,
    ("pipeline.detectors", "NeighborIndex"): NeighborIndex,
    ("pipeline.detectors", "Consensus"): Consensus,
    ("pipeline.background", "BackgroundModel"): BackgroundModel,
    ("pipeline.background", "TimeOfDayNoise"): TimeOfDayNoise,
    ("pipeline.background", "Alignment"): Alignment,
    **{("pipeline.detectors", cls.__name__): cls for cls in DETECTORS.values()},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        moved = _MOVED.get((module, name))
        return moved if moved is not None else super().find_class(module, name)
