"""Checking weather values: parse each field's text, convert it to SI, null what is impossible.

Missing markers (`NA`, empty, `M`, `null`, ... in `MISSING`) are simply missing. In a file
delimited by `;` or tab a decimal comma is read as a decimal point (`6,5` = 6.5; the summary
says how many were). A value that is not a number (with the likely cause when it is evident:
`not_a_number`), or is impossible once in SI (outside `LIMITS`, e.g. a 1048 mph wind; a WMO code
that is not a whole number; a Meteostat code outside 1..27), is nulled field by field and
reported with its line number; the rest of its row is kept. A row that repeats an earlier
(station, time) of the same file is dropped and counted.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.weather.columns import Column
from pipeline.weather.summary import RejectedValue, WeatherImportSummary
from pipeline.weather.table import DECIMAL_COMMA
from pipeline.weather.units import COCO_TO_WMO, SYSTEMS, si_symbol, to_si

#: Plausible range of each field in SI; values outside are impossible and nulled.
LIMITS = {
    "temperature_c": (-90.0, 60.0),
    "precipitation_mm": (0.0, 400.0),  # per hour; the world record is ~305 mm
    "cloud_cover_pct": (0.0, 100.0),
    "wind_speed_ms": (0.0, 120.0),  # mean wind; the strongest gust measured is 113 m/s
    "visibility_km": (0.0, 500.0),
    "weather_code": (0.0, 99.0),
}

#: Cell texts (lower case) that mean "no value".
MISSING = {"", "na", "nan", "null", "none", "-", "--", "m", "n/a", "missing", "<na>"}

_GROUPED = re.compile(r"^[+-]?\d{1,3}([.,' ]\d{3})+([.,]\d+)?$")  # 1.234,5 / 1,234.5 / 1 234
_WITH_UNIT = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)\s*(°|%|[^\W\d_])")  # 6.5 °C, 12km/h


def convert_field(
    values: pd.Series,
    target: str,
    column: Column,
    lines: pd.Series,
    ok: pd.Series,
    summary: WeatherImportSummary,
    decimal_comma: bool = False,
) -> pd.Series:
    """One field's SI values (NaN where missing, not a number or impossible); rejected values
    of the rows still kept (`ok`) go into `summary` with their line numbers. `decimal_comma`:
    the file is delimited by `;` or tab, so `6,5` is 6.5 (counted in the summary)."""
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING)
    if decimal_comma:
        comma = text.str.match(DECIMAL_COMMA)
        summary.n_decimal_commas += int((comma & ok).sum())
        text = text.str.replace(DECIMAL_COMMA, r"\1.\2", regex=True)
    if target == "precipitation_mm":
        text = text.mask(text.str.upper() == "T", "0")  # 'T' = trace, less than measurable
    number = pd.to_numeric(text.where(~missing), errors="coerce")
    unparsable = ~missing & number.isna()
    si = to_si(number, column.unit)
    if column.unit == "coco":
        impossible = number.notna() & ~number.isin(list(COCO_TO_WMO))
        limits_text = "Meteostat condition codes are 1..27"
    else:
        low, high = LIMITS[target]
        impossible = si.notna() & ((si < low) | (si > high))
        if target == "weather_code":
            impossible |= si.notna() & (si != si.round())
        limits_text = f"possible: {low:g}..{high:g} {si_symbol(target)}"
    keep = ok.to_numpy()
    for i in np.flatnonzero(unparsable.to_numpy() & keep):
        summary.rejected_fields.append(
            RejectedValue(
                int(lines[i]),
                column.source,
                str(values.iloc[i]),
                not_a_number(text.iloc[i], decimal_comma),
            )
        )
    for i in np.flatnonzero(impossible.to_numpy() & keep):
        reason = "impossible value"
        if column.unit != "coco" and column.unit != SYSTEMS["si"][target]:
            reason += f" ({si.iloc[i]:.4g} {si_symbol(target)})"
        summary.rejected_fields.append(
            RejectedValue(
                int(lines[i]), column.source, str(values.iloc[i]), f"{reason}; {limits_text}"
            )
        )
    return si.mask(impossible | unparsable).astype(float)


def not_a_number(text: str, decimal_comma: bool) -> str:
    """Why a value is rejected as not a number, with the likely cause when it is evident."""
    if not decimal_comma and DECIMAL_COMMA.match(text):
        return (
            "not a number (a decimal comma? it is read as one only in a file delimited "
            "by ';' or tab)"
        )
    if _GROUPED.match(text):
        return "not a number (a thousands separator? write numbers without one)"
    if _WITH_UNIT.match(text):
        return (
            "not a number (a unit in the cell? give the unit in the column name, e.g. 'temp (°C)')"
        )
    return "not a number"


def dedupe_in_file(frame: pd.DataFrame, summary: WeatherImportSummary) -> pd.DataFrame:
    """The observations without rows that repeat an earlier (station, time) of the file."""
    repeated = frame.duplicated(["station", "observed_at"], keep="first")
    summary.n_file_duplicates = int(repeated.sum())
    if summary.n_file_duplicates:
        first_lines = ", ".join(str(n) for n in frame.loc[repeated, "line"].head(5))
        summary.notes.append(
            f"{summary.n_file_duplicates} rows repeat an earlier station and "
            f"time in the file and were ignored (lines {first_lines}...)"
        )
    return frame[~repeated].reset_index(drop=True)
