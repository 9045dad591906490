"""bench/recount.py on the demo store: the run's consensus re-counted its own way is the stored
one, exactly and in `pipeline evaluate`'s figures; counted another way it moves; bad input is
refused with a message."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _bench(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "recount.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


def _report(*args) -> dict:
    done = _bench(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_runs_own_recount_is_its_stored_consensus_and_another_moves_it(demo_store):
    from pipeline.evaluate import evaluate

    own = _report(demo_store, "--model", "pixels", "--causes", "quality,camera")
    [(path, run)] = own["stores"].items()
    assert path == str(demo_store)
    assert run["recount"]["reproduces_stored"] is True
    assert run["recount"]["junk_causes"] == ["quality", "camera", "scene", "rarity"]
    day = run["day"]
    assert day["consensus-recount"] == day["consensus"]  # no change asked: the same count
    assert set(day) == {"consensus", "consensus-recount", "consensus-recount[quality+camera]"}
    # the stored consensus in `pipeline evaluate`'s own figures (daylight frames, every kind)
    figures = evaluate(demo_store, None)
    mine = figures[(figures["detector"] == "consensus") & (figures["subset"] == "day")]
    mine = mine.set_index("kind")
    assert day["consensus"]["auc"] == round(mine.loc["all", "roc_auc"], 3)
    assert day["consensus"]["ap"] == round(mine.loc["all", "average_precision"], 3)
    assert day["consensus"]["kinds"] == {
        k: round(v, 3) for k, v in mine["roc_auc"].items() if k != "all"
    }

    # without `background` the scene cause is gone: the count moves, the run's is still exact
    other = _report(demo_store, "--model", "pixels", "--recount-drop", "background")
    counted = other["stores"][str(demo_store)]["recount"]
    assert "background" not in counted["keys"] and counted["reproduces_stored"] is True
    assert counted["keys"] == [k for k in run["recount"]["keys"] if k != "background"]
    moved = other["stores"][str(demo_store)]["day"]
    assert moved["consensus"] == day["consensus"]
    assert moved["consensus-recount"] != day["consensus"]
    assert other["change"] == {"starts": {}, "add": [], "drop": ["background"], "rule": None}


def test_bad_input_is_refused_with_a_message(demo_store, store_copy):
    import store

    for args, says in (
        (["--recount-start", "nosuch=0.5"], "the run has no detector 'nosuch'"),
        (["--recount-start", "lof=1.5"], "a start is a percentile rank in [0, 1)"),
        (["--recount-start", "lof"], "give DET=P"),
        (["--recount-rule", "nosuch"], "known rules are"),
        (["--causes", "weather"], "weather"),
        (["--model", "vgg16"], "no complete vgg16 run"),
    ):
        done = _bench(demo_store, "--model", "pixels", *args)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)

    with store.connect(store_copy) as con:
        con.execute("DELETE FROM ground_truth")
    done = _bench(store_copy, "--model", "pixels")
    assert done.returncode != 0 and "no ground truth" in done.stderr, done.stderr
    done = _bench(store_copy.parent / "missing.duckdb")
    assert done.returncode != 0 and "no such store" in done.stderr, done.stderr
