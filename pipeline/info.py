"""`python -m pipeline info`: a plain-text summary of a store, read through a read-only connection.

Frames (count, time span, timestamp sources, daylight), the remembered place, ingest errors by
stage with examples, embedding models and vector counts, analysis runs, weather, reviews, and
the clock check when one was stored. Empty tables say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import store
from pipeline.daylight import DAY_LUMA_KEY, DayLuma, Place, daylight_by
from pipeline.timestamps import copied_times_advice
from store import analysis as analysis_store
from store import frames as frames_store
from store import kv

N_EXAMPLES = 3


def describe_store(db: Path) -> str:
    """The whole summary as text (several lines)."""
    db = Path(db)
    with store.connect(db, read_only=True) as con:
        frames = frames_store.frame_summary(con)
        settings = kv.get_all(con)
        errors = frames_store.error_summary(con, N_EXAMPLES)
        models = frames_store.model_summary(con)
        n_runs, runs = frames_store.run_summary(con)
        running = analysis_store.running_runs(con)
        weather = frames_store.weather_summary(con)
        reviews = frames_store.review_summary(con)
        truth = frames_store.ground_truth_summary(con)
    lines = [f"store: {db} ({_size(db)})"]
    lines += _frames(frames)
    lines += _place(settings)
    lines += _errors(errors)
    lines += _models(models)
    lines += _runs(n_runs, runs, _interrupted(running))
    lines += _weather(weather)
    lines.append(
        "reviews: " + (", ".join(f"{n} {v}" for v, n in reviews.items()) if reviews else "none")
    )
    if truth and truth[0]:
        lines.append(f"ground truth: {truth[0]} frames, {truth[1]} anomalies")
    return "\n".join(lines)


def _size(path: Path) -> str:
    try:
        n = path.stat().st_size
    except OSError:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _when(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A time as text; DuckDB hands times outside Python's years 1..9999 over as text."""
    if isinstance(value, str):
        return f"{value} (out of range)"
    return value.strftime(fmt)


def _frames(f: dict[str, Any]) -> list[str]:
    if not f["n_frames"]:
        return ["frames: none yet (run `python -m pipeline ingest FOLDER --db FILE`)"]
    roots = ", ".join(f["roots"]) + (f" and {f['n_roots'] - 3} more" if f["n_roots"] > 3 else "")
    lines = [f"frames: {f['n_frames']} from {roots} ({f['n_thumbnails']} thumbnails)"]
    if f["first"] is not None:
        lines.append(f"  camera time: {_when(f['first'])} .. {_when(f['last'])}")
    if f["first_utc"] is not None:
        lines.append(f"  UTC:         {_when(f['first_utc'])} .. {_when(f['last_utc'])}")
    if any(isinstance(f[k], str) for k in ("first", "last", "first_utc", "last_utc")):
        lines.append(
            "  some times are outside the years 1..9999: check the camera clock and "
            "the clock offset (`python -m pipeline locate --clock-offset MIN`)"
        )
    lines.append(
        "  time sources: "
        + ", ".join(
            f"{'none (no plausible date)' if src == 'none' else src} {n}"
            for src, n in f["time_sources"].items()
        )
    )
    lines.extend(f"  {copied_times_advice(*copied)}" for copied in f["copied_times"])
    lines.append("  daylight: " + ", ".join(f"{k} {n}" for k, n in f["daylight"].items()))
    if f["n_duplicate_contents"]:
        lines.append(
            f"  duplicates: {f['n_duplicate_contents']} frame(s) have the same bytes "
            "as another frame"
        )
    return lines


def _place(settings: dict[str, Any]) -> list[str]:
    tz = settings.get("timezone")
    lat, lon = settings.get("lat"), settings.get("lon")
    offset = settings.get("clock_offset_minutes")
    where = Place(tz, lat, lon, daylight_from=settings.get("daylight_from"))
    parts = [
        f"timezone {tz}" if tz else "timezone not set (camera clock taken as UTC)",
        f"location {lat:.4f}, {lon:.4f}" if where.has_location else "location not set",
    ]
    if offset:
        parts.append(f"clock offset {offset:+g} min")
    lines = ["place: " + "; ".join(parts), f"  day and night: by {daylight_by(where)}"]
    own = DayLuma.from_json(settings.get(DAY_LUMA_KEY))
    if own is not None and where.by_brightness:
        hours = ", ".join(f"{h:02d}" for h in own.hours)
        lines.append(
            f"  its own day: day above a mean luma of {own.floor:.0f} at {hours} h of its clock "
            "(a dark scene)"
        )
    check = settings.get("clock_check")
    if check is not None:
        lines.append("clock check: " + _clock_check(check))
    return lines


def _clock_check(check: Any) -> str:
    if not isinstance(check, dict):
        return str(check)
    summary = check.get("summary") or check.get("message")
    if summary:
        return str(summary)
    return ", ".join(f"{k} {v}" for k, v in check.items())


def _errors(errors: dict[str, Any]) -> list[str]:
    if not errors:
        return ["errors: none"]
    total = sum(e["n"] for e in errors.values())
    lines = [
        f"errors: {total} (" + ", ".join(f"{stage} {e['n']}" for stage, e in errors.items()) + ")"
    ]
    for stage, e in errors.items():
        for path, message in e["examples"]:
            lines.append(f"  [{stage}] {path}: {message}")
        if e["n"] > len(e["examples"]):
            lines.append(f"  [{stage}] ... and {e['n'] - len(e['examples'])} more")
    return lines


def _models(models: list[tuple]) -> list[str]:
    """One line per store: each model, its dim, its vectors and the precision that made them
    (a model whose vectors were made at two precisions says so: see `pipeline.models.precision`)."""
    if not models:
        return ["models: none (run `python -m pipeline embed --db FILE`)"]
    return [
        "models: "
        + ", ".join(
            f"{model} ({dim or '?'}-d, {n} vectors{_precisions(split)})"
            for model, _family, dim, n, split in models
        )
    ]


def _precisions(split: dict[str, int]) -> str:
    if not split:
        return ""
    if len(split) == 1:
        return f", {next(iter(split))}"
    return ", mixed precision: " + " + ".join(f"{n} {p}" for p, n in split.items())


def _interrupted(running: list[tuple]) -> set[int]:
    """Runs still marked 'running' whose process is gone (killed); the next analyze fails them."""
    if not running:
        return set()
    from pipeline.analyze import process_alive  # heavy; only when a run is marked running

    return {
        run_id for run_id, pid, host, started in running if not process_alive(pid, host, started)
    }


def _runs(n_runs: int, runs: list[tuple], interrupted: set[int] = frozenset()) -> list[str]:
    if not n_runs:
        return ["analysis runs: none (run `python -m pipeline analyze --db FILE`)"]
    lines = [
        f"analysis runs: {n_runs}" + (f" (newest {len(runs)} shown)" if n_runs > len(runs) else "")
    ]
    for run_id, model, status, n_frames, started, _finished in runs:
        if run_id in interrupted:
            status = "interrupted (its process is gone; the next analyze marks it failed)"
        when = _when(started, "%Y-%m-%d %H:%M") if started is not None else "?"
        lines.append(
            f"  run {run_id}: {model}, {status}, {n_frames if n_frames is not None else '?'}"
            f" frames, started {when} UTC"
        )
    return lines


def _weather(weather: list[tuple]) -> list[str]:
    if not weather:
        return ["weather: none (see `python -m pipeline weather --help`)"]
    total = sum(w[1] for w in weather)
    lines = [f"weather: {total} observations from {len(weather)} station(s)"]
    for station, n, first, last, source in weather:
        span = (
            f"{_when(first, '%Y-%m-%d')} .. {_when(last, '%Y-%m-%d')}" if first is not None else ""
        )
        lines.append(f"  {station}: {n} rows {span}" + (f" ({source})" if source else ""))
    return lines
