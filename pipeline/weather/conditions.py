"""The condition of an observation ('clear', 'cloudy', 'rain', 'snow', 'fog', 'dry'), derived from
its SI values by these rules, in this order:

1. A WMO weather code (WMO 4677 ww, the codes Open-Meteo uses) decides when it is one of:
   0-1 clear; 2-3 cloudy; 10-12 and 40-49 fog (mist, fog, rime fog 45/48); 50-67 rain
   (drizzle, rain, freezing rain); 68-79 snow (rain-and-snow mix, snow, grains, ice pellets);
   80-82 rain showers; 83-88 snow showers; 89-99 rain (hail, thunderstorm: 95+ is stored as
   'rain', the code is kept in `weather_code`). Other codes (haze, dust, lightning, past-hour
   weather) fall through to rule 2.
2. Precipitation of at least 0.1 mm in the hour: 'snow' when the temperature is at most 1 °C,
   else 'rain' (also when the temperature is unknown).
3. Visibility below 1 km: 'fog'.
4. Cloud cover of at least 50 %: 'cloudy'; below: 'clear'.
5. No precipitation and no fog, but cloud cover unknown: 'dry'.
6. Nothing known: no condition (the join shows 'unknown').
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CONDITIONS = ("clear", "cloudy", "rain", "snow", "fog", "dry")
RAIN_MIN_MM = 0.1
SNOW_MAX_C = 1.0
FOG_MAX_KM = 1.0
CLOUDY_MIN_PCT = 50.0


def condition_for_code(code: float | int | None) -> str | None:
    """The condition a WMO 4677 code decides, or None when it leaves it to the measurements."""
    if code is None or (isinstance(code, float) and np.isnan(code)):
        return None
    code = int(code)
    if code in (0, 1):
        return "clear"
    if code in (2, 3):
        return "cloudy"
    if 10 <= code <= 12 or 40 <= code <= 49:
        return "fog"
    if 50 <= code <= 67 or 80 <= code <= 82 or 89 <= code <= 99:
        return "rain"
    if 68 <= code <= 79 or 83 <= code <= 88:
        return "snow"
    return None


def derive_conditions(frame: pd.DataFrame) -> pd.Series:
    """The condition of each observation (SI columns of `weather`) by the module's rules."""
    n = len(frame)

    def col(name: str) -> np.ndarray:
        if name in frame:
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        return np.full(n, np.nan)

    code = col("weather_code")
    precip, temp = col("precipitation_mm"), col("temperature_c")
    vis, cloud = col("visibility_km"), col("cloud_cover_pct")
    table = np.array([condition_for_code(c) or "" for c in range(100)] + [""], dtype=object)
    valid = ~np.isnan(code) & (code >= 0) & (code <= 99)
    by_code = table[np.where(valid, np.nan_to_num(code), 100).astype(int)]
    wet = precip >= RAIN_MIN_MM
    measured = np.select(
        [
            wet & (temp <= SNOW_MAX_C),
            wet,
            vis < FOG_MAX_KM,
            cloud >= CLOUDY_MIN_PCT,
            cloud < CLOUDY_MIN_PCT,
            ~np.isnan(precip) | ~np.isnan(vis),
        ],
        ["snow", "rain", "fog", "cloudy", "clear", "dry"],
        default="",
    )
    result = np.where(by_code == "", measured, by_code)
    return pd.Series(result, index=frame.index, dtype=object).replace("", None)
