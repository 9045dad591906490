"""The expressway benchmark's visibility measurements as CSV on stdout.

usage: visibility.py GROUND_TRUTH_DIR FRAMES_DIR [--fog-below METRES]

GROUND_TRUTH_DIR holds Vis-DD-Feb-2020.mat, one per day, each a 1 x 64 array `vis_data`: the
visibility in metres (capped at 20,000) at each of that day's 64 frames, in time order (the
benchmark's layout: PublishedData/GroundTruth beside PublishedData/VideoFrame/DataYYYYMMDD).
Each day's values are paired with that day's frames in FRAMES_DIR in name order; a day whose
frame count differs from its values is an error, not a guess.

Prints `file,visibility_m`; with --fog-below, labels in the layout bench/realcam.py reads
instead (`file,label,kind,confidence`): `junk,fog` where the visibility is under METRES,
`normal` elsewhere, all `high`."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from scipy.io import loadmat


def visibility(truth_dir: Path, frames_dir: Path) -> list[tuple[str, int]]:
    frames = sorted(p.name for p in frames_dir.glob("*.jpg"))
    rows = []
    for mat in sorted(truth_dir.glob("Vis-*.mat")):
        day = datetime.strptime(mat.stem[len("Vis-") :], "%d-%b-%Y").strftime("%Y-%m-%d")
        values = loadmat(mat)["vis_data"].ravel()
        names = [f for f in frames if f.startswith(day + "-")]
        if len(names) != len(values):
            raise SystemExit(f"{mat.name}: {len(values)} values for {len(names)} frames of {day}")
        rows += [(name, int(value)) for name, value in zip(names, values)]
    return sorted(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("truth_dir", type=Path)
    parser.add_argument("frames_dir", type=Path)
    parser.add_argument("--fog-below", type=float, default=None, metavar="METRES")
    args = parser.parse_args()
    rows = visibility(args.truth_dir, args.frames_dir)
    if args.fog_below is None:
        print("file,visibility_m")
        for name, value in rows:
            print(f"{name},{value}")
        return
    print("file,label,kind,confidence")
    for name, value in rows:
        fog = value < args.fog_below
        print(f"{name},{'junk,fog' if fog else 'normal,normal'},high")


if __name__ == "__main__":
    main()
