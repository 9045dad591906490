"""Benchmark the MP4 export on 1920x1080 originals against decoding alone; prints JSON.

    .venv/bin/python bench/export.py [--frames 3000] [--small 500] [--width 1280]
                                     [--deflicker 15] [--long 40000] [--out DIR]

Renders `--frames` demo frames at 1920x1080 (`pipeline.demo.render_demo`; kept in `--out` and
reused) and ingests them into a store there. Then, in one run, each in its own child process so
its peak RSS is its own (`os.wait4` in a small runner process):
- `python -m pipeline export --format mp4` of every frame, without and with `--deflicker`, and
  of the first `--small` days' worth of frames (about the same peak RSS at a sixth of the
  frames says the export streams);
- the ceiling: the same decode and resize (`pipeline.video.load_frame`, same threads), no
  encoding;
- the export (deflicker on) of `--long` small frames (320x180, one a minute, made and ingested
  once) and of the days holding the first tenth of them: what a long video costs in memory.
Frames/s = frames / wall seconds of the child, start-up included; CPU ms per frame = the
child's user + system seconds / frames.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import store  # noqa: E402
from pipeline.ingest import ingest_folder  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from store import facts  # noqa: E402
from store.export import file_path  # noqa: E402

SIZE = (1920, 1080)

CEILING = """
import sys
from concurrent.futures import ThreadPoolExecutor
from pipeline import video
files = open(sys.argv[1]).read().splitlines()
width, workers = int(sys.argv[2]), int(sys.argv[3])
options = video.VideoOptions(width=width, workers=workers)
data = video.read_original(files[0], options)
size = video.output_size(width, video.decode_frame(data, width, options).info["upright_size"])
with ThreadPoolExecutor(workers) as pool:
    n = sum(1 for _ in pool.map(lambda f: video.load_frame(f, max(size), size, options), files))
print(n)
"""


def small_store(out: Path, n: int) -> Path:
    """A store of `n` small frames (320x180, one a minute, EXIF-dated), made and ingested once:
    the long export whose peak RSS is compared with that of a tenth of it."""
    folder, db = out / f"long-{n}", out / f"long-{n}.duckdb"
    if db.exists():
        return db
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:180, 0:320].astype(np.float32)
    start = datetime(2024, 4, 1)
    for i in range(n):
        pixels = 60 + 0.3 * x + 0.2 * y + 40 * np.sin(i / 50) + rng.normal(0, 3, (180, 320))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = (start + timedelta(minutes=i)).strftime("%Y:%m:%d %H:%M:%S")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(
            folder / f"s{i:06d}.jpg", quality=80, exif=exif
        )
    ingest_folder(folder, db, Settings(), progress=False)
    return db


def frames_and_store(out: Path, n: int) -> tuple[Path, Path]:
    """(frames folder, store) with `n` 1080p demo frames, rendered and ingested once."""
    from pipeline.demo import render_demo

    frames = out / "frames"
    if len(list(frames.rglob("*.jpg"))) < n:
        render_demo(out, n_frames=n, size=SIZE, progress=False)
    db = out / "export-bench.duckdb"
    if not db.exists():
        ingest_folder(frames, db, Settings(), progress=False)
    return frames, db


# Runs one command and prints its wall seconds, peak RSS (KiB) and exit code. A small process of
# its own, because Linux carries the spawning process's peak RSS into the child's `ru_maxrss`.
RUNNER = """
import os, subprocess, sys, time
started = time.perf_counter()
with open(sys.argv[1], "wb") as log:
    proc = subprocess.Popen(sys.argv[2:], stdout=log)
    _, status, usage = os.wait4(proc.pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, usage.ru_utime + usage.ru_stime,
      os.waitstatus_to_exitcode(status))
"""


def run(cmd: list[str], log: Path) -> tuple[dict, str]:
    """The wall seconds, CPU seconds and peak RSS of one command in a child process, and its
    stdout."""
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(log), *cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    wall, rss_kib, cpu, code = done.stdout.split()
    if int(code) != 0:
        sys.exit(f"failed ({code}): {' '.join(cmd[:8])} ...\n{done.stderr[-2000:]}")
    return {
        "wall_s": float(wall),
        "cpu_s": float(cpu),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),
    }, log.read_text()


def figures(n: int, measured: dict) -> dict:
    return {
        "frames": n,
        "wall_s": round(measured["wall_s"], 1),
        "frames_per_s": round(n / measured["wall_s"], 1),
        "cpu_ms_per_frame": round(1000 * measured["cpu_s"] / n, 1),
        "peak_rss_mib": measured["peak_rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument(
        "--small",
        type=int,
        default=500,
        help="also export about this many frames (whole days) for the RSS check",
    )
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--deflicker", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-export-1080p"))
    parser.add_argument(
        "--long",
        type=int,
        default=40000,
        help="also export this many small frames (and a tenth of them), "
        "deflicker on, for the peak RSS of a long video; 0: skip",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    frames, db = frames_and_store(args.out, args.frames)
    with store.connect(db, read_only=True) as con:
        rows = facts.export_frames(con, facts.FrameFilter())
    rows = rows[rows["taken_at"].notna()]
    files = [file_path(p) for p in rows["abs_path"]]
    days = list(rows["taken_at"].dt.date)
    small_to = days[min(args.small, len(days)) - 1]
    n_small = sum(1 for d in days if d <= small_to)
    workers = min(Settings().workers, 4)
    video = args.out / "bench.mp4"
    base = [
        sys.executable,
        "-m",
        "pipeline",
        "export",
        "--db",
        str(db),
        "--out",
        str(video),
        "--width",
        str(args.width),
        "--no-progress",
    ]
    log = args.out / "stdout.txt"
    results = {}
    for name, extra, n in (
        ("all", [], len(files)),
        ("all_deflicker", ["--deflicker", str(args.deflicker)], len(files)),
        ("small", ["--to", str(small_to)], n_small),
    ):
        measured, summary = run(base + extra, log)
        assert summary.startswith(f"exported {n:,} of"), summary
        results[name] = figures(n, measured)
        if name == "all":
            results[name]["mp4_mib"] = round(video.stat().st_size / 2**20, 1)
    listing = args.out / "files.txt"
    listing.write_text("\n".join(files))
    measured, printed = run(
        [sys.executable, "-c", CEILING, str(listing), str(args.width), str(workers)], log
    )
    assert int(printed) == len(files), printed
    ceiling = figures(len(files), measured)
    long = {}
    if args.long:
        small = small_store(args.out, args.long)
        tenth = (datetime(2024, 4, 1) + timedelta(minutes=args.long // 10 - 1)).date()
        for extra in (["--to", str(tenth)], []):
            measured, summary = run(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "export",
                    "--db",
                    str(small),
                    "--out",
                    str(args.out / "long.mp4"),
                    "--width",
                    "320",
                    "--deflicker",
                    str(args.deflicker),
                    "--no-progress",
                    *extra,
                ],
                log,
            )
            n = int(summary.split()[1].replace(",", ""))
            long[str(n)] = figures(n, measured)
    print(
        json.dumps(
            {
                "bench": "export_mp4",
                "originals": list(SIZE),
                "width": args.width,
                "deflicker": args.deflicker,
                "decode_threads": workers,
                "cpu_count": os.cpu_count(),
                "export": results["all"],
                "export_deflicker": results["all_deflicker"],
                "export_small": results["small"],
                "decode_only": ceiling,
                "ratio_export_to_decode": round(
                    results["all"]["frames_per_s"] / ceiling["frames_per_s"], 2
                ),
                "ratio_deflicker_to_plain": round(
                    results["all_deflicker"]["frames_per_s"] / results["all"]["frames_per_s"], 2
                ),
                "long_export_320x180_deflicker": long,
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
