"""`learned`: the consensus re-weighed by what the user's own junk/keep reviews teach.

What counts as junk depends on the camera and its owner (a digger is junk in a garden, not on
a building site), and the consensus counts its detectors alike on every camera. Once the user
has reviewed frames in the dashboard, the next `analyze` learns from them: a logistic
regression (scikit-learn, classes weighted to balance) on what the run knows of each reviewed
frame, its percentile rank under every detector (a detector without a score for a frame: its
middle rank 0.5) and its place in the run's PCA space of the embeddings (each dimension mapped
to the fit's quantile it falls at: scikit-learn's `QuantileTransformer`, fitted on a sample of
the run's frames), says what this user calls junk on this camera: which detectors agree with
them, and what the junk they marked looks like (a yard's vans, a street's drops) where no
detector ranks it high. A frame's score is a mix of its rank under that model and its rank
under the consensus (both 0..1).
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
fitted like a detector (on the fit's percentile ranks and PCA space instead of a batch; every
frame's inputs are built a slice at a time, never as one matrix): `fit` returns self,
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
DECIDE_ROWS = 2**16  # frames a model scores at once (their inputs: 23 MB in float32 at 89)
VIEW_QUANTILES = 1000  # the quantiles each view dimension is mapped through (QuantileTransformer)
VIEW_SAMPLE = 100_000  # frames those quantiles are found on (a seeded sample)
REFERENCE_FRAMES = 100_000  # frames cross-validation ranks the held-out reviews among
# the model's shares of the mix cross-validation chooses from (0: the consensus as it is)
MODEL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


class Learned(Scorer):
    """A model of the user's reviews over detectors `keys`' percentile ranks (and the run's PCA
    space), mixed with the consensus's rank (both 0..1) by the share the reviews choose."""

    key = LEARNED
    summary = (
        "the consensus re-weighed by your junk/keep reviews: a frame's consensus rank mixed "
        "with its rank under a model of the reviews (see pipeline/detectors/learned.py)"
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
        view: np.ndarray | None = None,
    ) -> "Learned":
        """Fit on the fit's percentile ranks (`pcts`: detector key -> 0..1 per frame; the
        consensus's in `consensus_pct`), the frames in the run's PCA space (`view`, frames x
        dims; None: the detectors' ranks alone) and the reviews: `reviewed` (positions of the
        reviewed frames) and `junk` (each one's verdict is junk; at least two of each)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import QuantileTransformer

        self._check_contamination()
        reviewed = np.asarray(reviewed, dtype=np.int64)
        junk = np.asarray(junk, dtype=bool)
        if min(junk.sum(), (~junk).sum()) < 2:
            raise ValueError("learning from reviews needs at least two reviews of each verdict")
        n = len(consensus_pct)
        self.view_ = None
        if view is not None and view.shape[1]:
            self.view_ = QuantileTransformer(
                n_quantiles=min(VIEW_QUANTILES, n), subsample=VIEW_SAMPLE, random_state=0
            ).fit(view)
        consensus_pct = np.nan_to_num(np.asarray(consensus_pct, dtype=float), nan=MIDDLE_RANK)
        frames = Frames(pcts, view)
        x_reviewed = self._features(frames, reviewed)
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000)
        self.weight_, self.cross_validated_ = self._choose_weight(
            frames, x_reviewed, junk, consensus_pct[reviewed]
        )
        self.model_.fit(x_reviewed, junk)
        # share 0: the consensus as it is, and no frame need be scored by the model
        model_scores = self._decide(self.model_, frames) if self.weight_ else None
        self.model_reference_ = None if model_scores is None else np.sort(model_scores)
        self.decision_scores_ = self._mix(model_scores, consensus_pct)
        self._process_decision_scores()
        self.n_junk_, self.n_keep_ = int(junk.sum()), int((~junk).sum())
        coef = self.model_.coef_[0]
        self.weights_ = dict(zip(self.keys, coef[: len(self.keys)].round(4).tolist()))
        return self

    def record(self) -> dict[str, Any]:
        """What the run's parameters keep of it: the reviews it learned from, each detector's
        weight in the model (on its percentile rank), how many of the view's dimensions it
        read, its share and the cross-validated check."""
        return {
            "n_junk": self.n_junk_,
            "n_keep": self.n_keep_,
            "weights": self.weights_,
            "view_dims": 0 if self.view_ is None else int(self.view_.n_features_in_),
            "model_weight": self.weight_,
            "cross_validated": self.cross_validated_,
        }

    def score(
        self,
        pcts: dict[str, np.ndarray],
        consensus_pct: np.ndarray,
        view: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores of new frames from their percentile ranks among the fit's scores and their
        place in the run's PCA space (`view`; needed when the fit had one)."""
        model_scores = self._decide(self.model_, Frames(pcts, view)) if self.weight_ else None
        return self._mix(model_scores, consensus_pct)

    def _features(self, frames: "Frames", rows) -> np.ndarray:
        """The model's inputs for `rows` (a slice or positions) of `frames`: each detector's
        rank (a detector without one: 0.5), then each of the view's dimensions as the fit's
        quantile it falls at (0..1)."""
        n = len(range(frames.n)[rows]) if isinstance(rows, slice) else len(rows)
        x = np.full((n, len(self.keys)), MIDDLE_RANK, dtype=np.float32)
        for j, key in enumerate(self.keys):
            if key in frames.pcts:
                ranks = np.asarray(frames.pcts[key])[rows]
                x[:, j] = np.where(np.isnan(ranks), MIDDLE_RANK, ranks)
        if self.view_ is None:
            return x
        if frames.view is None:
            raise ValueError("this learned model reads the run's PCA space: pass the frames'")
        place = self.view_.transform(np.asarray(frames.view[rows], dtype=np.float64))
        return np.hstack([x, place.astype(np.float32)])

    def _decide(self, model, frames: "Frames") -> np.ndarray:
        """`model.decision_function` of every frame, a slice at a time (the inputs of 3M
        frames with 64 view dimensions would be 1 GB at once)."""
        return np.concatenate(
            [
                model.decision_function(self._features(frames, slice(i, i + DECIDE_ROWS)))
                for i in range(0, frames.n, DECIDE_ROWS)
            ]
        )

    def _mix(self, model_scores: np.ndarray | None, consensus_pct: np.ndarray) -> np.ndarray:
        """The model's share of its scores' ranks among the fit's, and the rest the
        consensus's rank (`model_scores` None: share 0)."""
        consensus_pct = np.nan_to_num(np.asarray(consensus_pct, dtype=float), nan=MIDDLE_RANK)
        if model_scores is None:
            return consensus_pct
        reference = self.model_reference_
        model_pct = np.searchsorted(reference, model_scores, side="right") / len(reference)
        return self.weight_ * model_pct + (1 - self.weight_) * consensus_pct

    def _choose_weight(
        self, frames: "Frames", x: np.ndarray, junk: np.ndarray, consensus_pct: np.ndarray
    ) -> tuple[float, dict[str, Any]]:
        """(the model's share, the check the run keeps): each review (`x`, its inputs; its
        consensus rank in `consensus_pct`) is ranked by a model fitted without its fold
        (stratified folds, as many as the rarer verdict allows, at most 5; ranked among a
        seeded sample of at most `REFERENCE_FRAMES` fit frames); the smallest share whose mix
        with the consensus ranks the reviews within one standard error of the best mix's
        ROC-AUC."""
        from sklearn.base import clone
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        rng = np.random.default_rng(0)
        sample = np.arange(frames.n)
        if frames.n > REFERENCE_FRAMES:
            sample = np.sort(rng.choice(frames.n, REFERENCE_FRAMES, replace=False))
        x_sample = self._features(frames, sample)
        folds = min(MAX_FOLDS, int(junk.sum()), int((~junk).sum()))
        held_out = np.empty(len(junk))
        split = StratifiedKFold(folds, shuffle=True, random_state=0)
        for train, test in split.split(x, junk):
            model = clone(self.model_).fit(x[train], junk[train])
            reference = np.sort(model.decision_function(x_sample))
            ranks = np.searchsorted(reference, model.decision_function(x[test]), "right")
            held_out[test] = ranks / len(reference)
        by_weight = {
            w: round(float(roc_auc_score(junk, w * held_out + (1 - w) * consensus_pct)), 4)
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
            "roc_auc_consensus": round(float(roc_auc_score(junk, consensus_pct)), 4),
        }


class Frames:
    """What `Learned` reads of a set of frames: each detector's percentile ranks (key -> 0..1
    per frame) and their place in the run's PCA space (frames x dims, or None)."""

    def __init__(self, pcts: dict[str, np.ndarray], view: np.ndarray | None):
        self.pcts = pcts
        self.view = view
        self.n = len(next(iter(pcts.values()))) if pcts else len(view)


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """The standard error of a ROC-AUC over `n_positive` and `n_negative` frames (Hanley &
    McNeil 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)
    ) / (n_positive * n_negative)
    return float(np.sqrt(max(variance, 0.0)))
