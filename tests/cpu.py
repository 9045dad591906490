"""Numbers recorded in `tests/data` on one kind of CPU, compared on another.

The recorded scores of the unversioned fitted run (`fitted_run_unversioned*`) were made on a
machine with AVX-512; the golden scores (`golden_scores.csv.gz`) were recorded again on an
AVX2-only AMD EPYC when `background`'s grid became 64 pixels wide (2026-12-05), and on an AMD
EPYC with AVX-512 when `soft_cells` joined the consensus (2026-12-06). Between the two
kinds NumPy takes other SIMD paths for sin, exp and log (the demo renders a few pixels
differently) and OpenBLAS other kernels (PCA points and float32 distances move by an ulp), and
what is built on them moves further: measured on an AVX2-only AMD EPYC against AVX-512
recordings, every detector's scores within 1e-7 to 3e-2 relative, a few ranks of 240 apart,
the same flags and clusters. On the other kind a test compares the recorded numbers as
rankings (`assert_same_ranking`), which a change that moves code wrongly still fails; on the
recording kind it compares them exactly, as before.

AVX-512 is not one kind either. The unversioned run was recorded on the development machine of
2026-11-29, an Intel Sapphire Rapids (AMX, AVX-512 FP16: NumPy's `AVX512_SPR` dispatch level).
On an AMD EPYC with AVX-512 up to NumPy's `AVX512_ICL` level (Zen 4: no FP16, no AMX; OpenBLAS
picks its SkylakeX kernels) `background` scored 5 of that run's 240 frames up to 1.8% apart
(2026-12-05), so a machine is of the recording kind only at the same dispatch level, and with
OpenBLAS on its AVX-512 kernels (`AVX512_BLAS_CORES`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

RECORDED_ON = "avx512-spr"  # the unversioned fitted run's kind


def cpu_kind() -> str:
    """'avx512-spr' where NumPy dispatches its Sapphire Rapids AVX-512 loops, 'avx512' where
    it dispatches other AVX-512 loops, else 'avx2-or-older'; with '-blas-<core>' added where
    OpenBLAS, on an AVX-512 machine, runs kernels of another core than its AVX-512 ones."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    if features.get("AVX512_SPR"):
        kind = "avx512-spr"
    elif features.get("AVX512F"):
        kind = "avx512"
    else:
        return "avx2-or-older"
    core = blas_core()
    return kind if core in AVX512_BLAS_CORES else f"{kind}-blas-{core}"


# OpenBLAS's cores with AVX-512 kernels. It picks a core by the CPU models it knows: on an AMD
# EPYC Zen 5 (family 26) OpenBLAS 0.3.30-0.3.31 falls back to its Haswell (AVX2) kernels, and
# `background`'s float32 products then move by up to 1.1% of a score from a Zen 4 recording's
# (measured 2026-12-06: 10 of the golden demo's 239 frames), as between two kinds.
AVX512_BLAS_CORES = {"skylakex", "cooperlake", "sapphirerapids", "unknown"}


def blas_core() -> str:
    """The core whose kernels NumPy's OpenBLAS runs (lower case), 'unknown' where it cannot
    be read."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("internal_api") == "openblas" and "numpy" in lib.get("filepath", ""):
            return str(lib.get("architecture") or "unknown").lower()
    return "unknown"


def same_kind_as_recorded(kind: str = RECORDED_ON) -> bool:
    return cpu_kind() == kind


def assert_same_ranking(got, want, what: str, min_rho: float = 0.995) -> None:
    """`got` ranks the frames as `want` did (Spearman >= min_rho over the finite pairs, the same
    frames without a score)."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert (np.isfinite(got) == np.isfinite(want)).all(), f"{what}: other frames unscored"
    both = np.isfinite(got) & np.isfinite(want)
    if both.sum() < 3 or np.ptp(want[both]) == 0:
        np.testing.assert_allclose(got[both], want[both], rtol=1e-6, err_msg=what)
        return
    rho = spearmanr(got[both], want[both]).correlation
    assert rho >= min_rho, f"{what}: rank correlation with the recorded scores {rho:.4f}"


def assert_flags_agree(got, want, what: str, share: float = 0.97) -> None:
    """The same flags on at least `share` of the frames."""
    agree = float((np.asarray(got, bool) == np.asarray(want, bool)).mean())
    assert agree >= share, f"{what}: flags agree on {agree:.3f} of frames"
