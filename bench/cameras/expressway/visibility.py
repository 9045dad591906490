"""The expressway benchmark's visibility measurements as CSV (file,visibility_m) on stdout.

usage: visibility.py GROUND_TRUTH_DIR FRAMES_DIR

GROUND_TRUTH_DIR holds Vis-DD-Feb-2020.mat, one per day, each a 1 x 64 array `vis_data`: the
visibility in metres (capped at 20,000) at each of that day's 64 frames, in time order (the
benchmark's layout: PublishedData/GroundTruth beside PublishedData/VideoFrame/DataYYYYMMDD).
Each day's values are paired with that day's frames in FRAMES_DIR in name order; a day whose
frame count differs from its values is an error, not a guess."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from scipy.io import loadmat


def main(truth_dir: Path, frames_dir: Path) -> None:
    frames = sorted(p.name for p in frames_dir.glob("*.jpg"))
    print("file,visibility_m")
    for mat in sorted(truth_dir.glob("Vis-*.mat")):
        day = datetime.strptime(mat.stem[len("Vis-") :], "%d-%b-%Y").strftime("%Y-%m-%d")
        values = loadmat(mat)["vis_data"].ravel()
        names = [f for f in frames if f.startswith(day + "-")]
        if len(names) != len(values):
            raise SystemExit(f"{mat.name}: {len(values)} values for {len(names)} frames of {day}")
        for name, value in zip(names, values):
            print(f"{name},{int(value)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
