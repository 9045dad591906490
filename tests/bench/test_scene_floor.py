"""bench/scene_floor.py on the demo store: the stand-out per kind of junk, and a floor above
every frame's stand-out silences the scene cause."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _report(demo_store, *options: str) -> dict:
    """bench/scene_floor.py's JSON for the demo store at the demo's place."""
    from pipeline.demo.timeline import DEMO_PLACE

    cmd = [sys.executable, str(REPO / "bench" / "scene_floor.py"), str(demo_store)]
    cmd += ["--lat", str(DEMO_PLACE.lat), "--lon", str(DEMO_PLACE.lon), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_scene_floor_reports_stand_out_and_a_floor_silences_the_scene(demo_store):
    report = _report(demo_store, "--floors", "1000000", "--quantiles", "0.5")
    assert report["frames"] > 100
    normal = report["stand_out"]["normal"]
    assert normal["n"] > 20 and normal["p05"] <= normal["median"] <= normal["p95"]
    assert set(report["floors"]) == {"none", "1e+06", "q0.5"}
    plain, silenced = report["floors"]["none"], report["floors"]["1e+06"]
    assert plain["scene"]["auc"] > 0.5  # the scene cause sees the demo's junk
    assert silenced["scene"]["auc"] == 0.5  # no frame stands out that far: no scene evidence
    assert 0 < report["floors"]["q0.5"]["floor"] < 1000000  # the median of daylight frames


def test_evidence_starts_at_todays_values_are_the_runs_own_consensus(demo_store):
    """`--starts`: the consensus of all four causes with `background` counted from rank 0 and
    `lof` from 0.9 (the classes' own starts) is the run's stored consensus; a later start for
    both changes it."""
    starts = _report(demo_store, "--floors", "", "--quantiles", "", "--starts", "0,0.9,0.99")[
        "starts"
    ]
    assert starts["with_lof"] is True
    assert len(starts) == 1 + 9

    sys.path.insert(0, str(REPO / "bench"))
    import numpy as np
    import scene_floor

    import store

    with store.connect(demo_store, read_only=True) as con:
        ids = np.array([r[0] for r in con.sql("SELECT frame_id FROM frames ORDER BY 1").fetchall()])
    table = scene_floor.truth(demo_store, ids, None, None).set_index("frame_id").loc[ids]
    kinds = table["kind"].to_numpy(object)
    measured = (table["daylight"] == "day").to_numpy() & table["measured"].to_numpy(bool)
    stored = scene_floor.stored_ranks(demo_store, ids, "consensus")
    own = scene_floor.measure(kinds[measured] != "normal", kinds[measured], stored[measured])
    assert starts["background 0, lof 0.9"] == own
    assert starts["background 0.99, lof 0.99"] != own
