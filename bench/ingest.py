"""Benchmark ingest against its decode-only ceiling on the same 1920x1080 frames; prints JSON.

    .venv/bin/python bench/ingest.py [--frames 1000] [--workers N] [--out DIR] [--repeat 2]

Frames come from the demo renderer (`pipeline.demo.render_demo`, 1920x1080) when it is
available, else from a built-in generator (gradients + noise + shapes, EXIF-dated). The
ceiling runs the same worker count through the same process pool doing only what no ingest can
skip: read the file, draft-mode decode, thumbnail-size resample and statistics. Ingest does
that plus hashing, EXIF timestamps, thumbnail JPEG encoding, transfer to the main process and
the DuckDB batch writes. Each is run `--repeat` times (alternating) and the best is kept; the
ratio ingest/ceiling is what counts on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import imagestats, pixels  # noqa: E402
from pipeline.ingest import ingest_folder, walk  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

SIZE = (1920, 1080)


def make_frames(folder: Path, n: int, seed: int = 0) -> str:
    """1920x1080 frames in `folder`; returns which generator made them."""
    existing = sorted(folder.rglob("*.jpg"))
    if len(existing) >= n:
        return "cached"
    try:
        from pipeline.demo import render_demo
    except ImportError:
        render_demo = None
    if render_demo is not None:
        render_demo(
            folder, n_frames=n, seed=seed, size=SIZE, progress=False, workers=os.cpu_count()
        )
        return "demo"
    frames = folder / "frames"
    frames.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]].astype(np.float32)
    start = datetime(2024, 4, 10, 6, 0)
    for i in range(n):
        phase = i / max(1, n - 1)
        sky = np.stack([80 + 100 * phase + 0.02 * x, 120 + 0.05 * y, 180 - 0.04 * y], -1)
        ground = (y > 600)[..., None] * np.array([-40, 30, -90], np.float32)
        pixels = sky + ground + rng.normal(0, 14, (SIZE[1], SIZE[0], 3)).astype(np.float32)
        cx, cy = rng.integers(200, 1700), rng.integers(100, 900)
        pixels[cy - 60 : cy + 60, cx - 90 : cx + 90] *= 0.6
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = (start + timedelta(minutes=10 * i)).strftime(
            "%Y:%m:%d %H:%M:%S"
        )
        image.save(frames / f"frame_{i:05d}.jpg", "JPEG", quality=90, exif=exif)
    return "synthetic"


def _decode_only(task):
    try:
        return imagestats.decode_stats(task)
    except pixels.FrameDecodeError:
        return None


def decode_ceiling(folder: Path, settings: Settings) -> tuple[float, int, int]:
    """Seconds, files, decoded frames for draft decode + stats in the same kind of pool."""
    started = time.perf_counter()
    files, _ = walk(str(folder))
    tasks = [(f.os_path, settings.thumbnail_size, settings.max_image_pixels) for f in files]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pipeline.imagestats"])
    chunksize = max(1, min(32, len(tasks) // (settings.workers * 16)))
    with context.Pool(
        settings.workers, initializer=pixels.configure, initargs=(settings.max_image_pixels,)
    ) as pool:
        results = list(pool.imap(_decode_only, tasks, chunksize=chunksize))
    return time.perf_counter() - started, len(tasks), sum(r is not None for r in results)


def ingest_once(folder: Path, settings: Settings, work: Path) -> tuple[float, object, int]:
    db = work / "bench.duckdb"
    for suffix in ("", ".wal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    started = time.perf_counter()
    summary = ingest_folder(folder, db, settings, progress=False)
    seconds = time.perf_counter() - started
    return seconds, summary, db.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the frames (kept and reused); default a temp folder",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    folder = args.out or work / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source = make_frames(folder, args.frames)
    render_s = time.perf_counter() - t0
    files, _ = walk(str(folder))
    n_bytes = sum(f.size for f in files)
    for f in files:  # warm the page cache so both sides read from memory
        with open(f.os_path, "rb") as fh:
            fh.read()
    settings = Settings(workers=args.workers)

    decode_runs, ingest_runs = [], []
    summary = db_bytes = None
    for _ in range(max(1, args.repeat)):
        decode_runs.append(decode_ceiling(folder, settings))
        seconds, summary, db_bytes = ingest_once(folder, settings, work)
        ingest_runs.append(seconds)
    started = time.perf_counter()  # incremental: the same folder again, nothing to decode
    rerun = ingest_folder(folder, work / "bench.duckdb", settings, progress=False)
    rerun_s = time.perf_counter() - started
    decode_s, n_files, n_decoded = min(decode_runs)
    ingest_s = min(ingest_runs)
    result = {
        "benchmark": "ingest",
        "frames": n_files,
        "frame_size": list(SIZE),
        "source": source,
        "mean_file_kib": round(n_bytes / max(1, n_files) / 1024, 1),
        "workers": settings.workers,
        "cpus": os.cpu_count(),
        "ingest_frames_per_s": round(n_files / ingest_s, 1),
        "decode_ceiling_frames_per_s": round(n_files / decode_s, 1),
        "ratio": round(decode_s / ingest_s, 3),
        "ingest_s": round(ingest_s, 2),
        "decode_s": round(decode_s, 2),
        "runs_ingest_s": [round(s, 2) for s in ingest_runs],
        "runs_decode_s": [round(r[0], 2) for r in decode_runs],
        "added": summary.added,
        "failed": summary.failed,
        "decoded_in_ceiling": n_decoded,
        "store_mib": round(db_bytes / 2**20, 1),
        "rerun_s": round(rerun_s, 2),
        "rerun_unchanged": rerun.unchanged,
        "render_s": round(render_s, 1),
    }
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)  # the store, and the frames unless --out


if __name__ == "__main__":
    main()
