"""bench/scene_floor.py on the demo store: the stand-out per kind of junk, and a floor above
every frame's stand-out silences the scene cause."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_scene_floor_reports_stand_out_and_a_floor_silences_the_scene(demo_store):
    from pipeline.demo.timeline import DEMO_PLACE

    cmd = [
        sys.executable,
        str(REPO / "bench" / "scene_floor.py"),
        str(demo_store),
        "--lat",
        str(DEMO_PLACE.lat),
        "--lon",
        str(DEMO_PLACE.lon),
        "--floors",
        "1000000",
        "--quantiles",
        "0.5",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["frames"] > 100
    normal = report["stand_out"]["normal"]
    assert normal["n"] > 20 and normal["p05"] <= normal["median"] <= normal["p95"]
    assert set(report["floors"]) == {"none", "1e+06", "q0.5"}
    plain, silenced = report["floors"]["none"], report["floors"]["1e+06"]
    assert plain["scene"]["auc"] > 0.5  # the scene cause sees the demo's junk
    assert silenced["scene"]["auc"] == 0.5  # no frame stands out that far: no scene evidence
    assert 0 < report["floors"]["q0.5"]["floor"] < 1000000  # the median of daylight frames
