"""The real-camera label sets in bench/cameras/ are well formed: the columns bench/realcam.py
reads, allowed labels, kinds and confidences, one sorted row per frame, every sample frame
labelled, `night` by the clock where a set labels it, and no image committed beside them."""

from __future__ import annotations

import csv
import importlib.util
import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from pipeline.daylight import sun_elevation
from tests.conftest import REPO

CAMERAS = REPO / "bench" / "cameras"
# camera -> the kinds each label may carry there
KINDS = {
    "ranhados": {"normal": {"normal"}, "junk": {"obstruction"}, "debatable": {"sun_glare"}},
    "gardenbot": {
        "normal": {"normal"},
        "junk": {"night", "dark", "obstruction", "camera_moved", "overexposed"},
        "debatable": set(),
    },
    "nyctraffic": {
        "normal": {"normal"},
        "junk": {"night", "lens_water"},
        "debatable": {"sun_glare"},
    },
}
PREFIX = {"ranhados": "ranhados", "gardenbot": "gardenbot", "nyctraffic": "nyc"}  # file names
# junk found by looking at every frame is labelled beyond the sample (not in nyctraffic)
EPISODES_BEYOND_SAMPLE = {"ranhados": True, "gardenbot": True, "nyctraffic": False}
PLACES = {
    "gardenbot": ("Asia/Kolkata", 13.08, 80.27),
    "nyctraffic": ("America/New_York", 40.75, -73.99),
}
TOLERANCE_DEG = 0.5  # two solar formulas (with and without refraction) differ by up to ~0.4


def _realcam():
    spec = importlib.util.spec_from_file_location("realcam", REPO / "bench" / "realcam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _taken(files: pd.Series, camera: str) -> pd.Series:
    start = len(PREFIX[camera]) + 1
    return pd.to_datetime(files.str.slice(start, start + 14), format="%Y%m%d%H%M%S")


@pytest.mark.parametrize("camera", sorted(KINDS))
def test_labels_are_well_formed_and_cover_the_sample(camera: str):
    folder = CAMERAS / camera
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "label", "kind", "confidence"]
    body = rows[1:]
    assert body and all(len(row) == 4 for row in body)
    files = [row[0] for row in body]
    assert files == sorted(files) and len(set(files)) == len(files)
    name = re.compile(rf"{PREFIX[camera]}-\d{{14}}\.jpg")
    for file, label, kind, confidence in body:
        assert name.fullmatch(file), file
        datetime.strptime(file[len(PREFIX[camera]) + 1 : -4], "%Y%m%d%H%M%S")  # a real local time
        assert label in KINDS[camera], (file, label)
        assert kind in KINDS[camera][label], (file, label, kind)
        assert confidence in ("high", "low"), (file, confidence)

    realcam = _realcam()
    labels = realcam.read_labels(folder / "labels.csv")  # what the bench reads: nothing dropped
    assert len(labels) == len(body) and set(labels["label"]) <= set(realcam.LABELS)
    sample = [line for line in (folder / "sample.txt").read_text().splitlines() if line]
    assert sample == sorted(sample) and len(set(sample)) == len(sample)
    assert realcam.read_sample(folder / "sample.txt") == set(sample)
    assert set(sample) <= set(files), sorted(set(sample) - set(files))[:5]
    assert (len(sample) < len(files)) == EPISODES_BEYOND_SAMPLE[camera]


@pytest.mark.parametrize("camera", sorted(KINDS))
def test_the_folder_holds_no_images(camera: str):
    images = [
        p.name
        for p in (CAMERAS / camera).iterdir()
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    ]
    assert images == []
    assert sorted(p.name for p in (CAMERAS / camera).iterdir()) == [
        "README.md",
        "extract.sh",
        "labels.csv",
        "sample.txt",
    ]


@pytest.mark.parametrize("camera", sorted(PLACES))
def test_night_follows_the_clock(camera: str):
    """`night` = sun below the horizon at the frame's local time; `high` below -6 degrees,
    `low` in civil twilight; no sample frame deep in the night is labelled anything else."""
    tz, lat, lon = PLACES[camera]
    labels = pd.read_csv(CAMERAS / camera / "labels.csv", dtype=str)
    utc = pd.DatetimeIndex(_taken(labels["file"], camera)).tz_localize(tz)
    elevation = sun_elevation(utc.tz_convert("UTC"), lat, lon)
    night = (labels["kind"] == "night").to_numpy()
    high = (labels["confidence"] == "high").to_numpy()
    assert night.sum() > 100
    assert (elevation[night] < TOLERANCE_DEG).all()
    assert (elevation[night & high] < -6 + TOLERANCE_DEG).all()
    twilight = elevation[night & ~high]
    assert ((twilight > -6 - TOLERANCE_DEG) & (twilight < TOLERANCE_DEG)).all()
    sample = set((CAMERAS / camera / "sample.txt").read_text().split())
    in_sample = labels["file"].isin(sample).to_numpy()
    deep = in_sample & (elevation < -6 - TOLERANCE_DEG)
    assert deep.sum() > 100 and night[deep].all()
    assert not np.isnan(elevation).any()
