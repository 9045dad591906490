"""The consensus: one score per frame from the detectors' percentile ranks, by evidence family.

The rule (default `family_tail`, measured in docs/PERFORMANCE.md "Detection quality"): each
detector's percentile p becomes tail evidence -log(1 - p) (so one confident detector counts
more than several lukewarm ones; 1 - p is floored at 1/(n + 1) for n ranked frames), evidence is
averaged within a family (embedding, time-lapse, background, quality) and summed over families.
Families see different anomalies (quality: black, fog, washed-out; background: people, animals,
drops, a knocked camera; embedding: a frame unlike any other), so a family mean keeps a weak
member from drowning a strong one only within its family, and the sum lets one family alone
flag a frame. The embedding and time-lapse detectors are generalists that rank frames by any
difference, weather and light included, so only their top tenth counts (their classes'
`evidence_from`). A plain mean of all ranks lets one-sided checks (`dark` knows nothing of fog)
drag real anomalies down. By default consensus combines `lof`, `background` and the quality
checks (the classes with `in_consensus`; setting `consensus_detectors`); the other detectors
are computed for side-by-side comparison: on the demo and its harder variants adding them
lowered the consensus (iforest, ecod, copod and hbos are global or per-dimension detectors on
data whose normal frames follow a daily cycle; knn, temporal and same_time repeat what lof and
background see, with more noise).

`Consensus` is fitted like a detector (on the fit's percentile ranks instead of a batch): `fit`
returns self, its scores of the fit are `decision_scores_`, and its threshold and percentiles
come from the same base as every detector's.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from pipeline.detectors.base import DETECTORS, Scorer

CONSENSUS = "consensus"


# Each rule takes (percentiles [frames x detectors], families, floor); `floor` bounds 1 - pct
# from below so the tail evidence of a top rank is finite and fits the number of frames ranked.
def _rule_mean(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmean(pct, axis=1)


def _rule_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmax(pct, axis=1)


def _rule_family_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Average of maximum: mean rank within each family, then the highest family."""
    groups = [np.nanmean(pct[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
              for fam in dict.fromkeys(families)]
    return np.nanmax(np.column_stack(groups), axis=1)


def _rule_top2(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Mean of each frame's two highest ranks (one detector alone is not enough)."""
    filled = np.where(np.isfinite(pct), pct, -np.inf)
    top = -np.sort(-filled, axis=1)[:, :2]
    top = np.where(np.isfinite(top), top, np.nan)
    return np.nanmean(top, axis=1)


def _evidence(pct: np.ndarray, floor: float) -> np.ndarray:
    return -np.log(np.clip(1 - pct, floor, 1))


def _rule_tail(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Mean of tail evidence: -log(1 - pct) per detector, so one confident detector counts more
    than several lukewarm ones, but a single noisy top rank does not decide alone."""
    return np.nanmean(_evidence(pct, floor), axis=1)


def _rule_family_tail(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Tail evidence averaged within each family, then summed over families."""
    evidence = _evidence(pct, floor)
    groups = [np.nanmean(evidence[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
              for fam in dict.fromkeys(families)]
    stacked = np.column_stack(groups)
    return np.nansum(stacked, axis=1)


CONSENSUS_RULES: dict[str, Callable[[np.ndarray, list[str], float], np.ndarray]] = {
    "mean": _rule_mean,
    "max": _rule_max,
    "family_max": _rule_family_max,
    "top2": _rule_top2,
    "tail": _rule_tail,
    "family_tail": _rule_family_tail,
}


def consensus_scores(pcts: dict[str, np.ndarray], rule: str,
                     n_reference: int | None = None) -> np.ndarray:
    """Combine detectors' percentile ranks (key -> 0..1 per frame, NaN = no opinion).

    `n_reference` is how many frames the percentiles were ranked among (the fit): the top
    frame of n is 1 - 1/(n + 1) of the way up, not certain, so a detector's top rank among 13
    frames counts as far less evidence than among 100,000 (default: the frames given here).

    A detector's ranks below its class's `evidence_from` count as none: p becomes
    (p - start) / (1 - start), floored at 0. The generalists on the CNN
    embedding (embedding and time-lapse families: 0.9) rank frames by any difference, weather and
    light included, so only their top tenth says "junk"; below it their rank is noise that would
    drown a specialist's evidence (on the harder demo renders `lof` ranks a half-hidden person or
    drops on the lens at random).
    """
    if rule not in CONSENSUS_RULES:
        raise KeyError(f"unknown consensus rule {rule!r}; known: {', '.join(CONSENSUS_RULES)}")
    keys, pct, floor = _counted(pcts, n_reference)
    families = [DETECTORS[k].family for k in keys]
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = CONSENSUS_RULES[rule](pct, families, floor)
    return np.asarray(out, dtype=float)


def _counted(pcts: dict[str, np.ndarray], n_reference: int | None
             ) -> tuple[list[str], np.ndarray, float]:
    """The detectors' ranks as the consensus counts them: (keys, [frames x keys] ranks with
    each class's `evidence_from` applied, the floor of 1 - rank)."""
    keys = [k for k in pcts if k != CONSENSUS]
    if not keys:
        raise ValueError("consensus needs at least one detector")
    pct = np.column_stack([pcts[k] for k in keys]).astype(float)
    start = np.array([DETECTORS[k].evidence_from for k in keys])
    pct = np.clip((pct - start) / (1 - start), 0, 1)  # NaN stays NaN
    return keys, pct, 1.0 / ((n_reference or len(pct)) + 1)


def tail_evidence(pcts: dict[str, np.ndarray], n_reference: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Each detector's tail evidence per frame, -log(1 - rank), as `consensus_scores` counts it
    (its class's `evidence_from` applied, 1 - rank floored at 1/(n_reference + 1)); NaN where a
    detector has no rank."""
    keys, pct, floor = _counted(pcts, n_reference)
    evidence = _evidence(pct, floor)
    return {k: evidence[:, i] for i, k in enumerate(keys)}


class Consensus(Scorer):
    """The fitted consensus of detectors `keys` by `rule`: fitted on the fit's percentile ranks
    (detector key -> 0..1 per frame), it scores new ranks with the same floor."""

    key = CONSENSUS
    summary = "the detectors' evidence combined by family (see pipeline/detectors/consensus.py)"
    family = CONSENSUS
    order = 0
    plain_cause = "unusual"  # incidents name the causes of the detectors it combines

    def __init__(self, keys: list[str] | None = None, rule: str = "family_tail",
                 contamination: float = 0.05):
        self.keys = keys
        self.rule = rule
        self.contamination = contamination

    def fit(self, pcts: dict[str, np.ndarray]) -> "Consensus":
        self._check_contamination()
        self.n_reference_ = len(next(iter(pcts.values()))) if pcts else None
        self.decision_scores_ = self.decision_function(pcts)
        self._process_decision_scores()
        return self

    def decision_function(self, pcts: dict[str, np.ndarray]) -> np.ndarray:
        return consensus_scores({k: pcts[k] for k in self.keys}, self.rule, self.n_reference_)

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0 (a dataclass then) fitted before n_reference_ used a fixed floor of 1e-4
        return {**state, "n_reference_": state.get("n_reference_") or 9999}
