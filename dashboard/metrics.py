"""Detector-comparison numbers from score tables (numpy/pandas only, no scikit-learn).

Inputs are the wide tables of `store.facts.detector_matrix`: one score-percentile column per
detector (higher = more abnormal). Labels: 1/True = anomaly (junk or ground-truth anomaly).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def spearman(wide: pd.DataFrame, detectors: list[str]) -> pd.DataFrame:
    """Spearman rank correlation between detectors (Pearson on average ranks)."""
    ranks = wide[detectors].rank(method="average")
    return ranks.corr(method="pearson")


def top_k_overlap(wide: pd.DataFrame, detectors: list[str], k: int) -> pd.DataFrame:
    """Share of detector A's top-k frames that are also in B's top-k (1 on the diagonal)."""
    k = max(1, min(int(k), len(wide)))
    tops = {d: set(wide.nlargest(k, d)["frame_id"]) for d in detectors}
    data = [[len(tops[a] & tops[b]) / k for b in detectors] for a in detectors]
    return pd.DataFrame(data, index=detectors, columns=detectors)


def flagged(wide: pd.DataFrame, detector: str, top_pct: float = 0.95) -> np.ndarray:
    """Which frames `detector` flags: its own flag (`<detector>_flag`, is_outlier: above its
    threshold) where the table has it, else `score_pct >= top_pct`. The flag, not the
    percentile: a percentile counts the frames scoring <= a score, so where a detector gives
    most frames the same lowest score (`alignment`'s 0 for a frame that lines up, on 95-100%
    of a still or dim camera's frames) every one of them sits at the block's top percentile,
    and a percentile cut would flag them all; the threshold flags none of them."""
    flag = f"{detector}_flag"
    if flag in wide:
        return wide[flag].eq(True).to_numpy()  # no score (NULL): not flagged
    return wide[detector].ge(top_pct).to_numpy(dtype=bool)


def agreement_by_day(
    wide: pd.DataFrame, detectors: list[str], top_pct: float = 0.95
) -> pd.DataFrame:
    """Per day: share of frames on which all chosen detectors agree (all flag or none flags,
    `flagged`), and the share flagged by at least one."""
    if wide.empty:
        return pd.DataFrame(columns=["day", "agreement", "any_flagged", "n_frames"])
    flags = pd.DataFrame({d: flagged(wide, d, top_pct) for d in detectors}, index=wide.index)
    day = pd.to_datetime(wide["taken_at"]).dt.floor("D")
    agree = flags.all(axis=1) | (~flags).all(axis=1)
    df = pd.DataFrame({"day": day, "agree": agree, "any": flags.any(axis=1)})
    out = (
        df.groupby("day")
        .agg(agreement=("agree", "mean"), any_flagged=("any", "mean"), n_frames=("agree", "size"))
        .reset_index()
    )
    return out


def _joined(wide: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    lab = labels[["frame_id", "is_anomaly"]].dropna()
    return wide.merge(lab, on="frame_id", how="inner")


def precision_at_k(
    wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str], k_max: int = 200
) -> pd.DataFrame:
    """Long form (detector, k, precision): among labelled frames, the share of anomalies in
    each detector's k highest-scoring ones."""
    joined = _joined(wide, labels)
    rows = []
    if joined.empty:
        return pd.DataFrame(columns=["detector", "k", "precision"])
    truth = joined["is_anomaly"].astype(bool).to_numpy()
    k_max = min(int(k_max), len(joined))
    ks = np.arange(1, k_max + 1)
    for d in detectors:
        order = np.argsort(-joined[d].to_numpy(dtype=float), kind="stable")
        hits = np.cumsum(truth[order][:k_max])
        rows.append(pd.DataFrame({"detector": d, "k": ks, "precision": hits / ks}))
    return pd.concat(rows, ignore_index=True)


def roc(
    wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """ROC curves (detector, fpr, tpr) and ROC-AUC per detector over the labelled frames.
    A detector has no curve when the labels hold only one class."""
    joined = _joined(wide, labels)
    curves, aucs = [], {}
    if joined.empty:
        return pd.DataFrame(columns=["detector", "fpr", "tpr"]), aucs
    truth = joined["is_anomaly"].astype(bool).to_numpy()
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return pd.DataFrame(columns=["detector", "fpr", "tpr"]), aucs
    for d in detectors:
        scores = joined[d].to_numpy(dtype=float)
        scores = np.nan_to_num(scores, nan=-np.inf)
        order = np.argsort(-scores, kind="stable")
        s, t = scores[order], truth[order]
        distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
        tps = np.cumsum(t)[distinct]
        fps = (distinct + 1) - tps
        tpr = np.r_[0.0, tps / n_pos]
        fpr = np.r_[0.0, fps / n_neg]
        aucs[d] = float(np.trapezoid(tpr, fpr))
        curves.append(pd.DataFrame({"detector": d, "fpr": fpr, "tpr": tpr}))
    return pd.concat(curves, ignore_index=True), aucs
