"""Embedding models: a registry of keys, one object per model family, and the built `Embedder`.

`get_model(key)` gives a `ModelSpec` (a registry entry: family, output dim, input size,
preprocessing, weights source); `spec.available()` says cheaply whether it can be built here,
and `spec.build(weights=...)` returns an `Embedder`, whose `embed(images)` maps a uint8 batch
`[n, size, size, 3]` (RGB) to float32 vectors `[n, dim]`.

Keys: `vgg16-hed-grid` (the default; offline: VGG16 with the HED weights, block5 pooled over a
3x3 grid), `vgg16-hed` (the same network pooled over the whole frame, 512-d; offline), `vgg16`,
`vgg16-fc2`, `mobilenetv3small`, `efficientnetb0`, `resnet50` (ImageNet, via Keras' cache or
`--weights FILE`), `keras:PATH` (any saved .keras model) and `pixels` (a non-CNN baseline that
never imports TensorFlow).

Where things live:

- `registry`: the table of `ModelSpec`s, `DEFAULT_MODEL`, `get_model` (light: no NumPy, no TF);
- `families`: the one table from a spec's `family` to its family object, which has
  `available(spec)` and `build(spec, *, weights, pretrained)`;
- `hed`, `imagenet`, `keras_file`, `pixels`: the families;
- `embedder`: `Embedder` and `KerasEmbedder`, and the shared preprocessing;
- `keras_setup`: Keras start-up on its backend (`import_keras`; TensorFlow unless
  `KERAS_BACKEND` says jax or torch); `weights`: where weights files are found;
- `listing`: the `models` command's text.

Only these modules and `pipeline/embed*` import TensorFlow/Keras, and only inside functions.
"""

from pipeline.models.registry import (
    DEFAULT_MODEL,
    KERAS_PREFIX,
    REGISTRY,
    Availability,
    ImagenetWeights,
    ModelSpec,
    get_model,
    register,
)

__all__ = [
    "DEFAULT_MODEL",
    "KERAS_PREFIX",
    "REGISTRY",
    "Availability",
    "ImagenetWeights",
    "ModelSpec",
    "get_model",
    "register",
]
