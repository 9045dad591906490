"""Units of weather values and their conversion to the SI units the store keeps.

A unit key (`"f"`, `"kmh"`, `"in"`, ...) names one unit of one quantity (a `weather` column);
`to_si` turns numbers in that unit into the column's SI unit (°C, mm, %, m/s, km, WMO code).
`unit_key` reads a unit as people write it (`°F`, `km/h`, `knots`); `SYSTEMS` are the unit sets
`--units si|us` stands for.
"""

from __future__ import annotations

import re

import pandas as pd

# unit key -> (quantity, factor, offset) so that si = value * factor + offset
UNITS = {
    "c": ("temperature_c", 1.0, 0.0),
    "f": ("temperature_c", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "k": ("temperature_c", 1.0, -273.15),
    "mm": ("precipitation_mm", 1.0, 0.0),
    "cm": ("precipitation_mm", 10.0, 0.0),
    "in": ("precipitation_mm", 25.4, 0.0),
    "pct": ("cloud_cover_pct", 1.0, 0.0),
    "okta": ("cloud_cover_pct", 12.5, 0.0),
    "fraction": ("cloud_cover_pct", 100.0, 0.0),
    "ms": ("wind_speed_ms", 1.0, 0.0),
    "kmh": ("wind_speed_ms", 1.0 / 3.6, 0.0),
    "mph": ("wind_speed_ms", 0.44704, 0.0),
    "kn": ("wind_speed_ms", 0.514444, 0.0),
    "km": ("visibility_km", 1.0, 0.0),
    "m": ("visibility_km", 0.001, 0.0),
    "mi": ("visibility_km", 1.609344, 0.0),
    "ft": ("visibility_km", 0.0003048, 0.0),
    "wmo": ("weather_code", 1.0, 0.0),
    "coco": ("weather_code", 1.0, 0.0),
}
_UNIT_ALIASES = {
    "°c": "c",
    "degc": "c",
    "celsius": "c",
    "°f": "f",
    "degf": "f",
    "fahrenheit": "f",
    "kelvin": "k",
    "inch": "in",
    "inches": "in",
    "%": "pct",
    "percent": "pct",
    "oktas": "okta",
    "km/h": "kmh",
    "kph": "kmh",
    "m/s": "ms",
    "mps": "ms",
    "kt": "kn",
    "kts": "kn",
    "knots": "kn",
    "knot": "kn",
    "miles": "mi",
    "mile": "mi",
    "feet": "ft",
    "wmo code": "wmo",
    "wmo": "wmo",
    "meteostat": "coco",
}
SYSTEMS = {
    "si": {
        "temperature_c": "c",
        "precipitation_mm": "mm",
        "cloud_cover_pct": "pct",
        "wind_speed_ms": "ms",
        "visibility_km": "km",
        "weather_code": "wmo",
    },
    "us": {
        "temperature_c": "f",
        "precipitation_mm": "in",
        "cloud_cover_pct": "pct",
        "wind_speed_ms": "mph",
        "visibility_km": "mi",
        "weather_code": "wmo",
    },
}
SYMBOLS = {
    "c": "°C",
    "f": "°F",
    "k": "K",
    "mm": "mm",
    "cm": "cm",
    "in": "in",
    "pct": "%",
    "okta": "okta",
    "fraction": "fraction",
    "ms": "m/s",
    "kmh": "km/h",
    "mph": "mph",
    "kn": "kn",
    "km": "km",
    "m": "m",
    "mi": "mi",
    "ft": "ft",
    "wmo": "WMO code",
    "coco": "Meteostat code",
}

# Meteostat condition code (1..27) -> the nearest WMO 4677 code.
COCO_TO_WMO = {
    1: 0,
    2: 1,
    3: 2,
    4: 3,
    5: 45,
    6: 48,
    7: 61,
    8: 63,
    9: 65,
    10: 66,
    11: 67,
    12: 68,
    13: 69,
    14: 71,
    15: 73,
    16: 75,
    17: 80,
    18: 82,
    19: 83,
    20: 84,
    21: 85,
    22: 86,
    23: 17,
    24: 89,
    25: 95,
    26: 97,
    27: 18,
}


def unit_key(text: str) -> str | None:
    """The unit key of a unit as written (`°F`, `km/h`, `knots`), or None when unknown."""
    key = text.strip().lower()
    key = _UNIT_ALIASES.get(key, key)
    return key if key in UNITS else None


def unit_in_name(name: str) -> str | None:
    """The unit key of a column named like `temperature_2m (°C)`, or None."""
    match = re.search(r"\(([^)]*)\)\s*$", name)
    return unit_key(match.group(1)) if match else None


def quantity(unit: str) -> str:
    """The `weather` column a unit measures (`"kmh"` -> `"wind_speed_ms"`)."""
    return UNITS[unit][0]


def si_symbol(target: str) -> str:
    """The symbol of a `weather` column's SI unit (`"wind_speed_ms"` -> `"m/s"`)."""
    return SYMBOLS[SYSTEMS["si"][target]]


def to_si(number: pd.Series, unit: str) -> pd.Series:
    """Numbers in `unit` as the SI value of their quantity; Meteostat codes become WMO codes
    (NaN where a code has no WMO equivalent)."""
    if unit == "coco":
        return number.map(COCO_TO_WMO).astype(float)
    _, factor, offset = UNITS[unit]
    return number * factor + offset
