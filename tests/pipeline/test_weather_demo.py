"""The demo's weather.csv joined to the demo frames gives the condition each frame was rendered in."""

from __future__ import annotations

import pandas as pd

import store
from pipeline.demo import DEMO_PLACE, render_demo
from pipeline.ingest import ingest_folder
from pipeline.settings import Settings
from pipeline.weather import import_csv


def test_demo_weather_joins_to_the_rendered_conditions(tmp_path):
    rendered = render_demo(
        tmp_path / "demo", n_frames=200, size=(64, 36), progress=False, workers=1
    )
    db = tmp_path / "demo.duckdb"
    ingest_folder(
        rendered.frames_dir,
        db,
        Settings(timezone=DEMO_PLACE.timezone, lat=DEMO_PLACE.lat, lon=DEMO_PLACE.lon, workers=1),
        progress=False,
    )
    summary = import_csv(rendered.weather_csv, db)
    assert summary.format == "open-meteo" and summary.rejected_fields == []
    assert list(summary.stations) == [f"open-meteo:{DEMO_PLACE.lat:g},{DEMO_PLACE.lon:g}"]
    scene = pd.read_csv(rendered.scene_csv)
    with store.connect(db, read_only=True) as con:
        joined = con.sql("SELECT path, condition, taken_at_utc FROM frame_facts").df()
    both = scene.merge(joined, on="path", suffixes=("_rendered", "_joined"))
    assert len(both) >= len(scene) - 2  # the demo truncates a file or so
    assert set(both["condition_rendered"]) >= {"clear", "cloudy", "rain", "fog"}
    mismatched = both[both["condition_rendered"] != both["condition_joined"]]
    assert mismatched.empty, mismatched.head().to_string()
    # and the frames' UTC times (EXIF local time + Europe/London) are the ones rendered
    rendered_utc = pd.to_datetime(both["taken_at_utc_rendered"], utc=True)
    assert (rendered_utc == both["taken_at_utc_joined"]).all()
