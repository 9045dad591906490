"""`run` and `demo` orchestration: every stage in order under one run lock, then the dashboard.

Each stage is incremental on its own (ingest adds only new or changed files, embed only frames
without a vector, analyze writes a new run), so re-running after new frames arrive does only the
new work. `run` ingests and embeds the new files in one pass (`pipeline.onepass`: each file read
and decoded once), then embeds any other frame that lacks a vector (frames `ingest` added alone,
or the batch a killed run left). The run lock (`store.writer_lock`) keeps a second run off the
same store.

Before any frame is read, `run_all` checks what would otherwise fail hours later (`check_run`:
the model key and the analysis settings) and reads the weather file with the importer's own
code (`read_weather`: readable, a layout it knows, its columns and units), so a bad file or
setting costs seconds, not an ingest and embed of the whole archive.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import store
from pipeline import executors
from pipeline.errors import InputError
from pipeline.inputs import check_folder
from pipeline.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.weather import WeatherImportSummary

DASHBOARD_APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def check_run(settings: Settings) -> None:
    """What `run` would otherwise find wrong only after ingest and embed: the model key and the
    analysis settings (detectors, clusterer, ...). Raises InputError naming the fix."""
    from pipeline.analyze import check_settings
    from pipeline.models import get_model

    get_model(settings.model)
    check_settings(settings.with_detector_defaults())


def read_weather(
    weather_csv: Path,
    settings: Settings,
    columns: dict[str, str] | None = None,
    units: str | None = None,
) -> tuple[pd.DataFrame, WeatherImportSummary]:
    """Read a weather CSV as `run` imports it (`weather.read_csv`, the importer's own reading:
    layout, columns, units, the settings' weather_station), writing nothing; `columns` and
    `units` are `weather import`'s --columns and --units."""
    from pipeline import weather

    return weather.read_csv(
        Path(weather_csv), station=settings.weather_station, columns=columns, units=units
    )


def run_all(
    folder: Path,
    db: Path,
    settings: Settings,
    weather_csv: Path | None = None,
    progress: bool = True,
    weather_columns: dict[str, str] | None = None,
    weather_units: str | None = None,
) -> Iterator[str]:
    """Ingest and embed (one pass), import weather (when given; `weather_columns` and
    `weather_units` as `weather import`'s --columns and --units), embed what still lacks a
    vector, and analyze; yields one line per stage. The settings and the weather file are
    checked first (`check_run`, `read_weather`)."""
    with store.writer_lock(db):  # first: a second run is refused before any heavy import
        check_folder(Path(folder))
        observations = None
        if weather_csv is not None:
            observations, read = read_weather(
                weather_csv, settings, columns=weather_columns, units=weather_units
            )
        check_run(settings)
        from pipeline.analyze import analyze
        from pipeline.embed import embed_frames
        from pipeline.onepass import ingest_and_embed

        with executors.session(settings):  # `executor = "ray"`: one Ray for both stages
            ingested, embedded, built = ingest_and_embed(folder, db, settings, progress=progress)
            yield ingested.describe()
            problem = ingested.nothing_read()
            if problem and not _has_frames(db):  # nothing to embed or analyze: say why
                raise InputError(problem)
            if observations is not None:
                from pipeline import weather

                weather.write_observations(observations, db, read)
                yield read.describe()
                weather.apply_settings(db, settings)
                yield weather.describe_join(db)
            rest = embed_frames(db, settings, progress=progress, built=built)
        yield embedded.merge(rest).describe()
        yield analyze(db, settings, progress=progress).describe()


def _has_frames(db: Path) -> bool:
    from store import embeddings as embeddings_store

    with store.connect(db, read_only=True) as con:
        return embeddings_store.count_frames(con) > 0


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
