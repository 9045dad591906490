"""Do two Keras backends (or two machines) make the same vectors? Saves or compares; prints JSON.

    # here (TensorFlow): frames and their vectors
    .venv/bin/python bench/backend_check.py save REF.npz [--model vgg16-hed-grid] [--weights W]
    # there (say a GPU machine, KERAS_BACKEND=jax): the same frames through the same model
    KERAS_BACKEND=jax python bench/backend_check.py compare REF.npz [--weights W]
    # a HED weights file small enough to carry (float16 values; use it on both sides)
    .venv/bin/python bench/backend_check.py half-weights OUT.weights.h5

`save` renders `--frames` demo frames (1920x1080), decodes them with the embed stage's own
decoder (`pipeline.embed.load_frame`) and stores the decoded model inputs, the vectors at
`--precision` and where they came from. `compare` embeds the stored inputs again here, at every
precision in `--precisions` this machine can run, and reports per precision the largest absolute
difference, the largest difference relative to the vector's largest value, and the lowest
cosine to the reference. The decoded inputs travel, not the JPEGs, so only the model differs.

`half-weights` writes the bundled HED weights rounded to float16 in the same layout (29 MB
instead of 58): the model reads them into float32 variables, so both sides of a comparison
that use the file run the very same float32 weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import get_model  # noqa: E402
from pipeline.models.keras_setup import backend_version, gpus  # noqa: E402


def _inputs(n: int, size: int) -> np.ndarray:
    from pipeline.demo import render_demo
    from pipeline.embed import load_frame
    from pipeline.pixels import FrameDecodeError

    images = []
    with tempfile.TemporaryDirectory(prefix="backend-check-") as folder:
        made = render_demo(Path(folder), n_frames=n, seed=3, size=(1920, 1080), progress=False)
        for path in sorted(Path(made.frames_dir).rglob("*.jpg")):
            try:  # the demo plants a few unreadable frames
                images.append(load_frame(path, size))
            except FrameDecodeError:
                pass
    return np.stack(images)


def save(args) -> dict:
    spec = get_model(args.model)
    embedder = spec.build(args.weights, precision=args.precision)
    images = _inputs(args.frames, embedder.input_size)
    vectors = embedder.embed(images)
    np.savez_compressed(
        args.file,
        images=images,
        vectors=vectors,
        model=spec.key,
        precision=args.precision,
        backend=backend_version(),
        weights=embedder.weights,
    )
    return {"saved": str(args.file), "frames": len(images), "dim": int(vectors.shape[1])}


def compare(args) -> dict:
    ref = np.load(args.file)
    spec = get_model(str(ref["model"]))
    images, expected = ref["images"], ref["vectors"]
    rows = {}
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        if precision not in spec.precisions or (precision == "float16" and not gpus()):
            continue
        embedder = spec.build(args.weights, precision=precision)
        embedder.embed(images[:1])  # warm-up (compilation)
        started = time.perf_counter()
        got = embedder.embed(images)
        took = time.perf_counter() - started
        diff = np.abs(got - expected)
        scale = np.abs(expected).max(axis=1, keepdims=True)
        cosine = (got * expected).sum(1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        )
        rows[precision] = {
            "max_abs_diff": float(diff.max()),
            "max_rel_diff": float((diff / scale).max()),
            "min_cosine": float(cosine.min()),
            "seconds": round(took, 3),
        }
    return {
        "reference": {
            "backend": str(ref["backend"]),
            "precision": str(ref["precision"]),
            "weights": str(ref["weights"]),
        },
        "frames": len(images),
        "model": spec.key,
        "here": {"backend": backend_version(), "gpus": gpus(), "machine": platform.node()},
        "by_precision": rows,
    }


def half_weights(args) -> dict:
    import h5py

    from pipeline.models.weights import hed_weights_path

    source = hed_weights_path()
    with h5py.File(source, "r") as src, h5py.File(args.file, "w") as dst:

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if isinstance(data, np.ndarray) and data.dtype == np.float32:
                    data = data.astype(np.float16)
                dst.create_dataset(name, data=data)

        src.visititems(copy)
    return {
        "source": str(source),
        "written": str(args.file),
        "bytes": Path(args.file).stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save")
    p.add_argument("file", type=Path)
    p.add_argument("--model", default="vgg16-hed-grid")
    p.add_argument("--weights", default=None)
    p.add_argument("--precision", default="float32")
    p.add_argument("--frames", type=int, default=16)
    p = sub.add_parser("compare")
    p.add_argument("file", type=Path)
    p.add_argument("--weights", default=None)
    p.add_argument("--precisions", default="float32,bfloat16,float16")
    p = sub.add_parser("half-weights")
    p.add_argument("file", type=Path)
    args = parser.parse_args()
    run = {"save": save, "compare": compare, "half-weights": half_weights}[args.command]
    print(json.dumps({"bench": "backend_check", "command": args.command, **run(args)}, indent=1))


if __name__ == "__main__":
    main()
