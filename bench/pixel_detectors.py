"""The pixel detectors' CPU per frame, two checkouts on one store, interleaved; prints JSON.

    .venv/bin/python bench/pixel_detectors.py DB --checkout /work/main --checkout .
        [--detectors alignment,background] [--rounds 2] [--frames N]

DB is a store with thumbnails (`bench/analyze.py --frames 20000 --thumbnails --keep --out DIR`
builds one). For each round and detector, each checkout fits that detector (with its default
settings, as `analyze` does: the fit scores every frame) on the same frames in a fresh process
of its own code (reading thumbnails in the chunks its `analyze` reads them in), the
checkouts in turn, so a shared machine's load falls on both alike. Reported
per checkout and detector: CPU seconds of the process's fit (all threads), ms of CPU per frame,
wall seconds, and whether its scores equal the first checkout's bit for bit (NaN where NaN),
else how far they are (the largest difference, the same frames unscored, the same order).
The ratio of CPU per frame is the figure to read on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Run in the checkout's own interpreter path: fits one detector, saves its scores, prints JSON.
CHILD = """
import json, resource, sys, time
import numpy as np
import store
from store import analysis as sa
from pipeline.detectors import make_detector
from pipeline.detectors.batch import FrameBatch
from pipeline.pixels import ThumbnailReader

db, key, frames, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with store.connect(db, read_only=True) as con:
    rows = sa.load_frames(con)
if frames:
    rows = rows.iloc[:frames]
ids = rows["frame_id"].to_numpy(np.int64)
batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 2), np.float32), rows)
from pipeline import analyze  # the chunk analyze reads thumbnails in (1,024 before PIXEL_CHUNK)
chunk = getattr(analyze, "PIXEL_CHUNK", 1024)
batch.pixels = ThumbnailReader(db, chunk=chunk, read_only=True)
det = make_detector(key)
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
det.fit(batch)
after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
np.save(out, det.decision_scores_)
print(json.dumps({"frames": len(ids), "chunk": chunk, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}))
"""


def run_one(checkout: Path, db: Path, key: str, frames: int, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), key, str(frames), str(out)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _difference(scores: np.ndarray, first: np.ndarray) -> dict:
    """How far `scores` are from the first checkout's: the largest absolute difference, the
    same frames unscored (NaN), and the same order of the frames (ties kept as ties)."""
    both = np.isfinite(scores) & np.isfinite(first)
    same_nan = bool((np.isfinite(scores) == np.isfinite(first)).all())
    diff = float(np.abs(scores[both] - first[both]).max()) if both.any() else 0.0
    order = np.lexsort((np.arange(both.sum()), first[both]))
    ranked = scores[both][order]
    same_order = bool((np.diff(ranked) >= 0).all()) and bool(
        ((np.diff(first[both][order]) == 0) == (np.diff(ranked) == 0)).all()
    )
    return {"max_abs_difference": diff, "same_unscored": same_nan, "same_order": same_order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--checkout", type=Path, action="append", required=True)
    parser.add_argument("--detectors", default="alignment,background")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--frames", type=int, default=0, help="the first N frames (0: all)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for key in args.detectors.split(","):
                first = None
                for i, checkout in enumerate(checkouts):
                    out = Path(tmp) / f"{key}-{i}.npy"
                    got = run_one(checkout, args.db.resolve(), key, args.frames, out)
                    scores = np.load(out)
                    first = scores if first is None else first
                    got.update(
                        round=round_,
                        detector=key,
                        checkout=str(checkout),
                        ms_cpu_per_frame=round(1000 * got["cpu_s"] / got["frames"], 3),
                        same_scores_as_first=bool(np.array_equal(scores, first, equal_nan=True)),
                        **_difference(scores, first),
                    )
                    results.append(got)
                    print(json.dumps(got), file=sys.stderr, flush=True)
    summary = {}
    for key in args.detectors.split(","):
        per = {}
        for checkout in checkouts:
            mine = [r for r in results if r["detector"] == key and r["checkout"] == str(checkout)]
            per[str(checkout)] = round(
                1000 * sum(r["cpu_s"] for r in mine) / sum(r["frames"] for r in mine), 3
            )
        base = per[str(checkouts[0])]
        summary[key] = {
            "ms_cpu_per_frame": per,
            "speedup_vs_first": {c: round(base / v, 2) for c, v in per.items()},
        }
    print(
        json.dumps(
            {"load_avg_after": os.getloadavg(), "runs": results, "summary": summary}, indent=1
        )
    )


if __name__ == "__main__":
    main()
