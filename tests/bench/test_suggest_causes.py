"""bench/suggest_causes.py on the demo store's ground truth: the reviewed frames are the ones
asked for, the run's own consensus is measured over the daylight frames left unreviewed, and
reviews that agree with the run's causes change nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from sklearn.metrics import roc_auc_score

import store
from tests.conftest import REPO


def test_suggest_causes_bench_on_a_renders_ground_truth(demo_store):
    out = subprocess.run(
        [
            sys.executable,
            "bench/suggest_causes.py",
            str(demo_store),
            "--truth",
            "--model",
            "pixels",
            "--order",
            "top",
            "--reviews",
            "15,30",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(out.stdout)
    assert got["own"] == ["quality", "camera", "scene", "rarity"] == got["causes"]
    with store.connect(demo_store, read_only=True) as con:
        day = con.execute(
            "SELECT g.is_anomaly, o.score FROM ground_truth g JOIN frames f USING (frame_id) "
            "JOIN outlier_scores o ON o.frame_id = g.frame_id AND o.detector = 'consensus' "
            "AND o.run_id = (SELECT run_id FROM latest_run) WHERE f.daylight = 'day' "
            "ORDER BY o.score DESC, g.frame_id"
        ).df()
    assert got["frames"] == len(day)
    for run, k in zip(got["runs"], (15, 30)):
        assert run["reviews"] == k and run["junk"] + run["keep"] == k
        assert run["junk"] == int(day["is_anomaly"].head(k).sum())
        rest = day.iloc[k:]
        assert run["own"][0] == round(roc_auc_score(rest["is_anomaly"], rest["score"]), 3)
        if min(run["junk"], run["keep"]) < 5:  # too few of one verdict: no suggestion
            assert run["suggested"] is None
        else:  # the reviews agree with the demo's causes: nothing changes
            assert run["suggested"] == got["own"] and run["after"] == run["own"]
    assert [r["suggested"] is None for r in got["runs"]] == [True, False]
