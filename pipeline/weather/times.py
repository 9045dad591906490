"""Observation times to UTC.

A time with an offset or `Z` is exact; Unix seconds (9 to 11 digits) are UTC; a naive time is in
the given zone (`--timezone`, or the one the file declares), else at the file's fixed offset,
else UTC. In a zone with DST, a local hour repeated at the autumn change is taken as the earlier
(summer) hour the first time it appears for a station and as the later one the second time; a
local time that does not exist (the spring gap) is unusable (NaT) and its row is reported.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

#: A time that ends in `Z` or an offset such as +01:00 / -0500.
OFFSET_RE = re.compile(r"(?:[zZ]|[+-]\d{2}:?\d{2})$")


def parse_times(
    text: pd.Series, zone: ZoneInfo | None, fixed_offset_s: int | None, stations: pd.Series
) -> pd.Series:
    """UTC times (NaT where unusable). Naive times are in `zone` (or a fixed offset, or UTC)."""
    result = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if not len(text):
        return result
    epoch = text.str.fullmatch(r"\d{9,11}")
    if epoch.any():
        result[epoch] = pd.to_datetime(text[epoch].astype("int64"), unit="s", utc=True)
    aware = ~epoch & text.str.contains(OFFSET_RE)
    if aware.any():
        result[aware] = _to_datetime(text[aware], utc=True)
    naive = ~epoch & ~aware
    if naive.any():
        local = _to_datetime(text[naive], utc=False)
        if zone is not None:
            result[naive] = _localize(local, zone, stations[naive])
        else:
            offset = pd.Timedelta(seconds=fixed_offset_s or 0)
            result[naive] = (local - offset).dt.tz_localize("UTC")
    return result


def _to_datetime(text: pd.Series, utc: bool) -> pd.Series:
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=utc)
    failed = parsed.isna() & text.ne("")
    if failed.any():
        parsed[failed] = pd.to_datetime(text[failed], format="mixed", errors="coerce", utc=utc)
    return parsed


def _localize(local: pd.Series, zone: ZoneInfo, stations: pd.Series) -> pd.Series:
    """Wall-clock times in `zone` to UTC: a repeated hour is summer time first, winter second."""
    valid = local.notna()
    result = pd.Series(pd.NaT, index=local.index, dtype="datetime64[ns, UTC]")
    if not valid.any():
        return result
    times = local[valid]
    probe = times.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    all_summer = np.ones(len(times), dtype=bool)
    nonexistent = (
        probe.isna() & times.dt.tz_localize(zone, ambiguous=all_summer, nonexistent="NaT").isna()
    )
    ambiguous = probe.isna() & ~nonexistent
    first = ~pd.DataFrame({"s": stations[valid], "t": times}).duplicated(keep="first")
    is_dst = np.where(ambiguous, first, True)
    localized = times.dt.tz_localize(zone, ambiguous=is_dst, nonexistent="NaT")
    result[valid] = localized.dt.tz_convert("UTC")
    return result
