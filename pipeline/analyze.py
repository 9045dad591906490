"""One analysis run: preprocess, neighbours, clusters, 2-D map, detectors, consensus, one write.

`analyze(db, settings)` reads one model's vectors and the frames' facts, standardises them,
keeps the PCA dimensions that explain `pca_variance` (at most `pca_max_dims`, and at most a fifth
of the frames so a small store is not fitted in 64 dims; fitted on a `pca_fit_frames` sample,
then every vector is streamed from the store and projected a batch at a time, so the matrix is
never in memory whole), builds one nearest-neighbour index (`pipeline.neighbors`) that serves
`lof`, `knn` and the `neighbors` table (exact, or approximate at large n with its recall
against exact search measured on a sample and kept in the run's parameters), clusters (k-means with k by silhouette, or HDBSCAN on
`cluster_dims` PCA dims), maps to 2-D (PCA or UMAP), fits every requested detector plus
`consensus` (`pipeline.detectors`: a score per cause of junk, `cause:<cause>`, and their sum
over the setting `junk_causes`, recorded in the run's params; unset, every cause less a scene
cause that mostly says what kind of day it is, `consensus.default_causes`; frames ingested before
`local_contrast` was measured get it from their thumbnails first; the pixel detectors side by
side, `_fit_detectors`), learns from the user's junk/keep reviews of the run's frames when
there are enough (`learn_from_reviews`: detector `learned`, `pipeline.detectors.learned`),
scores the frames through the fitted run
(`pipeline.fitted.FittedRun.score`, as `score-new` does), groups the consensus's flags into
incidents (`pipeline.incidents`), closes the archive mosaic (`pipeline.mosaic`, whose cells
fill from the thumbnails the first pixel detector decodes) and writes the run in one
transaction with its fitted state, each detector's facts (in its params, for the dashboard),
its incidents and the per-run aggregates the dashboard reads (`store.aggregates`). The run
row is 'running' while it works; on any failure it becomes 'failed' with the reason and no
rows.

With `executor = "ray"` (`analyze --executor ray`), the pixel detectors (`alignment`,
`background`) still fit here, on their samples, and score every frame on the Ray cluster
(`pipeline.ray_executor.RayFrameSpread`: tasks of whole days, each reading its thumbnails from
the store read-only, so the store must be at the same path on every node); the scores are the
ones this machine would give. Everything else runs here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import tracemalloc
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import store
from pipeline import __version__, executors
from pipeline.daylight import PLACE_KEYS
from pipeline.detectors import (
    CONSENSUS,
    CONSENSUS_RULES,
    DETECTORS,
    Consensus,
    FrameBatch,
    at_odds_advice,
    cause_agreement,
    causes_at_odds,
    counted_ranks,
    make_detector,
)
from pipeline.detectors.base import Detector
from pipeline.detectors.batch import day_and_minute, daylight_classes
from pipeline.detectors.consensus import day_gate_note, day_gated, default_causes
from pipeline.detectors.learned import LEARNED, Learned
from pipeline.errors import AnalysisError, InputError
from pipeline.fitted import (
    N_TABLE_NEIGHBORS,
    FittedRun,
    library_versions,
    neighbor_tables,
    neighbors_needed,
)
from pipeline.imagestats import backfill_thumbnail_measures
from pipeline.incidents import run_incidents
from pipeline.mosaic import READ_CHUNK as MOSAIC_CHUNK
from pipeline.mosaic import MosaicBuilder
from pipeline.neighbors import NeighborIndex
from pipeline.pixels import StoppableReader, ThumbnailReader
from pipeline.projection import RegionProjection, fit_projection, project, region_count
from pipeline.settings import Settings
from pipeline.threads import one_blas_thread
from store import analysis as sa
from store import embeddings as se
from store import kv
from store import reviews as sr
from store.causes import cause_key

log = logging.getLogger(__name__)

MIN_FRAMES = 10

# Thumbnails the pixel detectors read per connection to the store: opening one costs ~50 ms of
# CPU (the file's catalog, the schema check), 0.05 ms a frame at the reader's default 1,024,
# paid by both detectors. A multiple of their pieces (64 and 128 frames), so the pieces, and the
# scores, are those of the default chunks; 4,096 grids of 128 x 72 are 113 MB.
PIXEL_CHUNK = 4096


@dataclass
class AnalyzeResult:
    """What one run did: counts, detectors, how long each step took."""

    run_id: int
    model: str
    n_frames: int
    detectors: list[str]
    n_dims: int
    n_clusters: int
    n_outliers: int
    timings: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        total = sum(self.timings.values())
        lines = [
            f"analysis run {self.run_id} ({self.model}): {self.n_frames} frames, "
            f"PCA {self.n_dims} dims, {self.n_clusters} clusters, "
            f"{self.n_outliers} consensus outliers, {total:.1f} s",
            "detectors: " + ", ".join(self.detectors),
        ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def check_settings(settings: Settings) -> list[str]:
    """Validate the analysis settings (detector defaults filled in) before any work; returns
    the detector keys to run."""
    keys = [k for k in dict.fromkeys(settings.detectors) if k != CONSENSUS]
    unknown = [k for k in keys if k not in DETECTORS]
    if unknown:
        raise InputError(
            f"unknown detector(s) {', '.join(unknown)}; known: "
            f"{', '.join(DETECTORS)} (consensus is always added)"
        )
    if not keys:
        raise InputError("no detectors chosen: pass e.g. --detectors iforest,lof")
    if settings.clusterer not in ("kmeans", "hdbscan"):
        raise InputError(f"unknown clusterer {settings.clusterer!r}: use kmeans or hdbscan")
    if settings.map_method not in ("pca", "umap"):
        raise InputError(f"unknown map method {settings.map_method!r}: use pca or umap")
    if str(settings.n_clusters) != "auto":
        try:
            if int(settings.n_clusters) < 1:
                raise ValueError
        except ValueError:
            raise InputError(
                f"--n-clusters must be 'auto' or a whole number >= 1, got {settings.n_clusters!r}"
            ) from None
    if settings.consensus_rule not in CONSENSUS_RULES:
        raise InputError(
            f"unknown consensus rule {settings.consensus_rule!r}; known: "
            f"{', '.join(CONSENSUS_RULES)}"
        )
    unknown = [k for k in settings.consensus_detectors if k not in DETECTORS]
    if unknown:
        raise InputError(
            f"unknown consensus detector(s) {', '.join(unknown)}; known: {', '.join(DETECTORS)}"
        )
    if settings.neighbor_index not in ("auto", "exact", "kdtree", "ivf"):
        raise InputError(
            f"unknown neighbour index {settings.neighbor_index!r}: auto, exact, kdtree or ivf"
        )
    return keys


class _Steps:
    """Times (and, when asked, peak traced memory of) each step."""

    def __init__(self, trace_memory: bool):
        self.timings: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # CPU seconds, all threads (honest under load)
        self.trace = trace_memory

    def run(self, name: str, func, *args, **kwargs):
        with self.timed(name):
            return func(*args, **kwargs)

    @contextlib.contextmanager
    def timed(self, name: str):
        """Time (and trace) the block as step `name` (added to the step's earlier time)."""
        if self.trace:
            tracemalloc.reset_peak()
        started, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 3)
        self.cpu[name] = round(self.cpu.get(name, 0.0) + time.process_time() - cpu, 3)
        if self.trace:
            self.peak_mb[name] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)


def analyze(
    db: Path, settings: Settings, progress: bool = True, *, trace_memory: bool = False
) -> AnalyzeResult:
    """Write one new analysis run of `settings.model`'s vectors into the store at `db`."""
    db = Path(db)
    settings = settings.with_detector_defaults()
    keys = check_settings(settings)
    model = settings.model
    with store.connect(db) as con:
        models = sa.embedded_models(con)
        if model not in models:
            from pipeline.models.registry import get_model

            get_model(model)  # a key no model has: say so, not "embed with it first"
            have = ", ".join(f"{m} ({n} frames)" for m, n in models.items()) or "none"
            raise AnalysisError(
                f"no {model} embeddings in {db} (embedded models: {have}); run "
                f"`python -m pipeline embed --db {db} --model {model}` first, or pass --model"
            )
        if models[model] < MIN_FRAMES:
            raise AnalysisError(
                f"only {models[model]} frames have {model} embeddings; an "
                f"analysis needs at least {MIN_FRAMES}"
            )
        params = dict(settings.to_dict(), **_stored_place(con, settings))
        params["detectors"] = keys
        # what made the vectors analysed (the `precision` setting above is only what was asked)
        params["vector_precisions"] = se.precision_counts(con, model)
        # its percentiles rank the frames tied at a scorer's lowest score as the lowest
        # (`Scorer.percentile`); a recombined consensus does the same (`store.causes`)
        params["lowest_ties"] = True
        # the reviews as they are when the run starts (`learned` learns from them)
        verdicts = sr.all_verdicts(con) if settings.learn_from_reviews else None
        stale = sa.fail_stale_runs(con, process_alive)
        run_id = sa.start_run(con, model, params, __version__)
    steps = _Steps(trace_memory)
    if trace_memory:
        tracemalloc.start()
    try:
        result = _analyze_run(db, settings, keys, model, run_id, params, steps, progress, verdicts)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        try:
            with store.connect(db) as con:
                sa.fail_run(con, run_id, message, steps.timings)
        except Exception as fail_exc:  # the original error matters more; the next analyze
            log.warning(
                "could not mark run %s failed (%s); the next analyze will", run_id, fail_exc
            )
        if isinstance(exc, (AnalysisError, InputError, store.StoreError, KeyboardInterrupt)):
            raise
        problem = store.db.disk_error(exc)  # a full or read-only disk: say so, not "failed"
        if problem is not None:
            raise problem from exc
        raise AnalysisError(
            f"analysis run {run_id} failed ({message}); it is marked 'failed' and wrote no rows"
        ) from exc
    finally:
        if trace_memory:
            tracemalloc.stop()
    if stale:
        result.notes.insert(
            0,
            "interrupted run(s) "
            + ", ".join(map(str, stale))
            + " (their process is gone) marked 'failed'",
        )
    return result


def _stored_place(con, settings: Settings) -> dict[str, Any]:
    """The store's place (time zone, latitude, longitude, clock offset) for the settings that
    this command did not give: the run's parameters then say where its frames were placed at
    ingest, instead of null."""
    given = settings.to_dict()
    stored = {key: kv.get(con, key) for key in PLACE_KEYS if not given.get(key)}
    return {key: value for key, value in stored.items() if value is not None}


def process_alive(pid: int | None, host: str | None, started_at: Any) -> bool:
    """Whether the process that started a 'running' run may still be working on it.

    Only a process on this machine can be judged: it is gone when no such PID exists, when it
    is a zombie, or when the PID now belongs to a process started after the run began (reuse).
    Anything that cannot be judged (another host, no PID recorded) counts as alive.
    """
    import os
    import socket

    if pid is None or host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, StopIteration, ValueError):
        return True  # no /proc (not Linux): trust the PID
    if fields[0] == "Z":
        return False
    started_process = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    started_run = pd.Timestamp(started_at).timestamp() if started_at is not None else None
    return started_run is None or started_process <= started_run + 2.0


def _say(progress: bool, text: str) -> None:
    if progress:
        import click

        click.echo(text, err=True)


def _fit_detectors(
    detectors: dict[str, Detector],
    batch: FrameBatch,
    mosaic: MosaicBuilder,
    steps: _Steps,
    progress: bool,
) -> None:
    """Fit every detector on `batch`, in order; the pixel detectors (those that read
    thumbnails) side by side in threads when there are several and they score here (not on
    Ray), under one BLAS thread, each step timed by its own wall clock and their CPU as one
    step, `pixel detectors`.

    Side by side, because one alone keeps 1.6-1.7 of this machine's two cores busy (its reader
    and its compiled loops wait on each other and on the GIL's Python parts) and two keep ~1.8
    busy (a 750k run: 630 s instead of ~750; docs/PERFORMANCE.md). Each detector's scores
    depend only on the frames, never on the timing, so they are the same either way. The
    archive mosaic's cells fill from the grids the first pixel detector in order decodes
    (`MosaicBuilder.tap`: the mosaic is then the same whichever detector reads a frame first);
    the others read the thumbnails untapped. When one fails (or the run is interrupted), the
    other stops before its next chunk of thumbnails (`StoppableReader`), so the error is not
    kept waiting while it runs to its end."""
    pixel = [k for k, det in detectors.items() if "thumbnails" in det.needs]
    for key, det in detectors.items():
        if key not in pixel:
            _say(progress, f"detector {key}")
            steps.run(f"detector:{key}", det.fit, batch)
    readers = {}  # pixel detector -> its reader: the first one's fills the mosaic
    if batch.pixels is not None:
        readers = {
            k: mosaic.tap(batch.pixels) if i == 0 else batch.pixels for i, k in enumerate(pixel)
        }
    if len(readers) < 2 or batch.spread is not None:
        for key in pixel:
            view = dataclasses.replace(batch, pixels=readers[key]) if key in readers else batch
            _say(progress, f"detector {key}")
            steps.run(f"detector:{key}", detectors[key].fit, view)
        return
    stop = threading.Event()  # set when one side fails or the run is interrupted

    def fit(key: str) -> None:
        started = time.perf_counter()
        detectors[key].fit(dataclasses.replace(batch, pixels=StoppableReader(readers[key], stop)))
        steps.timings[f"detector:{key}"] = round(time.perf_counter() - started, 3)

    _say(progress, f"detectors {' and '.join(pixel)}, side by side")
    with steps.timed("pixel detectors"), one_blas_thread():
        with ThreadPoolExecutor(len(pixel)) as pool:
            sides = [pool.submit(fit, key) for key in pixel]
            try:  # the first failure is the run's; the other side stops within a chunk
                done, _ = wait(sides, return_when=FIRST_EXCEPTION)
                failed = [side.exception() for side in sides if side in done and side.exception()]
                if failed:
                    raise failed[0]
            except BaseException:
                stop.set()
                raise


def _analyze_run(
    db: Path,
    settings: Settings,
    keys: list[str],
    model: str,
    run_id: int,
    params: dict[str, Any],
    steps: _Steps,
    progress: bool,
    verdicts: pd.DataFrame | None = None,
) -> AnalyzeResult:
    if any("frame_stats" in DETECTORS[k].needs for k in keys):
        filled = steps.run("backfill", backfill_thumbnail_measures, db)
        if filled:
            _say(
                progress,
                f"local contrast and cell sharpness measured from the stored thumbnails of "
                f"{filled} frames ingested before they were",
            )
    _say(progress, f"analysis run {run_id}: loading and projecting {model} vectors")
    want_regions = any("regions" in DETECTORS[k].needs for k in keys)
    ids, frames, scaler, pca, n_dims, z, regions, zr = load_projected(
        db, model, settings, steps, want_regions
    )
    n = len(ids)
    detectors = {
        k: make_detector(k, settings.contamination, settings.random_state, settings.neighbor_index)
        for k in keys
    }
    for det in detectors.values():  # a small store: at most n - 1 neighbours (as PyOD's LOF does)
        if det.n_neighbors_needed > n - 1:
            det.set_params(n_neighbors=n - 1)
    needs_pixels = any("thumbnails" in det.needs for det in detectors.values())
    lat, lon = params.get("lat"), params.get("lon")
    batch = FrameBatch.from_frames(ids, z, frames, lat=lat, lon=lon)
    batch.regions = zr
    del frames, zr  # the batch holds what the detectors use (paths and all are 100s of MB at 3M)
    reader = ThumbnailReader(db, chunk=PIXEL_CHUNK)
    mosaic = MosaicBuilder(batch.frame_ids, batch.local_time, reader.aspect(batch.frame_ids))
    if needs_pixels:
        batch.pixels = reader
    k_needed = neighbors_needed(detectors)
    _say(progress, f"nearest neighbours (k={k_needed}) in {n_dims} PCA dims")
    index = steps.run("neighbors", fit_index, z, ids, k_needed, settings)
    steps.run("neighbors", index.attach, batch, k_needed)

    _say(progress, f"clustering ({settings.clusterer})")
    clusterer, labels = steps.run("clusters", cluster, z, settings)
    map_kind = settings.map_method
    _say(progress, f"2-D map ({map_kind})")
    mapper, xy = steps.run("map", make_map, z, settings)

    notes: list[str] = []
    made = int(len(set(labels.tolist()) - {-1}))
    if str(settings.n_clusters) != "auto" and made < int(settings.n_clusters):
        notes.append(
            f"{settings.n_clusters} clusters were asked for and {made} made: the {len(z):,} "
            f"frames have {len(np.unique(z, axis=0)):,} distinct vectors"
        )
    if len(params["vector_precisions"]) > 1:
        from pipeline.models.precision import MIXED_PRECISION_DOC

        mix = " + ".join(f"{n} {p}" for p, n in params["vector_precisions"].items())
        notes.append(
            f"the {model} vectors are of two precisions ({mix}), which rank frames "
            f"alike (see {MIXED_PRECISION_DOC})"
        )
    spread = _spread(db, settings) if needs_pixels else None
    with executors.session(settings) if spread is not None else contextlib.nullcontext():
        batch.spread = spread
        _fit_detectors(detectors, batch, mosaic, steps, progress)
        batch.spread = None
    for key, det in detectors.items():
        if not np.isfinite(det.decision_scores_).any():
            notes.append(f"{key} skipped: it cannot score these frames {det.why_unscorable()}")
    if spread is not None and spread.unseen:
        notes.append(spread.unseen)
    if spread is not None and spread.frames_per_node:
        nodes = ", ".join(f"{n:,}" for n in sorted(spread.frames_per_node.values(), reverse=True))
        notes.append(
            f"the pixel detectors scored their frames on Ray: {spread.tasks} "
            f"task{'s' * (spread.tasks != 1)} on {len(spread.frames_per_node)} "
            f"node{'s' * (len(spread.frames_per_node) != 1)} ({nodes} frames)"
        )
    detectors = {k: d for k, d in detectors.items() if np.isfinite(d.decision_scores_).any()}
    chosen = [k for k in settings.consensus_detectors if k in detectors] or list(detectors)
    fit_pcts = counted_ranks(
        detectors,
        {k: d.decision_scores_ for k, d in detectors.items()},
        {k: d.percentile(d.decision_scores_) for k, d in detectors.items()},
        batch,
    )
    try:
        consensus = steps.run(
            "detector:consensus",
            Consensus(
                chosen,
                settings.consensus_rule,
                settings.contamination,
                junk_causes=list(settings.junk_causes or ()) or None,
            ).fit,
            fit_pcts,
        )
    except ValueError as exc:  # no consensus detector of a junk cause scored
        raise AnalysisError(
            f"{exc}: count another cause (--junk-causes) or add a detector of "
            "one (--detectors, setting consensus_detectors)"
        ) from None

    # with junk_causes unset, a scene cause that mostly says what kind of day it is (Kat Kam's
    # clear days) is left out (`default_causes`); said in the notes, kept with the run
    by_cause = {c: s.decision_scores_ for c, s in consensus.causes_.items()}
    in_daylight = daylight_classes(batch) == "day"
    days = day_and_minute(batch.local_time)[0]
    day_shares = day_gated(by_cause, in_daylight & (days >= 0), days)
    junk_causes = list(settings.junk_causes or ())
    left_out = {}  # cause -> its day share, for each cause the run left out by itself
    if not junk_causes:
        junk_causes = default_causes(day_shares, by_cause)
        left_out = {c: day_shares[c] for c in by_cause if c not in junk_causes}
        if left_out:
            consensus.count(junk_causes)
            notes += day_gate_note(day_shares, junk_causes)
    # does a counted cause rank this camera's frames against the quality cause? Said in the
    # notes and kept with the run for the dashboard
    agreement = cause_agreement(by_cause, in_daylight)
    at_odds = causes_at_odds(agreement, junk_causes)
    notes += at_odds_advice(at_odds, junk_causes)

    learned, learn_note = steps.run(
        "detector:learned", learn_from_reviews, settings, verdicts, detectors, consensus, batch
    )
    notes += learn_note

    first = batch.nn_dist[:, 0]
    too_far = float(np.quantile(first[np.isfinite(first)], settings.too_far_quantile))
    fitted = FittedRun(
        run_id=run_id,
        model=model,
        scaler=scaler,
        pca=pca,
        n_dims=n_dims,
        index=index,
        detectors=detectors,
        consensus=consensus,
        learned=learned,
        clusterer=clusterer,
        cluster_of_fit=labels,
        too_far_distance=too_far,
        versions=library_versions(),
        map_kind=map_kind,
        mapper=mapper,
        lat=lat,
        lon=lon,
        regions=regions,
    )
    scored = fitted.score(batch, of_fit=True)
    _say(progress, "incidents and the archive mosaic")
    incidents = steps.run(
        "incidents",
        run_incidents,
        batch,
        scored,
        detectors,
        consensus,
        settings.incident_gap_frames,
    )
    archive = steps.run(
        "mosaic",
        mosaic.finish,
        ThumbnailReader(db, chunk=MOSAIC_CHUNK),
        incidents.frames["frame_id"].to_numpy(np.int64),
    )
    # the `neighbors` table's columns only (the detectors' neighbours may be more)
    k_table = min(N_TABLE_NEIGHBORS, batch.nn_dist.shape[1])
    nn_dist = np.ascontiguousarray(batch.nn_dist[:, :k_table])
    nn_idx = np.ascontiguousarray(batch.nn_idx[:, :k_table])
    fit_ids = index.frame_ids_

    n_clusters = int(len(set(labels.tolist()) - {-1}))
    n_outliers = int(scored.flags[CONSENSUS].sum())
    # `regions`' own indexes, one per region of the view (the worst recall of them)
    region_indexes = getattr(detectors.get("regions"), "indexes_", None) or []
    params = dict(
        params,
        pca_dims=n_dims,
        n_clusters_found=n_clusters,
        neighbor_index=index.kind_,
        neighbor_recall=index.recall_,
        neighbor_recall_frames=index.recall_frames_,
        neighbor_nprobe=index.nprobe_,
        region_dims=None if regions is None else regions.dims,
        region_index=",".join(sorted({ix.kind_ for ix in region_indexes})) or None,
        region_recall=min((ix.recall_ for ix in region_indexes), default=None),
        detectors=list(detectors),
        consensus_of=chosen,
        junk_causes=junk_causes,
        cause_day_share=day_shares,
        causes_left_out=left_out,
        cause_agreement=agreement,
        causes_at_odds=at_odds,
        too_far_distance=too_far,
        learned=None if learned is None else learned.record(),
        detector_facts={
            key: scorer.facts()
            for key, scorer in {
                **detectors,
                **{cause_key(c): s for c, s in consensus.causes_.items()},
                CONSENSUS: consensus,
                **({} if learned is None else {LEARNED: learned}),
            }.items()
        },
        n_incidents=len(incidents),
        mosaic={
            "frames": archive.n_frames,
            "decoded_for_it": archive.n_decoded,
            "seconds": archive.seconds,
        },
    )
    ran = list(detectors) + [CONSENSUS] + ([] if learned is None else [LEARNED])
    versions = fitted.versions
    artifact = steps.run("save_fitted", fitted.to_bytes) if settings.save_fitted else None
    # What only the fit needed goes before the rows are written: the fitted state (its bytes
    # hold it), the vectors, the index, the detectors' training arrays (GBs at 3M frames)
    del fitted, detectors, consensus, learned, index, batch, z, clusterer, mapper, mosaic, reader
    del fit_pcts, first
    cluster_rows = pa.table(
        {
            "run_id": pa.array(np.full(n, run_id, dtype=np.int64)),
            "frame_id": pa.array(np.asarray(ids, dtype=np.int64)),
            "cluster": pa.array(labels.astype(np.int32)),
            "map_x": pa.array(np.asarray(xy[:, 0], dtype=float), from_pandas=True),
            "map_y": pa.array(np.asarray(xy[:, 1], dtype=float), from_pandas=True),
        }
    )
    del labels, xy
    _say(progress, f"writing run {run_id}")
    # One transaction, written part by part (the fitted state first, while least else is held,
    # then each detector's scores and slices of the neighbours), each part let go of once in:
    # a failure or a kill anywhere rolls every part back
    with (
        steps.timed("write"),
        store.connect(db) as con,
        sa.writing_run(con, run_id, keep_fitted=settings.keep_fitted_runs) as writer,
    ):
        if artifact is not None:
            writer.add_fitted(artifact, versions)
            artifact = None
        writer.add_clusters(cluster_rows)
        del cluster_rows
        for key in list(scored.scores):
            writer.add_scores(scored.pop_table(key, run_id))
        writer.add_cause_evidence(incidents.evidence.assign(run_id=run_id))
        for part in neighbor_tables(run_id, ids, nn_dist, nn_idx, fit_ids, k_table):
            writer.add_neighbors(part)
        del nn_dist, nn_idx
        writer.complete(
            n_frames=n,
            timings=dict(steps.timings),
            params=params,
            keep_fitted=settings.keep_fitted_runs,
            incidents=incidents.table,
            incident_frames=incidents.frames,
            mosaic=archive,
        )
    return AnalyzeResult(
        run_id=run_id,
        model=model,
        n_frames=n,
        detectors=ran,
        n_dims=n_dims,
        n_clusters=n_clusters,
        n_outliers=n_outliers,
        timings=dict(steps.timings),
        peak_mb=dict(steps.peak_mb),
        notes=notes,
        params=params,
        cpu=dict(steps.cpu),
    )


def learn_from_reviews(
    settings: Settings,
    verdicts: pd.DataFrame | None,
    detectors: dict[str, Detector],
    consensus: Consensus,
    batch: FrameBatch,
) -> tuple[Learned | None, list[str]]:
    """(`learned` fitted on the reviews of the run's frames, or None; what the run's notes say
    of it). None without `learn_from_reviews`, without reviews, or with fewer than
    `learn_min_reviews` of either verdict among the run's frames (the note says how many)."""
    if verdicts is None or verdicts.empty:
        return None, []
    at = pd.Index(batch.frame_ids).get_indexer(verdicts["frame_id"].to_numpy())
    verdicts = verdicts[at >= 0]
    reviewed, junk = at[at >= 0], (verdicts["verdict"] == "junk").to_numpy()
    n_junk, n_keep = int(junk.sum()), int((~junk).sum())
    least = settings.learn_min_reviews
    if n_junk < least or n_keep < least:
        return None, [
            f"learned not fitted: {n_junk} of the run's frames are reviewed junk and {n_keep} "
            f"keep; it needs at least {least} of each (setting learn_min_reviews)"
        ]
    ties = consensus.lowest_ties_
    pcts = {
        k: d.percentile(d.decision_scores_, ties).astype(np.float32) for k, d in detectors.items()
    }
    learned = Learned(list(detectors), contamination=settings.contamination).fit(
        pcts, consensus.percentile(consensus.decision_scores_, ties), reviewed, junk, batch.z
    )
    check = learned.cross_validated_
    said = f"learned from your reviews ({n_junk} junk, {n_keep} keep): "
    if learned.weight_ == 0:
        said += (
            "they agree with the consensus, so learned ranks the frames as it does (ROC-AUC "
            f"over them {check['roc_auc_consensus']:.3f}; no model of them did clearly better)"
        )
    else:
        said += (
            f"a model of them counts {learned.weight_:.0%} against the consensus; ranked by "
            f"models fitted without them ({check['folds']} folds), the reviews' ROC-AUC is "
            f"{check['roc_auc']:.3f} (the consensus alone: {check['roc_auc_consensus']:.3f})"
        )
    return learned, [said]


def _spread(db: Path, settings: Settings):
    """With `executor = "ray"`, what runs the pixel detectors' per-frame passes on the cluster
    (`pipeline.ray_executor.RayFrameSpread`); None runs them here. Fitting stays here."""
    if settings.executor != "ray":
        return None
    from pipeline.ray_executor import RayFrameSpread

    return RayFrameSpread(db, PIXEL_CHUNK, settings.ray_stall_seconds)


def fit_index(z: np.ndarray, ids: np.ndarray, k: int, settings: Settings) -> NeighborIndex:
    """The run's nearest-neighbour index over `z`, its recall for `k` neighbours measured."""
    return (
        NeighborIndex(settings.neighbor_index, random_state=settings.random_state)
        .fit(z, ids)
        .calibrate(z, ids, k)
    )


# a projection batch in float64 stays near this size (7,000 rows of 4,608-d, 65,000 of 512-d)
PROJECT_BATCH_BYTES = 256 * 2**20
STREAM_MEMORY_MB = 512  # DuckDB's buffers while analyze reads vectors (at least twice the sample)


def fit_sample(n: int, settings: Settings) -> np.ndarray:
    """Sorted row positions the projection is fitted on: all when n <= `pca_fit_frames`, else
    a seeded random sample of that many (spread over the whole footage)."""
    if n <= settings.pca_fit_frames:
        return np.arange(n)
    rng = np.random.default_rng(settings.random_state)
    return np.sort(rng.choice(n, settings.pca_fit_frames, replace=False))


def load_projected(
    db: Path, model: str, settings: Settings, steps: _Steps, want_regions: bool = True
):
    """The run's frames and their vectors in PCA space, without the whole matrix in memory.

    The standardisation and PCA are fitted on a `pca_fit_frames` sample of the vectors (a
    smaller store is read once, fitted on all of them and projected), then every vector is
    streamed from the store once and projected a batch at a time: memory is the sample, one
    batch, DuckDB's bounded buffers (`store.embeddings.bound_memory`) and the n x n_dims
    result, whatever the size of the matrix (750k x 4,608 is 14 GB as float32). With
    `want_regions` (a detector reads them), a model with regions (`projection.region_count`)
    gets each region's projection fitted on the same sample and applied in the same pass
    (`RegionProjection`; n x 32 float32 more per region).
    Reading is timed as `load`, fitting and projecting as `preprocess`. Returns
    (ids, frames, scaler, pca, n_dims, z, regions, zr): `regions` the region projection and
    `zr` its points (one array per region), both None for a model without regions; rows in
    frame_id order.
    """
    n_regions = region_count(model) if want_regions else 1
    with store.connect(db) as con:
        dim = int(se.vector_dim(con, model) or 0)
        se.bound_memory(con, max(STREAM_MEMORY_MB, 2 * settings.pca_fit_frames * dim * 4 // 2**20))
        ids = steps.run("load", se.vector_ids, con, model)
        frames = steps.run("load", sa.load_frames, con, ids)
        whole = len(ids) <= settings.pca_fit_frames  # the sample is every frame: read it once
        read, sample = steps.run(
            "load",
            se.load_vectors,
            con,
            model,
            None if whole else ids[fit_sample(len(ids), settings)],
        )
        bad = int((~np.isfinite(sample).all(axis=1)).sum())
        if bad:  # the fit cannot run: say so now rather than after reading everything
            raise _not_finite(f"{bad} of {len(sample)} sampled", model, db)
        scaler, pca, n_dims = steps.run("preprocess", fit_projection, sample, len(ids), settings)
        regions = None
        if n_regions > 1 and dim % n_regions == 0:
            regions = steps.run(
                "preprocess", RegionProjection(n_regions).fit, sample, len(ids), settings
            )
        if whole and np.array_equal(read, ids):
            z = steps.run("preprocess", project, sample, scaler, pca, n_dims)
            zr = None if regions is None else steps.run("preprocess", regions.transform, sample)
            return ids, frames, scaler, pca, n_dims, z, regions, zr
        del sample
        z = np.empty((len(ids), n_dims), dtype=np.float32)
        zr = (
            None if regions is None else [np.empty((len(ids), d), np.float32) for d in regions.dims]
        )
        seen = np.zeros(len(ids), dtype=bool)
        rows = max(1, PROJECT_BATCH_BYTES // (8 * scaler.n_features_in_))
        batches = se.iter_vectors(con, model, rows)
        while (batch := steps.run("load", next, batches, None)) is not None:
            batch_ids, vectors = batch
            where = np.minimum(np.searchsorted(ids, batch_ids), len(ids) - 1)
            keep = ids[where] == batch_ids  # a frame embedded since `ids` was read is left out
            finite = np.isfinite(vectors).all(axis=1)
            bad += int((keep & ~finite).sum())
            keep &= finite
            z[where[keep]] = steps.run("preprocess", project, vectors[keep], scaler, pca, n_dims)
            if zr is not None:
                parts = steps.run("preprocess", regions.transform, vectors[keep])
                for out, part in zip(zr, parts):
                    out[where[keep]] = part
            seen[where[keep]] = True
    if bad:
        raise _not_finite(str(bad), model, db)
    if not seen.all():
        raise AnalysisError(
            f"{int((~seen).sum())} {model} vectors were gone when the analysis "
            "read them back (the store changed under it); run analyze again"
        )
    return ids, frames, scaler, pca, n_dims, z, regions, zr


def _not_finite(how_many: str, model: str, db: Path) -> AnalysisError:
    return AnalysisError(
        f"{how_many} {model} vectors contain NaN or infinity; re-embed them "
        f"(`python -m pipeline embed --db {db} --model {model} --replace`)"
    )


def cluster(z: np.ndarray, settings: Settings):
    """k-means (k given, or 2..12 chosen by silhouette on a sample) or HDBSCAN (-1 = noise)."""
    n = len(z)
    rng = np.random.default_rng(settings.random_state)
    if settings.clusterer == "hdbscan":
        import hdbscan

        dims = min(settings.cluster_dims, z.shape[1])
        model = hdbscan.HDBSCAN(min_cluster_size=max(5, n // 100), core_dist_n_jobs=1)
        labels = model.fit_predict(z[:, :dims].astype(np.float64))
        return model, labels.astype(np.int64)
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    def fit(k: int, data: np.ndarray):
        if len(data) > 20_000:
            return MiniBatchKMeans(
                n_clusters=k, random_state=settings.random_state, batch_size=4096, n_init=3
            ).fit(data)
        return KMeans(n_clusters=k, random_state=settings.random_state, n_init=3).fit(data)

    if str(settings.n_clusters) == "auto":
        # k by silhouette on a 3000-frame sample (cost independent of n), then one fit on all
        sample = z[rng.choice(n, size=3000, replace=False)] if n > 3000 else z
        sub = rng.choice(len(sample), size=min(len(sample), 1500), replace=False)
        scored = []
        for k in range(2, min(12, len(sample) - 1) + 1):
            labels = (
                KMeans(n_clusters=k, random_state=settings.random_state, n_init=1)
                .fit(sample)
                .labels_
            )
            if len(set(labels[sub])) < 2:
                continue
            scored.append((silhouette_score(sample[sub], labels[sub]), k))
        k = max(scored)[1] if scored else 1
    else:
        # no more clusters than distinct frames (k-means would warn and leave some empty);
        # analyze's notes say when the number asked for was cut
        k = int(settings.n_clusters)
        if 2 * k > n:
            k = min(k, len(np.unique(z, axis=0)))
    model = fit(k, z)
    return model, model.predict(z).astype(np.int64)


def make_map(z: np.ndarray, settings: Settings):
    """2-D coordinates: the first two PCA components, or UMAP when asked for."""
    if settings.map_method == "umap":
        import umap

        mapper = umap.UMAP(
            n_components=2, random_state=settings.random_state, n_neighbors=min(15, len(z) - 1)
        )
        return mapper, np.asarray(mapper.fit_transform(z), dtype=float)
    xy = z[:, :2] if z.shape[1] >= 2 else np.column_stack([z[:, 0], np.zeros(len(z))])
    return None, np.asarray(xy, dtype=float)
