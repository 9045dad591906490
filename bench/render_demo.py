"""Benchmark the synthetic demo renderer: frames per second at a size; prints JSON.

    .venv/bin/python bench/render_demo.py [--frames 1200] [--size 640x360] [--workers N]
                                          [--hard] [--out DIR]

Times `pipeline.demo.render_demo` end to end (plan, static scene, every frame rendered, JPEG
encoded and written, CSVs), wall clock and CPU seconds of this process and its workers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.demo import render_demo  # noqa: E402


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--hard", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="keep the frames here")
    args = parser.parse_args()
    width, height = (int(x) for x in args.size.lower().split("x"))
    out = args.out or Path(tempfile.mkdtemp(prefix="demo-bench-"))
    try:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = render_demo(
            out,
            n_frames=args.frames,
            size=(width, height),
            hard=args.hard,
            workers=args.workers,
            progress=False,
        )
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        total_bytes = sum(p.stat().st_size for p in result.frames_dir.rglob("*.jpg"))
        print(
            json.dumps(
                {
                    "bench": "render_demo",
                    "frames": result.n_frames,
                    "size": [width, height],
                    "hard": args.hard,
                    "workers": args.workers or min(2, os.cpu_count() or 1),
                    "cpu_count": os.cpu_count(),
                    "wall_s": round(wall, 2),
                    "frames_per_s": round(result.n_frames / wall, 1),
                    "cpu_s": round(cpu, 2),
                    "cpu_ms_per_frame": round(1000 * cpu / result.n_frames, 1),
                    "mean_kb_per_frame": round(total_bytes / result.n_frames / 1024, 1),
                    "anomalous_frames": result.n_anomalies,
                    "load_average_1m": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
