"""The command line (`python -m pipeline ...`): thin click commands over the pipeline modules.

This is the edge where library errors become one readable line and an exit code: expected
problems (`PipelineError`, `store.StoreError`) print `error: ...` and exit 1; Ctrl-C exits 130.
Heavy libraries (TensorFlow, scikit-learn, PyOD) are imported inside the commands that need
them, after the cheap checks (store and folder exist, run lock free), so `--help`, `info` and
the refusal of a busy store answer at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

import store
from pipeline import __version__
from pipeline.errors import InputError, PipelineError
from pipeline.models.registry import PRECISION_CHOICES
from pipeline.settings import DAYLIGHT_FROM, Settings, help_for

if TYPE_CHECKING:
    from store.analysis import PruneReport


class _HelpFlags:
    """`-h` as well as `--help`, set on every command itself rather than inherited from the
    group: click builds a command's help option once and keeps it, so a command first reached
    without the group (`make_context` in a test) would otherwise answer only `--help` after."""

    def __init__(self, *args, **kwargs) -> None:
        own = kwargs.get("context_settings") or {}
        kwargs["context_settings"] = {"help_option_names": ["-h", "--help"], **own}
        super().__init__(*args, **kwargs)


class _Command(_HelpFlags, click.Command):
    pass


class _SubGroup(_HelpFlags, click.Group):
    command_class = _Command


class _Group(_HelpFlags, click.Group):
    """Turns expected errors into one line on stderr and a non-zero exit, no traceback."""

    command_class = _Command
    group_class = _SubGroup

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Also notes whether the command's own arguments ask for its help (`COMMAND --help`,
        also after other arguments; not after `--`, where it is a value): the group's callback
        then reads no --config file, which the help does not need."""
        rest = super().parse_args(ctx, args)
        own = rest[: rest.index("--")] if "--" in rest else rest
        ctx.meta["asks_for_help"] = any(arg in ctx.help_option_names for arg in own)
        return rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (PipelineError, store.StoreError) as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: work committed so far is kept; run the command again to continue.",
                err=True,
            )
            ctx.exit(130)
        except Exception as exc:  # a full or read-only disk is expected too: one line, exit 1
            problem = store.db.disk_error(exc)
            if problem is None:
                raise
            click.secho(f"error: {problem}", err=True, fg="red")
            ctx.exit(1)


def _settings(ctx: click.Context, **flags) -> Settings:
    """Settings from defaults, the --config TOML file (read and checked once, by `cli`), then
    the command's flags (those not None)."""
    return ctx.obj["settings"].replace(**flags)


def _db_option(exists: bool = False):
    return click.option(
        "--db",
        "db",
        required=True,
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path, exists=exists),
        help="the DuckDB store file",
    )


def _place_options(func):
    func = click.option("--timezone", "timezone", metavar="TZ", help=help_for("timezone"))(func)
    func = click.option("--lat", type=float, help=help_for("lat"))(func)
    func = click.option("--lon", type=float, help=help_for("lon"))(func)
    return _daylight_from_option(func)


def _daylight_from_option(func):
    return click.option(
        "--daylight-from",
        "daylight_from",
        type=click.Choice(DAYLIGHT_FROM),
        help=help_for("daylight_from"),
    )(func)


def _precision_option(func):
    return click.option(
        "--precision", type=click.Choice(PRECISION_CHOICES), help=help_for("precision")
    )(func)


def _new_frames_precision_option(func):
    """`--precision` of the commands that embed new frames for a run (score-new, serve, watch):
    `auto` there is the precision of the run's vectors (`score_new.run_precision`)."""
    return click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        help="precision of the model's maths for the new frames [default: auto, "
        "which here is the precision of the run's vectors]",
    )(func)


def _executor_options(func):
    func = click.option("--ray-address", metavar="HOST:PORT|auto", help=help_for("ray_address"))(
        func
    )
    return click.option(
        "--executor", type=click.Choice(["local", "ray"]), help=help_for("executor")
    )(func)


def _junk_causes_option(func):
    return click.option(
        "--junk-causes", "junk_causes", metavar="CAUSE,...", help=help_for("junk_causes")
    )(func)


def _weather_columns_options(func):
    """`--columns` and `--units` of a weather file, the same flags for `weather import` and
    `run --weather`, so the importer's advice ("name it with --columns time=COLUMN") works for
    both."""
    func = click.option(
        "--units",
        type=click.Choice(["us", "si"]),
        help="units of weather columns that do not name theirs (us: °F, in, mph, mi; "
        "si: °C, mm, m/s, km) [default: guessed]",
    )(func)
    return click.option(
        "--columns",
        metavar="TARGET=COL,...",
        help="map weather columns by hand, e.g. temperature_c=temp,wind_speed_ms=wspd:kmh "
        "(targets: time, station, temperature_c, precipitation_mm, cloud_cover_pct, "
        "wind_speed_ms, visibility_km, weather_code; optional :unit)",
    )(func)


def _folder_argument(func):
    # checked as it is parsed, before the command takes the run lock (whose file would be left
    # beside a store never made), with our one line and exit 1 rather than click's exit 2
    def check(ctx: click.Context, param: click.Parameter, folder: Path) -> Path:
        from pipeline.inputs import check_folder

        check_folder(folder)
        return folder

    return click.argument("folder", type=click.Path(path_type=Path), callback=check)(func)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="pipeline")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with settings (keys as in pipeline/settings.py)",
)
@click.option("-v", "--verbose", is_flag=True, help="log more detail")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """Find junk frames in fixed-camera time-lapse footage and see what the camera saw.

    Typical use: `python -m pipeline run FOLDER --db garden.duckdb --timezone Europe/London
    --lat 51.5 --lon -0.1`, then `streamlit run dashboard/app.py -- --db garden.duckdb`.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Every command: a missing, unreadable or unknown-key --config file is refused here, before
    # the command does anything; the commands layer their flags on these (`_settings`). A
    # command's --help runs nothing and needs none: it is shown whatever the file holds.
    if ctx.meta.get("asks_for_help"):
        return
    ctx.obj = {"settings": Settings.load(config)}


# --- ingest and info -------------------------------------------------------------------------


@cli.command()
@_folder_argument
@_db_option()
@_place_options
@click.option("--workers", type=click.IntRange(min=1), help=help_for("workers"))
@click.option(
    "--batch-size",
    "ingest_batch_size",
    type=click.IntRange(min=1),
    help=help_for("ingest_batch_size"),
)
@click.option("--max-image-pixels", type=click.IntRange(min=1), help=help_for("max_image_pixels"))
@_executor_options
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="show a progress bar (frames/s, ETA) on stderr",
)
@click.pass_context
def ingest(
    ctx,
    folder: Path,
    db: Path,
    timezone,
    lat,
    lon,
    daylight_from,
    workers,
    ingest_batch_size,
    max_image_pixels,
    executor,
    ray_address,
    progress,
) -> None:
    """Add the frames in FOLDER (recursive) to the store: timestamps, thumbnails, statistics.

    Re-running adds only new or changed files; bad files are listed by `info`. Exits 1 when it
    tried files and could read none of them.
    """
    from pipeline.ingest import ingest_folder

    settings = _settings(
        ctx,
        timezone=timezone,
        lat=lat,
        lon=lon,
        daylight_from=daylight_from,
        workers=workers,
        ingest_batch_size=ingest_batch_size,
        max_image_pixels=max_image_pixels,
        executor=executor,
        ray_address=ray_address,
    )
    with store.writer_lock(db):
        summary = ingest_folder(folder, db, settings, progress=progress)
    click.echo(summary.describe())
    problem = summary.nothing_read()
    if problem:
        raise InputError(problem)


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
@click.option(
    "--weather",
    "weather_csv",
    type=click.Path(dir_okay=False, path_type=Path, exists=True),
    help="hourly weather CSV to import with the run (as `weather import`; checked before "
    "ingest starts; naive times are UTC unless the file declares its zone, else import it "
    "with `weather import --timezone`)",
)
@_weather_columns_options
@click.option("--detectors", help="comma-separated detector keys")
@_precision_option
@_executor_options
@_junk_causes_option
@click.pass_context
def run(
    ctx,
    folder,
    db,
    timezone,
    lat,
    lon,
    daylight_from,
    model,
    weights,
    weather_csv,
    columns,
    units,
    detectors,
    precision,
    executor,
    ray_address,
    junk_causes,
) -> None:
    """Ingest + embed (one read and decode per new file) + (weather import) + analyze FOLDER
    into the store, incrementally.

    The settings and the --weather file are checked before any frame is read.
    """
    from pipeline.runner import run_all

    if weather_csv is None and (columns is not None or units is not None):
        raise InputError("--columns and --units describe the --weather file: give --weather CSV")
    mapping = _pairs(columns, "--columns")

    settings = _settings(
        ctx,
        timezone=timezone,
        lat=lat,
        lon=lon,
        daylight_from=daylight_from,
        model=model,
        weights=weights,
        detectors=_split(detectors),
        precision=precision,
        executor=executor,
        ray_address=ray_address,
        junk_causes=_split(junk_causes),
    )
    with store.writer_lock(db):  # the same lock run_all takes: the store's models hold still
        settings = _with_model(settings, db, model)
        lines = run_all(
            folder,
            db,
            settings,
            weather_csv=weather_csv,
            weather_columns=mapping,
            weather_units=units,
        )
        for line in lines:
            click.echo(line)


# --- demo -------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--frames",
    "n_frames",
    type=click.IntRange(min=20),
    default=1200,
    show_default=True,
    help="number of frames to render (at most 100,000)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="folder for the frames, weather and ground truth",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="store file [default: OUT/garden.duckdb]",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**32 - 1),
    default=7,
    show_default=True,
    help="random seed of the scene",
)
@click.option("--hard", is_flag=True, help="smaller, fainter, shorter anomalies")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="first day of the time-lapse, YYYY-MM-DD [default: 2024-04-02]",
)
@click.option(
    "--size", default="640x360", show_default=True, metavar="WxH", help="frame size in pixels"
)
@click.option("--model", help=help_for("model"))
@click.option(
    "--serve/--no-serve", default=True, show_default=True, help="start the dashboard when done"
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8501, show_default=True, help="dashboard port"
)
@_junk_causes_option
@click.pass_context
def demo(ctx, n_frames, out, db, seed, hard, start, size, model, serve, port, junk_causes) -> None:
    """Render a synthetic garden time-lapse, run every stage on it, open the dashboard.

    The settings are checked before the frames are rendered."""
    from pipeline.demo import DEMO_PLACE, render_demo
    from pipeline.runner import check_run, import_ground_truth, run_all, serve_dashboard

    settings = _settings(
        ctx,
        timezone=DEMO_PLACE.timezone,
        lat=DEMO_PLACE.lat,
        lon=DEMO_PLACE.lon,
        model=model,
        junk_causes=_split(junk_causes),
    )
    check_run(settings)
    db = db or out / "garden.duckdb"
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_demo(
        out,
        n_frames=n_frames,
        seed=seed,
        hard=hard,
        start=start.date() if start else None,
        size=_size(size),
    )
    click.echo(rendered.describe())
    with store.writer_lock(db):
        settings = _with_model(settings, db, model)
        for line in run_all(rendered.frames_dir, db, settings, weather_csv=rendered.weather_csv):
            click.echo(line)
    click.echo(import_ground_truth(db, rendered.truth_csv, rendered.frames_dir))
    if serve:
        serve_dashboard(db, port)
    else:
        click.echo(f"dashboard: streamlit run dashboard/app.py -- --db {db}")


# --- embeddings -------------------------------------------------------------------------------


@cli.command()
@_db_option(exists=True)
@click.option("--model", help=help_for("model"))
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), help=help_for("weights"))
@click.option("--batch-size", type=click.IntRange(min=1), help=help_for("batch_size"))
@click.option("--workers", type=click.IntRange(min=1), help=help_for("workers"))
@_precision_option
@_executor_options
@click.option(
    "--replace",
    is_flag=True,
    help="delete this model's vectors first, then embed every frame again",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="show a progress bar (frames/s, ETA) on stderr",
)
@click.pass_context
def embed(
    ctx,
    db: Path,
    model,
    weights,
    batch_size,
    workers,
    precision,
    executor,
    ray_address,
    replace,
    progress,
) -> None:
    """Compute a vector per frame with MODEL for every frame that lacks one (resumable)."""
    settings = _settings(
        ctx,
        model=model,
        weights=weights,
        batch_size=batch_size,
        workers=workers,
        precision=precision,
        executor=executor,
        ray_address=ray_address,
    )
    with store.writer_lock(db):  # first: a busy store is refused before the heavy imports
        settings = _with_model(settings, db, model)
        from pipeline.embed import embed_frames

        summary = embed_frames(db, settings, progress=progress, replace=replace)
    click.echo(summary.describe())


@cli.command()
@click.option(
    "--db",
    "db",
    metavar="FILE",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path, exists=True),
    help="also list the models this store holds vectors of",
)
@click.pass_context
def models(ctx, db: Path | None) -> None:
    """List embedding models: key, dim, input size, weights, and whether usable here now."""
    from pipeline.models.listing import describe_models
    from store import embeddings as embeddings_store

    stored = None
    if db is not None:
        with store.connect(db, read_only=True) as con:
            stored = embeddings_store.list_model_rows(con)
    click.echo(describe_models(default=_settings(ctx).model, stored=stored))


# --- weather, place and clock -----------------------------------------------------------------


@cli.group()
def weather() -> None:
    """Hourly weather observations: import a CSV, fetch from Open-Meteo, choose the station."""


@weather.command("import")
@click.argument(
    "csv_path", metavar="CSV", type=click.Path(dir_okay=False, path_type=Path, exists=True)
)
@_db_option()
@click.option(
    "--station",
    help="station name for a file without a station column; with one, "
    "import only this station's rows [default: the settings' weather_station]",
)
@_weather_columns_options
@click.option(
    "--timezone",
    metavar="TZ",
    help="IANA zone of naive times in the file [default: UTC, or the zone the file "
    "declares: Open-Meteo's header, Environment Canada's standard time]",
)
@click.option(
    "--replace",
    is_flag=True,
    help="replace the stored observations of the stations and hours this file has rows for "
    "(a corrected file); other hours and stations are left as they are [default: keep "
    "stored observations, add only new ones]",
)
@click.pass_context
def weather_import(
    ctx, csv_path: Path, db: Path, station, columns, units, timezone, replace
) -> None:
    """Add the observations in CSV (Open-Meteo export, Environment Canada, Meteostat or generic)
    to the store; the settings' weather_station and weather_tolerance_minutes, when set, then
    choose the join (as `run --weather` does)."""
    from pipeline.weather import import_csv

    mapping = _pairs(columns, "--columns")
    settings = _settings(ctx)
    with store.writer_lock(db):
        summary = import_csv(
            csv_path,
            db,
            station=station or settings.weather_station,
            columns=mapping,
            units=units,
            timezone=timezone,
            replace=replace,
        )
        click.echo(summary.describe())
        _set_weather_join(db, settings)


@weather.command("fetch")
@_db_option()
@click.option(
    "--lat", type=float, help="latitude [default: the settings' lat, else the stored place]"
)
@click.option(
    "--lon", type=float, help="longitude [default: the settings' lon, else the stored place]"
)
@click.option(
    "--start", metavar="DATE", help="first UTC day, e.g. 2024-04-01 [default: the first frame's]"
)
@click.option("--end", metavar="DATE", help="last UTC day [default: the last frame's]")
@click.option(
    "--url",
    "base_url",
    default=None,
    metavar="URL",
    help="archive API address [default: https://archive-api.open-meteo.com/v1/archive]",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0, max=20),
    default=3,
    show_default=True,
    help="tries again after a network error, HTTP 429 or 5xx, with backoff",
)
@click.pass_context
def weather_fetch(ctx, db: Path, lat, lon, start, end, base_url, retries) -> None:
    """Fetch hourly observations for the frames' time span from the Open-Meteo archive; the
    settings' weather_station and weather_tolerance_minutes, when set, then choose the join."""
    from pipeline.weather import fetch as openmeteo

    settings = _settings(ctx, lat=lat, lon=lon)
    lat, lon = settings.lat, settings.lon
    if lat is None or lon is None:
        lat, lon = _stored_place(db, lat, lon)
    with store.writer_lock(db):
        summary = openmeteo.fetch(
            db,
            lat,
            lon,
            start=start,
            end=end,
            base_url=base_url or openmeteo.ARCHIVE_URL,
            retries=retries,
        )
        click.echo(summary.describe())
        _set_weather_join(db, settings)


@weather.command("stations")
@_db_option(exists=True)
@click.option(
    "--use",
    "use_station",
    metavar="STATION",
    help="join frames to this station's observations from now on "
    "[default: the settings' weather_station, when set]",
)
@click.option("--tolerance", type=float, metavar="MIN", help=help_for("weather_tolerance_minutes"))
@click.pass_context
def weather_stations(ctx, db: Path, use_station, tolerance) -> None:
    """List weather stations in the store and the one frames are joined to; change it (with
    --use/--tolerance, or the settings' weather_station/weather_tolerance_minutes)."""
    from pipeline.weather import describe_stations

    _set_weather_join(db, _settings(ctx, weather_station=use_station), tolerance)
    click.echo(describe_stations(db))


def _set_weather_join(db: Path, settings: Settings, tolerance: float | None = None) -> None:
    """Remember the weather join the settings give (`weather_station`, and
    `weather_tolerance_minutes` when not the default, as `weather.apply_settings` reads them),
    a --tolerance flag first; nothing is written, nor the store locked, when none is given."""
    from pipeline.weather import set_join

    default = Settings().weather_tolerance_minutes
    if tolerance is None and settings.weather_tolerance_minutes != default:
        tolerance = settings.weather_tolerance_minutes
    if settings.weather_station is None and tolerance is None:
        return
    with store.writer_lock(db):  # re-entrant: `weather import` and `fetch` already hold it
        set_join(db, station=settings.weather_station, tolerance_minutes=tolerance)


@cli.command()
@_db_option(exists=True)
@click.option("--timezone", "timezone", metavar="TZ", help=help_for("timezone"))
@click.option("--lat", type=float, help=help_for("lat"))
@click.option("--lon", type=float, help=help_for("lon"))
@click.option(
    "--clock-offset",
    "clock_offset",
    type=float,
    metavar="MIN",
    help=help_for("clock_offset_minutes"),
)
@_daylight_from_option
@click.option("--check", is_flag=True, help="then check the camera clock against the sun")
@click.pass_context
def locate(ctx, db: Path, timezone, lat, lon, clock_offset, daylight_from, check) -> None:
    """Set or change the camera's place and clock, or how day and night are told; recompute
    UTC times, daylight and weather."""
    from pipeline.clock import check_clock
    from pipeline.daylight import recompute
    from pipeline.weather import describe_join

    settings = _settings(
        ctx,
        timezone=timezone,
        lat=lat,
        lon=lon,
        clock_offset_minutes=clock_offset,
        daylight_from=daylight_from,
    )
    with store.writer_lock(db):
        if clock_offset is not None:
            _store_clock_offset(db, clock_offset)
        done = recompute(db, settings)
        click.echo(_describe_place(done))
        click.echo(describe_join(db))
        if check:
            click.echo(check_clock(db, settings).describe())


@cli.command()
@_db_option(exists=True)
@click.pass_context
def clock(ctx, db: Path) -> None:
    """Check the camera clock against sunrise and sunset at the stored place."""
    from pipeline.clock import check_clock

    with store.writer_lock(db):
        result = check_clock(db, _settings(ctx))
    click.echo(result.describe())


def _with_model(settings: Settings, db: Path, flag: str | None) -> Settings:
    """The settings with the model to use: --model, else one set in the settings file, else
    the default when the store has its vectors (or has none at all), else the only model the
    store has vectors of.

    So a store embedded before the default changed keeps its model: re-running `run` embeds
    only the new frames, with the same model, instead of every frame again.
    """
    requested = flag or (settings.model if settings.model != Settings().model else None)
    if requested or not db.exists():
        return settings.replace(model=requested)
    from store import embeddings as embeddings_store

    with store.connect(db) as con:
        models = [row.model for row, n in embeddings_store.list_model_rows(con) if n > 0]
    if settings.model in models or len(models) != 1:
        return settings
    return settings.replace(model=models[0])


def _pairs(text: str | None, flag: str) -> dict[str, str] | None:
    if text is None:
        return None
    pairs = {}
    for part in _split(text) or []:
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"{flag} wants TARGET=COLUMN pairs separated by commas, not {part!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _stored_place(db: Path, lat, lon) -> tuple[float, float]:
    from store import kv

    if db.exists():
        with store.connect(db, read_only=True) as con:
            lat = lat if lat is not None else kv.get(con, "lat")
            lon = lon if lon is not None else kv.get(con, "lon")
    if lat is None or lon is None:
        raise InputError(
            f"give --lat and --lon, or store the place first with `python -m "
            f"pipeline locate --db {db} --lat LAT --lon LON`"
        )
    return float(lat), float(lon)


def _store_clock_offset(db: Path, minutes: float) -> None:
    from store import kv

    with store.connect(db) as con:
        kv.put(con, "clock_offset_minutes", float(minutes))


def _describe_place(done: dict) -> str:
    where = f"{done['lat']:.4f}, {done['lon']:.4f}" if done["lat"] is not None else "no location"
    line = (
        f"place: {where}; time zone {done['timezone'] or 'UTC'}; clock offset "
        f"{done['clock_offset_minutes']:+g} min; day and night by {done['daylight_by']}; "
        f"{done['n_frames']} frames recomputed"
    )
    daylight = ", ".join(f"{k} {v}" for k, v in sorted(done["daylight"].items()))
    if daylight:
        line += f" ({daylight})"
    if done["n_ambiguous"] or done["n_missing"]:
        line += (
            f"; {done['n_ambiguous']} in a repeated DST hour, {done['n_missing']} in a "
            "skipped DST hour"
        )
    return line


# --- analysis, evaluation, scoring new frames -------------------------------------------------


@cli.command()
@_db_option(exists=True)
@click.option(
    "--model",
    help="embedding model whose vectors to analyse [default: the settings' "
    "model, or the only model with vectors]",
)
@click.option("--detectors", metavar="KEY,...", help=help_for("detectors"))
@click.option("--clusterer", type=click.Choice(["kmeans", "hdbscan"]), help=help_for("clusterer"))
@click.option("--n-clusters", "n_clusters", metavar="auto|K", help=help_for("n_clusters"))
@click.option("--contamination", type=float, help=help_for("contamination"))
@click.option(
    "--map", "map_method", type=click.Choice(["pca", "umap"]), help=help_for("map_method")
)
@click.option("--consensus-rule", "consensus_rule", help=help_for("consensus_rule"))
@_junk_causes_option
@click.option("--random-state", "random_state", type=int, help=help_for("random_state"))
@click.option(
    "--incident-gap",
    "incident_gap_frames",
    type=click.IntRange(min=0),
    help=help_for("incident_gap_frames"),
)
@click.option(
    "--learn/--no-learn",
    "learn_from_reviews",
    default=None,
    help=help_for("learn_from_reviews") + " [default: learn]",
)
@_executor_options
@click.option("--quiet", is_flag=True, help="no progress lines")
@click.pass_context
def analyze(
    ctx,
    db: Path,
    model,
    detectors,
    clusterer,
    n_clusters,
    contamination,
    map_method,
    consensus_rule,
    junk_causes,
    random_state,
    incident_gap_frames,
    learn_from_reviews,
    executor,
    ray_address,
    quiet,
) -> None:
    """Cluster and score the frames' embeddings: writes one new analysis run.

    \b
    Detectors, by the cause of junk they see:
      quality  soft flat exposure (against the camera's own good frames under the same sun);
               dark overexposed blurry low_information haze (one-sided, side by side)
      camera   alignment (the view no longer lines up: moved, knocked, zoomed)
      scene    background (the fixed scene, from the stored thumbnails)
      rarity   iforest lof knn ecod copod hbos (PyOD, on the PCA space), temporal same_time
    Each cause gets a score (cause:quality, ...); consensus is always added: the sum of the
    --junk-causes (default all four; by default from soft, flat, exposure, alignment,
    background and lof).

    Once at least 5 of the run's frames are reviewed junk and 5 keep (in the dashboard),
    learned is added too: the consensus re-weighed by a model of those reviews (how well it
    ranks the reviews it was not fitted on is in the run's notes). --no-learn leaves it out.

    With --executor ray, alignment and background fit here and score every frame on the
    Ray cluster (each node must see the store at the same path).
    """
    settings = _settings(
        ctx,
        detectors=_split(detectors),
        clusterer=clusterer,
        n_clusters=n_clusters,
        contamination=contamination,
        map_method=map_method,
        consensus_rule=consensus_rule,
        junk_causes=_split(junk_causes),
        random_state=random_state,
        incident_gap_frames=incident_gap_frames,
        learn_from_reviews=learn_from_reviews,
        executor=executor,
        ray_address=ray_address,
    )
    with store.writer_lock(db):  # first: a busy store is refused before scikit-learn loads
        from pipeline.analyze import analyze as run_analysis

        settings = _with_model(settings, db, model)
        result = run_analysis(db, settings, progress=not quiet)
    click.echo(result.describe())


@cli.command()
@_db_option(exists=True)
@click.option(
    "--truth",
    "truth_csv",
    type=click.Path(dir_okay=False, path_type=Path, exists=True),
    help="ground truth CSV path,label,kind (paths relative to the frames folder) "
    "[default: the store's ground_truth table]",
)
@click.option("--json", "as_json", is_flag=True, help="print every row as JSON")
def evaluate(db: Path, truth_csv: Path | None, as_json: bool) -> None:
    """ROC-AUC, average precision and precision@k of every detector against a ground truth.

    Per model (latest complete run of each), on all and on daylight frames, and per anomaly kind.
    """
    from pipeline.evaluate import evaluate as run_evaluate
    from pipeline.evaluate import format_table

    results = run_evaluate(db, truth_csv)
    if as_json:
        click.echo(results.to_json(orient="records", indent=1))
    else:
        click.echo(format_table(results))


@cli.command("score-new")
@_folder_argument
@_db_option(exists=True)
@click.option(
    "--run-id",
    "run_id",
    type=int,
    help="run to score against [default: the latest complete run with a saved fit]",
)
@click.option("--json", "as_json", is_flag=True, help="print every scored frame as JSON")
@_new_frames_precision_option
@click.pass_context
def score_new(ctx, folder: Path, db: Path, run_id, as_json: bool, precision) -> None:
    """Ingest FOLDER and score its new frames against a frozen run, without refitting."""
    settings = _settings(ctx, precision=precision)
    with store.writer_lock(db):  # first: a busy store is refused before scikit-learn loads
        from pipeline.score_new import score_new as run_score_new

        result = run_score_new(folder, db, settings, progress=not as_json, run_id=run_id)
    if as_json:
        click.echo(result.frames.to_json(orient="records", indent=1))
    else:
        click.echo(result.describe())


# --- export -----------------------------------------------------------------------------------

DEFLICKER_FRAMES = 15  # the deflicker window of a bare --deflicker (the dashboard's switch)


@cli.command()
@_db_option(exists=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mp4", "csv", "list", "ffconcat"]),
    help="what to write [default: from the --out suffix: .mp4 .csv .txt .ffconcat]",
)
@click.option(
    "--out",
    required=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the file to write",
)
@click.option(
    "--frames",
    "mode",
    type=click.Choice(["not_junk", "keep", "clean"]),
    default="not_junk",
    show_default=True,
    help="frames to export, as on the Review page: not_junk (every filtered frame not "
    "marked junk), keep (only frames marked keep), clean (frames marked keep, and "
    "unreviewed frames the detector does not flag)",
)
@click.option("--run", type=int, metavar="N", help="analysis run [default: the latest complete]")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="first day (camera clock)",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="last day (camera clock), included",
)
@click.option("--hours", metavar="H-H", help="hours of day, both included, e.g. 6-18")
@click.option("--daylight", metavar="day,twilight,night", help="daylight values to keep")
@click.option(
    "--weather",
    metavar="CONDITION,...",
    help="weather conditions to keep (clear, cloudy, rain, fog, ..., unknown)",
)
@click.option("--cluster", metavar="N,...", help="clusters to keep (-1 = noise: --cluster=-1)")
@click.option(
    "--det", metavar="DETECTOR", help="detector for --thr and --frames clean [default: consensus]"
)
@click.option(
    "--thr",
    metavar="all|flagged|pctNN|topN",
    help="detector threshold: all frames, flagged by the detector, score percentile "
    "at least NN, or the top N by score [default: all]",
)
@click.option(
    "--junk-causes",
    "junk_causes",
    metavar="CAUSE,...",
    help="the causes of junk the consensus counts (quality, camera, scene, rarity), summed "
    "again from the run's scores per cause [default: the run's own, `analyze --junk-causes`]",
)
@click.option(
    "--fps",
    type=click.IntRange(1, 120),
    default=24,
    show_default=True,
    help="frames per second of the video (mp4, ffconcat)",
)
@click.option(
    "--width",
    type=click.IntRange(16, 7680),
    help="video width in pixels (mp4); the height keeps the first frame's aspect, at most "
    "7680 (a taller portrait video is narrowed) [default: the frames' own width, at most 1280]",
)
@click.option(
    "--deflicker",
    type=click.IntRange(min=0),
    default=0,
    is_flag=False,
    flag_value=DEFLICKER_FRAMES,
    metavar="[N]",
    help="smooth each frame's brightness over N neighbouring frames (mp4; "
    f"--deflicker alone: {DEFLICKER_FRAMES}; 0: off)",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="show a progress bar (frames/s, ETA) on stderr",
)
@click.pass_context
def export(
    ctx,
    db: Path,
    fmt,
    out: Path,
    mode,
    run,
    date_from,
    date_to,
    hours,
    daylight,
    weather,
    cluster,
    det,
    thr,
    junk_causes,
    fps,
    width,
    deflicker,
    progress,
) -> None:
    """Write the frames the filters keep as an MP4 video, a CSV, a file list or an ffmpeg
    concat file, in time order.

    The filters are the dashboard's, with its URL keys and values (a link's
    `?daylight=day&thr=flagged` is `--daylight day --thr flagged`); the summary says how many
    frames were left out and why, and names those whose file could not be read.
    """
    from pipeline.export import FilterFlags, format_of
    from pipeline.export import export as run_export
    from pipeline.video import VideoOptions

    settings = _settings(ctx)
    flags = FilterFlags(
        run=run,
        date_from=date_from.date() if date_from else None,
        date_to=date_to.date() if date_to else None,
        hours=hours,
        daylight=daylight,
        weather=weather,
        cluster=cluster,
        det=det,
        thr=thr,
        junk_causes=junk_causes,
    )
    options = VideoOptions(
        fps=fps,
        width=width,
        deflicker=deflicker,
        max_file_bytes=settings.max_file_bytes,
        max_image_pixels=settings.max_image_pixels,
        workers=min(settings.workers, 4),
        description=flags.describe(),
        progress=progress,
    )
    summary = run_export(db, flags, mode, format_of(fmt, out), out, options)
    click.echo(summary.describe())


# --- serving and watching --------------------------------------------------------------------


@cli.command()
@_db_option(exists=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; another than 127.0.0.1 exposes the API to the network "
    "(give --token-file, and put a TLS proxy in front: docs/SERVING.md)",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="port to listen on",
)
@click.option(
    "--run-id",
    "run_id",
    type=int,
    help="always score against this run [default: the "
    "newest complete run with a saved fit, switching when a newer one appears]",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="require `Authorization: Bearer TOKEN` (the file's text) on every route but /v1/health",
)
@_new_frames_precision_option
@click.pass_context
def serve(ctx, db: Path, host: str, port: int, run_id, token_file, precision) -> None:
    """Serve an HTTP API that scores new frames against a frozen run (writes nothing).

    \b
    POST /v1/score (multipart `file` parts), GET /v1/health, /v1/frames/ID,
    /v1/frames/ID/thumbnail, /v1/runs; OpenAPI docs at /docs. Ctrl-C stops it.
    """
    settings = _settings(ctx, precision=precision)
    token = _read_token(token_file) if token_file is not None else None
    from pipeline.serve import build, check_address, run_server

    check_address(host, port)  # before the run and its model are loaded
    app = build(db, settings, run_id=run_id, token=token)
    scorer = app.state.scorer
    what = (
        f"run {scorer.loaded.run_id} ({scorer.loaded.fitted.model} at "
        f"{scorer.loaded.embedder.precision})"
        if scorer.loaded
        else "no run yet (answers 503 until `analyze` makes one)"
    )
    click.echo(
        f"serve {db}: {what}; http://{host}:{port}/docs"
        + ("; bearer token required" if token else "")
    )
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(
            f"warning: listening on {host} without --token-file: anyone who can reach "
            "this port can use the API",
            err=True,
            fg="yellow",
        )
    run_server(app, host, port)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise InputError(
            f"the token file {path} must hold one token (no spaces): it holds "
            + ("nothing" if not token else "several words")
        )
    if path.stat().st_mode & 0o077:
        click.secho(
            f"warning: the token file {path} can be read by other users (chmod 600 {path})",
            err=True,
            fg="yellow",
        )
    return token


@cli.command()
@_folder_argument
@_db_option(exists=True)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=86_400),
    default=60,
    show_default=True,
    help="seconds between passes",
)
@click.option(
    "--refit-every",
    "refit_every",
    type=click.IntRange(min=1),
    metavar="N",
    help="run a full analyze after N new frames (with the current run's settings)",
)
@_new_frames_precision_option
@click.pass_context
def watch(ctx, folder: Path, db: Path, interval: float, refit_every, precision) -> None:
    """Keep scoring the new frames a camera writes into FOLDER (Ctrl-C or SIGTERM to stop).

    Each pass ingests new files, embeds and scores them against the newest fitted run (as
    score-new does) in short write transactions, then lets go of the store until the next pass,
    so the dashboard, serve and other commands keep working. One line per pass.
    """
    import signal
    import threading

    from pipeline.watch import watch as run_watch

    settings = _settings(ctx, precision=precision)
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (work committed so far is kept)
        stop.set()
        click.echo(
            "watch: stopping after the batch being written (Ctrl-C again to stop now)", err=True
        )

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        n = run_watch(folder, db, settings, interval, click.echo, stop, refit_every=refit_every)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"watch stopped after {n} pass(es); everything committed is kept")


# --- store upkeep -----------------------------------------------------------------------------


@cli.command()
@_db_option(exists=True)
@click.option(
    "--backup/--no-backup",
    default=True,
    show_default=True,
    help="copy the file to FILE.v<old version>.bak before upgrading it",
)
def migrate(db: Path, backup: bool) -> None:
    """Upgrade a store made by an older version of this software to the current schema."""
    import shutil

    from store import migrations, upkeep

    with store.writer_lock(db):
        with store.connect(db, migrate=False) as con:
            before = migrations.applied_version(con)
            if before > migrations.LATEST:
                migrations.check(con, db)  # raises: newer than this code
            lacking = migrations.missing(con)
            upkeep.checkpoint(con)
        if not lacking:
            click.echo(f"store {db}: schema version {before} is current; nothing to do")
            return
        copy = db.with_name(f"{db.name}.v{before}.bak")
        if backup:
            shutil.copy2(db, copy)
        with store.connect(db) as con:
            after = migrations.applied_version(con)
    click.echo(
        f"store {db}: schema version {before} -> {after}"
        + (f" (the old file is kept as {copy})" if backup else "")
    )


@cli.command()
@_db_option(exists=True)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="complete analysis runs kept per model (the newest ones)",
)
@click.option("--dry-run", is_flag=True, help="print what would be removed; change nothing")
@click.option(
    "--compact",
    is_flag=True,
    help="then rewrite the file so the freed space goes back to the disk (needs room for a copy)",
)
def prune(db: Path, keep: int, dry_run: bool, compact: bool) -> None:
    """Delete old analysis runs (all their rows) but the newest KEEP complete runs per model.

    Failed runs older than a model's oldest kept run go too; runs still marked 'running' stay.
    Frames, embeddings, reviews and weather are untouched. DuckDB does not shrink the file after
    deletes (it reuses the space for later runs); --compact rewrites it into a smaller file.
    """
    from store import analysis as sa
    from store import upkeep

    with store.writer_lock(db):
        before = upkeep.file_size(db)
        with store.connect(db, read_only=dry_run) as con:
            report = sa.prune_runs(con, keep, dry_run=dry_run)
        for line in _describe_prune(report):
            click.echo(line)
        if dry_run:
            click.echo(
                f"file: {_mb(before)}; dry run: nothing changed"
                + (" (--compact would then rewrite the file)" if compact else "")
            )
            return
        click.echo(f"file: {_mb(before)} -> {_mb(upkeep.file_size(db))}")
        if compact:
            done = upkeep.compact(db)
            click.echo(f"compacted: {_mb(done.bytes_before)} -> {_mb(done.bytes_after)}")


def _describe_prune(report: PruneReport) -> list[str]:
    """Lines for `prune`: runs removed and kept per model, rows removed, runs left running."""
    verb = "would remove" if report.dry_run else "removed"
    if not report.run_ids:
        lines = [f"prune (keep {report.keep} per model): nothing to remove"]
    else:
        rows = ", ".join(f"{table} {n:,}" for table, n in report.rows.items())
        lines = [
            f"prune (keep {report.keep} per model): {verb} {len(report.run_ids)} run(s); "
            f"rows: {rows}"
        ]
        if report.fitted_bytes:
            lines[0] += f" (fitted states {_mb(report.fitted_bytes)})"
    for model in sorted(report.kept):
        gone = report.removed.get(model, [])
        lines.append(
            f"  {model}: {verb} "
            + (", ".join(map(str, gone)) if gone else "none")
            + "; kept "
            + (", ".join(map(str, report.kept[model])) or "none")
        )
    if report.running:
        lines.append("  left alone (marked 'running'): " + ", ".join(map(str, report.running)))
    return lines


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360); anything else is an InputError naming the flag."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 640x360, not {text!r}") from None
    return width, height


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def main() -> None:
    cli(prog_name="python -m pipeline")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
