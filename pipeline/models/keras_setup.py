"""Keras start-up: import Keras and its backend once, quietly, set up for this machine.

`import_keras()` is the only way the model code reaches Keras: it imports the backend on first
use (never at module import, so the CLI and the pixels baseline stay fast), sets its thread pools
for the machine's cores, lets a GPU grow its memory instead of taking it all, and filters the
start-up noise TensorFlow prints to stderr whatever TF_CPP_MIN_LOG_LEVEL says.

The backend is TensorFlow (the one `requirements.txt` installs) unless `KERAS_BACKEND` names
another that Keras 3 runs on and that is installed: `jax` or `torch` (a GPU machine that has
JAX or PyTorch but no TensorFlow build for its CUDA). Keras' own `~/.keras/keras.json` is not
read for this choice, so the same command picks the same backend for every user. The model code
is backend-neutral (Keras layers and `predict_on_batch`); the vectors agree to rounding across
backends (`tests/pipeline/test_models.py`).

Keras-wide settings that must be in force before a model is built belong here:
`dtype_policy(precision)` is the one place the mixed-precision policy is set (Keras reads it
when a layer is made, so a model built inside the context runs at that precision, and the
global policy is float32 again after).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
import threading

from pipeline.errors import ModelUnavailableError

_KERAS_LOCK = threading.Lock()
_KERAS_READY = False
_POLICY_LOCK = threading.Lock()
#: Keras dtype policy of each precision (`pipeline.models.precision`): bfloat16 and float16 are
#: Keras' mixed policies (variables in float32, the layers' maths in the 16-bit type).
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# TensorFlow prints these at import and first device use whatever TF_CPP_MIN_LOG_LEVEL says.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} .*"
    r"(port\.cc|cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|cpu_feature_guard)|"
    r"To enable the following instructions|.*rebuild TensorFlow with the appropriate)"
)


#: Keras backends this code runs on (`KERAS_BACKEND`); TensorFlow is the default.
BACKENDS = ("tensorflow", "jax", "torch")


def backend() -> str:
    """The Keras backend this process uses: `KERAS_BACKEND`, else TensorFlow."""
    return _known(os.environ.get("KERAS_BACKEND", "").strip().lower() or "tensorflow")


def _known(name: str) -> str:
    if name not in BACKENDS:
        raise ModelUnavailableError(
            f"KERAS_BACKEND={name!r} is not a backend this tool runs on: use one of "
            + ", ".join(BACKENDS)
        )
    return name


def use_backend(name: str) -> None:
    """Run Keras on `name` in this process (a worker building the driver's model: the driver's
    backend travels with the model's recipe, whatever the worker's own KERAS_BACKEND says).
    Before Keras is imported; after, the backend already running must be that one."""
    _known(name)
    with _KERAS_LOCK:
        keras = sys.modules.get("keras")  # imported by someone else: its backend is fixed
        if not _KERAS_READY and keras is None:
            os.environ["KERAS_BACKEND"] = name
            return
    running = keras.backend.backend() if keras is not None else backend()
    if running != name:
        raise ModelUnavailableError(
            f"this process already runs Keras on {running}, and the model it was sent runs on "
            f"{name}: start the worker with KERAS_BACKEND={name}"
        )


def import_keras():
    """Import the backend + Keras once, quietly, with threading set for the machine's cores."""
    global _KERAS_READY
    with _KERAS_LOCK:
        if not _KERAS_READY:
            name = backend()
            os.environ["KERAS_BACKEND"] = name  # Keras reads it at import; not keras.json
            try:
                if name == "tensorflow":
                    _start_tensorflow()
                elif name == "jax":
                    _start_jax()
                else:
                    _start_torch()
            except ImportError as exc:
                raise ModelUnavailableError(
                    f"the Keras backend {name} is not installed here ({exc}): install it, or "
                    "unset KERAS_BACKEND to use TensorFlow from requirements.txt"
                ) from exc
            _KERAS_READY = True
    import keras

    return keras


def _start_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_stderr():
        import tensorflow as tf

        n_cores = _THREADS or os.cpu_count() or 1
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


def _start_jax() -> None:
    # JAX's counterpart of TensorFlow's memory growth: allocate on the GPU as needed instead of
    # taking three quarters of it at the first array.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax  # noqa: F401
    import keras  # noqa: F401


def _start_torch() -> None:
    import torch

    torch.set_num_threads(_THREADS or os.cpu_count() or 1)  # PyTorch allocates GPU memory lazily
    import keras  # noqa: F401


_THREADS: int | None = None


def use_threads(n: int) -> None:
    """The backend's threads for this process when it starts: a Ray actor's CPUs, not the
    machine's cores (TensorFlow would start a thread per core in every actor; PyTorch too).
    Before the first `import_keras()`; later, it changes nothing. JAX sizes its CPU pool
    itself."""
    global _THREADS
    _THREADS = max(1, int(n))


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build Keras layers at `precision` inside this block (one build at a time); yields keras.

    The policy is process-wide in Keras, so it is set under a lock and put back afterwards."""
    keras = import_keras()
    with _POLICY_LOCK:
        before = keras.config.dtype_policy()
        keras.config.set_dtype_policy(KERAS_POLICY[precision])
        try:
            yield keras
        finally:
            keras.config.set_dtype_policy(before)


def gpus() -> list[str]:
    """Names of the GPUs the Keras backend can use here (empty on a CPU-only machine). Asked
    once per process (`serve` answers every health probe with it)."""
    return list(_gpus())


@functools.cache
def _gpus() -> tuple[str, ...]:
    import_keras()
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tuple(gpu.name for gpu in tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return tuple(
            f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices() if d.platform != "cpu"
        )
    import torch

    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def backend_version() -> str:
    """`backend version`, e.g. `tensorflow 2.21.0` (the precision check's answers depend on it)."""
    name = backend()
    version = getattr(sys.modules.get(name), "__version__", None) or _installed(name)
    return f"{name} {version or 'unknown'}"


def backend_summary() -> str:
    """One line for `models`, without importing any backend: which one Keras runs on, and
    which are installed here."""
    try:
        name = backend()
    except ModelUnavailableError as exc:
        return f"Keras backend: {exc}"
    versions = {b: _installed(b) for b in BACKENDS}
    found = [f"{b} {version}" for b, version in versions.items() if version]
    how = (
        "from KERAS_BACKEND"
        if os.environ.get("KERAS_BACKEND", "").strip()
        else "the default; KERAS_BACKEND=jax or torch picks another"
    )
    return f"Keras backend: {name} ({how}). Installed here: {', '.join(found) or 'none'}."


def _installed(name: str) -> str | None:
    """The installed version of a backend's package (TensorFlow also as tensorflow-cpu)."""
    import importlib.metadata

    for dist in (name, f"{name}-cpu") if name == "tensorflow" else (name,):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


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
