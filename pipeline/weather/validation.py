"""Checking weather values: parse each field's text, convert it to SI, null what is impossible.

Missing markers (`NA`, empty, `M`, `null`, ... in `MISSING`) are simply missing. A value that
is not a number, or is impossible once in SI (outside `LIMITS`, e.g. a 1048 mph wind; a WMO code
that is not a whole number; a Meteostat code outside 1..27), is nulled field by field and
reported with its line number; the rest of its row is kept. A row that repeats an earlier
(station, time) of the same file is dropped and counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.weather.columns import Column
from pipeline.weather.summary import RejectedValue, WeatherImportSummary
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


def convert_field(
    values: pd.Series,
    target: str,
    column: Column,
    lines: pd.Series,
    ok: pd.Series,
    summary: WeatherImportSummary,
) -> pd.Series:
    """One field's SI values (NaN where missing, not a number or impossible); rejected values
    of the rows still kept (`ok`) go into `summary` with their line numbers."""
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING)
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
            RejectedValue(int(lines[i]), column.source, str(values.iloc[i]), "not a number")
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
