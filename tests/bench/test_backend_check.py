"""bench/backend_check.py, the tool that compared a GPU machine's vectors with this one's: the
float16-rounded weights load, and a reference compared on the machine that saved it matches."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pipeline.models.weights import hed_weights_path
from tests.conftest import REPO


def _bench(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "bench/backend_check.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.keras
def test_half_weights_then_save_and_compare_on_the_same_machine(tmp_path):
    half = tmp_path / "hed16.weights.h5"
    written = _bench("half-weights", str(half))
    assert 0.45 < written["bytes"] / hed_weights_path().stat().st_size < 0.55
    with h5py.File(hed_weights_path(), "r") as full, h5py.File(half, "r") as small:
        kernel = "block1/layers/conv2d/vars/0"
        assert small[kernel].dtype == np.float16
        np.testing.assert_array_equal(small[kernel][()], full[kernel][()].astype(np.float16))

    ref = tmp_path / "ref.npz"
    saved = _bench("save", str(ref), "--weights", str(half), "--frames", "4")
    assert saved["dim"] == 4608 and 3 <= saved["frames"] <= 4  # the demo plants bad files
    with np.load(ref) as stored:
        assert stored["images"].shape == (saved["frames"], 224, 224, 3)
        assert str(stored["backend"]).startswith("tensorflow ")
    compared = _bench("compare", str(ref), "--weights", str(half), "--precisions", "float32")
    row = compared["by_precision"]["float32"]
    assert compared["reference"]["weights"].startswith(f"--weights {half} (blake2b ")
    assert row["min_cosine"] > 0.999999 and row["max_rel_diff"] < 1e-6
    assert compared["here"]["gpus"] == []
