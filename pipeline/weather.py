"""Weather observations: read hourly CSVs (Open-Meteo, Meteostat, generic), map them to SI, derive
the condition, and add them to the store's `weather` table.

Formats are detected from the file itself:

- **open-meteo**: Open-Meteo's CSV export: a location block (`latitude,longitude,elevation,
  utc_offset_seconds,timezone,timezone_abbreviation` + one values line, or several with a
  `location_id` column), a blank line, then `time,temperature_2m (°C),...` with the unit in each
  column name. Times are local to the header's `timezone` (an IANA name, or GMT) or Unix seconds.
  The station is `open-meteo:LAT,LON` (the grid point in the header).
- **meteostat**: Meteostat hourly data (`time,temp,dwpt,rhum,prcp,snow,wdir,wspd,wpgt,pres,tsun,
  coco`, also the header-less bulk files `date,hour,temp,...`): °C, mm, km/h, UTC; `coco` is
  Meteostat's condition code 1..27, stored as the equivalent WMO code. The station comes from a
  `station` column or the file name (`meteostat:10637`).
- **generic**: any table with a time column and some of temperature, precipitation, cloud cover,
  wind speed, visibility, weather code, found by name (`time_hour`, `temp`, `tmpf`, `wind_speed`,
  `precip`, `visib`, ...). A unit in the column name (`temp_f`, `wind (km/h)`, `sknt`) wins;
  otherwise `units` ('us': °F, inches, mph, miles; 'si': °C, mm, m/s, km) and, when not given,
  a guess from the temperatures (any above 57 or a median above 30 means °F), said in the summary.

`columns` (`{"temperature_c": "temp", "wind_speed_ms": "wspd:kmh"}`, optional `:unit`) and
`units` override the guess. Times with an offset or `Z` are exact; naive times are UTC unless a
`timezone` is given (or the Open-Meteo header names one); a local hour repeated at the autumn
DST change is taken as the earlier (summer) hour the first time and the later one the second
time; a local time that does not exist (spring gap) is skipped and reported.

Values that cannot be parsed, or are impossible once in SI (outside `LIMITS`, e.g. a 1048 mph
wind), are nulled field by field and reported with their line number; a row whose time or
station is unusable is skipped and reported. Missing markers (`NA`, empty, `M`, `null`, ...)
are simply missing. Rows already in the store (same station and time) are not added again, so
importing a file twice adds nothing.

Condition rules (one per observation, in this order):

1. A WMO weather code (WMO 4677 ww, the codes Open-Meteo uses) decides when it is one of:
   0-1 clear; 2-3 cloudy; 10-12 and 40-49 fog (mist, fog, rime fog 45/48); 50-67 rain
   (drizzle, rain, freezing rain); 68-79 snow (rain-and-snow mix, snow, grains, ice pellets);
   80-82 rain showers; 83-88 snow showers; 89-99 rain (hail, thunderstorm: 95+ is stored as
   'rain', the code is kept in `weather_code`). Other codes (haze, dust, lightning, past-hour
   weather) fall through to rule 2.
2. Precipitation of at least 0.1 mm in the hour: 'snow' when the temperature is at most 1 °C,
   else 'rain' (also when the temperature is unknown).
3. Visibility below 1 km: 'fog'.
4. Cloud cover of at least 50 %: 'cloudy'; below: 'clear'.
5. No precipitation and no fog, but cloud cover unknown: 'dry'.
6. Nothing known: no condition (the join shows 'unknown').
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

import store
from pipeline.errors import InputError, WeatherError
from store import weather as store_weather

log = logging.getLogger(__name__)

#: The measured fields of the `weather` table, in SI, plus the WMO code.
FIELDS = ("temperature_c", "precipitation_mm", "cloud_cover_pct", "wind_speed_ms",
          "visibility_km", "weather_code")
TARGETS = ("time", "station") + FIELDS

#: Plausible range of each field in SI; values outside are impossible and nulled.
LIMITS = {
    "temperature_c": (-90.0, 60.0),
    "precipitation_mm": (0.0, 400.0),     # per hour; the world record is ~305 mm
    "cloud_cover_pct": (0.0, 100.0),
    "wind_speed_ms": (0.0, 120.0),        # mean wind; the strongest gust measured is 113 m/s
    "visibility_km": (0.0, 500.0),
    "weather_code": (0.0, 99.0),
}

CONDITIONS = ("clear", "cloudy", "rain", "snow", "fog", "dry")
RAIN_MIN_MM = 0.1
SNOW_MAX_C = 1.0
FOG_MAX_KM = 1.0
CLOUDY_MIN_PCT = 50.0

_MISSING = {"", "na", "nan", "null", "none", "-", "--", "m", "n/a", "missing", "<na>"}

# unit key -> (quantity, factor, offset) so that si = value * factor + offset
_UNITS = {
    "c": ("temperature_c", 1.0, 0.0),
    "f": ("temperature_c", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "k": ("temperature_c", 1.0, -273.15),
    "mm": ("precipitation_mm", 1.0, 0.0),
    "cm": ("precipitation_mm", 10.0, 0.0),
    "in": ("precipitation_mm", 25.4, 0.0),
    "pct": ("cloud_cover_pct", 1.0, 0.0),
    "okta": ("cloud_cover_pct", 12.5, 0.0),
    "fraction": ("cloud_cover_pct", 100.0, 0.0),
    "ms": ("wind_speed_ms", 1.0, 0.0),
    "kmh": ("wind_speed_ms", 1.0 / 3.6, 0.0),
    "mph": ("wind_speed_ms", 0.44704, 0.0),
    "kn": ("wind_speed_ms", 0.514444, 0.0),
    "km": ("visibility_km", 1.0, 0.0),
    "m": ("visibility_km", 0.001, 0.0),
    "mi": ("visibility_km", 1.609344, 0.0),
    "ft": ("visibility_km", 0.0003048, 0.0),
    "wmo": ("weather_code", 1.0, 0.0),
    "coco": ("weather_code", 1.0, 0.0),
}
_UNIT_ALIASES = {
    "°c": "c", "degc": "c", "celsius": "c", "°f": "f", "degf": "f", "fahrenheit": "f",
    "kelvin": "k", "inch": "in", "inches": "in", "%": "pct", "percent": "pct",
    "oktas": "okta", "km/h": "kmh", "kph": "kmh", "m/s": "ms", "mps": "ms", "kt": "kn",
    "kts": "kn", "knots": "kn", "knot": "kn", "miles": "mi", "mile": "mi", "feet": "ft",
    "wmo code": "wmo", "wmo": "wmo", "meteostat": "coco",
}
_SYSTEMS = {
    "si": {"temperature_c": "c", "precipitation_mm": "mm", "cloud_cover_pct": "pct",
           "wind_speed_ms": "ms", "visibility_km": "km", "weather_code": "wmo"},
    "us": {"temperature_c": "f", "precipitation_mm": "in", "cloud_cover_pct": "pct",
           "wind_speed_ms": "mph", "visibility_km": "mi", "weather_code": "wmo"},
}
_UNIT_SYMBOL = {"c": "°C", "f": "°F", "k": "K", "mm": "mm", "cm": "cm", "in": "in", "pct": "%",
                "okta": "okta", "fraction": "fraction", "ms": "m/s", "kmh": "km/h",
                "mph": "mph", "kn": "kn", "km": "km", "m": "m", "mi": "mi", "ft": "ft",
                "wmo": "WMO code", "coco": "Meteostat code"}

# Column names (lower case, spaces and dashes as '_') that mean a target, most specific first.
_SYNONYMS = {
    "time": ["time", "time_hour", "timestamp", "datetime", "date_time", "observed_at",
             "observation_time", "valid", "valid_time", "time_utc", "utc_time", "date_utc",
             "dt_iso", "obs_time", "date"],
    "station": ["station", "station_id", "stationid", "origin", "site", "station_name",
                "location_id", "location", "icao", "name"],
    "temperature_c": ["temperature_2m", "temperature", "temp", "air_temperature", "tmpc",
                      "tmpf", "t2m", "air_temp", "tavg", "temp_c", "temp_f", "temperature_c",
                      "temperature_f", "tempc", "tempf"],
    "precipitation_mm": ["precipitation", "precip", "prcp", "p01m", "p01i", "rain", "rainfall",
                         "precipitation_mm", "precip_mm", "precip_in", "precipitation_in",
                         "rain_mm"],
    "cloud_cover_pct": ["cloud_cover", "cloudcover", "clouds", "cloud", "total_cloud_cover",
                        "cloud_cover_pct", "cldc", "cloudiness"],
    "wind_speed_ms": ["wind_speed_10m", "windspeed_10m", "wind_speed", "windspeed", "wspd",
                      "sknt", "wind", "wind_speed_ms", "wind_speed_mph", "wind_speed_kmh",
                      "wind_mph", "wind_kph", "wind_kmh"],
    "visibility_km": ["visibility", "visib", "vsby", "vis", "visibility_km", "visibility_m",
                      "visibility_mi"],
    "weather_code": ["weather_code", "weathercode", "wmo_code", "wmo", "ww", "coco",
                     "present_weather_code"],
}
# Units implied by well-known column names (IEM ASOS, Meteostat, suffixes).
_NAME_UNITS = {"tmpf": "f", "tmpc": "c", "sknt": "kn", "p01i": "in", "p01m": "mm",
               "vsby": "mi", "tempf": "f", "tempc": "c", "coco": "coco", "cldc": "okta"}
_SUFFIX_UNITS = {"c": "c", "f": "f", "k": "k", "mm": "mm", "cm": "cm", "in": "in",
                 "inch": "in", "inches": "in", "pct": "pct", "percent": "pct", "okta": "okta",
                 "oktas": "okta", "ms": "ms", "mps": "ms", "kmh": "kmh", "kph": "kmh",
                 "mph": "mph", "kn": "kn", "kt": "kn", "kts": "kn", "knots": "kn", "km": "km",
                 "m": "m", "mi": "mi", "miles": "mi", "ft": "ft", "wmo": "wmo"}

_METEOSTAT_COLUMNS = ["temp", "dwpt", "rhum", "prcp", "snow", "snwd", "wdir", "wspd", "wpgt",
                      "pres", "tsun", "coco", "cldc", "vsby"]
_METEOSTAT_BULK = ["date", "hour", "temp", "dwpt", "rhum", "prcp", "snow", "wdir", "wspd",
                   "wpgt", "pres", "tsun", "coco"]
_METEOSTAT_UNITS = {"temp": "c", "prcp": "mm", "wspd": "kmh", "coco": "coco", "cldc": "okta",
                    "vsby": "m"}

# Meteostat condition code (1..27) -> the nearest WMO 4677 code.
COCO_TO_WMO = {1: 0, 2: 1, 3: 2, 4: 3, 5: 45, 6: 48, 7: 61, 8: 63, 9: 65, 10: 66, 11: 67,
               12: 68, 13: 69, 14: 71, 15: 73, 16: 75, 17: 80, 18: 82, 19: 83, 20: 84, 21: 85,
               22: 86, 23: 17, 24: 89, 25: 95, 26: 97, 27: 18}

_OFFSET_RE = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


# --- the summary --------------------------------------------------------------------------------

@dataclass
class RejectedValue:
    """One value (line, column) that was nulled, or one row that was skipped (column None)."""

    line: int
    column: str | None
    value: str
    reason: str

    def describe(self) -> str:
        where = f"line {self.line}" + (f" {self.column}" if self.column else "")
        return f"{where} {self.value!r}: {self.reason}"


@dataclass
class WeatherImportSummary:
    """What one import did: counts, mapping, units, and every rejected value with its line."""

    path: Path
    format: str
    n_rows: int = 0                      # data rows read from the file
    n_added: int = 0                     # new rows in the store
    n_duplicates: int = 0                # rows already in the store (same station and time)
    n_file_duplicates: int = 0           # rows repeating an earlier (station, time) in the file
    stations: dict = field(default_factory=dict)     # station -> rows kept from the file
    columns: dict = field(default_factory=dict)      # target -> source column
    units: dict = field(default_factory=dict)        # target -> unit key
    conditions: dict = field(default_factory=dict)   # condition -> rows
    rejected_rows: list = field(default_factory=list)     # RejectedValue with column None
    rejected_fields: list = field(default_factory=list)   # RejectedValue per nulled value
    notes: list = field(default_factory=list)
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @property
    def n_rejected_rows(self) -> int:
        return len(self.rejected_rows)

    @property
    def n_rejected_fields(self) -> int:
        return len(self.rejected_fields)

    def describe(self, max_listed: int = 10) -> str:
        lines = [f"weather: {self.path.name} ({self.format} format)"]
        mapping = " ".join(
            f"{target}={source}" + (f" [{_UNIT_SYMBOL[self.units[target]]}]"
                                    if target in self.units else "")
            for target, source in self.columns.items())
        lines.append(f"  columns: {mapping}")
        lines.extend(f"  note: {note}" for note in self.notes)
        per_station = ", ".join(f"{name} {n}" for name, n in sorted(self.stations.items()))
        span = ""
        if self.start is not None:
            span = f", {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC"
        lines.append(f"  {self.n_rows} rows read, {len(self.stations)} station(s)"
                     f" ({per_station}){span}")
        lines.append(f"  added {self.n_added}, already in the store {self.n_duplicates}"
                     + (f", repeated in the file {self.n_file_duplicates}"
                        if self.n_file_duplicates else ""))
        if self.conditions:
            lines.append("  conditions: " + ", ".join(
                f"{name} {n}" for name, n in sorted(self.conditions.items(),
                                                    key=lambda item: -item[1])))
        for label, items in (("skipped row", self.rejected_rows),
                             ("rejected value", self.rejected_fields)):
            if not items:
                continue
            lines.append(f"  {len(items)} {label}{'s' if len(items) != 1 else ''}:")
            lines.extend(f"    {item.describe()}" for item in items[:max_listed])
            if len(items) > max_listed:
                lines.append(f"    ... and {len(items) - max_listed} more")
        return "\n".join(lines)


# --- public entry points ------------------------------------------------------------------------

def import_csv(csv: Path, db: Path, station: str | None = None, columns: dict | None = None,
               units: str | None = None, timezone: str | None = None) -> WeatherImportSummary:
    """Read an hourly weather CSV and add its observations to the store at `db`.

    `station` names the station of a file without a station column, or keeps only that
    station's rows from a file with one. `columns` maps targets (`time`, `station`,
    `temperature_c`, ..., `weather_code`) to source columns, optionally with a unit
    (`"wspd:kmh"`); `units` ('us' or 'si') sets the units of columns that do not name one;
    `timezone` is the zone of naive times in the file (default UTC).
    """
    observations, summary = read_csv(Path(csv), station=station, columns=columns, units=units,
                                     timezone=timezone)
    write_observations(observations, db, summary)
    return summary


def read_csv(path: Path, station: str | None = None, columns: dict | None = None,
             units: str | None = None, timezone: str | None = None
             ) -> tuple[pd.DataFrame, WeatherImportSummary]:
    """Parse, map, convert and validate a file; returns the observations and the summary."""
    if units is not None and units not in _SYSTEMS:
        raise InputError(f"--units must be 'us' or 'si', not {units!r}")
    tz = _zone(timezone) if timezone else None
    text = _read_text(path)
    table = _detect(path, text)
    return read_table(table, path, station=station, columns=columns, units=units, tz=tz)


def read_table(table: Table, path: Path, station: str | None = None,
               columns: dict | None = None, units: str | None = None,
               tz: ZoneInfo | None = None) -> tuple[pd.DataFrame, WeatherImportSummary]:
    """Map, convert and validate an already split table (a file, or an API response)."""
    summary = WeatherImportSummary(path=path, format=table.format)
    mapping = _map_columns(table, columns, units, summary)
    frame = _convert(table, mapping, station, tz, summary)
    frame = _dedupe_in_file(frame, summary)
    frame["condition"] = derive_conditions(frame)
    frame["source"] = table.source or f"{table.format}:{path.name}"
    summary.stations = {str(k): int(v) for k, v in frame["station"].value_counts().items()}
    summary.conditions = {str(k): int(v)
                          for k, v in frame["condition"].value_counts(dropna=True).items()}
    if len(frame):
        summary.start = frame["observed_at"].min()
        summary.end = frame["observed_at"].max()
    return frame.drop(columns=["line"]), summary


def write_observations(frame: pd.DataFrame, db: Path, summary: WeatherImportSummary | None = None,
                       replace: bool = False) -> tuple[int, int]:
    """Add observations (columns as the `weather` table) to the store; returns (added, known)."""
    with store.connect(db) as con:
        added, known = store_weather.insert_observations(con, frame, replace=replace)
    if summary is not None:
        summary.n_added, summary.n_duplicates = added, known
    return added, known


def set_join(db: Path, station: str | None = None, tolerance_minutes: float | None = None) -> None:
    """Remember which station frames are joined to and the join tolerance (None = unchanged)."""
    if tolerance_minutes is not None and not tolerance_minutes > 0:
        raise InputError(f"the weather tolerance must be positive minutes, not {tolerance_minutes}")
    with store.connect(db) as con:
        if station is not None:
            known = store_weather.station_counts(con)
            if station not in known:
                names = ", ".join(sorted(known)) or "none yet (import a weather file first)"
                raise InputError(f"no weather station {station!r} in {db}; stations: {names}")
        store_weather.set_join(con, station=station, tolerance_minutes=tolerance_minutes)


def apply_settings(db: Path, settings) -> None:
    """Remember the join station and tolerance from `Settings` when they were given.

    As with the place (`pipeline.daylight.place`), a value counts as given when it is not the
    default, so a choice made earlier with `weather stations --use/--tolerance` is kept.
    """
    from pipeline.settings import Settings

    default = Settings().weather_tolerance_minutes
    tolerance = settings.weather_tolerance_minutes
    set_join(db, station=settings.weather_station,
             tolerance_minutes=None if tolerance == default else tolerance)


def describe_join(db: Path) -> str:
    """One line: which station frames are joined to, within what tolerance, and the outcome."""
    with store.connect(db, read_only=True) as con:
        station = store_weather.joined_station(con)
        tolerance = store_weather.tolerance_minutes(con)
        counts = store_weather.condition_counts(con)
    if station is None:
        return ("weather: no observations in the store (import a CSV with `weather import` or "
                "fetch with `weather fetch`)")
    outcome = ", ".join(f"{name} {n}" for name, n in counts.items()) or "no frames"
    return f"weather: frames joined to station {station} within {tolerance:g} min: {outcome}"


def describe_stations(db: Path) -> str:
    """The stations in the store, one line each, and the join settings."""
    with store.connect(db, read_only=True) as con:
        table = store_weather.stations(con)
    if table.empty:
        return "no weather stations yet: import a CSV with `weather import` or use `weather fetch`"
    lines = []
    for row in table.itertuples():
        mark = "*" if row.is_joined else " "
        lines.append(f"{mark} {row.station}: {row.n_rows} observations, "
                     f"{row.first_observed_at:%Y-%m-%d %H:%M} .. "
                     f"{row.last_observed_at:%Y-%m-%d %H:%M} UTC ({row.sources})")
    lines.append(describe_join(db))
    return "\n".join(lines)


# --- conditions ---------------------------------------------------------------------------------

def condition_for_code(code: float | int | None) -> str | None:
    """The condition a WMO 4677 code decides, or None when it leaves it to the measurements."""
    if code is None or (isinstance(code, float) and np.isnan(code)):
        return None
    code = int(code)
    if code in (0, 1):
        return "clear"
    if code in (2, 3):
        return "cloudy"
    if 10 <= code <= 12 or 40 <= code <= 49:
        return "fog"
    if 50 <= code <= 67 or 80 <= code <= 82 or 89 <= code <= 99:
        return "rain"
    if 68 <= code <= 79 or 83 <= code <= 88:
        return "snow"
    return None


def derive_conditions(frame: pd.DataFrame) -> pd.Series:
    """The condition of each observation (SI columns of `weather`) by the module's rules."""
    n = len(frame)

    def col(name: str) -> np.ndarray:
        if name in frame:
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        return np.full(n, np.nan)

    code = col("weather_code")
    precip, temp = col("precipitation_mm"), col("temperature_c")
    vis, cloud = col("visibility_km"), col("cloud_cover_pct")
    table = np.array([condition_for_code(c) or "" for c in range(100)] + [""], dtype=object)
    valid = ~np.isnan(code) & (code >= 0) & (code <= 99)
    by_code = table[np.where(valid, np.nan_to_num(code), 100).astype(int)]
    wet = precip >= RAIN_MIN_MM
    measured = np.select(
        [wet & (temp <= SNOW_MAX_C), wet, vis < FOG_MAX_KM, cloud >= CLOUDY_MIN_PCT,
         cloud < CLOUDY_MIN_PCT, ~np.isnan(precip) | ~np.isnan(vis)],
        ["snow", "rain", "fog", "cloudy", "clear", "dry"], default="")
    result = np.where(by_code == "", measured, by_code)
    return pd.Series(result, index=frame.index, dtype=object).replace("", None)


# --- reading and detecting ----------------------------------------------------------------------

@dataclass
class Table:
    """A weather table split into header and text rows, with what its format says."""

    format: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]                       # file line number of each row
    default_station: str | None = None
    tz: ZoneInfo | None = None             # zone of naive times declared by the file
    fixed_offset_s: int | None = None
    column_units: dict = field(default_factory=dict)   # column -> unit key known from the format
    source: str | None = None                            # `weather.source` (default format:file)
    locations: dict = field(default_factory=dict)        # Open-Meteo location_id -> station


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError(f"weather file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a weather CSV file")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read weather file {path}: {exc}") from exc
    if b"\x00" in raw[:4096]:
        raise WeatherError(f"{path} is not a text CSV file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _rows(lines: list[str], first_line: int, delimiter: str) -> tuple[list[list[str]], list[int]]:
    rows, numbers = [], []
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    for row in reader:
        if not "".join(row).strip():
            continue
        rows.append(row)
        numbers.append(first_line + reader.line_num - 1)
    return rows, numbers


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _detect(path: Path, text: str) -> Table:
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise WeatherError(f"{path} is empty")
    head = [_norm(c) for c in next(csv.reader([lines[0]], delimiter=_delimiter(lines[0])))]
    if head[:2] == ["latitude", "longitude"] or head[:3] == ["location_id", "latitude",
                                                             "longitude"]:
        return _open_meteo(path, text.splitlines())
    first = lines[0].split(_delimiter(lines[0]))
    if _DATE_RE.match(first[0].strip()) and len(first) in (11, 13) and \
            not _OFFSET_RE.search(first[0].strip()):
        return _meteostat_bulk(path, text.splitlines())
    delimiter = _delimiter(lines[0])
    all_lines = text.splitlines()
    start = next(i for i, line in enumerate(all_lines) if line.strip())
    rows, numbers = _rows(all_lines[start:], start + 1, delimiter)
    header, rows, numbers = [c.strip() for c in rows[0]], rows[1:], numbers[1:]
    names = {_norm(c) for c in header}
    is_meteostat = "temp" in names and len(names & set(_METEOSTAT_COLUMNS)) >= 4 and \
        ({"time", "date"} & names)
    if is_meteostat:
        units = {c: _METEOSTAT_UNITS[_norm(c)] for c in header if _norm(c) in _METEOSTAT_UNITS}
        return Table("meteostat", header, rows, numbers, default_station=_file_station(path,
                      "meteostat"), column_units=units)
    return Table("generic", header, rows, numbers, default_station=_file_station(path, None))


def _file_station(path: Path, prefix: str | None) -> str:
    stem = path.name
    for suffix in (".gz", ".csv", ".txt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return f"{prefix}:{stem}" if prefix else stem


def _open_meteo(path: Path, lines: list[str]) -> Table:
    """The location block, then the first data block of hourly values."""
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if blank is None:
        raise WeatherError(f"{path} starts like an Open-Meteo export but has no blank line "
                           "before the data header")
    meta_rows, _ = _rows(lines[:blank], 1, ",")
    meta_head = [_norm(c) for c in meta_rows[0]]
    metas = [dict(zip(meta_head, row)) for row in meta_rows[1:]]
    if not metas:
        raise WeatherError(f"{path}: the Open-Meteo location block has no values line")
    # Data blocks are separated by blank lines; take the first with date-times (hourly).
    blocks, current = [], []
    for number, line in enumerate(lines[blank:], start=blank + 1):
        if line.strip():
            current.append((number, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    chosen = None
    for block in blocks:
        if len(block) < 2:
            continue
        cells = next(csv.reader([block[1][1]]))
        head = [_norm(c) for c in next(csv.reader([block[0][1]]))]
        time_at = head.index("time") if "time" in head else None
        if time_at is not None and ("T" in cells[time_at] or cells[time_at].isdigit()):
            chosen = block
            break
    if chosen is None:
        raise WeatherError(f"{path}: no hourly block (a `time,...` header followed by date-times)"
                           " after the Open-Meteo location block")
    first = chosen[0][0]
    rows, numbers = _rows([line for _, line in chosen], first, ",")
    header = [c.strip() for c in rows[0]]
    units = {name: unit_in_name(name) for name in header if unit_in_name(name)}
    meta = metas[0]
    table = Table("open-meteo", header, rows[1:], numbers[1:], column_units=units)
    try:
        lat, lon = float(meta["latitude"]), float(meta["longitude"])
        table.default_station = station_name(lat, lon)
    except (KeyError, ValueError):
        table.default_station = _file_station(path, "open-meteo")
    if len(metas) > 1 and "location_id" in meta_head:
        table.default_station = None
        for m in metas:
            try:
                table.locations[m["location_id"].strip()] = station_name(
                    float(m["latitude"]), float(m["longitude"]))
            except (KeyError, ValueError):
                continue
    zone = (meta.get("timezone") or "").strip()
    if zone and zone.upper() not in ("GMT", "UTC", "Z"):
        try:
            table.tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            try:
                table.fixed_offset_s = int(float(meta.get("utc_offset_seconds", "0")))
            except ValueError:
                raise WeatherError(f"{path}: unknown timezone {zone!r} in the header") from None
    return table


def _meteostat_bulk(path: Path, lines: list[str]) -> Table:
    rows, numbers = _rows(lines, 1, ",")
    width = len(rows[0])
    header = _METEOSTAT_BULK if width == 13 else _METEOSTAT_BULK[:width]
    units = {c: _METEOSTAT_UNITS[c] for c in header if c in _METEOSTAT_UNITS}
    return Table("meteostat", list(header), rows, numbers,
                  default_station=_file_station(path, "meteostat"), column_units=units)


def station_name(lat: float, lon: float) -> str:
    """Station name of an Open-Meteo grid point (the same for the CSV export and the API)."""
    return f"open-meteo:{round(lat, 3):g},{round(lon, 3):g}"


def unit_in_name(name: str) -> str | None:
    """The unit key of a column named like `temperature_2m (°C)`, or None."""
    match = re.search(r"\(([^)]*)\)\s*$", name)
    return _unit_key(match.group(1)) if match else None


def _unit_key(text: str) -> str | None:
    key = text.strip().lower()
    key = _UNIT_ALIASES.get(key, key)
    return key if key in _UNITS else None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r}: use an IANA name such as Europe/London "
                         "or America/New_York") from None


# --- mapping columns and units ------------------------------------------------------------------

@dataclass
class _Column:
    source: str
    unit: str | None = None


def _map_columns(table: Table, columns: dict | None, units: str | None,
                 summary: WeatherImportSummary) -> dict[str, _Column]:
    header = table.header
    by_norm = {}
    for name in header:
        base = re.sub(r"\s*\([^)]*\)\s*$", "", name)
        by_norm.setdefault(_norm(base), name)
        by_norm.setdefault(_norm(name), name)
    mapping: dict[str, _Column] = {}
    for target, spec in (columns or {}).items():
        if target not in TARGETS:
            raise InputError(f"unknown weather column target {target!r}; targets: "
                             f"{', '.join(TARGETS)}")
        source, _, unit = str(spec).partition(":")
        source = source.strip()
        if source not in header and _norm(source) not in by_norm:
            raise InputError(f"column {source!r} (for {target}) is not in {table.format} file "
                             f"{summary.path.name}; its columns: {', '.join(header)}")
        source = source if source in header else by_norm[_norm(source)]
        if unit:
            key = _unit_key(unit)
            if key is None or (target != "time" and _UNITS[key][0] != target):
                raise InputError(f"unit {unit!r} does not fit {target}; units for it: "
                                 + ", ".join(k for k, v in _UNITS.items() if v[0] == target))
            mapping[target] = _Column(source, key)
        else:
            mapping[target] = _Column(source)
    used = {c.source for c in mapping.values()}
    for target in TARGETS:
        if target in mapping:
            continue
        for synonym in _SYNONYMS[target]:
            source = by_norm.get(synonym)
            if source is not None and source not in used:
                mapping[target] = _Column(source)
                used.add(source)
                break
    has_date_hour = {"date", "hour"} <= {_norm(c) for c in header}
    if has_date_hour and "time" in mapping and _norm(mapping["time"].source) == "date" and \
            "time" not in (columns or {}):
        del mapping["time"]                    # a date column with an hour column beside it
    if "time" not in mapping and not has_date_hour:
        raise InputError(
            f"no time column in {summary.path.name} (columns: {', '.join(header)}); name it "
            "with --columns time=COLUMN")
    if not any(f in mapping for f in FIELDS):
        raise InputError(
            f"no weather columns recognised in {summary.path.name} (columns: "
            f"{', '.join(header)}); map them with --columns, e.g. "
            "--columns temperature_c=temp,precipitation_mm=rain,wind_speed_ms=wind")
    if "station" in mapping and table.format == "open-meteo" and \
            _norm(mapping["station"].source) != "location_id":
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
            unit = _SYSTEMS[units][target]
        if unit is None:
            if guessed is None:
                guessed = _guess_system(table, mapping, summary)
            unit = _SYSTEMS[guessed][target]
        column.unit = unit
    summary.columns = {t: c.source for t, c in mapping.items()}
    summary.units = {t: c.unit for t, c in mapping.items() if c.unit}
    return mapping


def _unit_from_name(name: str, target: str) -> str | None:
    match = re.search(r"\(([^)]*)\)\s*$", name)
    if match:
        unit = _unit_key(match.group(1))
        if unit and _UNITS[unit][0] == target:
            return unit
    norm = _norm(name)
    if norm in _NAME_UNITS and _UNITS[_NAME_UNITS[norm]][0] == target:
        return _NAME_UNITS[norm]
    parts = norm.split("_")
    if len(parts) > 1:
        unit = _SUFFIX_UNITS.get(parts[-1])
        if unit and _UNITS[unit][0] == target:
            return unit
    return None


def _guess_system(table: Table, mapping: dict[str, _Column],
                  summary: WeatherImportSummary) -> str:
    column = mapping.get("temperature_c")
    if column is None:
        summary.notes.append("units not named in the file: assumed SI (°C, mm, m/s, km); "
                             "pass --units us if they are °F, inches, mph and miles")
        return "si"
    index = table.header.index(column.source)
    values = pd.to_numeric(pd.Series([row[index] if index < len(row) else "" for row in
                                      table.rows]), errors="coerce").dropna()
    values = values[(values > -100) & (values < 150)]
    if len(values) and (values.max() > 57 or values.median() > 30):
        summary.notes.append(
            f"units not named in the file: guessed US (°F, inches, mph, miles) because "
            f"temperatures reach {values.max():g} (median {values.median():g}); pass --units si "
            "if wrong")
        return "us"
    summary.notes.append("units not named in the file: guessed SI (°C, mm, m/s, km) from the "
                         "temperatures; pass --units us if wrong")
    return "si"


# --- converting and validating ------------------------------------------------------------------

def _convert(table: Table, mapping: dict[str, _Column], station: str | None,
             tz: ZoneInfo | None, summary: WeatherImportSummary) -> pd.DataFrame:
    width = len(table.header)
    rows = [row + [""] * (width - len(row)) if len(row) < width else row[:width]
            for row in table.rows]
    raw = pd.DataFrame(rows, columns=range(width), dtype=object) if rows else \
        pd.DataFrame(columns=range(width), dtype=object)
    lines = pd.Series(table.lines, dtype="int64")
    summary.n_rows = len(raw)
    col_index = {name: i for i, name in enumerate(table.header)}
    ok = pd.Series(True, index=raw.index)

    def skip(mask: pd.Series, values: pd.Series, reason: str) -> None:
        for i in np.flatnonzero(mask.to_numpy() & ok.to_numpy()):
            summary.rejected_rows.append(RejectedValue(int(lines[i]), None, str(values.iloc[i]),
                                                       reason))
        ok[mask] = False

    # Station
    locations = table.locations
    if "station" in mapping:
        names = raw[col_index[mapping["station"].source]].astype(str).str.strip()
        if locations:
            names = names.map(lambda v: locations.get(v, f"open-meteo:location-{v}"))
        skip(names.str.lower().isin(_MISSING), names, "no station name")
        if station is not None:
            keep = names == station
            if not keep.any():
                found = ", ".join(sorted(names[ok].unique())[:20])
                raise InputError(f"station {station!r} is not in {summary.path.name}; its "
                                 f"stations: {found}")
            ok &= keep
            summary.notes.append(f"kept only station {station}: {int(keep.sum())} rows")
    else:
        name = station or table.default_station
        names = pd.Series(name, index=raw.index, dtype=object)

    # Time
    if "time" in mapping:
        text = raw[col_index[mapping["time"].source]].astype(str).str.strip()
    else:
        norm = {_norm(c): i for i, c in enumerate(table.header)}
        hour = pd.to_numeric(raw[norm["hour"]], errors="coerce")
        text = raw[norm["date"]].astype(str).str.strip() + " " + \
            hour.map(lambda h: "" if pd.isna(h) else f"{int(h):02d}:00")
    zone = tz or table.tz
    observed = _parse_times(text, zone, table.fixed_offset_s, names)
    bad_time = observed.isna()
    reason = "time is not a date-time"
    if zone is not None:
        reason = f"time is not a date-time, or does not exist in {zone.key} (DST gap)"
    skip(bad_time, text, reason)

    frame = pd.DataFrame({"station": names, "observed_at": observed, "line": lines})
    for target in FIELDS:
        column = mapping.get(target)
        if column is None:
            frame[target] = np.nan
            continue
        values = raw[col_index[column.source]]
        frame[target] = _convert_field(values, target, column, lines, ok, summary)
    frame = frame[ok.to_numpy()].reset_index(drop=True)
    frame["weather_code"] = frame["weather_code"].round().astype("Int64")
    return frame


def _parse_times(text: pd.Series, zone: ZoneInfo | None, fixed_offset_s: int | None,
                 stations: pd.Series) -> pd.Series:
    """UTC times (NaT where unusable). Naive times are in `zone` (or a fixed offset, or UTC)."""
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if not len(text):
        return result
    epoch = text.str.fullmatch(r"\d{9,11}")
    if epoch.any():
        result[epoch] = pd.to_datetime(text[epoch].astype("int64"), unit="s", utc=True)
    aware = ~epoch & text.str.contains(_OFFSET_RE)
    if aware.any():
        result[aware] = _to_datetime(text[aware], utc=True)
    naive = ~epoch & ~aware
    if naive.any():
        local = _to_datetime(text[naive], utc=False)
        if zone is not None:
            result[naive] = _localize(local, zone, stations[naive])
        else:
            offset = pd.Timedelta(seconds=fixed_offset_s or 0)
            result[naive] = (local - offset).dt.tz_localize("UTC")
    return result


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=utc)
    failed = parsed.isna() & text.ne("")
    if failed.any():
        parsed[failed] = pd.to_datetime(text[failed], format="mixed", errors="coerce", utc=utc)
    return parsed


def _localize(local: pd.Series, zone: ZoneInfo, stations: pd.Series) -> pd.Series:
    """Wall-clock times in `zone` to UTC: a repeated hour is summer time first, winter second."""
    valid = local.notna()
    result = pd.Series(pd.NaT, index=local.index, dtype="datetime64[ns, UTC]")
    if not valid.any():
        return result
    times = local[valid]
    probe = times.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    all_summer = np.ones(len(times), dtype=bool)
    nonexistent = probe.isna() & times.dt.tz_localize(zone, ambiguous=all_summer,
                                                      nonexistent="NaT").isna()
    ambiguous = probe.isna() & ~nonexistent
    first = ~pd.DataFrame({"s": stations[valid], "t": times}).duplicated(keep="first")
    is_dst = np.where(ambiguous, first, True)
    localized = times.dt.tz_localize(zone, ambiguous=is_dst, nonexistent="NaT")
    result[valid] = localized.dt.tz_convert("UTC")
    return result


def _convert_field(values: pd.Series, target: str, column: _Column, lines: pd.Series,
                   ok: pd.Series, summary: WeatherImportSummary) -> pd.Series:
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING)
    if target == "precipitation_mm":
        text = text.mask(text.str.upper() == "T", "0")  # 'T' = trace, less than measurable
    number = pd.to_numeric(text.where(~missing), errors="coerce")
    unparsable = ~missing & number.isna()
    quantity, factor, offset = _UNITS[column.unit]
    si = number * factor + offset
    if column.unit == "coco":
        valid_coco = number.isin(list(COCO_TO_WMO))
        si = number.map(COCO_TO_WMO).astype(float)
        impossible = number.notna() & ~valid_coco
        limits_text = "Meteostat condition codes are 1..27"
    else:
        low, high = LIMITS[target]
        impossible = si.notna() & ((si < low) | (si > high))
        if target == "weather_code":
            impossible |= si.notna() & (si != si.round())
        limits_text = f"possible: {low:g}..{high:g} {_UNIT_SYMBOL[_SYSTEMS['si'][target]]}"
    keep = ok.to_numpy()
    for i in np.flatnonzero(unparsable.to_numpy() & keep):
        summary.rejected_fields.append(RejectedValue(int(lines[i]), column.source,
                                                     str(values.iloc[i]), "not a number"))
    for i in np.flatnonzero(impossible.to_numpy() & keep):
        reason = "impossible value"
        if column.unit != "coco" and column.unit != _SYSTEMS["si"][target]:
            reason += f" ({si.iloc[i]:.4g} {_UNIT_SYMBOL[_SYSTEMS['si'][target]]})"
        summary.rejected_fields.append(RejectedValue(int(lines[i]), column.source,
                                                     str(values.iloc[i]),
                                                     f"{reason}; {limits_text}"))
    return si.mask(impossible | unparsable).astype(float)


def _dedupe_in_file(frame: pd.DataFrame, summary: WeatherImportSummary) -> pd.DataFrame:
    repeated = frame.duplicated(["station", "observed_at"], keep="first")
    summary.n_file_duplicates = int(repeated.sum())
    if summary.n_file_duplicates:
        first_lines = ", ".join(str(n) for n in frame.loc[repeated, "line"].head(5))
        summary.notes.append(f"{summary.n_file_duplicates} rows repeat an earlier station and "
                             f"time in the file and were ignored (lines {first_lines}...)")
    return frame[~repeated].reset_index(drop=True)
