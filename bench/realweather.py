"""How a real camera's labelled frames line up with the observed weather; prints JSON.

    .venv/bin/python bench/realweather.py STORE.duckdb --labels LABELS.csv \
        --weather CSV [CSV ...] [--kinds fog,smoke]

e.g. Kat Kam (../shared/realdata/katkam/README.md), on a copy of the store bench/realcam.py
made (the weather is imported into it):

    cp /work/data/katkam-run/realcam.duckdb /tmp/kk-weather.duckdb
    .venv/bin/python bench/realweather.py /tmp/kk-weather.duckdb \
        --labels ../shared/realdata/katkam/labels.csv --weather /work/data/katkam/weather/*.csv

Each CSV is imported as it is (`pipeline.weather.import_csv`: the importer recognises the
layout, e.g. Environment Canada's hourly files with their station preamble and Local Standard
Time), then each frame is joined to its observation (the store's `frame_weather` view, the
pipeline's own join). Over the labelled daylight frames (`debatable` left out), per label
kind: how many frames, their observed visibility (10th, 25th percentile and median, km), the
share at or under 10 km, the share whose reported weather is fog, mist or haze (WMO 4677 codes
04-05, 10, 40-49), and the joined `condition`s. `visibility_auc`: ROC-AUC of low visibility
for each kind against the `normal` frames (1 = every frame of the kind saw less far than every
normal frame).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.realcam import read_labels  # noqa: E402

HAZE_CODES = {4, 5, 10, *range(40, 50)}  # smoke, haze, mist, fog (WMO 4677)


def import_weather(db: Path, files: list[Path]) -> list[dict]:
    """Import each file as it is; returns what the importer said of each."""
    from pipeline.weather import import_csv

    out = []
    for path in files:
        summary = import_csv(path, db)
        out.append({"file": path.name, "rows": summary.n_rows, "added": summary.n_added})
    return out


def joined(db: Path, labels):
    """One row per labelled daylight frame: label, kind, visibility_km, weather_code,
    condition."""
    import store
    from store import analysis as sa
    from store import weather as sw

    with store.connect(db, read_only=True) as con:
        frames = sw.frame_weather(con)
        daylight = sa.frame_daylight(con, frames["frame_id"].to_numpy())
    frames = frames.merge(daylight, on="frame_id")
    frames["file"] = frames["path"]
    table = frames.merge(labels, on="file", how="inner")
    if len(table) < len(labels) // 2:  # labels relative to a sub-folder
        table = frames.assign(file=frames["path"].str.rsplit("/", n=1).str[-1]).merge(
            labels, on="file", how="inner"
        )
    return table[(table["daylight"] == "day") & table["label"].isin(["junk", "normal"])]


def report(table, kinds_as_one: dict[str, list[str]]) -> dict:
    """Per kind (and per group of kinds): visibility, reported haze or fog, conditions."""
    import numpy as np

    from pipeline.evaluate import metrics

    normal = table[table["label"] == "normal"]
    groups = {"normal": normal}
    for kind in sorted(table.loc[table["label"] == "junk", "kind"].dropna().unique()):
        groups[kind] = table[(table["label"] == "junk") & (table["kind"] == kind)]
    for name, kinds in kinds_as_one.items():
        groups[name] = table[(table["label"] == "junk") & table["kind"].isin(kinds)]
    out: dict = {}
    for name, part in groups.items():
        vis = part["visibility_km"].astype(float).to_numpy()
        seen = vis[np.isfinite(vis)]
        codes = part["weather_code"].astype(float)
        row = {"n": int(len(part)), "with_visibility": int(len(seen))}
        if len(seen):
            q10, q25, q50 = np.quantile(seen, [0.1, 0.25, 0.5])
            row.update(
                visibility_q10=round(q10, 1),
                visibility_q25=round(q25, 1),
                visibility_median=round(q50, 1),
                share_at_most_10km=round(float((seen <= 10).mean()), 3),
            )
        row["share_reported_fog_mist_haze"] = (
            round(float(codes.isin(HAZE_CODES).mean()), 3) if len(part) else None
        )
        row["conditions"] = {
            str(k): int(v) for k, v in part["condition"].fillna("unknown").value_counts().items()
        }
        if name != "normal" and len(seen):
            both = np.concatenate(
                [
                    normal["visibility_km"].astype(float).to_numpy(),
                    part["visibility_km"].astype(float).to_numpy(),
                ]
            )
            is_kind = np.r_[np.zeros(len(normal), bool), np.ones(len(part), bool)]
            ok = np.isfinite(both)
            row["visibility_auc"] = round(float(metrics(is_kind[ok], -both[ok])["roc_auc"]), 3)
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path, help="a store of the camera's frames (it is written)")
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument(
        "--weather",
        type=Path,
        nargs="+",
        required=True,
        help="hourly weather CSV files, imported as they are",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        help="NAME=kind,kind: also report these kinds as one",
    )
    args = parser.parse_args()
    groups = {}
    for item in args.group:
        name, _, kinds = item.partition("=")
        groups[name] = [k for k in kinds.split(",") if k]
    imported = import_weather(args.db, sorted(args.weather))
    table = joined(args.db, read_labels(args.labels))
    print(
        json.dumps(
            {
                "files": len(imported),
                "observations": sum(i["rows"] for i in imported),
                "frames": int(len(table)),
                "kinds": report(table, groups),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
