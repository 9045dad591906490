"""bench/incident_names.py on the demo store: each incident of the latest run gets the kind of
most of its flagged frames, and the names are counted per kind."""

from __future__ import annotations

import json
import subprocess
import sys

import store
from tests.conftest import REPO


def _report(db, *options: str) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "incident_names.py"), str(db), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_incident_names_per_kind_from_the_ground_truth_and_from_labels(demo_store, tmp_path):
    with store.connect(demo_store, read_only=True) as con:
        run_id = con.execute("SELECT max(run_id) FROM incidents").fetchone()[0]
        rows = con.execute(
            "SELECT i.incident_id, i.cause, g.kind, f.path FROM incidents i "
            "JOIN incident_frames m USING (run_id, incident_id) "
            "JOIN frames f ON f.frame_id = m.frame_id JOIN ground_truth g ON g.frame_id = f.frame_id "
            "WHERE i.run_id = ? AND m.is_flagged AND g.kind <> 'normal'",
            [run_id],
        ).df()
        n_incidents = con.execute(
            "SELECT count(*) FROM incidents WHERE run_id = ?", [run_id]
        ).fetchone()[0]
    assert len(rows)  # the demo's run has incidents of labelled junk
    report = _report(demo_store)
    assert report["n_incidents"] == n_incidents  # every frame of the demo has a truth row
    kinds = report["kinds"]
    assert sum(k["n"] for k in kinds.values()) == n_incidents
    for kind, row in kinds.items():
        assert sum(row["names"].values()) == row["n"]
        assert 0 <= row.get("named_as_expected", 0) <= row["n"]
    # a junk incident's kind is its flagged frames' kind, and it counts under its stored name
    first = rows.groupby("incident_id").first().iloc[0]
    assert kinds[first["kind"]]["names"].get(first["cause"], 0) >= 1

    # the same from a labels CSV (file names), as for a real camera: the junk frames only
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,label,kind\n"
        + "".join(f"{p.rsplit('/', 1)[-1]},junk,{k}\n" for p, k in zip(rows["path"], rows["kind"]))
    )
    from_labels = _report(demo_store, "--labels", str(labels))
    assert from_labels["n_incidents"] == rows["incident_id"].nunique()
    assert {k: v["n"] for k, v in from_labels["kinds"].items()} == {
        k: v["n"] for k, v in kinds.items() if k != "normal"
    }
