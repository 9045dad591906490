"""Detector-comparison numbers from score tables (numpy/pandas only, no scikit-learn), and the
junk causes a user's reviews point to (`suggest_causes`).

Inputs are the wide tables of `store.facts.detector_matrix`: one score-percentile column per
detector (higher = more abnormal). Labels: 1/True = anomaly (junk or ground-truth anomaly).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def consensus_agreement(
    wide: pd.DataFrame, detectors: list[str], consensus: str = "consensus"
) -> pd.DataFrame:
    """Per detector: how many of the frames it flags (`flagged`, its own is_outlier) in `wide`
    the consensus flags too. Columns `detector`, `n_flagged`, `n_shared` and `shared_share`
    (NaN where the detector flags none of these frames). Every detector flags its own top
    share of the run, so its count alone says nothing; this says whether its flags are the
    consensus's junk or its own view."""

    def has(det: str) -> bool:
        return det in wide or f"{det}_flag" in wide

    rows = []
    agreed = flagged(wide, consensus) if has(consensus) else None
    for det in detectors:
        if agreed is None or not has(det):
            continue
        own = flagged(wide, det)
        n, shared = int(own.sum()), int((own & agreed).sum())
        rows.append((det, n, shared, shared / n if n else np.nan))
    return pd.DataFrame(rows, columns=["detector", "n_flagged", "n_shared", "shared_share"])


# the period agreement is shown per: a day up to four months of frames, then a week up to
# three years, then a month (500 daily points were an unreadable tangle on a real webcam)
AGREEMENT_PERIODS = ((120, "day"), (3 * 366, "week"), (None, "month"))


def agreement_period(taken_at: pd.Series) -> str:
    """'day', 'week' or 'month': the `AGREEMENT_PERIODS` step for the frames' time span."""
    times = pd.to_datetime(taken_at).dropna()
    span = (times.max() - times.min()).days if len(times) else 0
    return next(unit for most, unit in AGREEMENT_PERIODS if most is None or span <= most)


def agreement_by_day(
    wide: pd.DataFrame, detectors: list[str], top_pct: float = 0.95, period: str = "day"
) -> pd.DataFrame:
    """Per day (or per `period`: 'week' from Monday, 'month'; column `day` is its first day):
    share of frames on which all chosen detectors agree (all flag or none flags, `flagged`),
    and the share flagged by at least one."""
    if wide.empty:
        return pd.DataFrame(columns=["day", "agreement", "any_flagged", "n_frames"])
    flags = pd.DataFrame({d: flagged(wide, d, top_pct) for d in detectors}, index=wide.index)
    day = pd.to_datetime(wide["taken_at"]).dt.floor("D")
    if period == "week":
        day = day - pd.to_timedelta(day.dt.day_of_week, unit="D")
    elif period == "month":
        day = day.dt.to_period("M").dt.start_time
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


# --- junk causes from reviews --------------------------------------------------------------------

MIN_EACH = 5  # reviewed junk and keep frames each needed before a suggestion is made
MIN_GAIN = 0.02  # ROC-AUC over the reviews a change of causes must add
CONFIDENCE = 0.95  # share of resamples of the reviews in which the change must help
RESAMPLES = 400
MAX_REVIEWS = 5000  # a seeded sample of a larger set of reviews keeps the resampling quick


@dataclass(frozen=True)
class CauseSuggestion:
    """The junk causes a user's reviews rank best (`suggest_causes`): `causes` (the counted
    ones when no change is clearly better), the ROC-AUC over the reviews of the causes counted
    now (`auc_now`) and of `causes` (`auc`), how many reviews it stands on, and the changes in
    the order they were made ('leave out scene', 'count rarity')."""

    causes: tuple[str, ...]
    auc_now: float
    auc: float
    n_junk: int
    n_keep: int
    steps: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def _aucs(junk: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column of `scores` [frames, candidates] for the labels `junk` (ties
    count a half, as the area under the ROC curve does)."""
    ranks = pd.DataFrame(scores).rank(method="average").to_numpy()
    n_junk = int(junk.sum())
    n_keep = len(junk) - n_junk
    return (ranks[junk].sum(axis=0) - n_junk * (n_junk + 1) / 2) / (n_junk * n_keep)


def suggest_causes(
    reviewed: pd.DataFrame, counted: list[str], stored: list[str], seed: int = 0
) -> CauseSuggestion | None:
    """Which junk causes rank the user's own reviews best, or None with fewer than `MIN_EACH`
    reviewed junk or keep frames.

    `reviewed`: one row per reviewed frame, `junk` (bool: the verdict) and each stored cause's
    score (`store.facts.reviewed_cause_scores`; NULL counts 0, as the consensus sums them).
    Starting from the causes counted now, one cause at a time is left out or counted, the
    change that lifts the reviews' ROC-AUC most, as long as it lifts it by at least
    `MIN_GAIN` and does so in at least `CONFIDENCE` of `RESAMPLES` resamples of the reviews
    (a bootstrap: a few reviews of a few unusual frames do not switch a cause off). So on a
    sea-and-sky webcam whose owner keeps the clear days the scene cause ranks first, the
    scene cause is left out; where the reviews agree with the causes counted, nothing
    changes. What the consensus then ranks is the sum of the suggested causes' stored
    scores, as `analyze --junk-causes` would give."""
    junk = reviewed["junk"].astype(bool).to_numpy()
    n_junk, n_keep = int(junk.sum()), int((~junk).sum())
    if n_junk < MIN_EACH or n_keep < MIN_EACH:
        return None
    rng = np.random.default_rng(seed)
    if len(reviewed) > MAX_REVIEWS:
        keep_rows = np.sort(rng.choice(len(reviewed), MAX_REVIEWS, replace=False))
        reviewed, junk = reviewed.iloc[keep_rows], junk[keep_rows]
    stored = [c for c in stored if c in reviewed]
    scores = {c: np.nan_to_num(reviewed[c].to_numpy(dtype=float), nan=0.0) for c in stored}
    resamples = [rng.integers(0, len(junk), len(junk)) for _ in range(RESAMPLES)]
    resamples = [r for r in resamples if junk[r].any() and not junk[r].all()]
    current = [c for c in stored if c in counted] or list(stored)
    first = None
    steps: list[str] = []
    while True:
        moves = [
            ([c for c in current if c != cause], f"leave out {cause}")
            for cause in current
            if len(current) > 1
        ] + [
            ([c for c in stored if c in current or c == cause], f"count {cause}")
            for cause in stored
            if cause not in current
        ]
        candidates = [current] + [m for m, _ in moves]
        matrix = np.column_stack([sum(scores[c] for c in causes) for causes in candidates])
        aucs = _aucs(junk, matrix)
        if first is None:
            first = float(aucs[0])
        if not moves:  # one cause stored: nothing to change
            break
        wins = np.zeros(len(moves))
        for rows in resamples:
            again = _aucs(junk[rows], matrix[rows])
            wins += again[1:] > again[0]
        gain = aucs[1:] - aucs[0]
        good = (gain >= MIN_GAIN) & (wins >= CONFIDENCE * len(resamples))
        if not good.any():
            break
        best = int(np.argmax(np.where(good, gain, -np.inf)))
        current = moves[best][0]
        steps.append(moves[best][1])
    return CauseSuggestion(
        causes=tuple(current),
        auc_now=round(first, 3),
        auc=round(float(aucs[0]), 3),
        n_junk=n_junk,
        n_keep=n_keep,
        steps=tuple(steps),
    )
