"""The command line (`python -m pipeline ...`): thin click commands over the pipeline modules.

This is the edge where library errors become one readable line and an exit code: expected
problems (`PipelineError`, `store.StoreError`) print `error: ...` and exit 1; Ctrl-C exits 130.
Heavy libraries (TensorFlow, PyOD) are imported inside the commands that need them, so
`--help` and `info` answer at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

import store
from pipeline import __version__
from pipeline.errors import InputError, PipelineError
from pipeline.settings import Settings, help_for


class _Group(click.Group):
    """Turns expected errors into one line on stderr and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (PipelineError, store.StoreError) as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: work committed so far is kept; run the command again to "
                       "continue.", err=True)
            ctx.exit(130)


def _settings(ctx: click.Context, **flags) -> Settings:
    """Settings from defaults, the --config TOML file, then the command's flags."""
    return Settings.load(ctx.obj.get("config"), **flags)


def _db_option(exists: bool = False):
    return click.option(
        "--db", "db", required=True, metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path, exists=exists),
        help="the DuckDB store file")


def _place_options(func):
    func = click.option("--timezone", "timezone", metavar="TZ", help=help_for("timezone"))(func)
    func = click.option("--lat", type=float, help=help_for("lat"))(func)
    func = click.option("--lon", type=float, help=help_for("lon"))(func)
    return func


def _folder_argument(func):
    # existence is checked by the command (InputError: one line, exit 1), not by click (exit 2)
    return click.argument("folder", type=click.Path(path_type=Path))(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipeline")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file with settings (keys as in pipeline/settings.py)")
@click.option("-v", "--verbose", is_flag=True, help="log more detail")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """Find junk frames in fixed-camera time-lapse footage and see what the camera saw.

    Typical use: `python -m pipeline run FOLDER --db garden.duckdb --timezone Europe/London
    --lat 51.5 --lon -0.1`, then `streamlit run dashboard/app.py -- --db garden.duckdb`.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"config": config}


# --- ingest and info -------------------------------------------------------------------------

@cli.command()
@_folder_argument
@_db_option()
@_place_options
@click.option("--workers", type=int, help=help_for("workers"))
@click.pass_context
def ingest(ctx, folder: Path, db: Path, timezone, lat, lon, workers) -> None:
    """Add the frames in FOLDER (recursive) to the store: timestamps, thumbnails, statistics."""
    from pipeline.ingest import ingest_folder

    settings = _settings(ctx, timezone=timezone, lat=lat, lon=lon, workers=workers)
    with store.writer_lock(db):
        summary = ingest_folder(folder, db, settings)
    click.echo(summary.describe())


@cli.command()
@_db_option()
def info(db: Path) -> None:
    """Summarise a store: frames, time span, timestamp sources, errors, models, runs."""
    from pipeline.info import describe_store

    click.echo(describe_store(db))


# --- one command for everything ---------------------------------------------------------------

@cli.command()
@_folder_argument
@_db_option()
@_place_options
@click.option("--model", help=help_for("model"))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), help=help_for("weights"))
@click.option("--weather", "weather_csv", type=click.Path(dir_okay=False, path_type=Path,
              exists=True), help="hourly weather CSV to import with the run")
@click.option("--detectors", help="comma-separated detector keys")
@click.pass_context
def run(ctx, folder, db, timezone, lat, lon, model, weights, weather_csv, detectors) -> None:
    """Ingest + (weather import) + embed + analyze FOLDER into the store, incrementally."""
    from pipeline.runner import run_all

    settings = _settings(ctx, timezone=timezone, lat=lat, lon=lon, model=model, weights=weights,
                         detectors=_split(detectors))
    for line in run_all(folder, db, settings, weather_csv=weather_csv):
        click.echo(line)


# --- demo -------------------------------------------------------------------------------------

@cli.command()
@click.option("--frames", "n_frames", type=click.IntRange(min=20), default=1200, show_default=True,
              help="number of frames to render")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-data"),
              show_default=True, help="folder for the frames, weather and ground truth")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="store file [default: OUT/garden.duckdb]")
@click.option("--seed", type=int, default=7, show_default=True, help="random seed of the scene")
@click.option("--hard", is_flag=True, help="smaller, fainter, shorter anomalies")
@click.option("--model", help=help_for("model"))
@click.option("--serve/--no-serve", default=True, show_default=True,
              help="start the dashboard when done")
@click.option("--port", type=int, default=8501, show_default=True, help="dashboard port")
@click.pass_context
def demo(ctx, n_frames, out, db, seed, hard, model, serve, port) -> None:
    """Render a synthetic garden time-lapse, run every stage on it, open the dashboard."""
    from pipeline.demo import DEMO_PLACE, render_demo
    from pipeline.runner import import_ground_truth, run_all, serve_dashboard

    db = db or out / "garden.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_demo(out, n_frames=n_frames, seed=seed, hard=hard)
    click.echo(rendered.describe())
    settings = _settings(ctx, timezone=DEMO_PLACE.timezone, lat=DEMO_PLACE.lat,
                         lon=DEMO_PLACE.lon, model=model)
    for line in run_all(rendered.frames_dir, db, settings, weather_csv=rendered.weather_csv):
        click.echo(line)
    click.echo(import_ground_truth(db, rendered.truth_csv, rendered.frames_dir))
    if serve:
        serve_dashboard(db, port)
    else:
        click.echo(f"dashboard: streamlit run dashboard/app.py -- --db {db}")


# --- analysis, evaluation, scoring new frames (issue 4) ----------------------------------------

@cli.command()
@_db_option(exists=True)
@click.option("--model", help="embedding model whose vectors to analyse [default: the settings' "
              "model, or the only model with vectors]")
@click.option("--detectors", metavar="KEY,...", help=help_for("detectors"))
@click.option("--clusterer", type=click.Choice(["kmeans", "hdbscan"]), help=help_for("clusterer"))
@click.option("--n-clusters", "n_clusters", metavar="auto|K", help=help_for("n_clusters"))
@click.option("--contamination", type=float, help=help_for("contamination"))
@click.option("--map", "map_method", type=click.Choice(["pca", "umap"]), help=help_for("map_method"))
@click.option("--consensus-rule", "consensus_rule", help=help_for("consensus_rule"))
@click.option("--random-state", "random_state", type=int, help=help_for("random_state"))
@click.option("--quiet", is_flag=True, help="no progress lines")
@click.pass_context
def analyze(ctx, db: Path, model, detectors, clusterer, n_clusters, contamination, map_method,
            consensus_rule, random_state, quiet) -> None:
    """Cluster and score the frames' embeddings: writes one new analysis run.

    \b
    Detectors: iforest lof knn ecod copod hbos (PyOD, on the PCA space), temporal same_time
    (time-lapse aware), dark overexposed blurry low_information haze (image quality);
    consensus is always added.
    """
    from pipeline.analyze import analyze as run_analysis, resolve_model

    settings = _settings(ctx, detectors=_split(detectors), clusterer=clusterer,
                         n_clusters=n_clusters, contamination=contamination,
                         map_method=map_method, consensus_rule=consensus_rule,
                         random_state=random_state)
    with store.writer_lock(db):
        settings = settings.replace(model=resolve_model(db, model, settings.model))
        result = run_analysis(db, settings, progress=not quiet)
    click.echo(result.describe())


@cli.command()
@_db_option(exists=True)
@click.option("--truth", "truth_csv", type=click.Path(dir_okay=False, path_type=Path, exists=True),
              help="ground truth CSV path,label,kind (paths relative to the frames folder) "
              "[default: the store's ground_truth table]")
@click.option("--json", "as_json", is_flag=True, help="print every row as JSON")
def evaluate(db: Path, truth_csv: Path | None, as_json: bool) -> None:
    """ROC-AUC, average precision and precision@k of every detector against a ground truth.

    Per model (latest complete run of each), on all and on daylight frames, and per anomaly kind.
    """
    from pipeline.evaluate import evaluate as run_evaluate, format_table

    results = run_evaluate(db, truth_csv)
    if as_json:
        click.echo(results.to_json(orient="records", indent=1))
    else:
        click.echo(format_table(results))


@cli.command("score-new")
@_folder_argument
@_db_option(exists=True)
@click.option("--run-id", "run_id", type=int, help="run to score against [default: the latest "
              "complete run with a saved fit]")
@click.option("--json", "as_json", is_flag=True, help="print every scored frame as JSON")
@click.pass_context
def score_new(ctx, folder: Path, db: Path, run_id, as_json: bool) -> None:
    """Ingest FOLDER and score its new frames against a frozen run, without refitting."""
    from pipeline.score_new import score_new as run_score_new

    settings = _settings(ctx)
    with store.writer_lock(db):
        result = run_score_new(folder, db, settings, progress=not as_json, run_id=run_id)
    if as_json:
        click.echo(result.frames.to_json(orient="records", indent=1))
    else:
        click.echo(result.describe())


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def main() -> None:
    cli(prog_name="python -m pipeline")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
