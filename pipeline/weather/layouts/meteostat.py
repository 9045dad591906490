"""Meteostat hourly data: °C, mm, km/h, UTC; `coco` is Meteostat's condition code 1..27 (stored
as the equivalent WMO code). Two layouts:

- **meteostat-bulk**: the header-less bulk files (`date,hour,temp,dwpt,rhum,prcp,snow,wdir,
  wspd,wpgt,pres,tsun,coco`, 13 columns, or the first 11);
- **meteostat**: a table with a header (`time,temp,dwpt,rhum,prcp,snow,wdir,wspd,wpgt,pres,
  tsun,coco`, as the Meteostat API and Python library export it).

The station comes from a `station` column, else the file name (`meteostat:10637`).
"""

from __future__ import annotations

import re

from pipeline.weather.table import Table, Text, file_station, header_rows, norm, split_rows
from pipeline.weather.times import OFFSET_RE

COLUMNS = [
    "temp",
    "dwpt",
    "rhum",
    "prcp",
    "snow",
    "snwd",
    "wdir",
    "wspd",
    "wpgt",
    "pres",
    "tsun",
    "coco",
    "cldc",
    "vsby",
]
BULK_COLUMNS = [
    "date",
    "hour",
    "temp",
    "dwpt",
    "rhum",
    "prcp",
    "snow",
    "wdir",
    "wspd",
    "wpgt",
    "pres",
    "tsun",
    "coco",
]
UNITS = {"temp": "c", "prcp": "mm", "wspd": "kmh", "coco": "coco", "cldc": "okta", "vsby": "m"}

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def sniff_bulk(text: Text) -> bool:
    """The first line is data: a date without an offset, then 10 or 12 more values."""
    first = text.first_line.split(text.delimiter)
    return bool(
        _DATE_RE.match(first[0].strip())
        and len(first) in (11, 13)
        and not OFFSET_RE.search(first[0].strip())
    )


def read_bulk(text: Text) -> Table:
    rows, numbers = split_rows(text.lines, 1, text.delimiter)
    width = len(rows[0])
    header = BULK_COLUMNS if width == 13 else BULK_COLUMNS[:width]
    units = {c: UNITS[c] for c in header if c in UNITS}
    return Table(
        "meteostat",
        list(header),
        rows,
        numbers,
        default_station=file_station(text.path, "meteostat"),
        column_units=units,
        delimiter=text.delimiter,
    )


def sniff(text: Text) -> bool:
    """A header with `temp`, at least four Meteostat columns, and `time` or `date`."""
    names = set(text.head)
    return "temp" in names and len(names & set(COLUMNS)) >= 4 and bool({"time", "date"} & names)


def read(text: Text) -> Table:
    header, rows, numbers = header_rows(text)
    units = {c: UNITS[norm(c)] for c in header if norm(c) in UNITS}
    return Table(
        "meteostat",
        header,
        rows,
        numbers,
        default_station=file_station(text.path, "meteostat"),
        column_units=units,
        delimiter=text.delimiter,
    )
