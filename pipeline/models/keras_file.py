"""The `keras:PATH` family: any saved .keras model (fine-tuned, self-supervised...) whose output
is the embedding: a feature map is average-pooled, a model without a fixed input size gets
224 px. It takes RGB 0..255 and must do its own preprocessing.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError, ModelUnavailableError
from pipeline.models.embedder import Embedder, KerasEmbedder, identity
from pipeline.models.keras_setup import import_keras
from pipeline.models.registry import Availability, ModelSpec
from pipeline.models.weights import file_digest, one_line


class KerasFile:
    """The keras:PATH family (see `registry.Family`); the spec's `path` is the model file."""

    name = "keras"
    takes_weights_file = False
    precisions = ("float32",)  # a saved model keeps the dtype policy it was saved with

    def available(self, spec: ModelSpec) -> Availability:
        if spec.path is None:
            return Availability(True, "give a file: --model keras:PATH")
        return (
            Availability(True, f"model file {spec.path}")
            if spec.path.is_file()
            else Availability(False, f"model file {spec.path} does not exist")
        )

    def build(
        self, spec: ModelSpec, *, weights: Path | None, pretrained: bool, precision: str
    ) -> Embedder:
        if spec.path is None:
            raise InputError("name the model file: --model keras:PATH/TO/model.keras")
        if not spec.path.is_file():
            raise InputError(f"model file {spec.path} does not exist")
        keras = import_keras()
        try:
            model = keras.saving.load_model(spec.path, compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
            raise ModelUnavailableError(
                f"cannot load the Keras model {spec.path}: {one_line(exc)}"
            ) from exc
        shape = model.input_shape
        if isinstance(shape, list) or len(shape) != 4 or shape[-1] != 3:
            raise ModelUnavailableError(
                f"{spec.path} takes input {shape}; an embedding model takes one RGB image batch "
                "(None, H, W, 3)"
            )
        if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
            raise ModelUnavailableError(
                f"{spec.path} takes {shape[1]}x{shape[2]} images; only square inputs are supported"
            )
        if len(model.output_shape) == 4:  # a feature map: pool it, as the built-in models do
            pooled = keras.layers.GlobalAveragePooling2D()(model.output)
            model = keras.Model(model.input, pooled)
        elif len(model.output_shape) != 2:
            raise ModelUnavailableError(
                f"{spec.path} outputs {model.output_shape}; the embedding must be (None, dim) or "
                "a feature map (None, h, w, dim)"
            )
        if shape[1] is None:  # a fully convolutional model: feed the default size
            inputs = keras.Input((224, 224, 3))
            model = keras.Model(inputs, model(inputs))
        source = f"file {spec.path} (blake2b {file_digest(spec.path)})"
        return KerasEmbedder(spec, model, identity, source)


KERAS_FILE = KerasFile()
