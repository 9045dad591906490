"""Benchmark the weather stage: import the real NYC table, then the ASOF join at scale; prints JSON.

    .venv/bin/python bench/weather.py [--frames 100000] [--repeat 3]

1. `import_csv` of `../shared/realdata/weather/nyc-airports-2013-hourly.csv` (26,115 rows, US
   units, three stations) into a fresh store, then the same file again (all duplicates).
2. `--frames` synthetic frame rows spread over 2013 (as ingest leaves them), then the reader
   queries that go through the `frame_weather` ASOF view: frames per condition, and a
   `frame_facts` page filtered by condition. Best of `--repeat`.
3. The clock check on a year of frames every 10 minutes (brightness from the real sun).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import store  # noqa: E402
from pipeline import clock, weather  # noqa: E402
from pipeline.daylight import sun_elevation  # noqa: E402
from store import weather as store_weather  # noqa: E402

NYC = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "realdata"
    / "weather"
    / "nyc-airports-2013-hourly.csv"
)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def add_frames(db: Path, utc: pd.DatetimeIndex, luma: np.ndarray) -> None:
    rows = pd.DataFrame(
        {
            "frame_id": np.arange(1, len(utc) + 1),
            "taken_at": utc.tz_localize(None),
            "taken_at_utc": utc,
            "mean_luma": luma,
        }
    )
    rows["path"] = [f"f/{i:07d}.jpg" for i in rows["frame_id"]]
    with store.connect(db) as con:
        con.register("_rows", rows)
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, taken_at, "
            "taken_at_utc, time_source, file_bytes, file_mtime, mean_luma) SELECT "
            "frame_id, path, '/bench', '/bench/' || path, taken_at, taken_at_utc, "
            "'exif', 1, now(), mean_luma FROM _rows"
        )
        con.unregister("_rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    out: dict = {"frames": args.frames}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        start = time.perf_counter()
        summary = weather.import_csv(NYC, db)
        out["import_nyc_s"] = round(time.perf_counter() - start, 3)
        out["import_rows_per_s"] = round(summary.n_rows / out["import_nyc_s"])
        start = time.perf_counter()
        again = weather.import_csv(NYC, db)
        out["reimport_nyc_s"] = round(time.perf_counter() - start, 3)
        out["reimport_added"] = again.n_added

        utc = pd.date_range("2013-01-01", "2013-12-31", periods=args.frames, tz="UTC")
        add_frames(db, utc, np.full(len(utc), 100.0))

        def counts():
            with store.connect(db, read_only=True) as con:
                return store_weather.condition_counts(con)

        def page():
            with store.connect(db, read_only=True) as con:
                return con.sql(
                    "SELECT frame_id, condition, temperature_c FROM frame_facts "
                    "WHERE condition = 'rain' ORDER BY taken_at_utc LIMIT 200"
                ).df()

        out["join_condition_counts_s"] = round(best(counts, args.repeat), 3)
        out["facts_rain_page_s"] = round(best(page, args.repeat), 3)
        out["conditions"] = counts()

        lat, lon = 40.64, -73.78
        year = pd.date_range("2013-01-01", "2013-12-31 23:50", freq="10min", tz="UTC")
        elevation = sun_elevation(year, lat, lon)
        luma = 18 + 175 / (1 + np.exp(-(elevation + 2.0) / 1.6))
        frames = pd.DataFrame({"taken_at_utc": year - pd.Timedelta(minutes=47), "mean_luma": luma})
        start = time.perf_counter()
        result = clock.estimate(frames, lat, lon)
        out["clock_check_year_s"] = round(time.perf_counter() - start, 3)
        out["clock_check_frames"] = len(frames)
        out["clock_check_offset_minutes"] = result.offset_minutes
        out["clock_check_days"] = result.n_days
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
