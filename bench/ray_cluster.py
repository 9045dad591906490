"""Benchmark the Ray executor against the local one on the same 1920x1080 frames; prints JSON.

    .venv/bin/python bench/ray_cluster.py [--frames 120] [--model vgg16-hed-grid] [--batch-size 16]
                                  [--out DIR] [--skip-two-node] [--rounds N]

In one run, on the same frames, the model built once on the driver (float32), page cache warm:
1. `local_one_pass`, `local_two_pass`: `run`'s one pass (`pipeline.onepass.ingest_and_embed`,
   one read and decode per frame) and `ingest` then `embed` (two), local executor;
2. `ray_one_pass`, `ray_two_pass`: the same with `executor = "ray"` on a Ray started on this
   machine with its cores (the default without `ray_address`);
3. `embed`: the embed stage alone on Ray, its results either `streamed` to the driver's writer
   (what the executor does) or written by the workers as `parquet` shards that the driver then
   reads and upserts on (frame_id, model); each twice, alternating, the first of each a warm-up
   (Ray's worker processes start and import TensorFlow);
4. `two_node`: the one pass on a `ray.cluster_utils.Cluster` of two nodes sharing this
   machine's cores, with the frames each node read and embedded.

With `--rounds N` (N >= 2) only the one pass is timed: local and Ray alternately, N times each
on fresh stores (Ray started once; each Ray call starts its actors and builds its model), so
the load other jobs put on a shared machine falls on both alike; `rounds` lists each pair and
`ray_vs_local_rounds` the median of the per-round ratios: whole call, whole command (the
driver's model build, `driver_build_seconds`, added to both) and steady.

Each pass reports `fps` (frames over the whole call, start-up included: Ray's actors and their
model builds) and `steady_fps` (frames after the first batch over the time after it: the rate
a long run settles at). `ray_vs_local` = ray steady_fps / local steady_fps (target >= 0.85 on
2 cores); `one_vs_two_pass` = one pass fps / (ingest + embed) fps. `read_fps_per_core` is the
per-file work alone (`imagestats.read_frame`) in one process: what a node's CPUs can feed a GPU.
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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ingest import make_frames  # noqa: E402  (bench/ingest.py: the demo at 1920x1080)

import store  # noqa: E402
from pipeline import executors, imagestats, pixels  # noqa: E402
from pipeline.embed import (  # noqa: E402
    BatchWriter,
    build_embedder,
    commit_vectors,
    decode_frame,
    embed_batch,
    embed_frames,
    embed_pending,
    record_model,
)
from pipeline.executors import LocalExecutor  # noqa: E402
from pipeline.ingest import ingest_folder, start_ingest  # noqa: E402
from pipeline.onepass import ingest_and_embed  # noqa: E402
from pipeline.ray_executor import RayExecutor  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from store import embeddings as embeddings_store  # noqa: E402


@dataclass
class Timed:
    """An executor that notes when each result reaches the driver."""

    inner: object
    stamps: list = field(default_factory=list)

    def map_batches(self, batches, prepare, finish):
        for result in self.inner.map_batches(batches, prepare, finish):
            n = len(result.results) if hasattr(result, "results") else result.n_frames
            self.stamps.append((time.perf_counter(), n))
            yield result

    def steady_fps(self) -> float | None:
        if len(self.stamps) < 3:
            return None
        (t0, _), (t1, _) = self.stamps[0], self.stamps[-1]
        return sum(n for _, n in self.stamps[1:]) / (t1 - t0)


def local_executor(settings: Settings, n: int, one_pass: bool):
    if not one_pass:
        return LocalExecutor(settings.workers)
    return LocalExecutor(
        settings.workers,
        processes=settings.workers > 1 and n >= 16,
        preload=["pipeline.imagestats"],
        initializer=imagestats.configure_worker,
        initargs=(settings.max_image_pixels,),
    )


def one_pass(folder: Path, db: Path, settings: Settings, built, executor) -> dict:
    timed = Timed(executor)
    started = time.perf_counter()
    _, embedded, _ = ingest_and_embed(
        folder, db, settings, progress=False, executor=timed, built=built
    )
    seconds = time.perf_counter() - started
    out = {
        "frames": embedded.embedded,
        "seconds": round(seconds, 2),
        "fps": round(embedded.embedded / seconds, 2),
        "steady_fps": _round(timed.steady_fps()),
    }
    if isinstance(executor, RayExecutor):
        out["pool"] = vars(executor.pool)
    return out


def two_pass(folder: Path, db: Path, settings: Settings, built) -> dict:
    """`ingest` then `embed` (their own executors, as the commands run them)."""
    started = time.perf_counter()
    ingest_folder(folder, db, settings, progress=False)
    ingested = time.perf_counter() - started
    summary = embed_frames(db, settings, progress=False, built=built)
    seconds = time.perf_counter() - started
    return {
        "frames": summary.embedded,
        "seconds": round(seconds, 2),
        "ingest_seconds": round(ingested, 2),
        "fps": round(summary.embedded / seconds, 2),
    }


def embed_two_ways(folder: Path, work: Path, settings: Settings, built) -> dict:
    """The embed stage on Ray: results streamed to the writer, or Parquet shards upserted."""
    out = {}
    db = work / "embed.duckdb"
    ingest_folder(folder, db, settings.replace(executor="local"), progress=False)
    embedder = built[0]
    record_model(db, embedder)
    for way in ("streamed_warmup", "parquet_warmup", "streamed", "parquet"):
        with store.connect(db) as con:
            con.execute("DELETE FROM embeddings")
            pending = embeddings_store.pending_frames(con, embedder.key, None)
        executor = RayExecutor(
            settings.batch_size, setup=partial(pixels.configure, settings.max_image_pixels)
        )
        started = time.perf_counter()
        if way.startswith("streamed"):
            embedded, _ = embed_pending(db, embedder, pending, settings, executor=executor)
        else:
            embedded = _embed_via_parquet(db, embedder, pending, executor, work / "shards")
        seconds = time.perf_counter() - started
        out[way] = {
            "frames": embedded,
            "seconds": round(seconds, 2),
            "fps": round(embedded / seconds, 2),
        }
    out["parquet_vs_streamed"] = _round(out["parquet"]["fps"] / out["streamed"]["fps"])
    return out


def _embed_via_parquet(db, embedder, pending, executor: RayExecutor, shards: Path) -> int:
    import pyarrow.parquet as pq

    shutil.rmtree(shards, ignore_errors=True)
    dataset = executor.dataset(
        pending, partial(decode_frame, size=embedder.input_size), partial(embed_batch, embedder)
    )
    dataset.write_parquet(str(shards))
    rows = (
        row for path in sorted(shards.glob("*.parquet")) for row in pq.read_table(path).to_pylist()
    )
    writer = BatchWriter(partial(commit_vectors, db, embedder))  # ON CONFLICT DO NOTHING
    for batch in executor.results(rows):
        writer.put(batch)
    writer.close()
    return writer.embedded


def read_rate(folder: Path, settings: Settings, n: int = 24) -> float:
    job_db = Path(tempfile.mkdtemp()) / "r.duckdb"
    job = start_ingest(folder, job_db, settings)
    tasks = [job.task(entry, 224) for entry in job.todo[:n]]
    pixels.configure(settings.max_image_pixels)
    started = time.perf_counter()
    done = sum(imagestats.read_frame(task).error is None for task in tasks)
    return done / (time.perf_counter() - started)


def _round(x):
    return None if x is None else round(x, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--model", default="vgg16-hed-grid")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the frames (kept and reused); default a temp folder",
    )
    parser.add_argument("--skip-two-node", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time only the one pass, local and Ray alternately, this many times each",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    folder = args.out or work / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    source = make_frames(folder, args.frames)
    cores = os.cpu_count() or 1
    settings = Settings(
        model=args.model, batch_size=args.batch_size, precision="float32", workers=cores
    )
    building = time.perf_counter()
    built = build_embedder(settings)
    build_seconds = time.perf_counter() - building
    n = sum(1 for _ in folder.rglob("*.jpg"))
    report = {
        "bench": "ray_cluster",
        "frames": n,
        "source": source,
        "model": args.model,
        "batch_size": args.batch_size,
        "cores": cores,
        "python": platform.python_version(),
        "read_fps_per_core": round(read_rate(folder, settings), 2),
        "driver_build_seconds": round(build_seconds, 2),
    }

    if args.rounds > 1:
        report.update(
            alternate(folder, work, settings, built, n, args.rounds, args.batch_size, build_seconds)
        )
        print(json.dumps(report, indent=2))
        shutil.rmtree(work, ignore_errors=True)
        return
    report["local_one_pass"] = one_pass(
        folder, work / "l1.duckdb", settings, built, local_executor(settings, n, True)
    )
    report["local_two_pass"] = two_pass(folder, work / "l2.duckdb", settings, built)
    ray_settings = settings.replace(executor="ray")
    with executors.session(ray_settings):
        report["ray_one_pass"] = one_pass(
            folder, work / "r1.duckdb", ray_settings, built, RayExecutor(args.batch_size)
        )
        report["ray_two_pass"] = two_pass(folder, work / "r2.duckdb", ray_settings, built)
        report["embed"] = embed_two_ways(folder, work, ray_settings, built)
    if not args.skip_two_node:
        report["two_node"] = two_nodes(folder, work, ray_settings, built, cores)

    local, ray_ = report["local_one_pass"], report["ray_one_pass"]
    report["ray_vs_local"] = (
        _round(ray_["steady_fps"] / local["steady_fps"])
        if (ray_["steady_fps"] and local["steady_fps"])
        else None
    )
    report["ray_vs_local_whole_call"] = _round(ray_["fps"] / local["fps"])
    report["one_vs_two_pass_local"] = _round(local["fps"] / report["local_two_pass"]["fps"])
    report["one_vs_two_pass_ray"] = _round(ray_["fps"] / report["ray_two_pass"]["fps"])
    report["model_per_core_fps"] = (
        _round(local["steady_fps"] / cores) if local["steady_fps"] else None
    )
    print(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def alternate(
    folder: Path, work: Path, settings: Settings, built, n: int, rounds: int, batch, build: float
):
    """`run`'s one pass, local then Ray, `rounds` times each on fresh stores (one Ray session).
    `whole_command` also counts the driver's model build (`build` seconds), which the command
    pays on either executor before its pass (Ray's actors then build their own)."""
    import statistics

    ray_settings = settings.replace(executor="ray")
    pairs = []
    with executors.session(ray_settings):
        for i in range(rounds):
            local = one_pass(
                folder, work / f"l{i}.duckdb", settings, built, local_executor(settings, n, True)
            )
            ray_ = one_pass(folder, work / f"r{i}.duckdb", ray_settings, built, RayExecutor(batch))
            ray_.pop("pool", None)
            pair = {
                "local": local,
                "ray": ray_,
                "whole_call": _round(ray_["fps"] / local["fps"]),
                "whole_command": _round((local["seconds"] + build) / (ray_["seconds"] + build)),
            }
            if local["steady_fps"] and ray_["steady_fps"]:
                pair["steady"] = _round(ray_["steady_fps"] / local["steady_fps"])
            pairs.append(pair)
    steady = [p["steady"] for p in pairs if "steady" in p]
    return {
        "rounds": pairs,
        "ray_vs_local_rounds": {
            "whole_call": _round(statistics.median(p["whole_call"] for p in pairs)),
            "whole_command": _round(statistics.median(p["whole_command"] for p in pairs)),
            "steady": _round(statistics.median(steady)) if steady else None,
        },
    }


def two_nodes(folder: Path, work: Path, settings: Settings, built, cores: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    per_node = max(1, cores // 2)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        executor = RayExecutor(settings.batch_size)
        out = one_pass(folder, work / "n2.duckdb", settings, built, executor)
        names = {node: f"node{i}" for i, node in enumerate(sorted(executor.prepared_per_node))}
        out["read_per_node"] = {names[k]: v for k, v in executor.prepared_per_node.items()}
        out["embedded_per_node"] = {
            names.get(k, k[:8]): v for k, v in executor.finished_per_node.items()
        }
        out["cpus_per_node"] = per_node
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
