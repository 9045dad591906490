"""A built model: `Embedder.embed(uint8 [n, s, s, 3] RGB) -> float32 [n, dim]`, and the Keras one.

`Embedder` is what every family's `build()` returns; `KerasEmbedder` wraps a Keras model whose
output (pooled when it is a feature map) is the embedding, with its preprocessing. The
preprocessing functions shared by several families are here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from pipeline.models.registry import ModelSpec

# Caffe-style means (BGR order): Keras' VGG16/ResNet50 ImageNet ones, and HED's BSDS500 ones.
IMAGENET_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)


class Embedder:
    """A built model: `embed(uint8 [n, s, s, 3]) -> float32 [n, dim]`; `weights` says whence,
    `precision` at which precision its maths runs (the vectors are float32 whatever it is)."""

    def __init__(
        self, spec: "ModelSpec", dim: int, input_size: int, weights: str, precision: str = "float32"
    ):
        self.spec = spec
        self.key = spec.key
        self.family = spec.family
        self.dim = dim
        self.input_size = input_size
        self.weights = weights
        self.precision = precision

    #: How another process builds this model again, `(function, args)`, set by
    #: `pipeline.embed.build_embedder`: a model travels to a worker (a Ray actor) as this
    #: recipe, never as its weights, and is built there once per process.
    recipe: tuple | None = None

    def embed(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __reduce__(self):
        if self.recipe is None:
            raise TypeError(
                f"this {self.key} model was not built by build_embedder, so a "
                "worker cannot build it again"
            )
        return self.recipe


class KerasEmbedder(Embedder):
    """A Keras model whose output (pooled when it is a feature map) is the embedding.

    Built at bfloat16 or float16, the families end the model with a float32 layer (the pooling
    head), so the pooled vector is averaged in float32 from the 16-bit feature map."""

    def __init__(
        self,
        spec: "ModelSpec",
        model,
        preprocess: Callable[[np.ndarray], np.ndarray],
        weights: str,
        precision: str = "float32",
    ):
        shape = model.input_shape
        size = int(shape[1] or 224)
        dim = int(model.output_shape[-1])
        super().__init__(spec, dim, size, weights, precision)
        self.model = model
        self._preprocess = preprocess

    def embed(self, images: np.ndarray) -> np.ndarray:
        x = self._preprocess(np.asarray(images, dtype=np.float32))
        out = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        return out.reshape(len(out), -1)


def caffe_preprocess(mean_bgr: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """RGB 0..255 -> BGR minus the per-channel mean (VGG16, ResNet50, HED)."""

    def preprocess(x: np.ndarray) -> np.ndarray:
        return x[..., ::-1] - mean_bgr

    return preprocess


def identity(x: np.ndarray) -> np.ndarray:
    """No preprocessing: the model takes RGB 0..255 and does its own."""
    return x
