"""The CSV layouts a weather file can have: a registry of `(name, sniff, read)` entries.

`detect(text)` tries them in the order of `LAYOUTS`; the first whose `sniff` says yes reads the
file into a `Table`. The order matters where two could match, so it is written down here:

1. **open-meteo** (`open_meteo`): starts with a `latitude,longitude,...` location block; nothing
   else does, so it goes first.
2. **environment-canada** (`environment_canada`): starts with a two-cell `"Station Name",...`
   station block above its table: before every layout that reads the first line as a header.
3. **meteostat-bulk** (`meteostat`): no header at all, the first line is data (a date, then 10
   or 12 values): before every layout that reads the first line as a header.
4. **meteostat** (`meteostat`): a header with `temp` and Meteostat's short names; before
   generic, which would read it too but without Meteostat's units (km/h wind, codes).
5. **generic** (`generic`): any table with a header; it always matches, so it stays last.

To add a layout: a module here with `sniff(text: Text) -> bool` (cheap: look at `text.head`,
`text.first_line` or the first lines) and `read(text: Text) -> Table`, and one `Layout` entry
in `LAYOUTS` above every layout that would also match its files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline.weather.layouts import environment_canada, generic, meteostat, open_meteo
from pipeline.weather.table import Table, Text


@dataclass(frozen=True)
class Layout:
    """One CSV layout: its name, a cheap test on the file's text, and its reader."""

    name: str
    sniff: Callable[[Text], bool]
    read: Callable[[Text], Table]


LAYOUTS: tuple[Layout, ...] = (
    Layout("open-meteo", open_meteo.sniff, open_meteo.read),
    Layout("environment-canada", environment_canada.sniff, environment_canada.read),
    Layout("meteostat-bulk", meteostat.sniff_bulk, meteostat.read_bulk),
    Layout("meteostat", meteostat.sniff, meteostat.read),
    Layout("generic", generic.sniff, generic.read),
)


def detect(text: Text) -> Table:
    """The file read by the first layout in `LAYOUTS` whose sniff matches."""
    for layout in LAYOUTS:
        if layout.sniff(text):
            return layout.read(text)
    raise AssertionError("the generic layout reads every file")  # pragma: no cover
