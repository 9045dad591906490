"""The synthetic demo garden time-lapse: `render_demo(out_dir)` writes frames, weather, truth.

A fixed camera over a UK back garden, lit by the real sun path for the place and dates, one
frame every 10-15 minutes day and night, with clouds, rain, fog, wind and labelled anomalies.
Deterministic: the same arguments give byte-identical files with the same mtimes, so rendering
again over an existing folder leaves an incremental ingest nothing to do.

Layout of `out_dir`:
  frames/YYYY/MM/DD/garden_YYYYMMDD_HHMMSS.jpg  camera-local time, EXIF DateTimeOriginal
  weather.csv        hourly, Open-Meteo CSV export layout (GMT)
  ground_truth.csv   path,label,kind (path relative to frames/)
  scene.csv          path,taken_at_local,sun_elevation,condition,... (what each frame shows)
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np

from pipeline.demo.anomalies import KINDS, plan_anomalies
from pipeline.demo.timeline import DEFAULT_START, DEMO_PLACE, DemoPlace, frame_clocks
from pipeline.demo.weather import generate_weather
from pipeline.errors import InputError

__all__ = ["DEMO_PLACE", "DemoPlace", "DemoResult", "KINDS", "render_demo"]

_FRAME_NAME = re.compile(r"^garden_\d{8}_\d{6}\.jpg$")


@dataclass
class DemoResult:
    """What `render_demo` wrote, and a one-line summary."""

    out_dir: Path
    frames_dir: Path
    weather_csv: Path
    truth_csv: Path
    scene_csv: Path
    n_frames: int
    first_local: datetime
    last_local: datetime
    timezone: str
    anomalies: dict = field(default_factory=dict)  # kind -> number of frames

    @property
    def n_anomalies(self) -> int:
        return sum(self.anomalies.values())

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in self.anomalies.items()) or "none"
        return (
            f"demo: {self.n_frames} frames {self.first_local:%Y-%m-%d %H:%M} .. "
            f"{self.last_local:%Y-%m-%d %H:%M} ({self.timezone}); {self.n_anomalies} "
            f"anomalous ({kinds}); frames in {self.frames_dir}, weather {self.weather_csv}, "
            f"truth {self.truth_csv}"
        )


MAX_FRAMES = 100_000


def render_demo(
    out_dir: Path,
    n_frames: int = 1200,
    seed: int = 7,
    hard: bool = False,
    start: date | None = None,
    size: tuple[int, int] = (640, 360),
    interval_minutes: tuple[float, float] = (10, 15),
    progress: bool = True,
    workers: int | None = None,
    place: DemoPlace = DEMO_PLACE,
) -> DemoResult:
    """Render the demo time-lapse into `out_dir` (see the module docstring for the files)."""
    from pipeline.demo import writer

    out_dir = Path(out_dir)
    if not 1 <= n_frames <= MAX_FRAMES:
        raise InputError(
            f"the demo renders 1 to {MAX_FRAMES:,} frames, not {n_frames:,} "
            "(100,000 take hours and ~6 GB of JPEGs)"
        )
    width, height = int(size[0]), int(size[1])
    if width < 32 or height < 24 or width > 8192 or height > 8192:
        raise InputError(f"demo frame size must be between 32x24 and 8192x8192, got {size}")
    lo, hi = interval_minutes
    if not 0 < lo <= hi:
        raise InputError(
            f"interval_minutes must be two numbers 0 < low <= high, got {interval_minutes}"
        )
    frames_dir = out_dir / "frames"
    try:
        frames_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the demo folder {frames_dir}: {exc}") from exc

    rng = np.random.default_rng(seed)
    clocks = frame_clocks(n_frames, rng, place, start or DEFAULT_START, (lo, hi))
    weather = generate_weather(clocks[0].utc, clocks[-1].utc, place, rng)
    events = plan_anomalies(clocks, weather, rng, hard=hard)
    specs = _frame_specs(clocks, weather, events)

    _remove_stale(frames_dir, {s.rel_path for s in specs})
    _render_all(specs, frames_dir, (width, height), seed, progress, workers)

    weather_csv = out_dir / "weather.csv"
    truth_csv = out_dir / "ground_truth.csv"
    scene_csv = out_dir / "scene.csv"
    weather.write_csv(weather_csv, place)
    writer.write_csv(
        truth_csv,
        ["path", "label", "kind"],
        [
            (s.rel_path, 0 if s.event is None else 1, "normal" if s.event is None else s.event.kind)
            for s in specs
        ],
    )
    writer.write_csv(
        scene_csv,
        [
            "path",
            "taken_at_local",
            "sun_elevation",
            "condition",
            "taken_at_utc",
            "sun_azimuth",
            "cloud_cover_pct",
            "wind_speed_kmh",
        ],
        [
            (
                s.rel_path,
                c.local.strftime("%Y-%m-%d %H:%M:%S"),
                f"{s.sun_elevation:.2f}",
                s.condition,
                c.utc.strftime("%Y-%m-%d %H:%M:%S"),
                f"{s.sun_azimuth:.2f}",
                int(s.cloud_cover),
                f"{s.wind_kmh:.1f}",
            )
            for s, c in zip(specs, clocks)
        ],
    )
    last_seconds = specs[-1].utc_seconds
    for path in (weather_csv, truth_csv, scene_csv):
        os.utime(path, (last_seconds, last_seconds))

    counts = Counter(s.event.kind for s in specs if s.event is not None)
    return DemoResult(
        out_dir,
        frames_dir,
        weather_csv,
        truth_csv,
        scene_csv,
        n_frames,
        clocks[0].local,
        clocks[-1].local,
        place.timezone,
        {k: counts[k] for k in KINDS if counts[k]},
    )


def _frame_specs(clocks, weather, events):
    from pipeline.demo.render import FrameSpec

    specs = []
    for clock, event in zip(clocks, events):
        i = weather.index_of(clock.utc)
        specs.append(
            FrameSpec(
                index=clock.index,
                rel_path=clock.rel_path,
                local=clock.local,
                utc_seconds=clock.utc.timestamp(),
                sun_elevation=clock.sun_elevation,
                sun_azimuth=clock.sun_azimuth,
                condition=weather.condition[i],
                cloud_cover=float(weather.cloud_cover[i]),
                precipitation=float(weather.precipitation[i]),
                wind_kmh=float(weather.wind_kmh[i]),
                wetness=weather.wetness(i),
                snow_cover=weather.snow_cover(i),
                event=event,
            )
        )
    return specs


def _remove_stale(frames_dir: Path, keep: set[str]) -> None:
    """Delete demo frames of an earlier, different render (only files named like ours)."""
    for path in sorted(frames_dir.rglob("garden_*.jpg")):
        rel = path.relative_to(frames_dir).as_posix()
        if _FRAME_NAME.match(path.name) and rel not in keep:
            path.unlink()
    for folder in sorted((p for p in frames_dir.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


# --- rendering, in-process or in a small pool of forked workers ---------------------------------

_WORKER: dict = {}


def _render_all(specs, frames_dir: Path, size, seed: int, progress: bool, workers) -> None:
    from tqdm import tqdm

    from pipeline.demo.scene import build_scene

    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(specs) >= 120 else 1
    _WORKER.clear()
    _WORKER.update(scene=build_scene(size), seed=seed, frames_dir=frames_dir)
    bar = tqdm(total=len(specs), unit="frame", desc="render demo", disable=not progress)
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")  # workers inherit the built scene
            with ctx.Pool(workers, initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(_render_one, specs, chunksize=8):
                    bar.update()
        else:
            _worker_init()
            for spec in specs:
                _render_one(spec)
                bar.update()
    finally:
        bar.close()
        _WORKER.clear()


def _worker_init() -> None:
    from pipeline.demo.render import Renderer

    _WORKER["renderer"] = Renderer(_WORKER["scene"], _WORKER["seed"])


def _render_one(spec) -> int:
    from pipeline.demo import writer

    pixels = _WORKER["renderer"].render(spec)
    data = writer.jpeg_bytes(pixels, spec.local)
    keep = spec.event.params["keep"] if spec.event and spec.event.kind == "truncated" else None
    return writer.write_frame(_WORKER["frames_dir"] / spec.rel_path, data, spec.utc_seconds, keep)
