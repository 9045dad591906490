"""What one weather import did: counts, the column mapping and units, and every rejected value
with its line number (`WeatherImportSummary.describe()` is what the CLI prints)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.weather.units import SYMBOLS


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
    n_rows: int = 0  # data rows read from the file
    n_added: int = 0  # new rows in the store
    n_duplicates: int = 0  # rows already in the store (same station and time), kept as stored
    n_replaced: int = 0  # rows already in the store replaced by the file's (`replace`)
    replace: bool = False  # the import replaced stored rows of the same station and time
    n_decimal_commas: int = 0  # values read with a decimal comma (`6,5` in a ';' file)
    n_file_duplicates: int = 0  # rows repeating an earlier (station, time) in the file
    stations: dict = field(default_factory=dict)  # station -> rows kept from the file
    columns: dict = field(default_factory=dict)  # target -> source column
    units: dict = field(default_factory=dict)  # target -> unit key
    conditions: dict = field(default_factory=dict)  # condition -> rows
    rejected_rows: list = field(default_factory=list)  # RejectedValue with column None
    rejected_fields: list = field(default_factory=list)  # RejectedValue per nulled value
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
            f"{target}={source}"
            + (f" [{SYMBOLS[self.units[target]]}]" if target in self.units else "")
            for target, source in self.columns.items()
        )
        lines.append(f"  columns: {mapping}")
        lines.extend(f"  note: {note}" for note in self.notes)
        if self.n_decimal_commas:
            lines.append(
                f"  note: {self.n_decimal_commas} values with a decimal comma read as numbers "
                "(6,5 = 6.5; the file is delimited by ';' or tab)"
            )
        per_station = ", ".join(f"{name} {n}" for name, n in sorted(self.stations.items()))
        span = ""
        if self.start is not None:
            span = f", {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC"
        lines.append(
            f"  {self.n_rows} rows read, {len(self.stations)} station(s) ({per_station}){span}"
        )
        stored = f"already in the store {self.n_duplicates}"
        if self.replace:
            stored = f"replaced {self.n_replaced} (same station and time)"
        elif self.n_duplicates and not self.n_added:
            stored += (
                " (kept as stored; `weather import --replace` replaces them with this file's"
                " values)"
            )
        lines.append(
            f"  added {self.n_added}, {stored}"
            + (f", repeated in the file {self.n_file_duplicates}" if self.n_file_duplicates else "")
        )
        if self.conditions:
            lines.append(
                "  conditions: "
                + ", ".join(
                    f"{name} {n}"
                    for name, n in sorted(self.conditions.items(), key=lambda item: -item[1])
                )
            )
        for label, items in (
            ("skipped row", self.rejected_rows),
            ("rejected value", self.rejected_fields),
        ):
            if not items:
                continue
            lines.append(f"  {len(items)} {label}{'s' if len(items) != 1 else ''}:")
            lines.extend(f"    {item.describe()}" for item in items[:max_listed])
            if len(items) > max_listed:
                lines.append(f"    ... and {len(items) - max_listed} more")
        return "\n".join(lines)
