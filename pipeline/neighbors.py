"""The run's nearest-neighbour index: each frame's nearest fit frames in the PCA space.

One k-NN pass serves the `lof` and `knn` detectors (through `FrameBatch.nn_dist` / `nn_idx`),
the `neighbors` table and `score-new` (a new frame's nearest fit frames, its cluster under
HDBSCAN, whether it is too far from everything the run saw). The index is pickled with the
fitted run; FAISS indexes are serialised to bytes for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.versioned import Versioned

if TYPE_CHECKING:
    from pipeline.detectors import FrameBatch


class NeighborIndex(Versioned):
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

        state = super().__getstate__()
        if "index_" in state and state.get("kind_") != "kdtree":
            state["index_"] = faiss.serialize_index(state["index_"])
        return state

    def __setstate__(self, state):
        import faiss

        super().__setstate__(state)
        if hasattr(self, "index_") and self.kind_ != "kdtree":
            self.index_ = faiss.deserialize_index(self.index_)
            if self.kind_ == "ivf":
                self.index_.nprobe = min(24, self.index_.nlist)
