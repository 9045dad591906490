"""The run's nearest-neighbour index: each frame's nearest fit frames in the PCA space.

One k-NN pass serves the `lof` and `knn` detectors (through `FrameBatch.nn_dist` / `nn_idx`),
the `neighbors` table and `score-new` (a new frame's nearest fit frames, its cluster under
HDBSCAN, whether it is too far from everything the run saw). The index is pickled with the
fitted run; FAISS indexes are serialised to bytes for it.

Exact search is used where it is cheap (a KD-tree in few dims, all pairs up to `exact_max`
frames); above, an inverted-file index (IVF) keeps the pass about linear in the frames.
`calibrate` measures its recall against exact search on a seeded sample of the frames and
probes more lists until it reaches a target; analyze records the recall with the run. An IVF
index keeps its frames' points as float32 (`codes` 'flat') or as half floats ('fp16', FAISS's
scalar quantiser: half the bytes, distances within about 1e-4, the same recall), which
`regions` uses for its nine indexes (docs/PERFORMANCE.md, "Analyze"). 8 bits a dim would keep a
quarter, but the regions' points are heavy-tailed (Kat Kam's: excess kurtosis 3-85) and their
min-max codes lost up to 5 points of recall that no probing gets back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.versioned import Versioned

if TYPE_CHECKING:
    from pipeline.detectors import FrameBatch

IVF_NPROBE = 24  # lists an inverted-file index probes before `calibrate` asks for more


class NeighborIndex(Versioned):
    """Nearest fit frames in the PCA space: exact (KD-tree or FAISS flat) or, for big runs, IVF.

    `kind` 'auto' uses a KD-tree (exact, about n log n) when the PCA space has at most
    `kdtree_max_dims` dims and more than 5,000 frames, else exact FAISS search up to `exact_max`
    frames and an inverted-file index (about 4*sqrt(n) lists, trained on at most 40 frames per
    list, 24 probed until `calibrate` says more) above, where exact all-pairs search grows as
    n^2. Distances are Euclidean. Queries exclude the frame itself (same frame_id), so a fit
    frame queried again gets the same neighbours it had in the fit.
    """

    format_version = 3  # 2: nprobe_, recall_ and recall_frames_ (calibrate); 3: codes

    def __init__(
        self,
        kind: str = "auto",
        exact_max: int = 100_000,
        kdtree_max_dims: int = 12,
        random_state: int = 0,
        codes: str = "flat",
    ):
        self.kind = kind
        self.exact_max = exact_max
        self.kdtree_max_dims = kdtree_max_dims
        self.random_state = random_state
        self.codes = codes  # how an IVF index keeps its points: 'flat' (float32) or 'fp16'

    def _ivf(self, quantizer, dim: int, n_lists: int):
        import faiss

        if self.codes == "flat":
            return faiss.IndexIVFFlat(quantizer, dim, n_lists)
        if self.codes == "fp16":
            qtype = faiss.ScalarQuantizer.QT_fp16
            return faiss.IndexIVFScalarQuantizer(quantizer, dim, n_lists, qtype)
        raise ValueError(f"unknown neighbour index codes {self.codes!r}: use flat or fp16")

    def fit(self, z: np.ndarray, frame_ids: np.ndarray) -> "NeighborIndex":
        import faiss

        z = np.ascontiguousarray(z, dtype=np.float32)
        n, dim = z.shape
        kind = self.kind
        if kind == "auto":
            if dim <= self.kdtree_max_dims and n > 5_000:
                kind = "kdtree"  # exact, n log n in few dims (all-pairs flat search is n^2)
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
            index = self._ivf(quantizer, dim, n_lists)
            rng = np.random.default_rng(self.random_state)
            # 40 frames per list (FAISS asks for at least 39): training grows as n^1.5 and
            # was the slowest part at 300k frames with FAISS's 256
            sample = z[np.sort(rng.choice(n, size=min(n, 40 * n_lists), replace=False))]
            index.cp.seed = self.random_state
            index.train(sample)
            index.nprobe = min(IVF_NPROBE, n_lists)
        else:
            raise ValueError(
                f"unknown neighbour index {self.kind!r}: use auto, exact, kdtree or ivf"
            )
        if kind != "kdtree":
            index.add(z)
        self.kind_ = kind
        self.index_ = index
        self.frame_ids_ = np.asarray(frame_ids, dtype=np.int64)
        self.n_ = n
        self.nprobe_ = index.nprobe if kind == "ivf" else None
        self.recall_ = 1.0 if kind != "ivf" else None  # exact kinds find every neighbour
        self.recall_frames_ = 0
        return self

    def calibrate(
        self,
        z: np.ndarray,
        frame_ids: np.ndarray,
        k: int,
        target: float = 0.95,
        sample: int = 1_000,
    ) -> "NeighborIndex":
        """Measure an approximate index's recall against exact search on a seeded sample of
        `sample` of the fit frames (`z`, `frame_ids`: the fit) and probe twice as many lists
        until it reaches `target` (or every list is probed). Recall is the share of a frame's
        k neighbours found that are no farther than its exact k-th nearest frame (so ties
        count as found), averaged over the sample; kept in `recall_`. Exact kinds: 1.0. A
        neighbour found counts by its exact distance, not the one the index returns (half-float
        codes return it within about 1e-4)."""
        if self.kind_ != "ivf":
            return self
        import faiss

        z = np.ascontiguousarray(z, dtype=np.float32)
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        k = min(k, self.n_ - 1)
        rng = np.random.default_rng(self.random_state)
        rows = np.sort(rng.choice(len(z), size=min(sample, len(z)), replace=False))
        # the exact k + 1 nearest (the frame itself among them), by brute force on the sample
        d2, _ = faiss.knn(z[rows], z, k + 1)
        kth = np.sqrt(np.maximum(d2[:, k], 0))  # the exact k-th nearest other frame
        while True:
            returned, idx = self.query(z[rows], frame_ids[rows], k)
            exact = np.sqrt(((z[rows][:, None, :] - z[idx]) ** 2).sum(axis=2))
            dist = np.where(np.isfinite(returned), exact, np.inf)  # inf: a neighbour not found
            found = (dist <= kth[:, None] * (1 + 1e-5) + 1e-12).sum(axis=1)
            recall = float(np.minimum(found, k).mean() / k)
            if recall >= target or self.index_.nprobe >= self.index_.nlist:
                break
            self.index_.nprobe = min(2 * self.index_.nprobe, self.index_.nlist)
        self.nprobe_ = int(self.index_.nprobe)
        self.recall_ = recall
        self.recall_frames_ = len(rows)
        return self

    def query(
        self, z: np.ndarray, frame_ids: np.ndarray, k: int, chunk: int = 20_000
    ) -> tuple[np.ndarray, np.ndarray]:
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
                self.index_.nprobe = min(self.nprobe_, self.index_.nlist)

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 1 probed 24 lists and measured no recall
        # format 2 kept every IVF index's points flat
        state = {"codes": "flat", **state}
        if "index_" not in state or version >= 2:
            return state
        approximate = state.get("kind_") == "ivf"
        return {
            "nprobe_": IVF_NPROBE if approximate else None,
            "recall_": None if approximate else 1.0,
            "recall_frames_": 0,
            **state,
        }
