"""Benchmark the run's neighbour index at growing sizes: build, calibrate, query; prints JSON.

    .venv/bin/python bench/neighbors.py [--frames 100000,300000,750000] [--dims 6,64]
                                        [--kind auto] [--k 20]

For each size and dimension, in its own process (clean peak RSS): synthetic points shaped like
a run's PCA space (a daily and yearly cycle through a random basis plus noise whose variance
falls as 1/i over the dims, as PCA components' do, 0.5% shifted outliers), then
`pipeline.neighbors.NeighborIndex(kind)` as analyze uses it: `fit`, `calibrate` (the recall
against exact search on 1,000 sampled frames, probing more lists until 0.95) and `query` of
every frame's k nearest. Reported: seconds (wall and CPU, all threads) per step, the index kind
chosen, the recall and the lists probed, peak RSS. 'auto' chooses as analyze does: a KD-tree in
<= 12 dims, exact search up to 200,000 frames, an inverted-file index above.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def points(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    phase = 2 * np.pi * (idx % 144) / 144
    year = 2 * np.pi * idx / 144 / 365
    feats = np.column_stack(
        [
            np.sin(phase),
            np.cos(phase),
            np.sin(2 * phase),
            np.cos(2 * phase),
            np.sin(year),
            np.cos(year),
        ]
    )
    z = feats @ rng.normal(size=(6, dim)) * 3
    z += rng.normal(size=(n, dim)) * np.sqrt(1.0 / np.arange(1, dim + 1))
    out = rng.random(n) < 0.005
    z[out] += rng.normal(size=(int(out.sum()), dim)) * 2
    return z.astype(np.float32), idx + 1


def one(n: int, dim: int, kind: str, k: int) -> dict:
    from pipeline.neighbors import NeighborIndex

    z, ids = points(n, dim)
    steps = {}

    def timed(name, func):
        wall, cpu = time.perf_counter(), time.process_time()
        out = func()
        steps[name] = [round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)]
        return out

    index = timed("fit", lambda: NeighborIndex(kind).fit(z, ids))
    timed("calibrate", lambda: index.calibrate(z, ids, k))
    timed("query", lambda: index.query(z, ids, k))
    return {
        "frames": n,
        "dims": dim,
        "kind": index.kind_,
        "recall": index.recall_,
        "recall_frames": index.recall_frames_,
        "nprobe": index.nprobe_,
        "n_lists": getattr(index.index_, "nlist", None),
        "steps_wall_cpu_s": steps,
        "total_s": round(sum(s[0] for s in steps.values()), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="100000,300000,750000")
    parser.add_argument("--dims", default="6,64")
    parser.add_argument("--kind", default="auto", help="auto, exact, kdtree or ivf")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n, dim = map(int, args.one.split(","))
        print(json.dumps(one(n, dim, args.kind, args.k)))
        return
    results = []
    for dim in [int(d) for d in args.dims.split(",")]:
        for n in [int(x) for x in args.frames.split(",")]:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{n},{dim}",
                    "--kind",
                    args.kind,
                    "--k",
                    str(args.k),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                results.append(
                    {"frames": n, "dims": dim, "error": done.stderr.strip().splitlines()[-1:]}
                )
            else:
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
