"""Any other table with a header: a time column and some of temperature, precipitation, cloud
cover, wind speed, visibility, weather code, found by name (`pipeline.weather.columns`). The
station comes from a station column, else the file name. It reads every file, so it is tried
last.
"""

from __future__ import annotations

from pipeline.weather.table import Table, Text, file_station, header_rows


def sniff(text: Text) -> bool:
    """Every file with a header row can be read this way."""
    return True


def read(text: Text) -> Table:
    header, rows, numbers = header_rows(text)
    return Table(
        "generic",
        header,
        rows,
        numbers,
        default_station=file_station(text.path, None),
        delimiter=text.delimiter,
    )
