"""The `pixels` family: a non-CNN baseline that never imports TensorFlow, for comparison and
fast tests. A frame decoded at 64 px becomes a tiny 16x16 RGB image (0..1) plus a 16-bin
histogram per RGB channel (shares, summing to 1 per channel): 16*16*3 + 3*16 = 816 values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.models.embedder import Embedder
from pipeline.models.registry import Availability, ModelSpec

INPUT = 64  # decoded size; the histogram is taken at this size
TINY = 16  # the tiny image is the 64 px image averaged in 4x4 blocks
BINS = 16  # histogram bins per RGB channel
DIM = TINY * TINY * 3 + 3 * BINS


class PixelsEmbedder(Embedder):
    """Tiny 16x16 RGB image (0..1) plus a 16-bin histogram per channel (shares, sum 1 each)."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        n, size = images.shape[0], images.shape[1]
        block = size // TINY
        tiny = images.reshape(n, TINY, block, TINY, block, 3).mean(axis=(2, 4))
        tiny = (tiny / 255.0).reshape(n, -1)
        bins = (images.reshape(n, -1, 3).astype(np.int32) * BINS) // 256  # 0..15
        offsets = (np.arange(n)[:, None] * 3 + np.arange(3)[None, :]) * BINS
        flat = (bins.transpose(0, 2, 1) + offsets[:, :, None]).reshape(-1)
        hist = np.bincount(flat, minlength=n * 3 * BINS).reshape(n, 3 * BINS)
        hist = hist / float(size * size)
        return np.concatenate([tiny, hist], axis=1).astype(np.float32)


class Pixels:
    """The pixels family (see `registry.Family`): no weights, no TensorFlow."""

    name = "pixels"
    takes_weights_file = False
    precisions = ("float32",)

    def available(self, spec: ModelSpec) -> Availability:
        return Availability(True, "needs no weights")

    def build(
        self, spec: ModelSpec, *, weights: Path | None, pretrained: bool, precision: str
    ) -> Embedder:
        return PixelsEmbedder(spec, DIM, INPUT, "none (computed from the pixels)")


PIXELS = Pixels()
