"""Writes `fitted_run_unversioned.pkl.gz` and `fitted_run_unversioned_scores.csv.gz`: a fitted run
pickled by the code of commit 636c4fa (before fitted states carried a format version, and
before the detectors became a package), and the scores that code gave the frames it was fitted
on. `tests/pipeline/test_fitted.py` loads it with today's code and checks the scores.

It only runs against that commit's code (it imports `pipeline.background`):
    git archive 636c4fa | tar -x -C /tmp/old && cd /tmp/old && \
        .venv/bin/python -m tests.data.make_unversioned_fitted

The frames are `tests.pipeline.test_detectors._batch()`: five days of a synthetic daily cycle
with planted outliers and tiny images. The background detector is fitted at a 32-pixel grid
(the default 128 would make a 1 MB file) on every registered detector's defaults otherwise.
"""

import gzip
from pathlib import Path

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from pipeline.analyze import FittedRun, _pickle, library_versions
from pipeline.detectors import CONSENSUS, DETECTORS, Consensus, NeighborIndex, make_detector
from pipeline.settings import Settings
from tests.pipeline.test_detectors import _batch

HERE = Path(__file__).resolve().parent


def main() -> None:
    batch = _batch()
    detectors = {key: make_detector(key) for key in DETECTORS}
    detectors["background"].set_params(width=24)  # small: the file stays small
    detectors["iforest"].set_params(n_estimators=10)
    index = NeighborIndex().fit(batch.z, batch.frame_ids)
    index.attach(batch, 20)
    pcts = {}
    for key, det in detectors.items():
        det.fit(batch)
        pcts[key] = det.percentile(det.decision_scores_)
    consensus = Consensus(Settings().consensus_detectors, "family_tail", 0.05)
    consensus.fit(pcts)
    scaler = StandardScaler().fit(batch.z)
    pca = PCA(4, random_state=0).fit(scaler.transform(batch.z))
    kmeans = KMeans(2, n_init=1, random_state=0).fit(batch.z)
    fitted = FittedRun(
        run_id=1,
        model="synthetic",
        scaler=scaler,
        pca=pca,
        n_dims=4,
        index=index,
        detectors=detectors,
        consensus=consensus,
        clusterer=kmeans,
        cluster_of_fit=kmeans.labels_,
        too_far_distance=1.0,
        versions=library_versions(),
    )
    artifact = _pickle(fitted)
    (HERE / "fitted_run_unversioned.pkl.gz").write_bytes(gzip.compress(artifact, mtime=0))

    # the scores `score-new` gave these frames with that code
    again = _batch()
    fitted.index.attach(again, 20)
    table = {"frame_id": again.frame_ids}
    scored = {}
    for key, det in fitted.detectors.items():
        scored[key] = det.decision_function(again)
        table[f"{key}:score"] = scored[key]
        table[f"{key}:score_pct"] = det.percentile(scored[key])
    pct_of = {key: table[f"{key}:score_pct"] for key in fitted.detectors}
    table[f"{CONSENSUS}:score"] = fitted.consensus.score(pct_of)
    table[f"{CONSENSUS}:score_pct"] = fitted.consensus.percentile(table[f"{CONSENSUS}:score"])
    pd.DataFrame(table).to_csv(
        HERE / "fitted_run_unversioned_scores.csv.gz",
        index=False,
        float_format="%.17g",
        compression={"method": "gzip", "mtime": 0},
    )
    print(
        f"{len(artifact)} bytes pickled; "
        f"{(HERE / 'fitted_run_unversioned.pkl.gz').stat().st_size} gzipped"
    )


if __name__ == "__main__":
    main()
