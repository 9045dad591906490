"""Importing weather: a CSV file (or an API answer, as a `Table`) into the `weather` table.

`import_csv` = `read_csv` + `write_observations`. `read_csv` reads the file's text
(`table.read_text`), finds its layout (`layouts.detect`), then `read_table` maps the columns
(`columns`), turns times to UTC (`times`), converts and checks every value (`validation`,
`units`), drops rows repeated in the file and derives each observation's condition
(`conditions`). A row whose time or station is unusable is skipped and reported; rows already
in the store (same station and time) are not added again, so importing a file twice adds
nothing, unless `replace`: then the file's rows replace the stored ones of the same station and
time (hours the file has no row for, and other stations, are left as they are).
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

import store
from pipeline.daylight import zone
from pipeline.errors import InputError, WeatherError
from pipeline.weather.columns import FIELDS, Column, map_columns
from pipeline.weather.conditions import derive_conditions
from pipeline.weather.layouts import detect
from pipeline.weather.summary import RejectedValue, WeatherImportSummary
from pipeline.weather.table import Table, norm, read_text
from pipeline.weather.times import parse_times
from pipeline.weather.units import SYSTEMS
from pipeline.weather.validation import MISSING, convert_field, dedupe_in_file
from store import weather as store_weather


def import_csv(
    csv: Path,
    db: Path,
    station: str | None = None,
    columns: dict | None = None,
    units: str | None = None,
    timezone: str | None = None,
    replace: bool = False,
) -> WeatherImportSummary:
    """Read an hourly weather CSV and add its observations to the store at `db`.

    `station` names the station of a file without a station column, or keeps only that
    station's rows from a file with one. `columns` maps targets (`time`, `station`,
    `temperature_c`, ..., `weather_code`) to source columns, optionally with a unit
    (`"wspd:kmh"`); `units` ('us' or 'si') sets the units of columns that do not name one;
    `timezone` is the zone of naive times in the file (default UTC). `replace`: the file's
    observations replace the stored ones of the same station and time (a corrected file);
    otherwise those are kept and only new ones are added.
    """
    observations, summary = read_csv(
        Path(csv), station=station, columns=columns, units=units, timezone=timezone
    )
    write_observations(observations, db, summary, replace=replace)
    return summary


def read_csv(
    path: Path,
    station: str | None = None,
    columns: dict | None = None,
    units: str | None = None,
    timezone: str | None = None,
) -> tuple[pd.DataFrame, WeatherImportSummary]:
    """Parse, map, convert and validate a file; returns the observations and the summary."""
    if units is not None and units not in SYSTEMS:
        raise InputError(f"--units must be 'us' or 'si', not {units!r}")
    tz = zone(timezone) if timezone else None
    table = detect(read_text(path))
    if not table.rows:
        raise WeatherError(
            f"{path} has a header ({', '.join(table.header[:6])}) and no rows of observations"
        )
    return read_table(table, path, station=station, columns=columns, units=units, tz=tz)


def read_table(
    table: Table,
    path: Path,
    station: str | None = None,
    columns: dict | None = None,
    units: str | None = None,
    tz: ZoneInfo | None = None,
) -> tuple[pd.DataFrame, WeatherImportSummary]:
    """Map, convert and validate an already split table (a file, or an API response)."""
    summary = WeatherImportSummary(path=path, format=table.format, notes=list(table.notes))
    mapping = map_columns(table, columns, units, summary)
    frame = _observations(table, mapping, station, tz, summary)
    frame = dedupe_in_file(frame, summary)
    frame["condition"] = derive_conditions(frame)
    frame["source"] = table.source or f"{table.format}:{path.name}"
    summary.stations = {str(k): int(v) for k, v in frame["station"].value_counts().items()}
    summary.conditions = {
        str(k): int(v) for k, v in frame["condition"].value_counts(dropna=True).items()
    }
    if len(frame):
        summary.start = frame["observed_at"].min()
        summary.end = frame["observed_at"].max()
    return frame.drop(columns=["line"]), summary


def write_observations(
    frame: pd.DataFrame,
    db: Path,
    summary: WeatherImportSummary | None = None,
    replace: bool = False,
) -> tuple[int, int]:
    """Add observations (columns as the `weather` table) to the store; returns (added, known):
    the rows already stored (same station and time) are kept, or replaced when `replace`."""
    with store.connect(db) as con:
        added, known = store_weather.insert_observations(con, frame, replace=replace)
    if summary is not None:
        summary.n_added, summary.replace = added, replace
        if replace:
            summary.n_replaced = known
        else:
            summary.n_duplicates = known
    return added, known


def _observations(
    table: Table,
    mapping: dict[str, Column],
    station: str | None,
    tz: ZoneInfo | None,
    summary: WeatherImportSummary,
) -> pd.DataFrame:
    """The table's rows as observations: station, UTC time, file line and the SI fields;
    rows without a usable station or time are left out and reported in `summary`."""
    width = len(table.header)
    rows = [
        row + [""] * (width - len(row)) if len(row) < width else row[:width] for row in table.rows
    ]
    raw = (
        pd.DataFrame(rows, columns=range(width), dtype=object)
        if rows
        else pd.DataFrame(columns=range(width), dtype=object)
    )
    lines = pd.Series(table.lines, dtype="int64")
    summary.n_rows = len(raw)
    col_index = {name: i for i, name in enumerate(table.header)}
    ok = pd.Series(True, index=raw.index)

    def skip(mask: pd.Series, values: pd.Series, reason: str) -> None:
        for i in np.flatnonzero(mask.to_numpy() & ok.to_numpy()):
            summary.rejected_rows.append(
                RejectedValue(int(lines[i]), None, str(values.iloc[i]), reason)
            )
        ok[mask] = False

    # A row with more cells than the header has its values out of place (an unquoted decimal
    # comma in a ',' file: `6,0` is two cells): skipped whole, not cut to fit. Empty cells past
    # the header (a trailing delimiter) are harmless.
    over = pd.Series([any(c.strip() for c in row[width:]) for row in table.rows], dtype=bool)
    if over.any():
        cells = pd.Series([table.delimiter.join(row) for row in table.rows], dtype=object)
        counts = pd.Series([len(row) for row in table.rows])
        for n in sorted(counts[over].unique()):
            skip(
                over & (counts == n),
                cells,
                f"{n} cells where the header has {width}: its values are out of place"
                + (
                    " (a decimal comma in a ',' file? quote such values or save with ';')"
                    if table.delimiter == ","
                    else ""
                ),
            )

    # Station
    locations = table.locations
    if "station" in mapping:
        names = raw[col_index[mapping["station"].source]].astype(str).str.strip()
        if locations:
            names = names.map(lambda v: locations.get(v, f"open-meteo:location-{v}"))
        skip(names.str.lower().isin(MISSING), names, "no station name")
        if station is not None:
            keep = names == station
            if not keep.any():
                found = ", ".join(sorted(names[ok].unique())[:20])
                raise InputError(
                    f"station {station!r} is not in {summary.path.name}; its stations: {found}"
                )
            ok &= keep
            summary.notes.append(f"kept only station {station}: {int(keep.sum())} rows")
    else:
        name = station or table.default_station
        names = pd.Series(name, index=raw.index, dtype=object)

    # Time
    if "time" in mapping:
        text = raw[col_index[mapping["time"].source]].astype(str).str.strip()
    else:
        by_norm = {norm(c): i for i, c in enumerate(table.header)}
        hour = pd.to_numeric(raw[by_norm["hour"]], errors="coerce")
        text = (
            raw[by_norm["date"]].astype(str).str.strip()
            + " "
            + hour.map(lambda h: "" if pd.isna(h) else f"{int(h):02d}:00")
        )
    local_zone = tz or table.tz
    observed = parse_times(text, local_zone, table.fixed_offset_s, names)
    bad_time = observed.isna()
    reason = "time is not a date-time"
    if local_zone is not None:
        reason = f"time is not a date-time, or does not exist in {local_zone.key} (DST gap)"
    skip(bad_time, text, reason)

    frame = pd.DataFrame({"station": names, "observed_at": observed, "line": lines})
    for target in FIELDS:
        column = mapping.get(target)
        if column is None:
            frame[target] = np.nan
            continue
        values = raw[col_index[column.source]]
        frame[target] = convert_field(
            values, target, column, lines, ok, summary, decimal_comma=table.decimal_comma
        )
    frame = frame[ok.to_numpy()].reset_index(drop=True)
    frame["weather_code"] = frame["weather_code"].round().astype("Int64")
    return frame
