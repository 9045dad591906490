"""Benchmark `analyze` on synthetic vectors: time and peak memory per step; prints JSON.

    .venv/bin/python bench/analyze.py [--frames 10000,100000] [--detectors KEY,...]
                                      [--dim 512] [--thumbnails] [--no-trace] [--out DIR]
                                      [--keep] [--reuse] [--neighbor-index KIND]
                                      [--executor ray [--ray-address HOST:PORT]]
                                      [--model KEY] [--latent N] [--bursts SHARE]

Each size runs in its own process (clean peak RSS): it builds a store with N frames (ten-minute
steps over N/144 days, frame statistics, a daily cycle in the `--dim` vectors plus noise and
0.5% planted outliers), then runs `pipeline.analyze.analyze` with the default settings (or the
given detectors) and reports per step: seconds, CPU seconds (all threads), peak traced
Python/NumPy memory (MiB), the process peak RSS, and `analyze`'s own peak RSS (reset after the
store is built; unlike tracing it includes DuckDB's buffers). Tracing memory (tracemalloc)
costs time itself, ~30% more CPU in `background`, whose decoding makes many small objects:
`--no-trace` times the run as `python -m pipeline analyze` runs it (no per-step peaks then).
`planted_auc` checks the run still finds the planted outliers at scale. `archive` is what the
run spends on the dashboard's archive views: finding incidents, the mosaic (its cells filled in
the first pixel detector's decoding, `tap`, and closed in `finish`, which decodes what no
detector read) and writing the per-run aggregates (timed again after the run, rolled back).
Without thumbnails the `background` detector has nothing to read and is skipped (a note says
so); `--thumbnails` also stores a 256x144 JPEG per frame (and its `local_contrast` and `sharpness_cells`, as ingest
does: stores built before that paid a one-off `backfill` of ~1.3 ms per frame in `analyze`) (one fixed scene under a daily light
cycle with sensor noise, a small bright object in the planted frames; see `thumbnail_pool`),
so `background` is timed too and `background_planted_auc` checks it. 750k frames is an option
(`--frames 750000`); at 512-d it needs ~3 GB for the store (~6 GB more with thumbnails) and
takes long; `--dim 4608` (the default model's size) makes the vectors ~9x that.
`--reuse` (with `--out DIR`) analyses the store a previous `--keep` run left in DIR for the same
size instead of building it again (its planted frames are kept next to it as JSON); each
analysis adds a run to it. `--neighbor-index ivf` forces the approximate index (the
synthetic PCA space has ~6 dims, where 'auto' takes the exact KD-tree); the run's recall against
exact search is reported either way. `--executor ray` runs `analyze` as `analyze --executor
ray` does (the pixel detectors score every frame on the Ray cluster at `--ray-address`, or on a
Ray started on this machine): the CPU seconds per step are then the driver's alone.
`--model` records the vectors under another model key: `--model vgg16-hed-grid --dim 4608`
makes `analyze` read them as that model's 3x3 grid of regions (each region's projection and
the `regions` detector's nine neighbour indexes; default `synthetic`, one region).
`fitted_mib` is the size of the run's pickled fitted state in the store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


POOL_VARIANTS = 4  # noisy encodings per ten-minute slot of the day
POOL_PLANTED = 64  # encodings with an object in front of the scene
THUMB_SIZE = (256, 144)
LATENT = 6  # the factors a frame's synthetic vector varies by (`build_store`)
BURST_FRAMES = 100  # frames a burst holds (`--bursts`)
BURST_STEP_S = 6  # seconds between a burst's frames (the usual: ten minutes)


def thumbnail_pool(seed: int = 0, quality: int = 80) -> tuple[list[list[bytes]], list[bytes]]:
    """JPEG thumbnails of one fixed scene: [slot of the day][variant] and planted ones.

    The scene (smooth shapes plus texture) is lit by a daily cycle (night at 15% of noon);
    each of the 144 ten-minute slots gets `POOL_VARIANTS` encodings with their own sensor noise,
    and `POOL_PLANTED` daytime encodings carry a small bright object at a random place.
    Encoding a pool (~600 JPEGs, under a second) instead of every frame keeps building a 750k
    store fast; decoding, which is what analyze pays, costs the same per frame.
    """
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    width, height = THUMB_SIZE
    coarse = rng.uniform(40, 220, size=(9, 16, 3)).astype(np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize(THUMB_SIZE, Image.BICUBIC), np.float32)
    scene += rng.normal(0, 12, size=scene.shape)  # texture, fixed
    shadow = (np.arange(width)[None, :, None] < 90) & (np.arange(height)[:, None, None] > 90)

    def encode(slot: int, obj: bool) -> bytes:
        hour = slot / 6
        sun = max(0.0, np.sin(np.pi * (hour - 6) / 12))
        image = scene * (0.15 + 0.85 * sun) * np.where(shadow, 1 - 0.5 * sun, 1.0)
        image = image + rng.normal(0, 3, size=scene.shape)
        if obj:
            y, x = rng.integers(10, height - 30), rng.integers(10, width - 20)
            image[y : y + 24, x : x + 12] = (250, 235, 60)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            buffer, "JPEG", quality=quality
        )
        return buffer.getvalue()

    normal = [[encode(slot, False) for _ in range(POOL_VARIANTS)] for slot in range(144)]
    planted = [encode(int(rng.integers(48, 108)), True) for _ in range(POOL_PLANTED)]
    return normal, planted


def build_store(
    db: Path,
    n: int,
    dim: int,
    seed: int = 0,
    thumbnails: bool = False,
    model: str = "synthetic",
    latent: int = LATENT,
    bursts: float = 0.0,
) -> list[int]:
    """Frames + vectors of `model` (+ thumbnails); returns the frame ids of planted outliers.

    With `bursts` > 0 that share of the frames is taken in bursts: runs of `BURST_FRAMES`
    frames whose times are `BURST_STEP_S` seconds apart instead of ten minutes (the density detectors
    then learn from the frames at the usual pace, `usual_pace`, and score the rest).

    The vectors are a daily and a yearly cycle (6 factors) plus `latent` - 6 more factors of
    falling spread (1.5 / sqrt(k)), then noise: with the 6 alone a PCA needs 6 dims, and so does
    each region of a grid model, where a real camera's regions keep `REGION_MAX_DIMS` (32)."""
    import numpy as np
    import pandas as pd

    import store
    from store import embeddings as se
    from store import frames as sf

    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(6, dim))
    directions = rng.normal(size=(20, dim))
    extra = max(0, latent - LATENT)
    more = np.random.default_rng(seed + 7)  # its own stream: latent 6 builds the stores it did
    extra_basis = more.normal(size=(extra, dim)) * (1.5 / np.sqrt(np.arange(1, extra + 1)))[:, None]
    planted: list[int] = []
    pool = thumbnail_pool(seed) if thumbnails else None
    if pool is not None:
        from pipeline.imagestats import thumbnail_measures

        measured = {id(j): thumbnail_measures(j) for j in [*sum(pool[0], []), *pool[1]]}
    chunk = 50_000
    start = np.datetime64("2024-01-01T00:00:00")
    with store.connect(db) as con:
        se.record_model(con, se.ModelRow(model, "synthetic", "none", dim, None))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            idx = np.arange(lo, hi)
            times = start + np.timedelta64(10, "m") * idx
            if bursts > 0:  # every k-th run of BURST_FRAMES frames: from its first frame on
                run = idx // BURST_FRAMES
                every = max(1, int(round(1 / bursts)))
                burst = (run % every) == every // 2
                first = start + np.timedelta64(10, "m") * (run * BURST_FRAMES)
                step = np.timedelta64(BURST_STEP_S, "s")
                times = np.where(burst, first + step * (idx % BURST_FRAMES), times)
            hours = ((times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")).astype(float)
            days = idx / 144.0
            phase = 2 * np.pi * hours / 24
            feats = np.column_stack(
                [
                    np.sin(phase),
                    np.cos(phase),
                    np.sin(2 * phase),
                    np.cos(2 * phase),
                    np.sin(2 * np.pi * days / 365),
                    np.cos(2 * np.pi * days / 365),
                ]
            )
            vectors = feats @ basis * 3 + rng.normal(scale=0.5, size=(hi - lo, dim))
            if extra:
                vectors += more.normal(size=(hi - lo, extra)) @ extra_basis
            out = rng.random(hi - lo) < 0.005
            # the same shift relative to the daily cycle at any dim (both grow as sqrt(dim))
            vectors[out] += directions[rng.integers(0, 20, out.sum())] * 1.5 * np.sqrt(dim / 512)
            ids = idx + 1
            planted += ids[out].tolist()
            day = (hours >= 7) & (hours < 19)
            frames = pd.DataFrame(
                {
                    "frame_id": ids,
                    "path": [f"f/{i:07d}.jpg" for i in idx],
                    "root": "/bench",
                    "location": [f"/bench/f/{i:07d}.jpg" for i in idx],
                    "taken_at": pd.to_datetime(times),
                    "taken_at_utc": pd.to_datetime(times).tz_localize("UTC"),
                    "time_source": "exif",
                    "utc_offset_min": 0,
                    "source_utc": pd.NaT,
                    "width": 640,
                    "height": 360,
                    "file_bytes": 50_000,
                    "file_mtime": pd.Timestamp("2025-01-01", tz="UTC"),
                    "content_hash": None,
                    "mean_luma": np.where(day, 120.0, 15.0) + rng.normal(0, 5, hi - lo),
                    "contrast": np.where(day, 40.0, 8.0) + rng.normal(0, 2, hi - lo),
                    "sharpness": np.where(day, 300.0, 30.0) + rng.normal(0, 10, hi - lo),
                    "colorfulness": np.where(day, 30.0, 3.0) + rng.normal(0, 1, hi - lo),
                    "sun_elevation": None,
                    "daylight": np.where(day, "day", "night"),
                    "daylight_source": "brightness",
                }
            )
            empty = pd.DataFrame()
            thumbs = empty
            if pool is not None:
                normal, odd = pool
                slot = (idx % 144).astype(int)
                variant = rng.integers(0, POOL_VARIANTS, hi - lo)
                pick = rng.integers(0, POOL_PLANTED, hi - lo)
                jpegs = [
                    odd[p] if o else normal[s][v] for s, v, p, o in zip(slot, variant, pick, out)
                ]
                # what ingest measures on each thumbnail, so `analyze` has nothing to backfill
                frames["local_contrast"] = [measured[id(j)][0] for j in jpegs]
                frames["sharpness_cells"] = pd.Series(
                    [measured[id(j)][1] for j in jpegs], dtype=object
                )
                thumbs = pd.DataFrame(
                    {
                        "frame_id": ids,
                        "jpeg": pd.Series(jpegs, dtype=object),
                        "width": THUMB_SIZE[0],
                        "height": THUMB_SIZE[1],
                    }
                )
            sf.write_batch(con, sf.FrameBatch(frames, empty, empty, thumbs, empty))
            se.insert_vectors(con, model, ids, vectors.astype(np.float32))
    return planted


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: VmHWM) so it measures `analyze` alone, not the
    store build before it; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def one(
    n: int,
    dim: int,
    detectors: list[str] | None,
    out: Path,
    thumbnails: bool,
    trace: bool = True,
    reuse: bool = False,
    neighbor_index: str = "auto",
    executor: str = "local",
    ray_address: str | None = None,
    model: str = "synthetic",
    latent: int = LATENT,
    bursts: float = 0.0,
) -> dict:
    import numpy as np

    import store
    from pipeline.analyze import analyze
    from pipeline.settings import Settings
    from store import aggregates
    from store import analysis as sa

    db = out / f"bench-{n}.duckdb"
    kept = db.with_name(db.name + ".planted.json")  # the planted frames of a kept store
    started = time.perf_counter()
    if reuse and db.exists() and kept.exists():
        planted = json.loads(kept.read_text())
        built = [
            planted["dim"],
            planted["thumbnails"],
            planted.get("model", "synthetic"),
            planted.get("latent", LATENT),
            planted.get("bursts", 0.0),
        ]
        if built != [dim, thumbnails, model, latent, bursts]:
            raise SystemExit(
                f"{db} was built with --dim {built[0]}, thumbnails {built[1]}, --model "
                f"{built[2]}, --latent {built[3]} and --bursts {built[4]}: build it again "
                "without --reuse"
            )
        planted, build_s = planted["frame_ids"], None
    else:
        for p in (db, db.with_name(db.name + ".wal"), kept):
            if p.exists():
                p.unlink()
        planted = build_store(
            db, n, dim, thumbnails=thumbnails, model=model, latent=latent, bursts=bursts
        )
        kept.write_text(
            json.dumps(
                {
                    "dim": dim,
                    "thumbnails": thumbnails,
                    "model": model,
                    "latent": latent,
                    "bursts": bursts,
                    "frame_ids": planted,
                }
            )
        )
        build_s = round(time.perf_counter() - started, 1)
    settings = Settings(
        model=model,
        neighbor_index=neighbor_index,
        executor=executor,
        ray_address=ray_address,
    )
    if detectors:
        settings = settings.replace(detectors=detectors)
    rss_reset = _reset_peak_rss()
    started = time.perf_counter()
    result = analyze(db, settings, progress=False, trace_memory=trace)
    total = time.perf_counter() - started
    with store.connect(db) as con:  # the per-run aggregates' share of `write`, timed again
        con.execute("BEGIN TRANSACTION")
        started = time.perf_counter()
        aggregates.write(con, result.run_id)
        aggregates_s = time.perf_counter() - started
        con.execute("ROLLBACK")
    with store.connect(db, read_only=True) as con:
        scores = sa.run_scores(con, result.run_id)
        fitted_bytes = len(sa.load_fitted(con, result.run_id)[0])
    from sklearn.metrics import roc_auc_score

    def auc(key: str) -> float | None:
        rows = scores[scores["detector"] == key]
        if not len(rows):
            return None
        labels = np.isin(rows["frame_id"].to_numpy(), planted)
        return round(float(roc_auc_score(labels, rows["score"].fillna(0))), 4)

    return {
        "frames": n,
        "dim": dim,
        "thumbnails": thumbnails,
        "traced": trace,
        "executor": executor,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "detectors": result.detectors,
        "notes": result.notes,
        "latent": latent,
        "bursts": bursts,
        "pca_dims": result.n_dims,
        "region_dims": result.params.get("region_dims"),
        "region_index": result.params.get("region_index"),
        "region_recall": result.params.get("region_recall"),
        "neighbor_index": result.params.get("neighbor_index"),
        "neighbor_recall": result.params.get("neighbor_recall"),
        "neighbor_recall_frames": result.params.get("neighbor_recall_frames"),
        "analyze_s": round(total, 2),
        "steps_s": result.timings,
        "steps_cpu_s": result.cpu,
        "steps_peak_mib": result.peak_mb,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "analyze_peak_rss_mib": _peak_rss_mib() if rss_reset else None,
        "build_store_s": build_s,
        "store_mib": round(db.stat().st_size / 2**20, 1),
        "fitted_mib": round(fitted_bytes / 2**20, 1),
        "model": model,
        "planted_auc": auc("consensus"),
        "background_planted_auc": auc("background"),
        "archive": {
            "incidents": result.params.get("n_incidents"),
            "incidents_s": result.timings.get("incidents"),
            "mosaic": result.params.get("mosaic"),
            "aggregates_write_s": round(aggregates_s, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--detectors", default=None, help="comma-separated detector keys")
    parser.add_argument("--out", type=Path, default=None, help="folder for the stores")
    parser.add_argument(
        "--thumbnails",
        action="store_true",
        help="also store synthetic JPEG thumbnails, so `background` runs",
    )
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="no tracemalloc: times as the CLI runs, no per-step peaks",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="analyse a store kept in --out by an earlier --keep run",
    )
    parser.add_argument("--neighbor-index", default="auto", help="auto, exact, kdtree or ivf")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument(
        "--ray-address", default=None, help="HOST:PORT or auto (with --executor ray)"
    )
    parser.add_argument(
        "--model", default="synthetic", help="the model key the vectors are recorded under"
    )
    parser.add_argument(
        "--latent",
        type=int,
        default=LATENT,
        help="factors the synthetic vectors vary by (6: the daily and yearly cycle; 100 gives "
        "a grid model's regions the 32 dims a real camera's keep)",
    )
    parser.add_argument(
        "--bursts",
        type=float,
        default=0.0,
        help=f"share of the frames taken in bursts of {BURST_FRAMES}, {BURST_STEP_S} s apart",
    )
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    detectors = args.detectors.split(",") if args.detectors else None
    if args.one is not None:
        print(
            json.dumps(
                one(
                    args.one,
                    args.dim,
                    detectors,
                    args.out,
                    args.thumbnails,
                    args.trace,
                    args.reuse,
                    args.neighbor_index,
                    args.executor,
                    args.ray_address,
                    args.model,
                    args.latent,
                    args.bursts,
                )
            )
        )
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in [int(x) for x in args.frames.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--dim",
            str(args.dim),
            "--out",
            str(out),
            "--neighbor-index",
            args.neighbor_index,
            "--executor",
            args.executor,
            "--model",
            args.model,
            "--latent",
            str(args.latent),
            "--bursts",
            str(args.bursts),
        ]
        if args.ray_address:
            cmd += ["--ray-address", args.ray_address]
        if args.detectors:
            cmd += ["--detectors", args.detectors]
        if args.thumbnails:
            cmd.append("--thumbnails")
        if not args.trace:
            cmd.append("--no-trace")
        if args.reuse:
            cmd.append("--reuse")
        done = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if done.returncode != 0:
            results.append({"frames": n, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if not args.keep and not args.reuse:
            for p in out.glob(f"bench-{n}.duckdb*"):
                p.unlink()
    print(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg": os.getloadavg(),
                },
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
