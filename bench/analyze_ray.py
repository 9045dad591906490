"""`analyze`'s pixel detectors scored here against scored on Ray, on the same frames; prints JSON.

    .venv/bin/python bench/analyze_ray.py DB [--frames 30000] [--rounds 2]
        [--detectors alignment,background] [--skip-two-node]

DB is a store with thumbnails (`bench/analyze.py --frames 50000 --thumbnails --keep --out DIR`
builds one). In one process, on the store's first `--frames` frames, each detector is fitted as
`analyze` fits it (the fit scores every frame; `alignment` scans them with its own pass above
its 20,000-frame view sample, so give more frames than that to spread it too):

1. `local` and `ray` alternately, `--rounds` times each: no spread, then `RayFrameSpread` on a
   Ray started on this machine with its cores (`executor = "ray"` without `ray_address`), so a
   shared machine's load falls on both alike. `ray_vs_local` is the median over rounds of
   local wall / Ray wall: the share of the local rate Ray keeps (Ray's start is not in it; it
   is reported as `ray_start_s`).
2. `two_node`: once on a `ray.cluster_utils.Cluster` of two nodes sharing this machine's cores,
   with the frames each node scored.

Every Ray fit's scores are compared with the local fit's, bit for bit (NaN where NaN).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import store  # noqa: E402
from pipeline.analyze import PIXEL_CHUNK  # noqa: E402
from pipeline.detectors import make_detector  # noqa: E402
from pipeline.detectors.batch import FrameBatch  # noqa: E402
from pipeline.pixels import ThumbnailReader  # noqa: E402
from pipeline.ray_executor import RayFrameSpread  # noqa: E402
from store import analysis as sa  # noqa: E402


def load_batch(db: Path, frames: int) -> FrameBatch:
    with store.connect(db, read_only=True) as con:
        rows = sa.load_frames(con)
    if frames:
        rows = rows.iloc[:frames]
    ids = rows["frame_id"].to_numpy(np.int64)
    batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 2), np.float32), rows)
    batch.pixels = ThumbnailReader(db, chunk=PIXEL_CHUNK)
    return batch


def fit(key: str, batch: FrameBatch, spread: RayFrameSpread | None) -> tuple[float, np.ndarray]:
    batch.spread = spread
    started = time.perf_counter()
    det = make_detector(key).fit(batch)
    batch.spread = None
    return time.perf_counter() - started, det.decision_scores_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--frames", type=int, default=30_000, help="the first N frames (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--detectors", default="alignment,background")
    parser.add_argument("--skip-two-node", action="store_true")
    args = parser.parse_args()
    import ray

    db = args.db.resolve()
    batch = load_batch(db, args.frames)
    keys = args.detectors.split(",")
    out: dict = {"frames": len(batch), "cores": os.cpu_count(), "rounds": [], "detectors": keys}
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out["ray_start_s"] = round(time.perf_counter() - started, 1)
    local_scores: dict[str, np.ndarray] = {}
    try:
        for round_ in range(args.rounds):
            for key in keys:
                wall_local, scores = fit(key, batch, None)
                local_scores[key] = scores
                spread = RayFrameSpread(db, PIXEL_CHUNK)
                wall_ray, got = fit(key, batch, spread)
                row = {
                    "round": round_,
                    "detector": key,
                    "local_s": round(wall_local, 1),
                    "ray_s": round(wall_ray, 1),
                    "ray_vs_local": round(wall_local / wall_ray, 3),
                    "ray_tasks": spread.tasks,
                    "same_scores": bool(np.array_equal(got, scores, equal_nan=True)),
                }
                out["rounds"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    out["ray_vs_local"] = {
        key: statistics.median(r["ray_vs_local"] for r in out["rounds"] if r["detector"] == key)
        for key in keys
    }
    if not args.skip_two_node:
        from ray.cluster_utils import Cluster

        per_node = max(1, (os.cpu_count() or 2) // 2)
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=per_node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            out["two_node"] = []
            for key in keys:
                spread = RayFrameSpread(db, PIXEL_CHUNK)
                wall, got = fit(key, batch, spread)
                row = {
                    "detector": key,
                    "node_cpus": per_node,
                    "wall_s": round(wall, 1),
                    "tasks": spread.tasks,
                    "frames_per_node": sorted(spread.frames_per_node.values(), reverse=True),
                    "same_scores": bool(np.array_equal(got, local_scores[key], equal_nan=True)),
                }
                out["two_node"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
    out["load_avg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
