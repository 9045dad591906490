"""Detection quality on the demo and its harder variants, per model and detector; prints JSON.

    .venv/bin/python bench/quality.py --out DIR [--frames 1200]
        [--models vgg16-hed-grid,vgg16-hed,pixels] [--variants demo,hard-june,...]
        [--real ../shared/realdata/garden-monz]

For each variant it renders the demo into DIR/VARIANT (skipped when already there: rendering is
deterministic), ingests it, embeds every model that is not embedded yet, runs `analyze` with the
default settings per model, and scores every detector against the demo's ground truth with
`pipeline.evaluate`: ROC-AUC and average precision on daylight frames, overall and per anomaly
kind. It then recombines the stored percentile ranks with every consensus rule over a few
detector subsets (`rules`), so rules are compared on the same fit. With `--real`, the real
garden frames (folder `closed/` and `closed-*` files = junk) are analysed the same way.

Variants: `demo` (the `make demo` scene) and two harder renders, `hard-june` and `hard-sept`,
on which the detectors and the consensus were chosen; four more harder renders (`hard-dec`,
`hard-mar`, `hard-jul`, `hard-nov`) were added afterwards as held-out checks, and four more
(`hard-jan`, `hard-feb`, `hard-aug`, `hard-oct`) after the time-of-day part of `background`
was chosen on the first seven, and four more (`hard-apr`, `hard-may`, `hard-dec-2`,
`hard-jan-2`) before its time-of-day spread, chosen on the first eleven, was measured on
them, and four more (`hard-jun-2`, `hard-sep-2`, `hard-nov-2`, `hard-feb-2`) that were first
measured after the default model was chosen on the others. Each variant's
`summary` gives the issue's targets: the consensus's daylight ROC-AUC, its worst kind, and the
best single detector.

Embedding dominates the time (1,200 frames: 4-6 min per CNN model here); re-running with the
same DIR only analyses again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> render_demo arguments
    "demo": {"seed": 7, "hard": False, "start": date(2024, 4, 2)},
    "hard-june": {"seed": 11, "hard": True, "start": date(2024, 6, 10)},
    "hard-sept": {"seed": 23, "hard": True, "start": date(2024, 9, 20)},
    # held out: rendered after the detectors and the consensus were chosen on the three above
    "hard-dec": {"seed": 31, "hard": True, "start": date(2024, 12, 2)},
    "hard-mar": {"seed": 47, "hard": True, "start": date(2025, 3, 3)},
    "hard-jul": {"seed": 53, "hard": True, "start": date(2024, 7, 15)},
    "hard-nov": {"seed": 61, "hard": True, "start": date(2024, 11, 4)},
    # a second held-out set: rendered after the time-of-day noise of `background`'s scene part
    # was chosen on the seven above
    "hard-jan": {"seed": 89, "hard": True, "start": date(2025, 1, 13)},
    "hard-feb": {"seed": 71, "hard": True, "start": date(2025, 2, 10)},
    "hard-aug": {"seed": 79, "hard": True, "start": date(2024, 8, 19)},
    "hard-oct": {"seed": 83, "hard": True, "start": date(2024, 10, 14)},
    # a third held-out set: rendered before the tail spread of the time-of-day noise was
    # measured on them (it was chosen on the eleven above)
    "hard-apr": {"seed": 97, "hard": True, "start": date(2025, 4, 14)},
    "hard-may": {"seed": 101, "hard": True, "start": date(2025, 5, 12)},
    "hard-dec-2": {"seed": 103, "hard": True, "start": date(2025, 12, 15)},
    "hard-jan-2": {"seed": 107, "hard": True, "start": date(2026, 1, 19)},
    # a fourth held-out set: rendered and embedded with vgg16-hed before the default model
    # changed to vgg16-hed-grid (chosen on the tuning renders and set 3), first measured after
    "hard-jun-2": {"seed": 109, "hard": True, "start": date(2025, 6, 23)},
    "hard-sep-2": {"seed": 113, "hard": True, "start": date(2025, 9, 8)},
    "hard-nov-2": {"seed": 127, "hard": True, "start": date(2025, 11, 17)},
    "hard-feb-2": {"seed": 131, "hard": True, "start": date(2026, 2, 23)},
    # a fifth held-out set: rendered after the rarity cause by region of the view was chosen
    # (2026-12-05, on the tuning renders, set 4 and the real cameras), first measured after
    "hard-mar-2": {"seed": 137, "hard": True, "start": date(2026, 3, 16)},
    "hard-jul-2": {"seed": 139, "hard": True, "start": date(2026, 7, 13)},
    "hard-oct-2": {"seed": 149, "hard": True, "start": date(2026, 10, 12)},
    "hard-dec-3": {"seed": 151, "hard": True, "start": date(2023, 12, 4)},
    # a sixth held-out set: rendered after the fifth decided between `regions` alone and
    # `regions` beside `lof` in the rarity cause, first measured after that choice
    "hard-jan-3": {"seed": 157, "hard": True, "start": date(2024, 1, 15)},
    "hard-apr-2": {"seed": 163, "hard": True, "start": date(2025, 4, 7)},
    "hard-aug-2": {"seed": 167, "hard": True, "start": date(2025, 8, 11)},
    "hard-nov-3": {"seed": 173, "hard": True, "start": date(2024, 11, 18)},
    # a seventh held-out set: rendered before `exposure`'s evidence start moved to its 97th
    # percentile (chosen 2026-12-06 on the real cameras and sets 1-6), measured after that choice
    "hard-may-3": {"seed": 179, "hard": True, "start": date(2024, 5, 20)},
    "hard-jun-3": {"seed": 181, "hard": True, "start": date(2026, 6, 1)},
    "hard-oct-3": {"seed": 191, "hard": True, "start": date(2023, 10, 9)},
}
QUALITY = ["dark", "overexposed", "blurry", "low_information", "haze"]
SUBSETS = {  # consensus candidates compared in `rules`
    "default": None,  # the registry's default_consensus()
    "lof+background+quality": ["lof", "background", *QUALITY],
    "background+quality": ["background", *QUALITY],
    "lof+same_time+background+quality": ["lof", "same_time", "background", *QUALITY],
    "lof+knn+temporal+same_time+background+quality": [
        "lof",
        "knn",
        "temporal",
        "same_time",
        "background",
        *QUALITY,
    ],
    "previous default (no background)": ["lof", "knn", "temporal", "same_time", *QUALITY],
    "all 14": None,
}


def prepare(folder: Path, db: Path, models: list[str], settings, render=None) -> dict:
    """Render (when asked and missing), ingest, embed what is missing, analyse every model."""
    from pipeline.analyze import analyze
    from pipeline.embed import embed_frames
    from pipeline.ingest import ingest_folder
    from pipeline.runner import import_ground_truth

    timings: dict = {}
    if render is not None and not (folder / "ground_truth.csv").exists():
        from pipeline.demo import render_demo

        t = time.perf_counter()
        render_demo(folder, progress=False, **render)
        timings["render_s"] = round(time.perf_counter() - t, 1)
    frames = folder / "frames" if render is not None else folder
    if render is not None:  # the render's own place, as `make demo` runs it: daylight by the sun
        from pipeline.demo.timeline import DEMO_PLACE

        settings = settings.replace(
            timezone=DEMO_PLACE.timezone, lat=DEMO_PLACE.lat, lon=DEMO_PLACE.lon
        )
    ingest_folder(frames, db, settings, progress=False)
    if render is not None:
        import_ground_truth(db, folder / "ground_truth.csv", frames)
    for model in models:
        t = time.perf_counter()
        embed_frames(db, settings.replace(model=model), progress=False)
        timings[f"embed_{model}_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        analyze(db, settings.replace(model=model), progress=False)
        timings[f"analyze_{model}_s"] = round(time.perf_counter() - t, 1)
    return timings


def detector_table(db: Path, truth_csv: Path | None) -> dict:
    """model -> detector -> {day_auc, day_ap, all_auc, kinds: {kind: day auc}, n...}."""
    from pipeline.evaluate import evaluate

    res = evaluate(db, truth_csv)
    out: dict = {}
    for (model, detector), part in res.groupby(["model", "detector"], sort=False):
        day = part[part["subset"] == "day"].set_index("kind")
        every = part[part["subset"] == "all"].set_index("kind")
        row = {
            "day_auc": _r(day.loc["all", "roc_auc"]) if "all" in day.index else None,
            "day_ap": _r(day.loc["all", "average_precision"]) if "all" in day.index else None,
            "all_auc": _r(every.loc["all", "roc_auc"]),
            "kinds": {k: _r(v) for k, v in day["roc_auc"].items() if k != "all"},
            "n_day_anomalies": {k: int(v) for k, v in day["n_anomalies"].items()},
        }
        out.setdefault(model, {})[detector] = row
    return out


def target_summary(detectors: dict) -> dict:
    """model -> the issue's targets on daylight frames: the consensus's ROC-AUC and its worst
    kind, and the best single detector (consensus excluded) with its ROC-AUC."""
    out = {}
    for model, table in detectors.items():
        single = {
            k: v["day_auc"]
            for k, v in table.items()
            if k != "consensus" and v["day_auc"] is not None
        }
        best = max(single, key=single.get) if single else None
        kinds = table.get("consensus", {}).get("kinds", {})
        worst = min(kinds, key=kinds.get) if kinds else None
        out[model] = {
            "consensus": table.get("consensus", {}).get("day_auc"),
            "worst_kind": worst,
            "worst_kind_auc": kinds.get(worst),
            "best_single": best,
            "best_single_auc": single.get(best),
        }
    return out


def rule_table(db: Path, truth, models: list[str]) -> dict:
    """model -> subset -> rule -> {day_auc, worst_kind_auc}, from the runs' stored percentiles
    as the consensus counts them (`counted_ranks`: 0 where the run's fitted detector says a
    score is no visible harm)."""
    import numpy as np

    from pipeline.detectors import (
        CONSENSUS,
        CONSENSUS_RULES,
        DETECTORS,
        consensus_scores,
        counted_ranks,
        default_consensus,
    )
    from pipeline.evaluate import metrics

    out: dict = {}
    for model, scores in latest_scores(db, models).items():
        wide = scores.pivot(index="frame_id", columns="detector", values="score_pct")
        raw = scores.pivot(index="frame_id", columns="detector", values="score")
        fitted = latest_fitted(db, model)
        counted = counted_ranks(
            {k: d for k, d in fitted.detectors.items() if k in wide},
            {k: raw[k].to_numpy(float) for k in raw},
            {k: wide[k].to_numpy(float) for k in wide},
            frames_batch(db, wide.index.to_numpy(), fitted),
        )
        for key, ranks in counted.items():
            wide[key] = ranks
        data = truth.merge(wide, left_on="frame_id", right_index=True)
        day = data[data["daylight"] == "day"] if "daylight" in data else data
        n_fit = len(wide)
        for name, keys in SUBSETS.items():
            if keys is None:
                keys = (
                    default_consensus()
                    if name == "default"
                    else [k for k in DETECTORS if k in wide]
                )
            keys = [k for k in keys if k in wide and k != CONSENSUS]
            for rule in CONSENSUS_RULES:
                s = consensus_scores({k: day[k].to_numpy(float) for k in keys}, rule, n_fit)
                s = np.where(np.isfinite(s), s, np.nanmedian(s))
                labels = day["is_anomaly"].to_numpy(bool)
                overall = metrics(labels, s)["roc_auc"]
                worst = min(
                    (
                        metrics(
                            labels[(day["kind"] == k) | ~labels],
                            s[((day["kind"] == k) | ~labels).to_numpy()],
                        )["roc_auc"]
                        for k in day.loc[labels, "kind"].unique()
                    ),
                    default=np.nan,
                )
                out.setdefault(model, {}).setdefault(name, {})[rule] = {
                    "day_auc": _r(overall),
                    "worst_kind_auc": _r(worst),
                }
    return out


def latest_scores(db: Path, models: list[str]) -> dict:
    """model -> the latest complete run's outlier_scores rows."""
    import store
    from store import analysis as sa

    with store.connect(db, read_only=True) as con:
        runs = sa.latest_complete_runs(con)
        return {model: sa.run_scores(con, runs[model]) for model in models}


def frames_batch(db: Path, frame_ids, fitted):
    """The frames `frame_ids` as the run's detectors saw them (a `FrameBatch` without vectors,
    the sun at the run's place), for `counted_ranks`."""
    import numpy as np

    import store
    from pipeline.detectors.batch import FrameBatch
    from store import analysis as sa

    with store.connect(db, read_only=True) as con:
        frames = sa.load_frames(con, frame_ids)
    zeros = np.zeros((len(frame_ids), 1), np.float32)
    return FrameBatch.from_frames(frame_ids, zeros, frames, lat=fitted.lat, lon=fitted.lon)


def latest_fitted(db: Path, model: str):
    """The `FittedRun` of the model's latest complete run."""
    import store
    from pipeline.fitted import FittedRun
    from store import analysis as sa

    with store.connect(db, read_only=True) as con:
        artifact, _ = sa.load_fitted(con, sa.latest_complete_runs(con)[model])
    return FittedRun.from_bytes(artifact)


def single_table(db: Path, truth, models: list[str]) -> dict:
    """model -> detector -> ROC-AUC over all frames (for stores without per-kind truth)."""
    from pipeline.evaluate import metrics

    out: dict = {}
    for model, scores in latest_scores(db, models).items():
        for detector, part in scores.groupby("detector"):
            data = truth.merge(part[["frame_id", "score"]], on="frame_id")
            s = data["score"].astype(float)
            out.setdefault(model, {})[detector] = _r(
                metrics(data["is_anomaly"].to_numpy(bool), s.fillna(s.median()).to_numpy())[
                    "roc_auc"
                ]
            )
    return out


def real_truth(db: Path):
    """Truth for the real garden frames: closed roller shutters are the junk."""
    import pandas as pd

    import store

    with store.connect(db, read_only=True) as con:
        frames = con.sql("SELECT frame_id, path FROM frames").df()
    closed = frames["path"].str.contains("closed")
    return pd.DataFrame(
        {
            "frame_id": frames["frame_id"],
            "is_anomaly": closed,
            "kind": closed.map({True: "closed", False: "normal"}),
        }
    )


def _r(value) -> float | None:
    value = float(value)
    return None if value != value else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--models", default="vgg16-hed-grid,vgg16-hed,pixels")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--real", type=Path, default=None)
    args = parser.parse_args()

    import store
    from pipeline.settings import Settings
    from store import analysis as sa

    models = args.models.split(",")
    settings = Settings()
    report: dict = {"frames": args.frames, "models": models, "variants": {}}
    for name in args.variants.split(","):
        folder = args.out / name
        db = folder / "garden.duckdb"
        render = dict(VARIANTS[name], n_frames=args.frames)
        timings = prepare(folder, db, models, settings, render=render)
        with store.connect(db, read_only=True) as con:
            truth = sa.load_ground_truth(con)
        detectors = detector_table(db, None)
        report["variants"][name] = {
            "render": {k: str(v) for k, v in VARIANTS[name].items()},
            "timings": timings,
            "summary": target_summary(detectors),
            "detectors": detectors,
            "rules": rule_table(db, truth, models),
        }
        print(f"{name}: done", file=sys.stderr)
    if args.real is not None:
        db = args.out / "real" / "garden.duckdb"
        db.parent.mkdir(parents=True, exist_ok=True)
        timings = prepare(args.real, db, models, settings)
        truth = real_truth(db)
        report["variants"]["real-garden"] = {
            "folder": str(args.real),
            "timings": timings,
            "detectors_auc_all_frames": single_table(db, truth, models),
            "rules": rule_table(db, truth, models),
        }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
