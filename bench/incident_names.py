"""How a store's latest run names its incidents against what their frames are; prints JSON.

    .venv/bin/python bench/incident_names.py STORE [--labels LABELS.csv] [--model MODEL]

Each incident of the latest complete run is given the kind most of its flagged frames have
(the store's imported ground truth, or `--labels`, the `file,label,kind` CSV of
`bench/realcam.py`, matched by file name; an incident none of whose flagged frames has a kind
other than normal is `normal`). The JSON counts, per kind, the plain causes its incidents were
named by (`names`), and for the kinds whose right name is plain (`EXPECTED`: a black frame is
"too dark", a knocked camera "camera moved") how many were named so (`named_as_expected`).

It reads the stored run: analyse first (`python -m pipeline analyze --db STORE`, on a copy to
compare two versions of the code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import store  # noqa: E402
from store import analysis as sa  # noqa: E402

# the plain causes that name a kind of junk rightly (renders' kinds and the real cameras' labels)
EXPECTED: dict[str, tuple[str, ...]] = {
    "black": ("too dark",),
    "dark": ("too dark",),
    "night": ("too dark",),
    "washed_out": ("too bright",),
    "overexposed": ("too bright",),
    "fog": ("fog or haze",),
    "knocked": ("camera moved",),
    "camera_moved": ("camera moved",),
    "lens_water": ("blur", "fog or haze"),
    "person": ("something in the scene",),
    "fox": ("something in the scene",),
    "bird": ("something in the scene",),
    "obstruction": ("something in the scene",),
}


def incident_kinds(db: Path, model: str | None, labels: Path | None) -> pd.DataFrame:
    """The latest run's incidents (incident_id, cause, kind)."""
    with store.connect(db, read_only=True) as con:
        runs = sa.latest_complete_runs(con)
        if not runs:
            raise SystemExit(f"{db}: no complete analysis run; run `python -m pipeline analyze`")
        run_id = runs[model] if model else max(runs.values())
        incidents = con.execute(
            "SELECT incident_id, cause FROM incidents WHERE run_id = ?", [run_id]
        ).df()
        members = con.execute(
            "SELECT incident_id, frame_id FROM incident_frames WHERE run_id = ? AND is_flagged",
            [run_id],
        ).df()
        if labels is None:
            kinds = sa.load_ground_truth(con).set_index("frame_id")["kind"]
        else:
            table = pd.read_csv(labels, dtype=str)
            by_file = dict(zip(table["file"], table["kind"]))
            paths = sa.load_frames(con).set_index("frame_id")["path"]
            kinds = paths.map(lambda p: by_file.get(str(p).rsplit("/", 1)[-1])).dropna()
    members["kind"] = members["frame_id"].map(kinds)
    members = members.dropna(subset=["kind"])
    junk = members[members["kind"] != "normal"]
    major = junk.groupby("incident_id")["kind"].agg(lambda k: k.value_counts().index[0])
    labelled = incidents[incidents["incident_id"].isin(members["incident_id"])].copy()
    labelled["kind"] = labelled["incident_id"].map(major).fillna("normal")
    return labelled


def summary(named: pd.DataFrame) -> dict:
    out: dict = {"n_incidents": int(len(named)), "kinds": {}}
    for kind, group in named.groupby("kind"):
        row: dict = {"n": int(len(group)), "names": group["cause"].value_counts().to_dict()}
        if kind in EXPECTED:
            row["named_as_expected"] = int(group["cause"].isin(EXPECTED[kind]).sum())
        out["kinds"][str(kind)] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--labels", type=Path, help="file,label,kind CSV (else the ground truth)")
    parser.add_argument("--model", help="the model's latest run [default: the newest run]")
    args = parser.parse_args(argv)
    result = {
        "store": str(args.store),
        **summary(incident_kinds(args.store, args.model, args.labels)),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
