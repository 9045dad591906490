"""A weather file as text, and as a table: what every CSV layout reads and the rest of the import
works on.

`read_text` reads a file (plain or .gz, UTF-8 with or without BOM, else Latin-1) into a
`Text` (its lines and its first non-blank line split into cells, which is what layouts sniff);
a layout's reader turns it into a `Table`: header, text rows, each row's line number in the
file, and what the layout itself says (default station, time zone or fixed offset of naive
times, which column is which field and in which unit, the `source` recorded with each
observation, notes for the summary).

The delimiter is the first non-blank line's (`,`, `;` or tab: `delimiter`), for every layout.
A file delimited by `;` or tab is what a spreadsheet writes where the decimal separator is a
comma, so there numbers may have a decimal comma (`6,5` = 6.5: `Table.decimal_comma`,
`DECIMAL_COMMA`); in a `,` file a comma is never a decimal separator.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pipeline.errors import InputError, WeatherError

#: A number written with a decimal comma (`6,0`, `-0,25`, `,5`), as spreadsheets write numbers
#: where the comma is the decimal separator (their CSV files are then delimited by `;`).
#: Thousands separators (`1.234,5`) are not read: such a value is rejected with a hint.
DECIMAL_COMMA = re.compile(r"^([+-]?\d*),(\d+)$")


@dataclass
class Table:
    """A weather table split into header and text rows, with what its format says."""

    format: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # file line number of each row
    default_station: str | None = None
    tz: ZoneInfo | None = None  # zone of naive times declared by the file
    fixed_offset_s: int | None = None  # else their fixed offset from UTC, in seconds
    column_units: dict = field(default_factory=dict)  # column -> unit key known from the format
    source: str | None = None  # `weather.source` (default format:file)
    locations: dict = field(default_factory=dict)  # Open-Meteo location_id -> station
    columns: dict = field(default_factory=dict)  # target -> column known from the format
    notes: list = field(default_factory=list)  # what the layout says, for the summary
    delimiter: str = ","  # the delimiter the rows were split by

    @property
    def decimal_comma(self) -> bool:
        """Whether numbers may have a decimal comma: in a file delimited by `;` or tab."""
        return self.delimiter != ","


@dataclass(frozen=True)
class Text:
    """A weather file's text: its path, every line, and its first non-blank line's cells."""

    path: Path
    lines: list[str]

    @cached_property
    def start(self) -> int:
        """Index of the first non-blank line."""
        return next(i for i, line in enumerate(self.lines) if line.strip())

    @property
    def first_line(self) -> str:
        return self.lines[self.start]

    @cached_property
    def delimiter(self) -> str:
        """The delimiter of the first non-blank line (',', ';' or tab)."""
        return delimiter(self.first_line)

    @cached_property
    def head(self) -> list[str]:
        """The first non-blank line's cells, normalised (`norm`)."""
        return [norm(c) for c in next(csv.reader([self.first_line], delimiter=self.delimiter))]


def read_text(path: Path) -> Text:
    """The file's text; an `InputError`/`WeatherError` for a missing, binary or empty file."""
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
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise WeatherError(f"{path} is empty")
    return Text(path, lines)


def delimiter(line: str) -> str:
    """The delimiter of a line: the most frequent of ',', ';' and tab (',' when none)."""
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def point_decimal(text: str) -> str:
    """A number's text with its decimal comma as a point (`6,5` -> `6.5`); other text as is."""
    return DECIMAL_COMMA.sub(r"\1.\2", text.strip())


def split_rows(
    lines: list[str], first_line: int, delimiter: str
) -> tuple[list[list[str]], list[int]]:
    """CSV rows of `lines` (blank rows left out) and each row's line number in the file, where
    `lines[0]` is line `first_line`."""
    rows, numbers = [], []
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    for row in reader:
        if not "".join(row).strip():
            continue
        rows.append(row)
        numbers.append(first_line + reader.line_num - 1)
    return rows, numbers


def header_rows(text: Text) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line numbers) of a file whose first non-blank line is its header."""
    rows, numbers = split_rows(text.lines[text.start :], text.start + 1, text.delimiter)
    return [c.strip() for c in rows[0]], rows[1:], numbers[1:]


def norm(name: str) -> str:
    """A column name lower case, with spaces and dashes as '_' (how names are compared)."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def file_station(path: Path, prefix: str | None) -> str:
    """A station name from the file name (`meteostat:10637` for 10637.csv.gz)."""
    stem = path.name
    for suffix in (".gz", ".csv", ".txt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return f"{prefix}:{stem}" if prefix else stem
