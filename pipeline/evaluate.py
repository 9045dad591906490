"""How well each detector finds known anomalies: ROC-AUC, average precision, precision@k.

`evaluate(db, truth_csv)` takes the latest complete run of every analysed model and scores each
of its detectors against a ground truth (`path,label,kind` CSV with paths relative to the frames
root, label 1 = anomaly; or, without a CSV, the store's `ground_truth` table). Metrics are
computed on all frames and on daylight frames only ('day'), and per anomaly kind (frames of that
kind against the normal frames). precision@k uses k = the number of true anomalies in the subset.
Frames a detector could not score (NULL) get the median score: no opinion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import store
from pipeline.errors import AnalysisError, InputError
from store import analysis as sa

SUBSETS = ("all", "day")
METRICS = ("roc_auc", "average_precision", "precision_at_k")


def read_truth(path: Path) -> pd.DataFrame:
    """A ground-truth CSV as a DataFrame: `path` (relative to the frames folder), `label`
    (1 = anomaly, 0 = normal, as int) and `kind` ('anomaly'/'normal' when the file has none).

    The one reader of these files (`evaluate --truth` and the demo's import): an unreadable
    file, a missing column or a label that is not 0 or 1 is an `InputError` saying which.
    """
    try:
        try:
            truth = pd.read_csv(path, encoding="utf-8-sig")
        except UnicodeDecodeError:  # a spreadsheet's Windows or Latin-1 export, as weather files
            truth = pd.read_csv(path, encoding="latin-1")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the ground truth {path}: {exc}") from exc
    missing = {"path", "label"} - set(truth.columns)
    if missing:
        raise InputError(
            f"the ground truth {path} needs columns path,label[,kind]; it lacks "
            f"{', '.join(sorted(missing))} (its columns: "
            f"{', '.join(map(str, truth.columns))})"
        )
    labels = pd.to_numeric(truth["label"], errors="coerce")
    bad = np.flatnonzero(~labels.isin([0, 1]).to_numpy())
    if len(bad):
        raise InputError(
            f"the ground truth {path} has label {truth['label'].iat[bad[0]]!r} on "
            f"line {bad[0] + 2}; a label is 1 (anomaly) or 0 (normal)"
        )
    truth["label"] = labels.astype(int)
    if "kind" not in truth:
        truth["kind"] = np.where(truth["label"].astype(int) == 1, "anomaly", "normal")
    return truth


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and precision@k (k = number of positives); NaN when the
    labels have a single class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        return {m: float("nan") for m in METRICS}
    top = np.argsort(-scores, kind="stable")[:n_pos]
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "precision_at_k": float(labels[top].mean()),
    }


def _truth_table(con, truth_csv: Path | None) -> pd.DataFrame:
    """frame_id, is_anomaly, kind, daylight for frames with a truth label."""
    if truth_csv is None:
        truth = sa.load_ground_truth(con)
        if truth.empty:
            raise InputError("no ground truth in the store: pass --truth CSV (path,label,kind)")
        return truth
    matched = sa.match_truth_paths(con, read_truth(truth_csv))
    matched = matched[matched["frame_id"].notna()]
    if matched.empty:
        raise InputError(
            f"no path in {truth_csv} matches a frame in the store; paths must be "
            "relative to the folder that was ingested"
        )
    out = pd.DataFrame(
        {
            "frame_id": matched["frame_id"].astype("int64"),
            "is_anomaly": matched["label"].astype(int).astype(bool),
            "kind": matched["kind"].astype(str),
        }
    ).drop_duplicates("frame_id", keep="last")
    daylight = sa.frame_daylight(con, out["frame_id"].to_numpy())
    return out.merge(daylight, on="frame_id", how="left")


def evaluate(db: Path, truth_csv: Path | None) -> pd.DataFrame:
    """One row per model x detector x subset x kind with n, n_anomalies and the metrics.

    `kind` is 'all' (every anomaly against every normal frame) or an anomaly kind (frames of
    that kind against the normal frames).
    """
    with store.connect(db, read_only=True) as con:
        truth = _truth_table(con, Path(truth_csv) if truth_csv else None)
        runs = sa.latest_complete_runs(con)
        if not runs:
            raise AnalysisError(
                f"no complete analysis run in {db}: run "
                f"`python -m pipeline analyze --db {db}` first"
            )
        scored = {
            model: sa.run_scores(con, run_id, truth["frame_id"].to_numpy())
            for model, run_id in runs.items()
        }
    rows = []
    for model, run_id in runs.items():
        long = scored[model]
        for detector, part in long.groupby("detector", sort=False):
            data = truth.merge(part[["frame_id", "score"]], on="frame_id", how="inner")
            score = data["score"].astype(float).to_numpy()
            if np.isfinite(score).any():
                score = np.where(np.isfinite(score), score, np.nanmedian(score))
            data = data.assign(score=score)
            for subset in SUBSETS:
                sub = data if subset == "all" else data[data["daylight"] == "day"]
                normal = sub[~sub["is_anomaly"]]
                kinds = ["all"] + sorted(sub.loc[sub["is_anomaly"], "kind"].unique())
                for kind in kinds:
                    part_k = (
                        sub
                        if kind == "all"
                        else pd.concat([normal, sub[sub["is_anomaly"] & (sub["kind"] == kind)]])
                    )
                    labels = part_k["is_anomaly"].to_numpy()
                    rows.append(
                        {
                            "model": model,
                            "run_id": run_id,
                            "detector": detector,
                            "subset": subset,
                            "kind": kind,
                            "n": len(part_k),
                            "n_anomalies": int(labels.sum()),
                            **metrics(labels, part_k["score"].to_numpy()),
                        }
                    )
    out = pd.DataFrame(rows)
    order = {"consensus": 0}
    out["_o"] = out["detector"].map(lambda d: order.get(d, 1))
    return (
        out.sort_values(["model", "_o", "detector", "subset", "kind"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Wide view: per model x detector, AUC/AP/P@k on all and day frames, and the day AUC of
    each anomaly kind."""
    overall = results[results["kind"] == "all"]
    wide = overall.pivot_table(
        index=["model", "detector"], columns="subset", values=list(METRICS), sort=False
    )
    wide.columns = [f"{metric}_{subset}" for metric, subset in wide.columns]
    cols = [f"{m}_{s}" for s in SUBSETS for m in METRICS if f"{m}_{s}" in wide.columns]
    wide = wide[cols]
    kinds = results[(results["kind"] != "all") & (results["subset"] == "day")]
    if not kinds.empty:
        per_kind = kinds.pivot_table(
            index=["model", "detector"], columns="kind", values="roc_auc", sort=False
        )
        per_kind.columns = [f"auc_day_{k}" for k in per_kind.columns]
        wide = wide.join(per_kind)
    return wide.reset_index()


def format_table(results: pd.DataFrame) -> str:
    """The summary as aligned text for the terminal."""
    wide = summary_table(results)
    return wide.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
