"""bench/realcam.py end to end on a small generated camera: labels matched by file name,
daylight only, debatable left out, per-kind AUCs and the top list with unlabelled frames."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import REPO


def _frame(path: Path, brightness: float, seed: int) -> None:
    """A 96x64 'scene' (fixed pattern + noise) at a brightness."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:96]
    scene = 120 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0)
    pixels = np.clip(brightness * scene[..., None] + rng.normal(0, 4, (64, 96, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path, "JPEG", quality=90)


def test_realcam_bench_measures_daylight_labels_and_lists_the_top(tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    start = datetime(2024, 6, 3, 6, 0)  # London in June: 06:00..19:00 are daylight
    rows, sample = [], []
    for i in range(60):
        when = start + timedelta(days=i // 12, hours=1 + i % 12)
        name = f"cam-{when:%Y%m%d%H%M%S}.jpg"
        dark = i in (5, 17, 29, 41, 53)
        _frame(frames / name, 0.08 if dark else 1.0, seed=i)
        if dark:
            rows.append(f"{name},junk,dark,high")
        elif i in (7, 19):
            rows.append(f"{name},debatable,sun_glare,low")
        elif i % 3 == 0:
            rows.append(f"{name},normal,normal,high")
        if i % 2 == 1 or i % 3 == 0:
            sample.append(name)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,kind,confidence\n" + "\n".join(rows) + "\n")
    sample_file = tmp_path / "sample.txt"
    sample_file.write_text("\n".join(sample) + "\n")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "realcam.py"),
        str(frames),
        "--labels",
        str(labels),
        "--sample",
        str(sample_file),
        "--out",
        str(out),
        "--timezone",
        "Europe/London",
        "--lat",
        "51.5",
        "--lon",
        "-0.1",
        "--model",
        "pixels",
        "--set",
        "detectors=dark,blurry,lof",
        "--set",
        "consensus_detectors=dark,blurry,lof",
        "--top",
        "8",
        "--sheet",
        str(tmp_path / "top.png"),
    ]
    report = _report(cmd)

    counts = report["counts"]
    assert counts["frames"] == 60 and counts["daylight_frames"] == 60
    assert counts["labelled"]["n_junk"] == 5 and counts["labelled"]["n"] == 5 + 20
    n_sample_junk = sum(1 for i in (5, 17, 29, 41, 53) if i % 2 == 1 or i % 3 == 0)
    assert counts["sample"]["n_junk"] == n_sample_junk
    assert report["settings_changed"]["model"] == "pixels"
    dark = report["detectors"]["dark"]
    assert dark["sample"]["auc"] == 1.0 and dark["labelled"]["kinds"] == {"dark": 1.0}
    assert list(report["detectors"])[0] == "consensus"
    top = report["top"]
    assert top["k"] == 8 and sum(top["counts"].values()) == 8
    assert top["counts"]["unlabelled"] > 0  # frames without a label are listed, marked
    assert {r["file"] for r in top["frames"] if r["label"] == "junk"} <= {
        r.split(",")[0] for r in rows if ",junk," in r
    }
    assert top["counts"]["junk"] == 5 and top["precision"] == round(5 / 8, 3)
    assert (tmp_path / "top.png").stat().st_size > 0

    second = _report(cmd + ["--no-analyze", "--bootstrap", "200"])
    assert second["run_id"] == report["run_id"] and "analyze_s" not in second["timings"]
    assert second["detectors"] == report["detectors"]

    # --bootstrap: intervals over resamples of the sample; `dark` separates the dark frames
    # perfectly, so it does in every resample, and no consensus can be ahead of it
    boot = second["bootstrap"]
    assert "bootstrap" not in report
    assert boot["resamples"] == 200 and boot["frames"] == counts["sample"]["n"]
    assert set(boot["intervals"]) == set(report["detectors"])
    for interval in boot["intervals"].values():
        for low, high in interval.values():
            assert 0.0 <= low <= high <= 1.0
    assert boot["intervals"]["dark"] == {"auc": [1.0, 1.0], "ap": [1.0, 1.0]}
    versus = boot["consensus minus"]
    assert set(versus) == set(report["detectors"]) - {"consensus"}
    assert report["detectors"]["consensus"]["sample"]["auc"] == 1.0
    assert versus["dark"] == {
        "auc": [0.0, 0.0],
        "ahead_auc": 0.5,
        "ap": [0.0, 0.0],
        "ahead_ap": 0.5,
    }
    # `blurry` misses some dark frames: the consensus is never behind it and ahead in most
    assert report["detectors"]["blurry"]["sample"]["auc"] < 1.0
    assert versus["blurry"]["auc"][0] == 0.0 and versus["blurry"]["auc"][1] > 0.0
    assert 0.5 < versus["blurry"]["ahead_auc"] < 1.0

    # --confident leaves the low-confidence calls out as well: two of the dark frames
    labels.write_text(
        "file,label,kind,confidence\n"
        + "\n".join(
            r.replace(",high", ",low") if r.startswith(tuple(_dark_names(rows)[:2])) else r
            for r in rows
        )
        + "\n"
    )
    third = _report(cmd + ["--no-analyze", "--confident"])
    assert third["low_confidence_left_out"] and not second["low_confidence_left_out"]
    assert third["counts"]["labelled"]["n_junk"] == 3
    assert third["counts"]["labelled"]["n"] == 3 + 20  # the sun glare was debatable already

    # --recount-*: the run's consensus counted again without `dark` and with `lof` from its
    # median, from the stored scores; re-counted the run's own way it is the stored consensus
    fourth = _report(
        cmd
        + ["--no-analyze", "--causes", "quality"]
        + ["--recount-drop", "dark", "--recount-start", "lof=0.5"]
    )
    assert fourth["recount"] == {
        "keys": ["blurry", "lof"],
        "starts": {"blurry": 0.0, "lof": 0.5},
        "rule": "family_tail",
        "junk_causes": ["quality", "camera", "scene", "rarity"],
        "columns": ["consensus-recount", "consensus-recount[quality]"],
        "reproduces_stored": True,
    }
    figures = fourth["detectors"]
    assert figures["consensus"] == report["detectors"]["consensus"]  # the stored one, as it was
    # the quality cause without `dark` is `blurry` alone: the same ranking, the same figures
    assert figures["consensus-recount[quality]"]["sample"] == figures["blurry"]["sample"]
    assert figures["consensus[quality]"]["sample"]["auc"] == 1.0  # with `dark`, as stored
    assert figures["blurry"]["sample"]["auc"] < 1.0
    for bad, says in (
        (["--recount-start", "nosuch=0.5"], "the run has no detector 'nosuch'"),
        (["--recount-start", "lof=1"], "a start is a percentile rank in [0, 1)"),
        (["--recount-start", "lof"], "give DET=P"),
        (["--recount-rule", "nosuch"], "known rules are"),
    ):
        refused = _bench(cmd + ["--no-analyze", *bad])
        assert refused.returncode != 0 and says in refused.stderr, refused.stderr


def _bench(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


def _report(cmd: list[str]) -> dict:
    """The bench's JSON report (it must succeed)."""
    done = _bench(cmd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _dark_names(rows: list[str]) -> list[str]:
    return [r.split(",")[0] for r in rows if ",junk,dark," in r]
