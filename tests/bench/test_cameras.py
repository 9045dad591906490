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
from pipeline.timestamps import filename_time
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
    "expressway": {"normal": {"normal"}, "junk": {"fog"}, "debatable": set()},
    "growlab": {
        "normal": {"normal"},
        "junk": {"night", "dark", "blur", "obstruction"},
        "debatable": {"color_cast"},
    },
    "aquarium": {
        "normal": {"normal"},
        "junk": {"night", "dark", "obstruction", "fog", "camera_moved", "color_cast"},
        "debatable": {"color_cast"},
    },
    "roofcam": {
        "normal": {"normal"},
        "junk": {"night", "lens_water", "corrupt"},
        "debatable": {"sun_glare"},
    },
}
EPOCH_MS = "<epoch ms>.jpg"
# file names: the set's own (the local time they carry, as strptime reads it; or EPOCH_MS)
NAMES = {
    "ranhados": "ranhados-%Y%m%d%H%M%S.jpg",
    "gardenbot": "gardenbot-%Y%m%d%H%M%S.jpg",
    "nyctraffic": "nyc-%Y%m%d%H%M%S.jpg",
    "expressway": "%Y-%m-%d-%H-%M.jpg",  # as the benchmark names them: minutes, no seconds
    "growlab": "growlab-%Y%m%d%H%M%S.jpg",
    "aquarium": EPOCH_MS,  # the camera script's own names: Unix time in milliseconds, UTC
    "roofcam": "snapshot-%Y-%m-%d_%H-%M-%S.jpg",  # the owner's names, CEST (the first 37 UTC)
}
# junk found by looking at every frame is labelled beyond the sample (not in the sets whose
# sample is every frame labelled and nothing more)
EPISODES_BEYOND_SAMPLE = {
    "ranhados": True,
    "gardenbot": True,
    "nyctraffic": False,
    "expressway": False,
    "growlab": True,
    "aquarium": True,
    "roofcam": True,
}
# what a folder holds besides README.md, extract.sh, labels.csv and sample.txt
HELPERS = {"expressway": ["visibility.py"]}
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
    return pd.to_datetime(files, format=NAMES[camera])


def _name_time(file: str, camera: str) -> datetime:
    """The time a labelled file's name carries (the set's own pattern), as ingest reads it."""
    if NAMES[camera] == EPOCH_MS:
        found = filename_time(file)
        assert re.fullmatch(r"1\d{12}\.jpg", file) and found is not None and found[1], file
        return found[0]
    return datetime.strptime(file, NAMES[camera])


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
    for file, label, kind, confidence in body:
        _name_time(file, camera)  # the set's name pattern, a real time
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
    assert sorted(p.name for p in (CAMERAS / camera).iterdir()) == sorted(
        ["README.md", "extract.sh", "labels.csv", "sample.txt", *HELPERS.get(camera, [])]
    )


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


def test_expressway_visibility_pairs_each_day_with_its_frames(tmp_path):
    """visibility.py pairs a day's `vis_data` with that day's frames in name order (as labels
    bench/realcam.py reads with --fog-below), and stops with the day's name when the counts
    differ."""
    import subprocess
    import sys

    from scipy.io import savemat

    truth, frames = tmp_path / "GroundTruth", tmp_path / "frames"
    truth.mkdir()
    frames.mkdir()
    savemat(truth / "Vis-01-Feb-2020.mat", {"vis_data": np.array([[848, 20000]], np.uint16)})
    savemat(truth / "Vis-02-Feb-2020.mat", {"vis_data": np.array([[587]], np.uint16)})
    for name in ("2020-02-01-08-03.jpg", "2020-02-01-08-00.jpg", "2020-02-02-08-00.jpg"):
        (frames / name).write_bytes(b"")
    script = str(CAMERAS / "expressway" / "visibility.py")
    done = subprocess.run(
        [sys.executable, script, str(truth), str(frames)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "file,visibility_m",
        "2020-02-01-08-00.jpg,848",
        "2020-02-01-08-03.jpg,20000",
        "2020-02-02-08-00.jpg,587",
    ]
    done = subprocess.run(
        [sys.executable, script, str(truth), str(frames), "--fog-below", "1000"],
        capture_output=True,
        text=True,
    )
    assert done.stdout.splitlines() == [
        "file,label,kind,confidence",
        "2020-02-01-08-00.jpg,junk,fog,high",
        "2020-02-01-08-03.jpg,normal,normal,high",
        "2020-02-02-08-00.jpg,junk,fog,high",
    ]
    realcam = _realcam()
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text(done.stdout)
    assert list(realcam.read_labels(labels_csv)["label"]) == ["junk", "normal", "junk"]
    (frames / "2020-02-02-08-10.jpg").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, script, str(truth), str(frames)], capture_output=True, text=True
    )
    assert done.returncode != 0 and "Vis-02-Feb-2020.mat: 1 values for 2 frames" in done.stderr
