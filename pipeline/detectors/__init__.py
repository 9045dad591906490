"""Outlier detectors: one registry whose keys are the same in settings, CLI, store and dashboard.

Every detector scores frames with *higher = more abnormal*. One module per family, each
registering its detectors with `@register` (importing this package imports them all, in the
order below, which is the registry's order and that of the default `detectors` setting):

- `base`: the registry (`DETECTORS`, `register`, `make_detector`) and the base classes
  (`Scorer`: facts, threshold, percentiles; `Detector`: fit on a `FrameBatch`);
- `batch`: `FrameBatch`, the frames as detectors see them, and shared time helpers;
- `embedding`: `iforest`, `lof`, `knn`, `ecod`, `copod`, `hbos` on the run's PCA space;
- `timelapse`: `temporal` and `same_time`, compared with frames near in time or at the same
  time of day on other days;
- `own`: `soft`, `flat`, `exposure`, image quality against the camera's own good frames under
  the same sun;
- `camera`: `alignment`, whether the view still lines up (a moved, knocked or zoomed camera);
- `background` (a sub-package): the fixed camera's learned background;
- `quality`: `dark`, `overexposed`, `blurry`, `low_information`, `haze` from the frame
  statistics (side by side, out of the default consensus);
- `consensus`: `Consensus`, each cause's score from its detectors and their sum over the causes
  the user counts as junk (not in the registry: it is fitted on the detectors' ranks, not on
  frames, and is always added);
- `learned`: `Learned`, the consensus re-weighed by a model of the user's junk/keep reviews
  (not in the registry either: fitted on the detectors' ranks and the reviews, added when
  there are enough of them).

A frame that was in the fit gets exactly the score it got in the fit (neighbour searches
exclude the frame itself by frame_id), so `score-new` agrees with the run.

Adding a detector is a class in its family's module, its facts as class attributes (see
`base`), and `@register`; the settings, analyze, the consensus, the dashboard and the contract
tests read the registry, so nothing else is edited.
"""

# isort: off
# Importing a family registers its detectors; the order of these imports is the registry's
# order, and so the order of the default `detectors` and `consensus_detectors` settings.
from pipeline.detectors import embedding  # noqa: F401
from pipeline.detectors import timelapse  # noqa: F401
from pipeline.detectors import own  # noqa: F401
from pipeline.detectors import camera  # noqa: F401
from pipeline.detectors import background  # noqa: F401
from pipeline.detectors import quality  # noqa: F401

# isort: on
from pipeline.detectors.base import (
    DETECTORS,
    NEEDS,
    PLAIN_CAUSES,
    Detector,
    Scorer,
    default_consensus,
    default_detectors,
    make_detector,
    register,
)
from pipeline.detectors.batch import FrameBatch
from pipeline.detectors.consensus import (
    CONSENSUS,
    CONSENSUS_RULES,
    CauseScore,
    Consensus,
    at_odds_advice,
    cause_agreement,
    cause_scores,
    causes_at_odds,
    consensus_scores,
    counted_ranks,
)

__all__ = [
    "CONSENSUS",
    "CONSENSUS_RULES",
    "CauseScore",
    "DETECTORS",
    "NEEDS",
    "PLAIN_CAUSES",
    "Consensus",
    "at_odds_advice",
    "cause_agreement",
    "causes_at_odds",
    "counted_ranks",
    "Detector",
    "FrameBatch",
    "Scorer",
    "cause_scores",
    "consensus_scores",
    "default_consensus",
    "default_detectors",
    "make_detector",
    "register",
]
