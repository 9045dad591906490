"""The run's projections of the embedding vectors: the PCA space every embedding detector reads,
and the region spaces of a model that describes parts of the view separately.

`fit_projection` standardises and fits a PCA on a sample of the vectors, keeping the dims that
explain `pca_variance` (at most `pca_max_dims`, and a fifth of the frames); `project` applies it
as one affine map. `FittedRun.transform` is `project`, so a frame of the fit gets the same point
from `score-new`.

A model with a grid (`ModelSpec.grid`: the default `vgg16-hed-grid` average-pools VGG16's
block5 over 3x3 cells, flattened row by row, 512 values a cell) describes each part of the view
in its own block of the vector. The run's PCA space mixes the blocks, and its first components
are whatever varies most together: on Kat Kam, whose view is two thirds sky, the sky's cells.
`RegionProjection` projects each cell's block on its own (the same rule, at most
`REGION_MAX_DIMS` dims a cell), so the `regions` detector can ask how rare each part of the
view is against the same part of the other frames (`pipeline.detectors.embedding`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from pipeline.versioned import Versioned

if TYPE_CHECKING:
    from pipeline.settings import Settings

#: The most PCA dims a region keeps. 32 of a cell's 512 hold 0.88 of its variance on Kat Kam
#: and 0.98 on the demo; 8 and 16 ranked Kat Kam's and the demo's junk lower, 48 and 64 no
#: higher, at 2x the memory (docs/experiments/2026-12-05-rarity-by-region.md).
REGION_MAX_DIMS = 32


def fit_projection(sample: np.ndarray, n_frames: int, settings: Settings):
    """Standardise, then PCA keeping `pca_variance` (bounded by `pca_max_dims` and n/5), fitted
    on `sample` (rows of the run's `n_frames` frames); returns (scaler, pca, n_dims)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    m, dim = sample.shape
    scaler = StandardScaler().fit(sample)
    scaled = scaler.transform(sample.astype(np.float64, copy=False))
    cap = int(max(2, min(settings.pca_max_dims, dim, n_frames // 5, m - 1)))
    # covariance_eigh is fastest for many frames of few dims; at 4,608-d its d x d covariance
    # took 3.4x the CPU of the randomized solver that "auto" picks there (41 s against 12 s
    # for 20,000 frames), which found the same 64 components (explained variance to 4 decimals)
    solver = "covariance_eigh" if m > 4 * dim and dim <= 1024 else "auto"
    pca = PCA(n_components=cap, svd_solver=solver, random_state=settings.random_state).fit(scaled)
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    n_dims = int(min(cap, np.searchsorted(cumulative, settings.pca_variance) + 1))
    n_dims = max(2, n_dims) if cap >= 2 else cap
    return scaler, pca, n_dims


def project(vectors: np.ndarray, scaler, pca, n_dims: int) -> np.ndarray:
    """Raw vectors -> the fitted PCA space (float32); `FittedRun.transform` is this too, so a
    frame of the fit gets the same point from `score-new`.

    Standardising and projecting are one affine map, applied as one product: 3x less CPU than
    the scaler's and the PCA's transforms in turn, with one float64 copy of the batch. It is done
    in float64 so a frame's point does not depend on the batch it came in (float32 products
    differ in the last bits with the row's place in the batch, which flipped near-tied ranks).
    """
    components = pca.components_[:n_dims]
    weights = (components / scaler.scale_).T
    offset = (scaler.mean_ / scaler.scale_ + pca.mean_) @ components.T
    z = np.asarray(vectors, dtype=np.float64) @ weights - offset
    return np.ascontiguousarray(z, dtype=np.float32)


def region_count(model: str) -> int:
    """How many regions of the view `model`'s vectors describe separately: grid x grid for a
    model with a grid, else 1 (the whole frame, and no region spaces)."""
    from pipeline.errors import InputError
    from pipeline.models.registry import get_model

    try:
        grid = get_model(model).grid
    except InputError:  # a model the registry no longer knows: its vectors are one region
        return 1
    return int(grid) ** 2 if grid else 1


class RegionProjection(Versioned):
    """Each region's block of the vector standardised and projected on its own: `fit` on a
    sample of the vectors, `transform` gives one float32 array [n, dims] per region."""

    format_version = 1

    def __init__(self, n_regions: int, max_dims: int = REGION_MAX_DIMS):
        self.n_regions = n_regions
        self.max_dims = max_dims

    def _blocks(self, dim: int) -> list[slice]:
        if dim % self.n_regions:
            raise ValueError(f"{dim}-d vectors do not split into {self.n_regions} regions")
        width = dim // self.n_regions
        return [slice(r * width, (r + 1) * width) for r in range(self.n_regions)]

    def fit(self, sample: np.ndarray, n_frames: int, settings: Settings) -> "RegionProjection":
        capped = dataclasses.replace(
            settings, pca_max_dims=min(settings.pca_max_dims, self.max_dims)
        )
        self.blocks_ = self._blocks(sample.shape[1])
        self.parts_ = [fit_projection(sample[:, b], n_frames, capped) for b in self.blocks_]
        return self

    @property
    def dims(self) -> list[int]:
        return [n_dims for _, _, n_dims in self.parts_]

    def transform(self, vectors: np.ndarray) -> list[np.ndarray]:
        return [
            project(vectors[:, b], scaler, pca, n_dims)
            for b, (scaler, pca, n_dims) in zip(self.blocks_, self.parts_)
        ]
