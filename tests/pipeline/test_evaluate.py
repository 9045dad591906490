"""Evaluation against a ground truth: hand-computed metrics, path matching, the CLI."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import store
from pipeline.cli import cli
from pipeline.errors import InputError
from pipeline.evaluate import evaluate, metrics
from pipeline.settings import Settings
from store import analysis as sa
from tests.conftest import write_jpeg

PATHS = ["a/f1.jpg", "a/f2.jpg", "b/f3.jpg", "b/f4.jpg", "b/f5.jpg"]
#           normal      normal      anomaly     anomaly     normal (night)
SCORES = {"iforest": [0.1, 0.4, 0.35, 0.8, 0.9], "consensus": [0.1, 0.2, 0.7, 0.8, 0.3]}


def _tiny_store(db, model="fake", scores=SCORES):
    frames = pd.DataFrame(
        {
            "frame_id": np.arange(1, 6),
            "path": PATHS,
            "root": "/x",
            "location": [f"/x/{p}" for p in PATHS],
            "time_source": "exif",
            "file_bytes": 1,
            "file_mtime": pd.Timestamp("2024-01-01", tz="UTC"),
            "daylight": ["day", "day", "day", "day", "night"],
        }
    )
    with store.connect(db) as con:
        if not con.sql("SELECT count(*) FROM frames").fetchall()[0][0]:
            con.register("_f", frames)
            con.execute(
                f"INSERT INTO frames ({', '.join(frames.columns)}) "
                f"SELECT {', '.join(frames.columns)} FROM _f"
            )
        run_id = sa.start_run(con, model, {}, "test")
        rows = pd.concat(
            [
                pd.DataFrame(
                    {
                        "run_id": run_id,
                        "detector": det,
                        "frame_id": np.arange(1, 6),
                        "score": s,
                        "score_pct": np.argsort(np.argsort(s)) / 5 + 0.2,
                        "is_outlier": False,
                    }
                )
                for det, s in scores.items()
            ]
        )
        clusters = pd.DataFrame(
            {
                "run_id": run_id,
                "frame_id": np.arange(1, 6),
                "cluster": 0,
                "map_x": 0.0,
                "map_y": 0.0,
            }
        )
        empty_nb = pd.DataFrame(
            {"run_id": [], "frame_id": [], "rank": [], "neighbor_id": [], "distance": []}
        ).astype(
            {
                "run_id": "int64",
                "frame_id": "int64",
                "rank": "int32",
                "neighbor_id": "int64",
                "distance": "float64",
            }
        )
        sa.write_run(
            con,
            run_id,
            n_frames=5,
            clusters=clusters,
            scores=rows,
            neighbors=empty_nb,
            artifact=None,
            versions={},
            timings={},
        )
    return run_id


def _truth(tmp_path, prefix=""):
    truth = pd.DataFrame(
        {
            "path": [prefix + p for p in PATHS] + ["b/cut.jpg"],
            "label": [0, 0, 1, 1, 0, 1],
            "kind": ["normal", "normal", "fox", "fog", "normal", "truncated"],
        }
    )
    path = tmp_path / "truth.csv"
    truth.to_csv(path, index=False)
    return path


def test_metrics_by_hand():
    m = metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 pairs ordered right
    assert m["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["precision_at_k"] == pytest.approx(0.5)  # top 2: 0.8 (yes), 0.4 (no)
    assert np.isnan(metrics(np.array([0, 0]), np.array([1.0, 2.0]))["roc_auc"])


def test_evaluate_tiny_store(tmp_path, db_path):
    _tiny_store(db_path)
    out = evaluate(db_path, _truth(tmp_path))
    row = out.query("detector == 'iforest' and subset == 'day' and kind == 'all'").iloc[0]
    # day frames: normals 0.1, 0.4; anomalies 0.35, 0.8 -> AUC 3/4
    assert row["roc_auc"] == pytest.approx(0.75) and row["n"] == 4 and row["n_anomalies"] == 2
    row = out.query("detector == 'iforest' and subset == 'all' and kind == 'all'").iloc[0]
    # all: normals 0.1, 0.4, 0.9 vs 0.35, 0.8 -> pairs right: 0.35>0.1; 0.8>0.1,0.4 = 3 of 6
    assert row["roc_auc"] == pytest.approx(0.5) and row["n"] == 5
    fox = out.query("detector == 'iforest' and subset == 'day' and kind == 'fox'").iloc[0]
    assert fox["roc_auc"] == pytest.approx(0.5) and fox["n"] == 3  # 0.35 vs 0.1, 0.4
    cons = out.query("detector == 'consensus' and subset == 'all' and kind == 'all'").iloc[0]
    assert cons["roc_auc"] == pytest.approx(1.0) and cons["precision_at_k"] == 1.0
    assert out["detector"].iloc[0] == "consensus"  # consensus first
    assert set(out["kind"]) == {"all", "fox", "fog"}  # the truncated file is not a frame


def test_import_ground_truth_and_evaluate_from_the_store(tmp_path, db_path):
    _tiny_store(db_path)
    truth = pd.read_csv(_truth(tmp_path, prefix="frames/"))  # relative to a folder above
    with store.connect(db_path) as con:
        assert sa.import_ground_truth(con, truth) == 5
        stored = sa.load_ground_truth(con)
    assert stored["is_anomaly"].sum() == 2 and set(stored["kind"]) >= {"fox", "fog", "normal"}
    out = evaluate(db_path, None)
    assert out.query("detector == 'iforest' and subset == 'day' and kind == 'all'")["roc_auc"].iloc[
        0
    ] == pytest.approx(0.75)


def test_latest_run_per_model(tmp_path, db_path):
    _tiny_store(db_path, model="pixels")
    _tiny_store(db_path, model="vgg16-hed", scores={"iforest": [0.1, 0.2, 0.7, 0.8, 0.3]})
    out = evaluate(db_path, _truth(tmp_path))
    assert set(out["model"]) == {"pixels", "vgg16-hed"}
    best = out.query("model == 'vgg16-hed' and subset == 'all' and kind == 'all'")
    assert best["roc_auc"].iloc[0] == pytest.approx(1.0)


def test_no_match_is_an_input_error(tmp_path, db_path):
    _tiny_store(db_path)
    path = tmp_path / "other.csv"
    pd.DataFrame({"path": ["zzz.jpg"], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="no path"):
        evaluate(db_path, path)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,verdict\nx,1\n")
    with pytest.raises(InputError, match="path,label.*lacks label, path"):
        evaluate(db_path, bad)


def test_the_demo_import_reads_the_truth_with_the_same_checks(tmp_path, db_path):
    """`import_ground_truth` (run by `demo`) refuses what `evaluate` refuses, before writing."""
    from pipeline.runner import import_ground_truth

    _tiny_store(db_path)
    assert import_ground_truth(db_path, _truth(tmp_path), tmp_path).startswith(
        "ground truth: 5 of 6 rows matched frames"
    )
    wrong_columns = tmp_path / "wrong.csv"
    wrong_columns.write_text("path,is_junk\na/f1.jpg,1\n")
    with pytest.raises(InputError, match="needs columns path,label.*lacks label.*is_junk"):
        import_ground_truth(db_path, wrong_columns, tmp_path)
    wrong_label = tmp_path / "label.csv"
    wrong_label.write_text("path,label\na/f1.jpg,0\na/f2.jpg,yes\n")
    for reader in (
        lambda p: import_ground_truth(db_path, p, tmp_path),
        lambda p: evaluate(db_path, p),
    ):
        with pytest.raises(InputError, match="label 'yes' on line 3; a label is 1"):
            reader(wrong_label)
    with store.connect(db_path, read_only=True) as con:  # the first import is still there
        assert len(sa.load_ground_truth(con)) == 5


def test_cli_evaluate_table_and_json(tmp_path, db_path):
    _tiny_store(db_path)
    truth = _truth(tmp_path)
    out = CliRunner().invoke(cli, ["evaluate", "--db", str(db_path), "--truth", str(truth)])
    assert out.exit_code == 0, out.output
    assert "consensus" in out.output and "roc_auc_day" in out.output
    out = CliRunner().invoke(
        cli, ["evaluate", "--db", str(db_path), "--truth", str(truth), "--json"]
    )
    rows = json.loads(out.output)
    assert {"model", "detector", "subset", "kind", "roc_auc"} <= set(rows[0])


def test_cli_evaluate_without_runs(tmp_path, db_path):
    with store.connect(db_path):
        pass
    out = CliRunner().invoke(
        cli, ["evaluate", "--db", str(db_path), "--truth", str(_truth(tmp_path))]
    )
    assert out.exit_code == 1 and out.output.startswith("error: ")


def test_a_latin1_truth_file_is_read(tmp_path):
    from pipeline.evaluate import read_truth

    path = tmp_path / "truth.csv"  # a spreadsheet's Latin-1 export: 'é' is one byte, 0xE9
    path.write_bytes("path,label,kind\ncafé/a.jpg,1,person\nb.jpg,0,normal\n".encode("latin-1"))
    truth = read_truth(path)
    assert list(truth["path"]) == ["café/a.jpg", "b.jpg"] and list(truth["label"]) == [1, 0]
    path.write_bytes("\ufeffpath,label\ncafé/a.jpg,1\n".encode("utf-8"))  # UTF-8 with a BOM
    assert list(read_truth(path).columns[:2]) == ["path", "label"]


def test_truth_paths_are_matched_by_folder_and_never_guessed_between_two_cards(tmp_path, db_path):
    from pipeline.ingest import ingest_folder

    for card, seed in (("camA", 1), ("camB", 2)):
        for i in range(3):
            write_jpeg(
                tmp_path / card / f"IMG_{i:04d}.jpg",
                seed=seed * 10 + i,
                when=datetime(2024, 4, seed, 12, i),
            )
        ingest_folder(tmp_path / card, db_path, Settings(), progress=False)
    truth = pd.DataFrame({"path": ["IMG_0001.jpg", "camB/IMG_0002.jpg"], "label": [1, 0]})
    with store.connect(db_path) as con:
        by_location = {
            loc: fid for loc, fid in con.execute("SELECT location, frame_id FROM frames").fetchall()
        }
        loose = sa.match_truth_paths(con, truth)
        assert loose["frame_id"].isna().tolist() == [True, False]  # two cards hold IMG_0001
        assert loose["frame_id"][1] == by_location[str(tmp_path / "camB" / "IMG_0002.jpg")]
        rooted = sa.match_truth_paths(con, truth.iloc[:1], root=str(tmp_path / "camA"))
        assert rooted["frame_id"][0] == by_location[str(tmp_path / "camA" / "IMG_0001.jpg")]
