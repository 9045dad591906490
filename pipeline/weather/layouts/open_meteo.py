"""Open-Meteo's CSV export: a location block (`latitude,longitude,elevation,utc_offset_seconds,
timezone,timezone_abbreviation` + one values line, or several with a `location_id` column), a
blank line, then `time,temperature_2m (°C),...` with the unit in each column name. A file
re-saved by a spreadsheet may be delimited by `;` or tab, with decimal commas: it is read with
the delimiter of its first line (`Text.delimiter`), as every layout is.

Times are local to the header's `timezone` (an IANA name, or GMT; an unknown name falls back to
`utc_offset_seconds`) or Unix seconds. The station is `open-meteo:LAT,LON` (the grid point in
the header, `station_name`), the same name the archive API's answer for that point gets; with
several locations each row's `location_id` picks its station.
"""

from __future__ import annotations

import csv
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.errors import WeatherError
from pipeline.weather.table import Table, Text, file_station, norm, point_decimal, split_rows
from pipeline.weather.units import unit_in_name

_NAMES = {",": "','", ";": "';'", "\t": "tabs"}  # each delimiter `Text.delimiter` can give


def sniff(text: Text) -> bool:
    """The file starts with the location block's header."""
    return text.head[:2] == ["latitude", "longitude"] or text.head[:3] == [
        "location_id",
        "latitude",
        "longitude",
    ]


def station_name(lat: float, lon: float) -> str:
    """Station name of an Open-Meteo grid point (the same for the CSV export and the API)."""
    return f"open-meteo:{round(lat, 3):g},{round(lon, 3):g}"


def read(text: Text) -> Table:
    """The location block, then the first data block of hourly values."""
    path, lines, delimiter = text.path, text.lines, text.delimiter
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if blank is None:
        raise WeatherError(
            f"{path} starts like an Open-Meteo export but has no blank line before the data header"
        )
    meta_rows, _ = split_rows(lines[:blank], 1, delimiter)
    meta_head = [norm(c) for c in meta_rows[0]]
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
        cells = next(csv.reader([block[1][1]], delimiter=delimiter))
        head = [norm(c) for c in next(csv.reader([block[0][1]], delimiter=delimiter))]
        time_at = head.index("time") if "time" in head else None
        if time_at is None or time_at >= len(cells):
            continue
        if "T" in cells[time_at] or cells[time_at].isdigit():
            chosen = block
            break
    if chosen is None:
        raise WeatherError(
            f"{path}: no hourly block after the Open-Meteo location block (a header with a "
            "`time` column, then date-times; cells split at "
            f"{_NAMES[delimiter]}, the delimiter of the file's first line)"
        )
    first = chosen[0][0]
    rows, numbers = split_rows([line for _, line in chosen], first, delimiter)
    header = [c.strip() for c in rows[0]]
    units = {name: unit_in_name(name) for name in header if unit_in_name(name)}
    meta = metas[0]
    table = Table(
        "open-meteo", header, rows[1:], numbers[1:], column_units=units, delimiter=delimiter
    )
    number = point_decimal if table.decimal_comma else str.strip
    try:
        lat, lon = float(number(meta["latitude"])), float(number(meta["longitude"]))
        table.default_station = station_name(lat, lon)
    except (KeyError, ValueError):
        table.default_station = file_station(path, "open-meteo")
    if len(metas) > 1 and "location_id" in meta_head:
        table.default_station = None
        for m in metas:
            try:
                table.locations[m["location_id"].strip()] = station_name(
                    float(number(m["latitude"])), float(number(m["longitude"]))
                )
            except (KeyError, ValueError):
                continue
    zone = (meta.get("timezone") or "").strip()
    if zone and zone.upper() not in ("GMT", "UTC", "Z"):
        try:
            table.tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            try:
                table.fixed_offset_s = int(float(number(meta.get("utc_offset_seconds", "0"))))
            except ValueError:
                raise WeatherError(f"{path}: unknown timezone {zone!r} in the header") from None
    return table
