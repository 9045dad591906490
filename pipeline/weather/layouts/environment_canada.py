"""Environment and Climate Change Canada's hourly data CSV (climate.weather.gc.ca "Download Data").

The file starts with a station block (`"Station Name","VANCOUVER INTL A"`, `"Province",...`,
`"Latitude"`, `"Longitude"`, `"Climate Identifier"`, ...), a line saying the times are Local
Standard Time, a legend of the flags, then the table: `"Date/Time","Year","Month","Day","Time",
"Data Quality","Temp (°C)","Temp Flag",...,"Wind Spd (km/h)",...,"Visibility (km)",...,
"Weather"`.

- **Times** are Local Standard Time all year (no daylight saving time): the standard offset of
  the station's province (`STANDARD_OFFSET_H`; British Columbia UTC-8). A station on the other
  side of its province's zone line (e.g. British Columbia's Peace River and East Kootenay,
  north-west Ontario, Labrador, most of Nunavut) needs `--timezone Etc/GMT+N`, the fixed zone
  N hours behind UTC, which wins over the file's offset.
- **Station**: `eccc:<Climate Identifier>` (the summary names the station too).
- **Columns**: `Temp (°C)`, `Wind Spd (km/h)`, `Visibility (km)` and, when there,
  `Precip. Amount (mm)` (units from their names);
  the `Weather` text ("Mostly Cloudy", "Moderate Rain,Fog", "NA") becomes a WMO 4677 code
  (`WEATHER_WMO`, "Moderate"/"Heavy" step the intensity; several weathers give the highest
  code, as WMO reporting does), so the condition rules apply to it. A text not in the table is
  left without a code and counted in the summary.
"""

from __future__ import annotations

import csv

from pipeline.errors import WeatherError
from pipeline.weather.table import Table, Text, norm, split_rows

#: Local Standard Time of each province or territory, hours from UTC (the zone most of its
#: stations are in).
STANDARD_OFFSET_H = {
    "BRITISH COLUMBIA": -8.0,
    "YUKON": -8.0,
    "YUKON TERRITORY": -8.0,
    "ALBERTA": -7.0,
    "NORTHWEST TERRITORIES": -7.0,
    "SASKATCHEWAN": -6.0,
    "MANITOBA": -6.0,
    "ONTARIO": -5.0,
    "QUEBEC": -5.0,
    "NUNAVUT": -5.0,
    "NEW BRUNSWICK": -4.0,
    "NOVA SCOTIA": -4.0,
    "PRINCE EDWARD ISLAND": -4.0,
    "NEWFOUNDLAND": -3.5,
    "NEWFOUNDLAND AND LABRADOR": -3.5,
}

#: Environment Canada's weather words -> WMO 4677 present-weather code; a tuple is the code
#: when light (no prefix), "Moderate ..." and "Heavy ...".
WEATHER_WMO: dict[str, int | tuple[int, int, int]] = {
    "clear": 0,
    "mainly clear": 1,
    "mostly cloudy": 2,
    "cloudy": 3,
    "smoke": 4,
    "haze": 5,
    "dust": 6,
    "blowing dust": 7,
    "drifting snow": 36,
    "blowing snow": 38,
    "fog": 45,
    "ice fog": 45,
    "fog patches": 41,
    "freezing fog": 48,
    "drizzle": (51, 53, 55),
    "freezing drizzle": (56, 57, 57),
    "rain": (61, 63, 65),
    "freezing rain": (66, 67, 67),
    "snow": (71, 73, 75),
    "snow grains": 77,
    "ice crystals": 78,
    "ice pellets": 79,
    "rain showers": (80, 81, 82),
    "snow showers": (85, 86, 86),
    "snow pellets": (87, 88, 88),
    "ice pellet showers": 87,
    "hail": (89, 90, 90),
    "thunderstorms": (95, 95, 97),
    "funnel cloud": 19,
    "tornado": 19,
}
#: Columns of the measured fields, by target (units from the names).
COLUMNS = {
    "temperature_c": "Temp (°C)",
    "precipitation_mm": "Precip. Amount (mm)",
    "wind_speed_ms": "Wind Spd (km/h)",
    "visibility_km": "Visibility (km)",
}
_INTENSITY = {"moderate": 1, "heavy": 2}
_MISSING = {"", "na"}
_TIME_COLUMN = "Date/Time"


def sniff(text: Text) -> bool:
    """The file starts with the station block (`"Station Name","..."`) above a `Date/Time`
    table header."""
    if text.head[:1] != ["station_name"] or len(text.head) != 2:
        return False
    return _header_line(text.lines[: text.start + 40], text.delimiter) is not None


def _header_line(lines: list[str], delimiter: str) -> int | None:
    return next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith((f'"{_TIME_COLUMN}"', f"{_TIME_COLUMN}{delimiter}"))
        ),
        None,
    )


def read(text: Text) -> Table:
    path, lines, delimiter = text.path, text.lines, text.delimiter
    header_at = _header_line(lines, delimiter)
    if header_at is None:
        raise WeatherError(
            f"{path} starts like an Environment Canada file but has no "
            f"'{_TIME_COLUMN}' table header"
        )
    meta = {
        norm(row[0]): row[1].strip()
        for row in csv.reader(lines[text.start : header_at], delimiter=delimiter)
        if len(row) == 2
    }
    province = meta.get("province", "").upper()
    if province not in STANDARD_OFFSET_H:
        raise WeatherError(
            f"{path}: Environment Canada times are Local Standard Time, and the "
            f"province {province or '(none)'!r} has no known standard offset"
        )
    rows, numbers = split_rows(lines[header_at:], header_at + 1, delimiter)
    header, rows, numbers = [c.strip() for c in rows[0]], rows[1:], numbers[1:]
    table = Table(
        "environment-canada",
        header,
        rows,
        numbers,
        fixed_offset_s=int(STANDARD_OFFSET_H[province] * 3600),
        delimiter=delimiter,
    )
    climate_id = meta.get("climate_identifier") or meta.get("climate_id")
    table.default_station = f"eccc:{climate_id}" if climate_id else f"eccc:{path.stem}"
    table.notes.append(
        f"Environment Canada station {meta.get('station_name', '?')} (climate ID "
        f"{climate_id or '?'}), {province.title()}: times are Local Standard Time, "
        f"UTC{STANDARD_OFFSET_H[province]:+g} all year"
    )
    table.columns["time"] = _TIME_COLUMN
    table.columns.update({target: name for target, name in COLUMNS.items() if name in header})
    if "Weather" in header:
        table.columns["weather_code"] = "Weather"
        table.column_units["Weather"] = "wmo"
        unknown = _weather_codes(rows, header.index("Weather"))
        if unknown:
            listed = ", ".join(f"{word!r} x{n}" for word, n in sorted(unknown.items()))
            table.notes.append(f"Weather texts without a WMO code (left without one): {listed}")
    return table


def weather_code(text: str) -> int | None:
    """The WMO code of an Environment Canada weather text, None for NA or an unknown text."""
    codes = [_one_weather(part) for part in text.split(",")]
    known = [code for code in codes if code is not None]
    return max(known) if known else None


def _one_weather(word: str) -> int | None:
    words = word.strip().lower().split(" ", 1)
    level = _INTENSITY.get(words[0], 0) if len(words) == 2 else 0
    code = WEATHER_WMO.get(words[1] if level else word.strip().lower())
    if isinstance(code, tuple):
        return code[level]
    return code if not level else None  # "Moderate Fog": no such weather


def _weather_codes(rows: list[list[str]], column: int) -> dict[str, int]:
    """Replace each row's Weather text by its WMO code (in place); the unknown texts, counted."""
    unknown: dict[str, int] = {}
    for row in rows:
        if column >= len(row):
            continue
        text = row[column].strip()
        code = None if text.lower() in _MISSING else weather_code(text)
        if code is None and text.lower() not in _MISSING:
            unknown[text] = unknown.get(text, 0) + 1
        row[column] = "" if code is None else str(code)
    return unknown
