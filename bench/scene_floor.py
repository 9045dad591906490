"""Would a floor on `background`'s stand-out keep the scene cause from diluting the consensus? JSON.

    .venv/bin/python bench/scene_floor.py DB --lat LAT --lon LON
        [--labels LABELS.csv --sample SAMPLE.txt] [--floors 4,6,8,10,12] [--quantiles 0.95,0.99]
        [--starts 0,0.9,0.95]

DB is a store with ingested frames (thumbnails and frame statistics; no vectors needed): a
render's store from `bench/quality.py` (its ground truth is in the store) or a real camera's
from `bench/realcam.py` (with its `--labels` and `--sample`). The script fits the detectors of
the quality, camera and scene causes (`soft`, `flat`, `soft_cells`, `exposure`, `alignment`,
`background`)
with the default settings, and reports on daylight frames:

- `stand_out`: per kind, the distribution of each frame's larger raw `background` part (the
  scene or same-time stand-out, `eigen.stand_out`: how far its top pixel z-scores stand out of
  its own typical residual), the units a floor would be in;
- `floors`: for each floor (absolute, and at the camera's own quantiles of the stand-out), the
  ROC-AUC and average precision of the scene cause and of quality + camera + scene, where a
  frame whose stand-out is under the floor brings no scene evidence (as `Detector.evident` does
  for the own-reference checks). `none` is the current rule.

Rarity (`lof`) needs vectors and is left out of both sums; measured on 2026-12-03, see
docs/experiments/2026-12-03-scene-floor.md.

- `starts` (with `--starts`): instead of a floor, the scene and rarity causes counted only from
  a higher rank (their classes' `evidence_from`: `background` 0, `lof` 0.9 today), as
  `alignment` and `exposure` count only from their 95th percentile. For each pair of starts
  (background, lof), the consensus of all four causes, `lof`'s ranks taken from the store's
  latest complete run (a store without one: quality + camera + scene). Measured on
  2026-12-03, see docs/experiments/2026-12-03-evidence-start.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DETECTORS = ("soft", "flat", "soft_cells", "exposure", "alignment", "background")


def fit(db: Path, lat: float, lon: float) -> tuple[np.ndarray, dict, np.ndarray]:
    """(frame ids, counted ranks per detector, each frame's larger background part)."""
    import store
    from pipeline.detectors import make_detector
    from pipeline.detectors.batch import FrameBatch
    from pipeline.pixels import ThumbnailReader
    from pipeline.settings import Settings
    from store import analysis as sa

    settings = Settings()
    with store.connect(db, read_only=True) as con:
        ids = np.array([r[0] for r in con.sql("SELECT frame_id FROM frames ORDER BY 1").fetchall()])
        frames = sa.load_frames(con, ids)
    batch = FrameBatch.from_frames(ids, np.zeros((len(ids), 2)), frames, lat=lat, lon=lon)
    batch.pixels = ThumbnailReader(db)
    ranks, stand_out = {}, None
    for key in DETECTORS:
        det = make_detector(key, settings.contamination, settings.random_state).fit(batch)
        pct = det.percentile(det.decision_scores_)
        ranks[key] = np.where(
            det.evident(det.decision_scores_, batch) | ~np.isfinite(pct), pct, 0.0
        )
        if key == "background":
            with np.errstate(all="ignore"):
                stand_out = np.nanmax(det._parts(batch)[:, :2], axis=1)
    return ids, ranks, stand_out


def truth(db: Path, ids: np.ndarray, labels: Path | None, sample: Path | None) -> pd.DataFrame:
    """frame_id, daylight, kind ('normal' or the junk kind; NaN = not measured), measured."""
    import store
    from store import analysis as sa
    from store import frames as sf

    with store.connect(db, read_only=True) as con:
        day = sa.frame_daylight(con, ids)
        if labels is None:
            gt = sa.load_ground_truth(con)[["frame_id", "is_anomaly", "kind"]]
            out = day.merge(gt, on="frame_id", how="left")
            out["kind"] = np.where(out["is_anomaly"].fillna(False), out["kind"], "normal")
            out["measured"] = True
            return out[["frame_id", "daylight", "kind", "measured"]]
        files = sf.list_frames(con)[["frame_id", "path"]]
    from realcam import read_labels, read_sample

    files["file"] = files["path"].str.rsplit("/", n=1).str[-1]
    lab = read_labels(labels)
    lab = lab[lab["label"].isin(["junk", "normal"])]
    out = day.merge(files, on="frame_id").merge(lab, on="file", how="left")
    out["kind"] = np.where(out["label"] == "normal", "normal", out["kind"])
    chosen = read_sample(sample) if sample is not None else None
    out["measured"] = out["label"].notna() & (
        out["file"].isin(chosen) if chosen is not None else True
    )
    return out[["frame_id", "daylight", "kind", "measured"]]


def stored_ranks(db: Path, ids: np.ndarray, detector: str) -> np.ndarray | None:
    """`detector`'s percentile ranks in the store's latest complete run, in `ids`' order (NaN
    for a frame it did not score); None without such a run or detector."""
    import store

    with store.connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT o.frame_id, o.score_pct FROM outlier_scores o WHERE o.detector = ? AND "
            "o.run_id = (SELECT max(run_id) FROM analysis_runs WHERE status = 'complete')",
            [detector],
        ).fetchall()
    if not rows:
        return None
    pct = dict(rows)
    return np.array([pct.get(int(i), np.nan) for i in ids], dtype=float)


@contextmanager
def evidence_from(starts: dict[str, float]):
    """The detectors' classes counting evidence from other ranks for the block's duration."""
    from pipeline.detectors.base import DETECTORS

    before = {key: DETECTORS[key].evidence_from for key in starts}
    try:
        for key, start in starts.items():
            DETECTORS[key].evidence_from = start
        yield
    finally:
        for key, start in before.items():
            DETECTORS[key].evidence_from = start


def measure(y: np.ndarray, kinds: np.ndarray, scores: np.ndarray) -> dict:
    from pipeline.evaluate import metrics

    m = metrics(y, scores)
    per_kind = {}
    for kind in sorted(set(kinds[y])):
        keep = ~y | (kinds == kind)
        per_kind[kind] = round(metrics(y[keep], scores[keep])["roc_auc"], 3)
    return {
        "auc": round(m["roc_auc"], 3),
        "ap": round(m["average_precision"], 3),
        "kinds": per_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--lat", type=float, required=True)
    parser.add_argument("--lon", type=float, required=True)
    parser.add_argument("--labels", type=Path, default=None)
    parser.add_argument("--sample", type=Path, default=None)
    parser.add_argument("--floors", default="4,6,8,10,12")
    parser.add_argument("--quantiles", default="0.9,0.95,0.98,0.99")
    parser.add_argument(
        "--starts", default="", help="comma-separated evidence starts for background and lof"
    )
    args = parser.parse_args()

    from pipeline.detectors.consensus import cause_scores

    ids, ranks, stand_out = fit(args.db, args.lat, args.lon)
    table = truth(args.db, ids, args.labels, args.sample).set_index("frame_id").loc[ids]
    day = (table["daylight"] == "day").to_numpy()
    kinds = table["kind"].to_numpy(object)
    known = day & pd.notna(kinds)
    report: dict = {"db": str(args.db), "frames": int(len(ids)), "stand_out": {}, "floors": {}}
    for kind in sorted(set(kinds[known])):
        values = stand_out[known & (kinds == kind) & np.isfinite(stand_out)]
        qs = np.quantile(values, [0.05, 0.5, 0.95]) if len(values) else [np.nan] * 3
        report["stand_out"][kind] = {
            "n": int(len(values)),
            "p05": round(float(qs[0]), 2),
            "median": round(float(qs[1]), 2),
            "p95": round(float(qs[2]), 2),
        }
    measured = known & table["measured"].to_numpy(bool)
    y = kinds[measured] != "normal"
    finite = stand_out[day & np.isfinite(stand_out)]
    floors = {"none": None}
    floors.update({f"{float(f):g}": float(f) for f in args.floors.split(",") if f})
    floors.update(
        {f"q{q}": float(np.quantile(finite, float(q))) for q in args.quantiles.split(",") if q}
    )
    for name, floor in floors.items():
        counted = dict(ranks)
        if floor is not None:
            under = np.isfinite(stand_out) & (stand_out < floor)
            counted["background"] = np.where(under, 0.0, ranks["background"])
        causes = cause_scores(counted, "family_tail", len(ids))
        scene = np.nan_to_num(causes["scene"])
        total = np.nansum(np.column_stack([causes["quality"], causes["camera"]]), axis=1) + scene
        report["floors"][name] = {
            "floor": None if floor is None else round(floor, 2),
            "scene": measure(y, kinds[measured], scene[measured]),
            "quality+camera+scene": measure(y, kinds[measured], total[measured]),
        }
    starts = [float(v) for v in args.starts.split(",") if v]
    lof = stored_ranks(args.db, ids, "lof") if starts else None
    if starts:
        report["starts"] = {"with_lof": lof is not None}
    for scene_start in starts:
        for rarity_start in starts if lof is not None else [None]:
            counted = dict(ranks, lof=lof) if lof is not None else dict(ranks)
            chosen = {"background": scene_start}
            if rarity_start is not None:
                chosen["lof"] = rarity_start
            with evidence_from(chosen):
                causes = cause_scores(counted, "family_tail", len(ids))
            total = np.nansum(np.column_stack(list(causes.values())), axis=1)
            name = f"background {scene_start:g}" + (
                f", lof {rarity_start:g}" if rarity_start is not None else ""
            )
            report["starts"][name] = measure(y, kinds[measured], total[measured])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
