"""Which numeric precision a model runs at on this machine, and why: `build_model` is the one
place a model is built for embedding (embed, run, score-new, serve, an executor's workers).

Precisions (the `precision` setting):

- `float32`: every model, everywhere;
- `bfloat16`: Keras' mixed_bfloat16 policy (weights kept in float32, the layers' maths in
  bfloat16), which oneDNN inside TensorFlow runs on AVX512-BF16 and AMX units; the pooled
  vector is averaged in float32 and stored as float32;
- `float16`: Keras' mixed_float16 policy, for GPUs. Measured on an NVIDIA H200 with Keras on
  PyTorch and on JAX (docs/PERFORMANCE.md, "On a GPU"): as fast as bfloat16 there and closer
  to float32 (cosine 0.9999999 against 0.99997), so `auto` takes it on a GPU;
- `auto` (default): float16 when the Keras backend sees a GPU; bfloat16 when the CPU has
  AMX-BF16 or AVX512-BF16 *and* a short check (`measure`: the actual model at both precisions
  on a few real frames, interleaved, a few seconds) shows it at least `MIN_SPEEDUP` times as
  fast as float32; float32 everywhere else (without those units bfloat16 is emulated, usually
  slower). A family that runs at float32 only (`pixels`, `keras:PATH`) gets float32 without a
  check.

The check's answer depends on the CPU, the cores, the Keras backend and the network, not on the
frames, so it is kept per (model key, input size, CPU model, cores, backend and its version) in
a small JSON file in the user's cache folder (`precision.json` in `$TIMELAPSE_CACHE_DIR`, else
`$XDG_CACHE_HOME/garden-timelapse`, else `~/.cache/garden-timelapse`): measured once, not on
every `run` or every few new frames (`watch`); delete the file to measure again. When the folder
cannot be written the check simply runs each time.

Vectors of one model made at different precisions are the same vectors to within rounding (see
docs/PERFORMANCE.md, "Precision": the difference is far below the difference between frames,
and a store mixing them finds the same junk), so a store may hold both; every vector records
the precision that made it, and `info` shows the counts.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipeline.errors import InputError
from pipeline.models.keras_setup import backend_version, gpus
from pipeline.models.registry import AUTO
from pipeline.models.registry import PRECISION_CHOICES as CHOICES

if TYPE_CHECKING:
    from pipeline.models.embedder import Embedder
    from pipeline.models.registry import ModelSpec

log = logging.getLogger(__name__)

#: CPU flags (Linux /proc/cpuinfo) of units that run bfloat16 maths natively.
BF16_UNITS = ("amx_bf16", "avx512_bf16")
#: `auto` takes bfloat16 only when the check measures it at least this much faster.
MIN_SPEEDUP = 1.15
CHECK_FRAMES = 8  # frames per timed batch of the check
#: Where a store holding one model's vectors of two precisions is explained (and measured).
MIXED_PRECISION_DOC = "docs/PERFORMANCE.md#precision"
CHECK_ROUNDS = 2  # interleaved timed rounds per precision (after one warm-up call each)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a model runs at, what was asked for, and why (the line `embed` prints)."""

    precision: str
    requested: str
    reason: str

    def describe(self) -> str:
        return f"{self.precision} ({self.reason})"


def check_choice(value: str) -> str:
    """The setting's value, or an `InputError` naming the choices."""
    if value not in CHOICES:
        raise InputError(f"precision must be one of {', '.join(CHOICES)}, not {value!r}")
    return value


def build_model(
    spec: "ModelSpec",
    weights: str | os.PathLike | None,
    requested: str,
    sample: Callable[[], np.ndarray | None] | None = None,
) -> tuple["Embedder", PrecisionChoice]:
    """Build `spec` at the precision `requested` resolves to here; returns it and the choice.

    `sample()`: a few decoded frames (uint8 [n, s, s, 3] at the model's input size) for
    `auto`'s speed check, called only when the check runs; noise stands in when there are none.
    A concrete precision is built as asked (float16 needs a GPU; bfloat16 without native
    units is built, and the reason says it is emulated).
    """
    requested = check_choice(requested)
    if requested != AUTO:
        return spec.build(weights, precision=requested), _explicit(spec, requested)
    if spec.precisions == ("float32",):
        return spec.build(weights), PrecisionChoice(
            "float32", AUTO, f"auto: {spec.family} runs at float32 only"
        )
    found = gpus()
    if found and "float16" in spec.precisions:
        return spec.build(weights, precision="float16"), PrecisionChoice(
            "float16", AUTO, f"auto: GPU {found[0]}; mixed float16"
        )
    units = bf16_units()
    if not units or "bfloat16" not in spec.precisions:
        return spec.build(weights), PrecisionChoice(
            "float32", AUTO, "auto: this CPU has no AMX-BF16 or AVX512-BF16 units"
        )
    return _measured(spec, weights, units, sample)


def _explicit(spec: "ModelSpec", precision: str) -> PrecisionChoice:
    if precision == "float16":
        if not gpus():
            raise InputError(
                "--precision float16 is for GPUs and the Keras backend sees none here: "
                "use float32, bfloat16 or auto"
            )
        return PrecisionChoice(precision, precision, "asked for; mixed float16 on the GPU")
    if precision == "bfloat16" and gpus():
        return PrecisionChoice(precision, precision, "asked for; mixed bfloat16 on the GPU")
    if precision == "bfloat16" and not bf16_units():
        return PrecisionChoice(
            precision,
            precision,
            "asked for; this CPU has no AMX-BF16 or "
            "AVX512-BF16 units, so it is emulated and may be slower than "
            "float32",
        )
    return PrecisionChoice(precision, precision, "asked for")


def _measured(
    spec: "ModelSpec", weights, units: list[str], sample: Callable[[], np.ndarray | None] | None
) -> tuple["Embedder", PrecisionChoice]:
    """`auto` on a CPU with bfloat16 units: the cached answer, or measure both and keep it."""
    key = _cache_key(spec)
    known = _read_cache().get(key)
    if known is not None and known.get("precision") in ("float32", "bfloat16"):
        precision = known["precision"]
        reason = (
            f"auto: {'+'.join(units)}; bfloat16 measured {known['speedup']:.2f}x float32 "
            f"on {known['measured_at'][:10]} (cached in {cache_path()})"
        )
        return spec.build(weights, precision=precision), PrecisionChoice(precision, AUTO, reason)
    built = {p: spec.build(weights, precision=p) for p in ("float32", "bfloat16")}
    images = _check_batch(sample() if sample else None, built["float32"].input_size)
    rates = measure(built, images)
    speedup = rates["bfloat16"] / rates["float32"]
    precision = "bfloat16" if speedup >= MIN_SPEEDUP else "float32"
    _write_cache(
        key,
        {
            "precision": precision,
            "speedup": round(speedup, 3),
            "float32_fps": round(rates["float32"], 2),
            "bfloat16_fps": round(rates["bfloat16"], 2),
            "units": units,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    reason = (
        f"auto: {'+'.join(units)}; measured now: bfloat16 {rates['bfloat16']:.1f} frames/s,"
        f" float32 {rates['float32']:.1f} ({speedup:.2f}x; bfloat16 needs "
        f">= {MIN_SPEEDUP}x)"
    )
    return built[precision], PrecisionChoice(precision, AUTO, reason)


def measure(
    embedders: dict[str, "Embedder"], images: np.ndarray, rounds: int = CHECK_ROUNDS
) -> dict[str, float]:
    """Frames/s of each embedder on `images`: one untimed warm-up call each, then `rounds`
    timed calls each, interleaved (a load change on a shared machine touches all alike)."""
    for embedder in embedders.values():
        embedder.embed(images)
    seconds = dict.fromkeys(embedders, 0.0)
    for _ in range(rounds):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            embedder.embed(images)
            seconds[name] += time.perf_counter() - started
    return {name: rounds * len(images) / max(s, 1e-9) for name, s in seconds.items()}


def _check_batch(sample: np.ndarray | None, size: int) -> np.ndarray:
    """CHECK_FRAMES frames for the check: the sample's (repeated when short), else noise."""
    if sample is None or not len(sample):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (CHECK_FRAMES, size, size, 3), dtype=np.uint8)
    picks = np.arange(CHECK_FRAMES) % len(sample)
    return np.asarray(sample)[picks]


def bf16_units() -> list[str]:
    """The bfloat16 units this CPU has, by their Linux flag names (empty elsewhere)."""
    flags = _cpu_flags()
    return [unit for unit in BF16_UNITS if unit in flags]


def _cpu_flags() -> set[str]:
    flags = _cpuinfo_field(("flags", "Features"))
    return set(flags.split()) if flags else set()


def _cpu_name() -> str:
    return _cpuinfo_field(("model name",)) or platform.processor() or platform.machine()


def _cpuinfo_field(names: tuple[str, ...]) -> str | None:
    """The first value of one of these fields in /proc/cpuinfo (None when not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(names):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


# --- the cache of measured answers ---------------------------------------------------------


def cache_path() -> Path:
    """The JSON file that keeps `auto`'s measured answers for this user."""
    folder = os.environ.get("TIMELAPSE_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "garden-timelapse")
    return Path(folder) / "precision.json"


def _cache_key(spec: "ModelSpec") -> str:
    return f"{spec.key}|{spec.input_size}|{_cpu_name()}|{os.cpu_count()} cpus|{backend_version()}"


def _read_cache() -> dict:
    path = cache_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("precision cache %s unreadable (%s): measuring again", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, entry: dict) -> None:
    path = cache_path()
    data = _read_cache()
    data[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        log.info("precision cache %s not written (%s): the check runs again next time", path, exc)
