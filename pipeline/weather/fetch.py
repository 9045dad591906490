"""Fetch hourly observations from the Open-Meteo historical archive API (no key) into the store.

`fetch(db, lat, lon)` asks for the frames' time span (UTC days) unless `start`/`end` are given,
in chunks of at most a year, with a connect/read timeout and retries with backoff on network
errors, HTTP 429 and 5xx. An API error (HTTP 400, e.g. a date outside the archive) and an
unreachable server (offline machine) become one-line `WeatherError`s that say what to do.
Responses are read from Open-Meteo's JSON (`hourly.time`, `hourly.temperature_2m`, ...,
`hourly_units`) and go through the same mapping, unit conversion, validation and condition
rules as an imported CSV (`importer.read_table`); the station is `open-meteo:LAT,LON` of the
grid point the API answers with, the same name an Open-Meteo CSV export of that point gets.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests

import store
from pipeline.errors import InputError, WeatherError
from pipeline.weather.importer import read_table, write_observations
from pipeline.weather.layouts.open_meteo import station_name
from pipeline.weather.summary import WeatherImportSummary
from pipeline.weather.table import Table
from pipeline.weather.units import unit_in_name
from store import weather as store_weather

log = logging.getLogger(__name__)

ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
HOURLY = ("temperature_2m", "precipitation", "weather_code", "cloud_cover", "wind_speed_10m")
CHUNK_DAYS = 366
TIMEOUT_S = (5.0, 60.0)  # connect, read
RETRIES = 3
BACKOFF_S = 1.0


def fetch(
    db: Path,
    lat: float,
    lon: float,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    base_url: str = ARCHIVE_URL,
    retries: int = RETRIES,
    backoff_s: float = BACKOFF_S,
    timeout_s: tuple[float, float] = TIMEOUT_S,
) -> WeatherImportSummary:
    """Fetch hourly weather at (lat, lon) for start..end (UTC days, inclusive) into `db`."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise InputError(f"latitude must be -90..90 and longitude -180..180, not {lat}, {lon}")
    start, end = _span(db, _date(start, "start"), _date(end, "end"))
    session = requests.Session()
    tables = []
    day = start
    while day <= end:
        last = min(end, day + dt.timedelta(days=CHUNK_DAYS - 1))
        payload = _get(
            session,
            base_url,
            {
                "latitude": lat,
                "longitude": lon,
                "start_date": day.isoformat(),
                "end_date": last.isoformat(),
                "hourly": ",".join(HOURLY),
                "timezone": "GMT",
                "timeformat": "iso8601",
                "wind_speed_unit": "ms",
                "temperature_unit": "celsius",
                "precipitation_unit": "mm",
            },
            retries,
            backoff_s,
            timeout_s,
        )
        tables.append(table_from_json(payload, base_url))
        day = last + dt.timedelta(days=1)
    table = tables[0]
    for extra in tables[1:]:
        table.rows.extend(extra.rows)
    table.lines = list(range(1, len(table.rows) + 1))
    label = Path(urlparse(base_url).netloc or "open-meteo")
    frame, summary = read_table(table, label)
    summary.notes.append(f"asked for {start} .. {end} (UTC days); 'line' numbers count hours")
    write_observations(frame, db, summary)
    return summary


def table_from_json(payload: dict, base_url: str = ARCHIVE_URL) -> Table:
    """An Open-Meteo JSON response as a weather table (unit in each column name)."""
    try:
        hourly, units = payload["hourly"], payload.get("hourly_units", {})
        times = hourly["time"]
        lat, lon = float(payload["latitude"]), float(payload["longitude"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeatherError(
            f"the answer from {base_url} is not Open-Meteo's format (missing {exc})"
        ) from None
    names = [name for name in hourly if name != "time"]
    header = ["time"] + [f"{name} ({units[name]})" if units.get(name) else name for name in names]
    columns = [times] + [hourly[name] for name in names]
    if any(len(values) != len(times) for values in columns):
        raise WeatherError(f"the answer from {base_url} has hourly arrays of different lengths")
    rows = [["" if value is None else str(value) for value in row] for row in zip(*columns)]
    unit_keys = {}
    for name in header[1:]:
        key = unit_in_name(name)
        if key:
            unit_keys[name] = key
    table = Table(
        "open-meteo-api",
        header,
        rows,
        list(range(1, len(rows) + 1)),
        default_station=station_name(lat, lon),
        column_units=unit_keys,
        source="open-meteo-api",
    )
    if payload.get("utc_offset_seconds"):
        table.fixed_offset_s = int(payload["utc_offset_seconds"])
    return table


def _get(
    session: requests.Session,
    url: str,
    params: dict,
    retries: int,
    backoff_s: float,
    timeout_s: tuple[float, float],
) -> dict:
    host = urlparse(url).netloc or url
    last_problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            response = session.get(url, params=params, timeout=timeout_s)
        except requests.Timeout:
            last_problem = f"no answer within {timeout_s[1]:g} s"
            log.info("open-meteo: %s (attempt %d)", last_problem, attempt + 1)
            continue
        except requests.ConnectionError as exc:
            last_problem = f"cannot connect ({_short(exc)})"
            log.info("open-meteo: %s (attempt %d)", last_problem, attempt + 1)
            if "resolve" in last_problem and attempt >= 1:
                break  # no name service: offline, more tries will not help
            continue
        if response.status_code == 429 or response.status_code >= 500:
            last_problem = f"HTTP {response.status_code}"
            log.info("open-meteo: %s (attempt %d)", last_problem, attempt + 1)
            continue
        try:
            payload = response.json()
        except ValueError:
            raise WeatherError(
                f"{host} answered HTTP {response.status_code} with something that"
                " is not JSON; is the URL the Open-Meteo archive API?"
            ) from None
        if response.status_code != 200 or (isinstance(payload, dict) and payload.get("error")):
            reason = payload.get("reason") if isinstance(payload, dict) else None
            raise WeatherError(
                f"Open-Meteo refused the request (HTTP {response.status_code}): "
                f"{reason or response.text[:200]}"
            )
        return payload
    raise WeatherError(
        f"cannot fetch weather from {host} after {attempt + 1} tries: {last_problem}. Check the "
        "internet connection (or proxy), or download an hourly CSV from open-meteo.com "
        "elsewhere and load it with `python -m pipeline weather import CSV --db FILE`."
    )


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in (
        "Failed to resolve",
        "Connection refused",
        "Network is unreachable",
        "timed out",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return text[:120]


def _date(value: dt.date | str | None, what: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"--{what} must be a date like 2024-04-01, not {value!r}") from None


def _span(db: Path, start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    """The requested days, filling what is missing from the frames' UTC time span."""
    if start is None or end is None:
        span = None
        if Path(db).exists():
            with store.connect(db, read_only=True) as con:
                span = store_weather.frame_span(con)
        if span is None:
            raise InputError(
                f"no frames with times in {db} to take the dates from; give "
                "--start and --end (e.g. --start 2024-04-01 --end 2024-04-30)"
            )
        first, last = (pd.Timestamp(t).tz_convert("UTC").date() for t in span)
        start = start or first
        end = end or last
    if end < start:
        raise InputError(f"--end {end} is before --start {start}")
    return start, end
