"""Which station's observations frames are joined to, within what tolerance, and what came of it.

The join itself is the store's `frame_weather_live` view (an ASOF join: each frame gets the
latest observation at or before its UTC time, within the tolerance), whose rows the store keeps
in `frame_weather` (`store.weather.refresh_join`); this module keeps its two
settings (`weather_station`, `weather_tolerance_minutes`, in the store) and describes it.
"""

from __future__ import annotations

from pathlib import Path

import store
from pipeline.errors import InputError
from store import weather as store_weather


def set_join(db: Path, station: str | None = None, tolerance_minutes: float | None = None) -> None:
    """Remember which station frames are joined to and the join tolerance (None = unchanged)."""
    if tolerance_minutes is not None and not tolerance_minutes > 0:
        raise InputError(f"the weather tolerance must be positive minutes, not {tolerance_minutes}")
    with store.connect(db) as con:
        if station is not None:
            known = store_weather.station_counts(con)
            if station not in known:
                names = ", ".join(sorted(known)) or "none yet (import a weather file first)"
                raise InputError(f"no weather station {station!r} in {db}; stations: {names}")
        store_weather.set_join(con, station=station, tolerance_minutes=tolerance_minutes)


def apply_settings(db: Path, settings) -> None:
    """Remember the join station and tolerance from `Settings` when they were given.

    As with the place (`pipeline.daylight.place`), a value counts as given when it is not the
    default, so a choice made earlier with `weather stations --use/--tolerance` is kept.
    """
    from pipeline.settings import Settings

    default = Settings().weather_tolerance_minutes
    tolerance = settings.weather_tolerance_minutes
    set_join(
        db,
        station=settings.weather_station,
        tolerance_minutes=None if tolerance == default else tolerance,
    )


def describe_join(db: Path) -> str:
    """One line: which station frames are joined to, within what tolerance, and the outcome."""
    with store.connect(db, read_only=True) as con:
        station = store_weather.joined_station(con)
        tolerance = store_weather.tolerance_minutes(con)
        counts = store_weather.condition_counts(con)
    if station is None:
        return (
            "weather: no observations in the store (import a CSV with `weather import` or "
            "fetch with `weather fetch`)"
        )
    outcome = ", ".join(f"{name} {n}" for name, n in counts.items()) or "no frames"
    return f"weather: frames joined to station {station} within {tolerance:g} min: {outcome}"


def describe_stations(db: Path) -> str:
    """The stations in the store, one line each, and the join settings."""
    with store.connect(db, read_only=True) as con:
        table = store_weather.stations(con)
    if table.empty:
        return "no weather stations yet: import a CSV with `weather import` or use `weather fetch`"
    lines = []
    for row in table.itertuples():
        mark = "*" if row.is_joined else " "
        lines.append(
            f"{mark} {row.station}: {row.n_rows} observations, "
            f"{row.first_observed_at:%Y-%m-%d %H:%M} .. "
            f"{row.last_observed_at:%Y-%m-%d %H:%M} UTC ({row.sources})"
        )
    lines.append(describe_join(db))
    return "\n".join(lines)
