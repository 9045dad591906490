"""The Keras Applications families (VGG16, MobileNetV3Small, EfficientNetB0, ResNet50) with
ImageNet weights from Keras' cache (downloaded there when online) or `--weights FILE`.

A spec gets the pooled conv base (`pooling="avg"`), or with `spec.layer` that layer of the full
network with its classifier top (`vgg16-fc2`, the original study's 4096-d fc2 layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import ModelUnavailableError
from pipeline.models.embedder import (
    IMAGENET_CAFFE_MEAN_BGR,
    Embedder,
    KerasEmbedder,
    caffe_preprocess,
    identity,
)
from pipeline.models.keras_setup import dtype_policy
from pipeline.models.registry import PRECISIONS, Availability, ModelSpec
from pipeline.models.weights import file_digest, imagenet_weights_path, keras_cache_dir, one_line


@dataclass(frozen=True)
class KerasApplication:
    """A `keras.applications` constructor as a model family (see `registry.Family`)."""

    name: str
    constructor: str  # the keras.applications class name
    preprocess: Callable[[np.ndarray], np.ndarray]
    options: dict = field(default_factory=dict)  # extra constructor arguments
    takes_weights_file: bool = True
    precisions: tuple[str, ...] = PRECISIONS

    def available(self, spec: ModelSpec) -> Availability:
        assert spec.imagenet is not None
        cached = keras_cache_dir() / spec.imagenet.file
        if cached.is_file():
            return Availability(True, f"cached: {cached}")
        return Availability(False, f"not cached ({cached}); downloads on first use when online")

    def build(
        self, spec: ModelSpec, *, weights: Path | None, pretrained: bool, precision: str
    ) -> Embedder:
        """The pooled conv base (global average pooling, in float32 at every precision), or
        `spec.layer` of the full network (cast to float32)."""
        path, source = _weights_source(spec, weights, pretrained)
        with dtype_policy(precision) as keras:
            constructor = getattr(keras.applications, self.constructor)
            name = spec.key.replace("-", "_")
            if spec.layer is not None:
                base = constructor(weights=None, include_top=True, **self.options)
                if path:
                    _load_weights(base, path, spec)
                output = base.get_layer(spec.layer).output
                if precision != "float32":
                    output = keras.layers.Activation("linear", dtype="float32", name="as_float32")(
                        output
                    )
            else:
                size = spec.input_size
                base = constructor(
                    weights=None,
                    include_top=False,
                    pooling=None,
                    input_shape=(size, size, 3),
                    **self.options,
                )
                if path:
                    _load_weights(base, path, spec)
                output = keras.layers.GlobalAveragePooling2D(name="global_avg", dtype="float32")(
                    base.output
                )
            model = keras.Model(base.input, output, name=name)
        return KerasEmbedder(spec, model, self.preprocess, source, precision)


APPLICATIONS = (
    KerasApplication("vgg16", "VGG16", caffe_preprocess(IMAGENET_CAFFE_MEAN_BGR)),
    KerasApplication("mobilenetv3", "MobileNetV3Small", identity, {"include_preprocessing": True}),
    KerasApplication("efficientnet", "EfficientNetB0", identity),
    KerasApplication("resnet", "ResNet50", caffe_preprocess(IMAGENET_CAFFE_MEAN_BGR)),
)


def _weights_source(spec: ModelSpec, weights: Path | None, pretrained: bool) -> tuple[object, str]:
    """What to load into the model and the text recorded in `models.weights`."""
    if not pretrained:
        return None, "random init (not for real use)"
    if weights is not None:
        return str(weights), f"--weights {weights} (blake2b {file_digest(weights)})"
    path = imagenet_weights_path(spec)
    return str(path), f"imagenet, keras cache {path} (blake2b {file_digest(path)})"


def _load_weights(model, path: str, spec: ModelSpec) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py/Keras raise many types for a wrong or broken file
        raise ModelUnavailableError(
            f"cannot load {path} into {spec.key}: {one_line(exc)}. The file must be the "
            f"Keras weights for this model ({spec.imagenet.file if spec.imagenet else 'same layers'})"
        ) from exc
