"""`run` and `demo` orchestration: every stage in order under one run lock, then the dashboard.

Each stage is incremental on its own (ingest adds only new or changed files, embed only frames
without a vector, analyze writes a new run), so re-running after new frames arrive does only the
new work. `run` ingests and embeds the new files in one pass (`pipeline.onepass`: each file read
and decoded once), then embeds any other frame that lacks a vector (frames `ingest` added alone,
or the batch a killed run left). The run lock (`store.writer_lock`) keeps a second run off the
same store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import store
from pipeline import executors
from pipeline.settings import Settings

DASHBOARD_APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def run_all(
    folder: Path,
    db: Path,
    settings: Settings,
    weather_csv: Path | None = None,
    progress: bool = True,
) -> Iterator[str]:
    """Ingest and embed (one pass), import weather (when given), embed what still lacks a
    vector, and analyze; yields one line per stage."""
    with store.writer_lock(db):  # first: a second run is refused before any heavy import
        from pipeline.analyze import analyze
        from pipeline.embed import embed_frames
        from pipeline.onepass import ingest_and_embed

        with executors.session(settings):  # `executor = "ray"`: one Ray for both stages
            ingested, embedded, built = ingest_and_embed(folder, db, settings, progress=progress)
            yield ingested.describe()
            if weather_csv is not None:
                from pipeline import weather

                yield weather.import_csv(
                    weather_csv, db, station=settings.weather_station
                ).describe()
                weather.apply_settings(db, settings)
                yield weather.describe_join(db)
            rest = embed_frames(db, settings, progress=progress, built=built)
        yield embedded.merge(rest).describe()
        yield analyze(db, settings, progress=progress).describe()


def import_ground_truth(db: Path, truth_csv: Path, frames_dir: Path) -> str:
    """Load a `path,label,kind` CSV into `ground_truth` so the dashboard can score detectors."""
    from pipeline.evaluate import read_truth
    from pipeline.ingest import stored_text
    from store import analysis as analysis_store

    truth = read_truth(truth_csv)
    root = stored_text(os.path.realpath(frames_dir))
    with store.writer_lock(db), store.connect(db) as con:
        n_matched = analysis_store.import_ground_truth(con, truth, root)
    return f"ground truth: {n_matched} of {len(truth)} rows matched frames ({truth_csv})"


def serve_dashboard(db: Path, port: int = 8501) -> None:
    """Start the dashboard in the foreground on http://localhost:PORT until Ctrl-C."""
    url = f"http://localhost:{port}"
    print(f"dashboard: {url}  (Ctrl-C to stop)", flush=True)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD_APP),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--",
        "--db",
        str(Path(db).resolve()),
    ]
    try:
        subprocess.run(
            command, check=False, env={**os.environ, "PYTHONPATH": str(DASHBOARD_APP.parents[1])}
        )
    except KeyboardInterrupt:
        pass
