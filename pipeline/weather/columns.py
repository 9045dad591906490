"""Which column of a weather table holds which `weather` field, and in which unit.

`map_columns` finds each target (`time`, `station` and the measured `FIELDS`) by the names in
`SYNONYMS` (compared lower case, spaces and dashes as '_', a trailing `(unit)` ignored), after
any mapping given by hand (`--columns temperature_c=temp,wind_speed_ms=wspd:kmh`) and the
columns the layout names (`Table.columns`). A column's
unit is, in this order: given by hand, known from the layout, in the column name (`temp_f`,
`wind (km/h)`, `sknt`), set by `--units us|si`, or guessed from the temperatures (any above 57
or a median above 30 means °F), which the summary says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from pipeline.errors import InputError
from pipeline.weather.summary import WeatherImportSummary
from pipeline.weather.table import Table, norm
from pipeline.weather.units import SYSTEMS, UNITS, unit_key

#: The measured fields of the `weather` table, in SI, plus the WMO code.
FIELDS = (
    "temperature_c",
    "precipitation_mm",
    "cloud_cover_pct",
    "wind_speed_ms",
    "visibility_km",
    "weather_code",
)
TARGETS = ("time", "station") + FIELDS

# Column names (lower case, spaces and dashes as '_') that mean a target, most specific first.
SYNONYMS = {
    "time": [
        "time",
        "time_hour",
        "timestamp",
        "datetime",
        "date_time",
        "observed_at",
        "observation_time",
        "valid",
        "valid_time",
        "time_utc",
        "utc_time",
        "date_utc",
        "dt_iso",
        "obs_time",
        "date",
    ],
    "station": [
        "station",
        "station_id",
        "stationid",
        "origin",
        "site",
        "station_name",
        "location_id",
        "location",
        "icao",
        "name",
    ],
    "temperature_c": [
        "temperature_2m",
        "temperature",
        "temp",
        "air_temperature",
        "tmpc",
        "tmpf",
        "t2m",
        "air_temp",
        "tavg",
        "temp_c",
        "temp_f",
        "temperature_c",
        "temperature_f",
        "tempc",
        "tempf",
    ],
    "precipitation_mm": [
        "precipitation",
        "precip",
        "prcp",
        "p01m",
        "p01i",
        "rain",
        "rainfall",
        "precipitation_mm",
        "precip_mm",
        "precip_in",
        "precipitation_in",
        "rain_mm",
    ],
    "cloud_cover_pct": [
        "cloud_cover",
        "cloudcover",
        "clouds",
        "cloud",
        "total_cloud_cover",
        "cloud_cover_pct",
        "cldc",
        "cloudiness",
    ],
    "wind_speed_ms": [
        "wind_speed_10m",
        "windspeed_10m",
        "wind_speed",
        "windspeed",
        "wspd",
        "sknt",
        "wind",
        "wind_speed_ms",
        "wind_speed_mph",
        "wind_speed_kmh",
        "wind_mph",
        "wind_kph",
        "wind_kmh",
    ],
    "visibility_km": [
        "visibility",
        "visib",
        "vsby",
        "vis",
        "visibility_km",
        "visibility_m",
        "visibility_mi",
    ],
    "weather_code": [
        "weather_code",
        "weathercode",
        "wmo_code",
        "wmo",
        "ww",
        "coco",
        "present_weather_code",
    ],
}
# Units implied by well-known column names (IEM ASOS, Meteostat, suffixes).
_NAME_UNITS = {
    "tmpf": "f",
    "tmpc": "c",
    "sknt": "kn",
    "p01i": "in",
    "p01m": "mm",
    "vsby": "mi",
    "tempf": "f",
    "tempc": "c",
    "coco": "coco",
    "cldc": "okta",
}
_SUFFIX_UNITS = {
    "c": "c",
    "f": "f",
    "k": "k",
    "mm": "mm",
    "cm": "cm",
    "in": "in",
    "inch": "in",
    "inches": "in",
    "pct": "pct",
    "percent": "pct",
    "okta": "okta",
    "oktas": "okta",
    "ms": "ms",
    "mps": "ms",
    "kmh": "kmh",
    "kph": "kmh",
    "mph": "mph",
    "kn": "kn",
    "kt": "kn",
    "kts": "kn",
    "knots": "kn",
    "km": "km",
    "m": "m",
    "mi": "mi",
    "miles": "mi",
    "ft": "ft",
    "wmo": "wmo",
}


@dataclass
class Column:
    source: str
    unit: str | None = None


def map_columns(
    table: Table, columns: dict | None, units: str | None, summary: WeatherImportSummary
) -> dict[str, Column]:
    header = table.header
    by_norm = {}
    for name in header:
        base = re.sub(r"\s*\([^)]*\)\s*$", "", name)
        by_norm.setdefault(norm(base), name)
        by_norm.setdefault(norm(name), name)
    mapping: dict[str, Column] = {}
    for target, spec in (columns or {}).items():
        if target not in TARGETS:
            raise InputError(
                f"unknown weather column target {target!r}; targets: {', '.join(TARGETS)}"
            )
        source, _, unit = str(spec).partition(":")
        source = source.strip()
        if source not in header and norm(source) not in by_norm:
            raise InputError(
                f"column {source!r} (for {target}) is not in {table.format} file "
                f"{summary.path.name}; its columns: {', '.join(header)}"
            )
        source = source if source in header else by_norm[norm(source)]
        if unit:
            key = unit_key(unit)
            if key is None or (target != "time" and UNITS[key][0] != target):
                raise InputError(
                    f"unit {unit!r} does not fit {target}; units for it: "
                    + ", ".join(k for k, v in UNITS.items() if v[0] == target)
                )
            mapping[target] = Column(source, key)
        else:
            mapping[target] = Column(source)
    for target, source in table.columns.items():  # what the layout knows
        if target not in mapping:
            mapping[target] = Column(source)
    used = {c.source for c in mapping.values()}
    for target in TARGETS:
        if target in mapping:
            continue
        for synonym in SYNONYMS[target]:
            source = by_norm.get(synonym)
            if source is not None and source not in used:
                mapping[target] = Column(source)
                used.add(source)
                break
    has_date_hour = {"date", "hour"} <= {norm(c) for c in header}
    if (
        has_date_hour
        and "time" in mapping
        and norm(mapping["time"].source) == "date"
        and "time" not in (columns or {})
    ):
        del mapping["time"]  # a date column with an hour column beside it
    if "time" not in mapping and not has_date_hour:
        raise InputError(
            f"no time column in {summary.path.name} (columns: {', '.join(header)}); name it "
            "with --columns time=COLUMN"
        )
    if not any(f in mapping for f in FIELDS):
        raise InputError(
            f"no weather columns recognised in {summary.path.name} (columns: "
            f"{', '.join(header)}); map them with --columns, e.g. "
            "--columns temperature_c=temp,precipitation_mm=rain,wind_speed_ms=wind"
        )
    if (
        "station" in mapping
        and table.format == "open-meteo"
        and norm(mapping["station"].source) != "location_id"
    ):
        del mapping["station"]
    # Units: explicit, then the format or the column name, then --units, then a guess.
    guessed = None
    for target in FIELDS:
        column = mapping.get(target)
        if column is None or column.unit:
            continue
        unit = table.column_units.get(column.source) or _unit_from_name(column.source, target)
        if unit is None and target == "cloud_cover_pct":
            unit = "pct"
        if unit is None and target == "weather_code":
            unit = "wmo"
        if unit is None and units is not None:
            unit = SYSTEMS[units][target]
        if unit is None:
            if guessed is None:
                guessed = _guess_system(table, mapping, summary)
            unit = SYSTEMS[guessed][target]
        column.unit = unit
    summary.columns = {t: c.source for t, c in mapping.items()}
    summary.units = {t: c.unit for t, c in mapping.items() if c.unit}
    return mapping


def _unit_from_name(name: str, target: str) -> str | None:
    match = re.search(r"\(([^)]*)\)\s*$", name)
    if match:
        unit = unit_key(match.group(1))
        if unit and UNITS[unit][0] == target:
            return unit
    normed = norm(name)
    if normed in _NAME_UNITS and UNITS[_NAME_UNITS[normed]][0] == target:
        return _NAME_UNITS[normed]
    parts = normed.split("_")
    if len(parts) > 1:
        unit = _SUFFIX_UNITS.get(parts[-1])
        if unit and UNITS[unit][0] == target:
            return unit
    return None


def _guess_system(table: Table, mapping: dict[str, Column], summary: WeatherImportSummary) -> str:
    column = mapping.get("temperature_c")
    if column is None:
        summary.notes.append(
            "units not named in the file: assumed SI (°C, mm, m/s, km); "
            "pass --units us if they are °F, inches, mph and miles"
        )
        return "si"
    index = table.header.index(column.source)
    values = pd.to_numeric(
        pd.Series([row[index] if index < len(row) else "" for row in table.rows]), errors="coerce"
    ).dropna()
    values = values[(values > -100) & (values < 150)]
    if len(values) and (values.max() > 57 or values.median() > 30):
        summary.notes.append(
            f"units not named in the file: guessed US (°F, inches, mph, miles) because "
            f"temperatures reach {values.max():g} (median {values.median():g}); pass --units si "
            "if wrong"
        )
        return "us"
    summary.notes.append(
        "units not named in the file: guessed SI (°C, mm, m/s, km) from the "
        "temperatures; pass --units us if wrong"
    )
    return "si"
