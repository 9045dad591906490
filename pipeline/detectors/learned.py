"""`learned`: the consensus re-weighed by what the user's own junk/keep reviews teach.

What counts as junk depends on the camera and its owner (a digger is junk in a garden, not on
a building site), and the consensus counts its detectors alike on every camera. Once the user
has reviewed frames in the dashboard, the next `analyze` learns from them: a logistic
regression (scikit-learn, classes weighted to balance) on each reviewed frame's percentile
ranks under every detector of the run (a detector without a score for a frame: its middle rank
0.5) says how far each detector's ranking agrees with this user on this camera. A frame's
score is a mix of its rank under that model and its rank under the consensus (both 0..1).
The model's share (`weight_`, one of `MODEL_WEIGHTS`) is chosen on the reviews themselves:
each review is ranked by a model fitted without it (stratified folds), each share's mix is
scored by its ROC-AUC over the reviews, and the smallest share within one standard error of
the best is taken (the "one standard error" rule, Hastie, Tibshirani & Friedman, *The
Elements of Statistical Learning* 7.10; the AUC's error by Hanley & McNeil 1982). So reviews
that agree with the consensus leave it as it is (share 0: `learned` ranks as the consensus
does), and reviews that clearly teach something it does not know move it far; a few lucky
folds do not.

Measured on seven real cameras with their labels, each a user who reviews 20 to 160 frames at
random (docs/PERFORMANCE.md, "Learning from the user's reviews"): where the consensus is weak
on a camera (a yard whose junk is vans, a street, a fog camera) the learned ranking of the
frames not reviewed is far better; where it is already good (Kat Kam) it stays as good.

It needs at least `learn_min_reviews` reviews of each verdict among the run's frames, and is
fitted like a detector (on the fit's percentile ranks instead of a batch): `fit` returns self,
its scores of the fit are `decision_scores_`, and its threshold and percentiles come from the
same base as every detector's, so `score-new` and `serve` score a new frame through the same
model. `cross_validated_` keeps the check the share was chosen by (each share's ROC-AUC over
the reviews, and the consensus's alone): what the run's notes tell the user.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.detectors.base import Scorer

LEARNED = "learned"
MIDDLE_RANK = 0.5  # the feature of a detector that has no score for a frame
MAX_FOLDS = 5
DECIDE_ROWS = 2**18  # frames per slice a model scores at once: its float64 copy stays ~50 MB
# the model's shares of the mix cross-validation chooses from (0: the consensus as it is)
MODEL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


class Learned(Scorer):
    """A model of the user's reviews over detectors `keys`' percentile ranks, averaged with the
    consensus's rank (both 0..1)."""

    key = LEARNED
    summary = (
        "the consensus re-weighed by your junk/keep reviews: the mean of a frame's consensus "
        "rank and its rank under a model of the reviews (see pipeline/detectors/learned.py)"
    )
    family = LEARNED
    order = 0  # beside the consensus in the dashboard's lists
    plain_cause = "unusual"
    format_version = 1

    def __init__(self, keys: list[str] | None = None, C: float = 1.0, contamination: float = 0.05):
        self.keys = keys
        self.C = C
        self.contamination = contamination

    def fit(
        self,
        pcts: dict[str, np.ndarray],
        consensus_pct: np.ndarray,
        reviewed: np.ndarray,
        junk: np.ndarray,
    ) -> "Learned":
        """Fit on the fit's percentile ranks (`pcts`: detector key -> 0..1 per frame; the
        consensus's in `consensus_pct`) and the reviews: `reviewed` (positions of the reviewed
        frames) and `junk` (each one's verdict is junk; at least two of each verdict)."""
        from sklearn.linear_model import LogisticRegression

        self._check_contamination()
        reviewed = np.asarray(reviewed, dtype=np.int64)
        junk = np.asarray(junk, dtype=bool)
        if min(junk.sum(), (~junk).sum()) < 2:
            raise ValueError("learning from reviews needs at least two reviews of each verdict")
        x = self._features(pcts)
        consensus_pct = np.nan_to_num(np.asarray(consensus_pct, dtype=float), nan=MIDDLE_RANK)
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000)
        self.weight_, self.cross_validated_ = self._choose_weight(x, reviewed, junk, consensus_pct)
        self.model_.fit(x[reviewed], junk)
        model_scores = _decide(self.model_, x)
        self.model_reference_ = np.sort(model_scores)
        self.decision_scores_ = self._mean_rank(model_scores, consensus_pct)
        self._process_decision_scores()
        self.n_junk_, self.n_keep_ = int(junk.sum()), int((~junk).sum())
        self.weights_ = dict(zip(self.keys, self.model_.coef_[0].round(4).tolist()))
        return self

    def record(self) -> dict[str, Any]:
        """What the run's parameters keep of it: the reviews it learned from, each detector's
        weight in the model (on its percentile rank) and the cross-validated check."""
        return {
            "n_junk": self.n_junk_,
            "n_keep": self.n_keep_,
            "weights": self.weights_,
            "model_weight": self.weight_,
            "cross_validated": self.cross_validated_,
        }

    def score(self, pcts: dict[str, np.ndarray], consensus_pct: np.ndarray) -> np.ndarray:
        """Scores of new frames from their percentile ranks among the fit's scores."""
        return self._mean_rank(_decide(self.model_, self._features(pcts)), consensus_pct)

    def _features(self, pcts: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(pcts.values())))
        x = np.full((n, len(self.keys)), MIDDLE_RANK, dtype=np.float32)  # 95 MB: 1M x 25
        for j, key in enumerate(self.keys):
            if key in pcts:
                ranks = np.asarray(pcts[key])
                x[:, j] = np.where(np.isnan(ranks), MIDDLE_RANK, ranks)
        return x

    def _mean_rank(self, model_scores: np.ndarray, consensus_pct: np.ndarray) -> np.ndarray:
        model_pct = np.searchsorted(self.model_reference_, model_scores, side="right") / len(
            self.model_reference_
        )
        consensus_pct = np.nan_to_num(np.asarray(consensus_pct, dtype=float), nan=MIDDLE_RANK)
        return self.weight_ * model_pct + (1 - self.weight_) * consensus_pct

    def _choose_weight(
        self, x: np.ndarray, reviewed: np.ndarray, junk: np.ndarray, consensus_pct: np.ndarray
    ) -> tuple[float, dict[str, Any]]:
        """(the model's share, the check the run keeps): each review is ranked by a model
        fitted without its fold (stratified folds, as many as the rarer verdict allows, at
        most 5; ranked among every fit frame); the smallest share whose mix with the
        consensus ranks the reviews within one standard error of the best mix's ROC-AUC."""
        from sklearn.base import clone
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        folds = min(MAX_FOLDS, int(junk.sum()), int((~junk).sum()))
        held_out = np.empty(len(junk))
        split = StratifiedKFold(folds, shuffle=True, random_state=0)
        for train, test in split.split(reviewed, junk):
            model = clone(self.model_).fit(x[reviewed[train]], junk[train])
            reference = np.sort(_decide(model, x))
            ranks = np.searchsorted(reference, model.decision_function(x[reviewed[test]]), "right")
            held_out[test] = ranks / len(reference)
        of_reviews = consensus_pct[reviewed]
        by_weight = {
            w: round(float(roc_auc_score(junk, w * held_out + (1 - w) * of_reviews)), 4)
            for w in MODEL_WEIGHTS
        }
        best = max(by_weight.values())
        margin = auc_standard_error(best, int(junk.sum()), int((~junk).sum()))
        weight = min(w for w, auc in by_weight.items() if auc >= best - margin)
        return weight, {
            "folds": folds,
            "roc_auc_by_weight": {str(w): auc for w, auc in by_weight.items()},
            "roc_auc": by_weight[weight],
            "standard_error": round(margin, 4),
            "roc_auc_consensus": round(float(roc_auc_score(junk, of_reviews)), 4),
        }


def _decide(model, x: np.ndarray) -> np.ndarray:
    """`model.decision_function(x)` a slice of frames at a time: scikit-learn scores float32
    ranks in float64, a copy of the whole matrix (570 MB at 3M frames) taken at once."""
    return np.concatenate(
        [model.decision_function(x[i : i + DECIDE_ROWS]) for i in range(0, len(x), DECIDE_ROWS)]
    )


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """The standard error of a ROC-AUC over `n_positive` and `n_negative` frames (Hanley &
    McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)
    ) / (n_positive * n_negative)
    return float(np.sqrt(max(variance, 0.0)))
