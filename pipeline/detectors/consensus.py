"""The consensus: one score per cause of junk and their sum over the causes the user counts.

Every detector belongs to a cause (`pipeline.causes`: quality, camera, scene, rarity). The rule
(default `family_tail`, measured in docs/PERFORMANCE.md "Detection quality") combines the
detectors of one cause: each detector's percentile p becomes tail evidence -log(1 - p) (so one
confident detector counts more than several lukewarm ones; 1 - p is floored at 1/(n + 1) for n
ranked frames), evidence is averaged within a family and summed over the families of the
cause (the quality cause: `soft` and `flat` are one family, `exposure` another). That is the
cause's score, stored as detector `cause:<cause>`. The consensus is the sum of the scores of
the causes the user counts as junk (setting `junk_causes`; unset, all four less a scene cause
that mostly says what kind of day it is: `default_causes`), so one cause
alone can flag a frame, and the dashboard can sum the stored cause scores again for another
choice without a new run. A rule always works within a cause and causes are always summed
(for `family_tail` that is the sum over all families, as before causes were recorded).

The embedding and time-lapse detectors (rarity) are generalists that rank frames by any
difference, weather and light included, so only their top tenth counts (their classes'
`evidence_from`); `alignment` (camera) counts from its 95th percentile and `exposure` from
its 97th, one-sided checks whose lower ranks mean nothing (a real camera's sky alone puts a
fifth of its daylight frames 20 grey levels from their pool's median). A fitted consensus
keeps the starts it was fitted with (`Consensus.starts_`), so a stored run scores new frames
as it scored its fit. A plain mean of all ranks lets one-sided
checks (`dark` knows nothing of fog) drag real anomalies down. By default the consensus
combines `soft`, `flat`, `exposure`, `alignment`, `background`, `lof` and `regions` (the
classes with `in_consensus`; setting `consensus_detectors`); the other detectors are computed
for side-by-side comparison: on the demo and its harder variants adding them lowered the
consensus (iforest, ecod, copod and hbos are global or per-dimension detectors on data whose
normal frames follow a daily cycle; knn, temporal and same_time repeat what lof and background
see, with more noise), and on a real webcam the one-sided quality checks dilute each other.
`regions` is `lof` per region of the view (its rarest region; the whole frame's `lof` ranking
for a model without regions); the rarity cause averages the two since 2026-12-05
(docs/PERFORMANCE.md, "The rarity cause by region of the view").

A rank counts only where the detector says its score is harm a person would see
(`Detector.evident`; `counted_ranks`): the own-reference checks (`soft`, `flat`, `exposure`)
have a floor in the image's own units, so the softest frames of a camera with no soft frames
(a sunny month's overcast afternoons) bring no evidence, while the top ranks of a camera with
a month of water on the lens still do.
Frames tied at a detector's lowest score (its "nothing seen": `alignment`'s 0 for a frame
that lines up) count as its lowest rank, not the top of their block, so a detector that sees
nothing on a camera brings no evidence there.

`Consensus` is fitted like a detector (on the fit's percentile ranks instead of a batch): `fit`
returns self, its scores of the fit are `decision_scores_`, and its threshold and percentiles
come from the same base as every detector's.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from pipeline.causes import CAUSES
from pipeline.detectors.base import DETECTORS, Scorer
from pipeline.detectors.batch import FrameBatch

CONSENSUS = "consensus"
# the evidence starts that differ from today's in a consensus fitted before it kept its own
FORMAT_3_STARTS = {"exposure": 0.95}


# Each rule takes (percentiles [frames x detectors], families, floor); `floor` bounds 1 - pct
# from below so the tail evidence of a top rank is finite and fits the number of frames ranked.
def _rule_mean(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmean(pct, axis=1)


def _rule_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    return np.nanmax(pct, axis=1)


def _rule_family_max(pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    """Average of maximum: mean rank within each family, then the highest family."""
    groups = [
        np.nanmean(pct[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
        for fam in dict.fromkeys(families)
    ]
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
    groups = [
        np.nanmean(evidence[:, [i for i, f in enumerate(families) if f == fam]], axis=1)
        for fam in dict.fromkeys(families)
    ]
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


def cause_scores(
    pcts: dict[str, np.ndarray],
    rule: str,
    n_reference: int | None = None,
    starts: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Each cause's score from its detectors' percentile ranks (key -> 0..1 per frame, NaN = no
    opinion): `rule` combines the detectors of one cause (`Detector.cause`); a cause none of
    whose detectors has an opinion on a frame gets NaN there.

    `n_reference` is how many frames the percentiles were ranked among (the fit): the top
    frame of n is 1 - 1/(n + 1) of the way up, not certain, so a detector's top rank among 13
    frames counts as far less evidence than among 100,000 (default: the frames given here).

    A detector's ranks below its class's `evidence_from` (or its value in `starts`: what a
    fitted consensus was fitted with) count as none: p becomes (p - start) / (1 - start),
    floored at 0. The generalists on the CNN
    embedding (embedding and time-lapse families: 0.9) rank frames by any difference, weather and
    light included, so only their top tenth says "junk"; below it their rank is noise that would
    drown a specialist's evidence (on the harder demo renders `lof` ranks a half-hidden person or
    drops on the lens at random).
    """
    if rule not in CONSENSUS_RULES:
        raise KeyError(f"unknown consensus rule {rule!r}; known: {', '.join(CONSENSUS_RULES)}")
    keys, pct, floor = _counted(pcts, n_reference, starts)
    out: dict[str, np.ndarray] = {}
    for cause in CAUSES:
        members = [i for i, k in enumerate(keys) if DETECTORS[k].cause == cause]
        if not members:
            continue
        part = pct[:, members]
        out[cause] = _combine(rule, part, [DETECTORS[keys[i]].family for i in members], floor)
        out[cause][~np.isfinite(part).any(axis=1)] = np.nan  # no opinion at all: not 0
    return out


def _combine(rule: str, pct: np.ndarray, families: list[str], floor: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(CONSENSUS_RULES[rule](pct, families, floor), dtype=float)


def evidence_starts(keys) -> dict[str, float]:
    """Each detector's evidence start (its class's `evidence_from`), as a consensus fitted now
    records it."""
    return {k: float(DETECTORS[k].evidence_from) for k in keys if k != CONSENSUS}


def _counted(
    pcts: dict[str, np.ndarray], n_reference: int | None, starts: dict[str, float] | None = None
) -> tuple[list[str], np.ndarray, float]:
    """The detectors' ranks as the consensus counts them: (keys, [frames x keys] ranks with
    each detector's evidence start applied (`starts`, else its class's `evidence_from`), the
    floor of 1 - rank)."""
    keys = [k for k in pcts if k != CONSENSUS]
    if not keys:
        raise ValueError("consensus needs at least one detector")
    pct = np.column_stack([pcts[k] for k in keys]).astype(float)
    starts = {**evidence_starts(keys), **(starts or {})}
    start = np.array([starts[k] for k in keys])
    pct = np.clip((pct - start) / (1 - start), 0, 1)  # NaN stays NaN
    return keys, pct, 1.0 / ((n_reference or len(pct)) + 1)


def _all_at_once(
    pcts: dict[str, np.ndarray],
    rule: str,
    n_reference: int | None,
    starts: dict[str, float] | None = None,
) -> np.ndarray:
    """`rule` over every detector at once: how a consensus fitted before causes were recorded
    scores (for `family_tail` the same sum of families, summed in the order it was then)."""
    keys, pct, floor = _counted(pcts, n_reference, starts)
    return _combine(rule, pct, [DETECTORS[k].family for k in keys], floor)


def tail_evidence(
    pcts: dict[str, np.ndarray], n_reference: int | None = None
) -> dict[str, np.ndarray]:
    """Each detector's tail evidence per frame, -log(1 - rank), as the consensus counts it
    (its class's `evidence_from` applied, 1 - rank floored at 1/(n_reference + 1)); NaN where a
    detector has no rank."""
    keys, pct, floor = _counted(pcts, n_reference)
    evidence = _evidence(pct, floor)
    return {k: evidence[:, i] for i, k in enumerate(keys)}


def extremity(pcts: dict[str, np.ndarray], n_reference: int | None = None) -> dict[str, np.ndarray]:
    """How far in its tail each detector ranks a frame, -log(1 - rank), where the consensus
    counts its rank (above its class's `evidence_from`) and 0 below; NaN where it has no rank.

    What names an incident's cause (`pipeline.incidents`): `tail_evidence` stretches a
    one-sided check's counted ranks over 0..1 so that its lower ranks weigh nothing in the sum,
    which also puts its top ranks below another detector's equal ones (`exposure`'s darkest
    frame in 200, rank 0.995, brings log(10) there and `flat`'s log(200)); compared as ranks, a
    black frame is as far in `exposure`'s tail as in `flat`'s."""
    keys = [k for k in pcts if k != CONSENSUS]
    pct = np.column_stack([pcts[k] for k in keys]).astype(float) if keys else np.empty((0, 0))
    start = np.array([DETECTORS[k].evidence_from for k in keys])
    floor = 1.0 / ((n_reference or len(pct)) + 1)
    out = np.where(pct > start, -np.log(np.clip(1 - pct, floor, 1)), 0.0)
    out[np.isnan(pct)] = np.nan
    return {k: out[:, i] for i, k in enumerate(keys)}


def counted_ranks(
    detectors: dict,
    scores: dict[str, np.ndarray],
    pcts: dict[str, np.ndarray],
    batch: FrameBatch,
) -> dict[str, np.ndarray]:
    """The detectors' ranks of the frames of `batch` (a `FrameBatch`) as the consensus counts
    them: a rank where the detector says its score shows harm a person would see
    (`Detector.evident`, which may look at the frames: `exposure` tells a veil from a
    washed-out frame by their brightness), 0 where it does not; NaN (no opinion) stays NaN.
    Keys: the detectors in both `detectors` and `pcts`.

    `pcts` are the run's percentile ranks (`Scorer.percentile`), in which the frames tied at a
    detector's lowest score (its "nothing seen") rank as the lowest fit frame: `alignment` on
    a dim indoor camera with no edges to line up scores every frame it can 0, and ranked as
    the top of their block each of those frames brought the most evidence there is while the
    darkest frames, which it cannot score (NaN), brought none; the camera cause then ranked
    the dark junk below every normal frame."""
    out = {}
    for key, det in detectors.items():
        if key not in pcts:
            continue
        pct = np.asarray(pcts[key], dtype=float)
        out[key] = np.where(det.evident(scores[key], batch) | ~np.isfinite(pct), pct, 0.0)
    return out


def sum_causes(by_cause: dict[str, np.ndarray], junk_causes) -> np.ndarray:
    """The consensus: the sum of the junk causes' scores (a cause without an opinion on a frame
    adds nothing to it)."""
    counted = [by_cause[c] for c in junk_causes if c in by_cause]
    if not counted:
        raise ValueError(
            f"none of the consensus detectors belongs to the junk causes "
            f"({', '.join(junk_causes)}); they belong to "
            f"{', '.join(by_cause) or 'no cause'}"
        )
    return np.nansum(np.column_stack(counted), axis=1)


def consensus_scores(
    pcts: dict[str, np.ndarray],
    rule: str,
    n_reference: int | None = None,
    junk_causes=tuple(CAUSES),
) -> np.ndarray:
    """The consensus of detectors' percentile ranks: `cause_scores`, summed over
    `junk_causes`."""
    return sum_causes(cause_scores(pcts, rule, n_reference), junk_causes)


#: A counted cause whose ranking of the daylight frames correlates with the quality cause's at
#: or below this (Spearman) ranks as junk frames the quality cause calls this camera's good
#: ones. Chosen on five cameras: Kat Kam's scene cause -0.33 (a sea-and-sky webcam whose clear
#: days, boats and traffic are what it is for); ranhados -0.09 (vans in front of the lens: its
#: scene *is* its junk), the demo and two harder renders 0.07 to 0.53 (docs/PERFORMANCE.md).
AT_ODDS = -0.2
MIN_AGREEMENT_FRAMES = 100  # fewer daylight frames: no correlation worth reporting


def cause_agreement(by_cause: dict[str, np.ndarray], daylight: np.ndarray) -> dict[str, float]:
    """Each cause's Spearman rank correlation with the quality cause over the `daylight`
    frames where both have a score (cause -> rho, to 3 decimals; none for the quality cause
    itself, for fewer than `MIN_AGREEMENT_FRAMES` such frames, or where one cause scores them
    all alike). Night is left out: there the quality cause ranks the dark, as it should, and
    every other cause follows it."""
    from scipy.stats import spearmanr

    quality = by_cause.get("quality")
    out: dict[str, float] = {}
    if quality is None:
        return out
    for cause, scores in by_cause.items():
        both = daylight & np.isfinite(quality) & np.isfinite(scores)
        if cause == "quality" or both.sum() < MIN_AGREEMENT_FRAMES:
            continue
        if np.ptp(quality[both]) == 0 or np.ptp(scores[both]) == 0:
            continue
        rho = float(spearmanr(quality[both], scores[both]).statistic)
        if np.isfinite(rho):
            out[cause] = round(rho, 3)
    return out


def causes_at_odds(agreement: dict[str, float], junk_causes) -> dict[str, float]:
    """The counted causes that rank frames against the quality cause (`AT_ODDS`)."""
    return {c: r for c, r in agreement.items() if c in junk_causes and r <= AT_ODDS}


def at_odds_advice(at_odds: dict[str, float], junk_causes) -> list[str]:
    """What `analyze` says of each cause at odds with the quality cause, and the choice of
    causes without them."""
    others = [c for c in junk_causes if c not in at_odds] or ["quality"]
    return [
        f"on this camera the {cause} cause ranks frames against the quality cause (Spearman "
        f"{rho:+.2f} over daylight frames): the frames it counts as junk are ones the quality "
        f"cause calls good (the dashboard's Gallery ranked by cause:{cause} shows them). Where "
        f"what changes in this view (boats, clouds, traffic, diggers) is not junk, count the "
        f"others: --junk-causes {','.join(others)}"
        for cause, rho in at_odds.items()
    ]


#: With `junk_causes` unset, the scene cause is left out of the consensus where it mostly says
#: what kind of day it is rather than what is in a frame: where the share of its daylight
#: ranks' spread that lies between days (`day_share`, the intraclass correlation ICC(1) of the
#: ranks by camera-clock day) is this or more. Chosen on the development cameras before the
#: held-out ones were looked at (docs/experiments/2026-12-05-kat-kam-default-gate.md, section
#: 9): Kat Kam 0.30 (its clear days and boats: left out), ranhados 0.19 (vans in front of the
#: lens: its scene is its junk), the demo and two harder renders 0.01-0.09.
DAY_SHARE_GATE = 0.25
MIN_DAY_SHARE_DAYS = 14  # days of at least MIN_FRAMES_A_DAY daylight frames; fewer: no gate
MIN_FRAMES_A_DAY = 3
#: The causes `day_share` may leave out when the user has not chosen: a person, a fox or a van
#: comes and goes within a day. Quality junk (a week of fog) and a moved camera last for days.
DAY_GATED = ("scene",)


def day_share(scores: np.ndarray, daylight: np.ndarray, day: np.ndarray) -> float | None:
    """How much of a cause's ranking of the `daylight` frames is the day rather than the frame:
    ICC(1) of the ranks grouped by `day` (an integer per frame, e.g. days since the epoch on
    the camera clock), over the days with at least `MIN_FRAMES_A_DAY` such frames; 0 where
    frames of a day rank no more alike than frames of different days, 1 where a day decides
    the rank. None for fewer than `MIN_DAY_SHARE_DAYS` such days or a cause that scores them
    all alike."""
    from scipy.stats import rankdata

    use = daylight & np.isfinite(scores)
    if not use.any():
        return None
    ranks = rankdata(scores[use]) / use.sum()
    _, group, sizes = np.unique(np.asarray(day)[use], return_inverse=True, return_counts=True)
    keep = sizes[group] >= MIN_FRAMES_A_DAY  # frames of the days that count
    n_days = int((sizes >= MIN_FRAMES_A_DAY).sum())
    if n_days < MIN_DAY_SHARE_DAYS:
        return None
    ranks = ranks[keep]
    group = np.cumsum(sizes >= MIN_FRAMES_A_DAY)[group[keep]] - 1  # 0 .. n_days - 1
    sizes = np.bincount(group).astype(float)
    n, grand = len(ranks), ranks.mean()
    means = np.bincount(group, weights=ranks) / sizes
    between = float((sizes * (means - grand) ** 2).sum() / (n_days - 1))
    within = float(((ranks - means[group]) ** 2).sum() / (n - n_days))
    k0 = (n - (sizes**2).sum() / n) / (n_days - 1)  # the mean day's size, for unequal days
    if between + (k0 - 1) * within <= 0:
        return None
    return round((between - within) / (between + (k0 - 1) * within), 3)


def day_gated(by_cause: dict[str, np.ndarray], daylight: np.ndarray, day: np.ndarray) -> dict:
    """cause -> `day_share` for each cause `DAY_GATED` that has scores (None where too few
    days tell)."""
    return {c: day_share(by_cause[c], daylight, day) for c in DAY_GATED if c in by_cause}


def default_causes(shares: dict[str, float | None], scored) -> list[str]:
    """The causes counted when the user has not chosen: every cause with scores (`scored`), less
    those whose `day_share` is `DAY_SHARE_GATE` or more, as long as one other is left."""
    causes = [c for c in CAUSES if c in scored]
    out = [c for c in causes if shares.get(c) is None or shares[c] < DAY_SHARE_GATE]
    return out or causes


def day_gate_note(shares: dict[str, float | None], counted) -> list[str]:
    """What `analyze` says of each cause it left out by `default_causes`."""
    return [
        f"the {cause} cause is left out of the consensus: on this camera it mostly says what "
        f"kind of day it is (clear or grey, the sun, the traffic), not what is in a frame: "
        f"{share:.0%} of its ranking of the daylight frames lies between days (from "
        f"{DAY_SHARE_GATE:.0%} it is left out unless named). To count it: --junk-causes "
        f"{','.join([*counted, cause])}"
        for cause, share in shares.items()
        if share is not None and cause not in counted
    ]


class CauseScore(Scorer):
    """One cause's score (`cause_scores`) as the consensus fitted it: its threshold and
    percentile ranks among the fit's frames. Stored as detector `cause:<cause>`."""

    family = "cause"

    def __init__(self, cause: str = "quality", contamination: float = 0.05):
        self.cause = cause
        self.contamination = contamination

    def fit(self, scores: np.ndarray) -> "CauseScore":
        self._check_contamination()
        self.decision_scores_ = np.asarray(scores, dtype=float)
        self._process_decision_scores()
        return self

    def facts(self) -> dict[str, Any]:  # type: ignore[override]
        """What a run records of it (as of a detector), for the dashboard."""
        return {
            "summary": f"{self.cause} cause: {CAUSES[self.cause]}",
            "family": self.family,
            "order": 1 + list(CAUSES).index(self.cause),
            "cause": self.cause,
        }


class Consensus(Scorer):
    """The fitted consensus of detectors `keys` by `rule`: fitted on the fit's percentile ranks
    (detector key -> 0..1 per frame), it scores each cause (`causes_`, one `CauseScore` per
    cause that has detectors) and sums the `junk_causes` (None: all of them), with the same
    floor for new ranks."""

    key = CONSENSUS
    summary = (
        "the causes the user counts as junk, each from its detectors' evidence (see "
        "pipeline/detectors/consensus.py)"
    )
    family = CONSENSUS
    order = 0
    format_version = 4
    plain_cause = "unusual"  # incidents name the causes of the detectors it combines
    # the run's percentile ranks (and so the ranks it was fitted on) rank the frames tied at a
    # scorer's lowest score as the lowest (`Scorer.percentile`)
    lowest_ties_ = True

    def __init__(
        self,
        keys: list[str] | None = None,
        rule: str = "family_tail",
        contamination: float = 0.05,
        junk_causes: list[str] | None = None,
    ):
        self.keys = keys
        self.rule = rule
        self.contamination = contamination
        self.junk_causes = junk_causes

    def fit(self, pcts: dict[str, np.ndarray]) -> "Consensus":
        self._check_contamination()
        self.n_reference_ = len(next(iter(pcts.values()))) if pcts else None
        self.starts_ = evidence_starts(self.keys)
        by_cause = self._causes(pcts)
        self.causes_ = {
            cause: CauseScore(cause, self.contamination).fit(scores)
            for cause, scores in by_cause.items()
        }
        self.decision_scores_ = sum_causes(by_cause, self.junk_causes or list(CAUSES))
        self._process_decision_scores()
        return self

    def count(self, junk_causes: list[str]) -> "Consensus":
        """Count other causes of the same fit: the sum of `junk_causes`' fitted scores."""
        self.junk_causes = list(junk_causes)
        by_cause = {c: s.decision_scores_ for c, s in self.causes_.items()}
        self.decision_scores_ = sum_causes(by_cause, self.junk_causes)
        self._process_decision_scores()
        return self

    def _causes(self, pcts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return cause_scores(
            {k: pcts[k] for k in self.keys}, self.rule, self.n_reference_, self.starts_
        )

    def score_causes(self, pcts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(each fitted cause's scores, the consensus) of new percentile ranks."""
        if not self.causes_:  # fitted before causes were recorded: its rule over them all
            return {}, _all_at_once(
                {k: pcts[k] for k in self.keys}, self.rule, self.n_reference_, self.starts_
            )
        by_cause = self._causes(pcts)
        return (
            {c: by_cause[c] for c in self.causes_},
            sum_causes(by_cause, self.junk_causes or list(CAUSES)),
        )

    def decision_function(self, pcts: dict[str, np.ndarray]) -> np.ndarray:
        return self.score_causes(pcts)[1]

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0 (a dataclass then) fitted before n_reference_ used a fixed floor of 1e-4;
        # formats before 2 summed every cause (their rule over all detectors: the same sum of
        # families) and stored no cause scores; before 3 a detector's frames tied at its lowest
        # score ranked as the highest of their block (`Scorer.percentile`); before 4 the starts
        # were not kept, and `exposure` counted from its 95th percentile
        if version < 1:
            state = {**state, "n_reference_": state.get("n_reference_") or 9999}
        if version < 4:
            keys = [k for k in state.get("keys") or [] if k in DETECTORS]
            old = {k: v for k, v in FORMAT_3_STARTS.items() if k in keys}
            state = {**state, "starts_": {**evidence_starts(keys), **old}}
        return {"junk_causes": None, "causes_": {}, "lowest_ties_": version >= 3, **state}
