"""`run`'s ingest and embed in one pass: each new file is read once, and decoded once, for its
time, thumbnail, statistics and the model's input.

`ingest_and_embed(folder, db, settings)` plans an ingest of FOLDER
(`pipeline.ingest.start_ingest`), builds the model (`pipeline.embed.build_embedder`; `auto`
precision is checked on a few of the new files), then runs three steps behind an executor
(`LocalExecutor` with worker processes, or with `executor = "ray"` the Ray executor, which
runs the same two functions on a cluster: `pipeline.ray_executor`):

1. per file, in the workers: `imagestats.read_frame` with the model's input size, the function
   ingest's workers run, now also returning the model's input from the same bytes (from the
   same decode when the model's draft scale is the thumbnail's: 1080p frames and larger);
2. per batch of `batch_size` files, in this process: the model on the batch's inputs
   (`embed_results`), while the workers decode the next batches;
3. per batch, the one writer (a thread, while the next batch is inferred): the frames' rows,
   thumbnails and errors (ingest's writer), then their vectors, each in a short transaction.

Thumbnails, statistics and vectors are exactly those of `ingest` then `embed` (tested). A
killed run loses at most the batch being committed: frames committed without their vectors are
what `embed` finds missing, and `run` embeds those after the pass (two decodes for those few).
`ingest` and `embed` on their own are unchanged.
"""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import store
from pipeline import executors, pixels
from pipeline.embed import (
    BatchWriter,
    EmbedSummary,
    build_embedder,
    mixed_precisions,
    plan_batches,
    record_model,
    sample_frames,
)
from pipeline.executors import Executor, LocalExecutor
from pipeline.imagestats import FrameResult, configure_worker, read_frame
from pipeline.ingest import POOL_MIN_FILES, FileEntry, IngestJob, IngestSummary, start_ingest
from pipeline.models import get_model
from pipeline.models.embedder import Embedder
from pipeline.models.precision import CHECK_FRAMES, PrecisionChoice
from pipeline.settings import Settings
from store import embeddings as embeddings_store


@dataclass
class PassBatch:
    """One batch's result, what the per-batch work hands the driver's writer: every file's
    `FrameResult` (its model input dropped) and the vectors of those that decoded."""

    results: list[FrameResult]
    vectors: np.ndarray  # float32 [len(embedded), dim]
    embedded: list[int]  # positions in `results` of the vectors' frames


def embed_results(embedder: Embedder, results: list[FrameResult]) -> PassBatch:
    """Per-batch work: the model on the inputs `read_frame` made (files that failed have
    none); the inputs are dropped, so only rows and vectors travel on."""
    embedded = [i for i, result in enumerate(results) if result.model_input is not None]
    if embedded:
        vectors = embedder.embed(np.stack([results[i].model_input for i in embedded]))
    else:
        vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    for result in results:
        result.model_input = None
    return PassBatch(results, vectors, embedded)


class _Commit:
    """The writer's work for one batch: frames (ingest's writer), then vectors."""

    def __init__(self, job: IngestJob, embedder: Embedder):
        self.job = job
        self.embedder = embedder
        self.entries: dict[str, FileEntry] = {entry.name: entry for entry in job.todo}

    def __call__(self, batch: PassBatch) -> int:
        entries = [self.entries[result.name] for result in batch.results]
        frame_ids = self.job.writer.write(list(zip(entries, batch.results)))
        ids = np.array([frame_ids[i] for i in batch.embedded], dtype=np.int64)
        with store.connect(self.job.db, migrate=False) as con:
            return embeddings_store.insert_vectors(
                con, self.embedder.key, ids, batch.vectors, precision=self.embedder.precision
            )


Built = tuple[Embedder, PrecisionChoice]


def ingest_and_embed(
    folder: Path,
    db: Path,
    settings: Settings,
    progress: bool = True,
    executor: Executor | None = None,
    built: Built | None = None,
) -> tuple[IngestSummary, EmbedSummary, Built | None]:
    """Ingest FOLDER's new and changed files and embed them with `settings.model` in one pass.

    Returns the ingest summary, the embed summary of the pass, and the model it built (None
    when there was nothing new), which `run` hands on to embed any other frames lacking a
    vector. `executor` defaults to `LocalExecutor` with `settings.workers` processes; `built`
    is a model `build_embedder` already built for these settings.
    """
    with executors.session(settings):  # Ray missing or unreachable: said before the walk
        return _ingest_and_embed(Path(folder), Path(db), settings, progress, executor, built)


def _ingest_and_embed(
    folder: Path,
    db: Path,
    settings: Settings,
    progress: bool,
    executor: Executor | None,
    built: Built | None,
) -> tuple[IngestSummary, EmbedSummary, Built | None]:
    job = start_ingest(folder, db, settings)
    spec = get_model(settings.model)
    summary = EmbedSummary(spec.key)
    if not job.todo:
        return job.finish(), summary, None
    started = time.monotonic()
    sample = [Path(entry.os_path) for entry in job.todo[: 2 * CHECK_FRAMES]]
    built = built or build_embedder(
        settings, sample=partial(sample_frames, sample, spec.input_size)
    )
    embedder, summary.choice = built
    record_model(db, embedder)

    tasks = [job.task(entry, embedder.input_size) for entry in job.todo]
    workers = max(1, min(int(settings.workers), len(tasks)))
    executor = executor or executors.choose(
        settings,
        lambda: LocalExecutor(
            workers,
            processes=workers > 1 and len(tasks) >= POOL_MIN_FILES,
            preload=["pipeline.imagestats"],
            initializer=configure_worker,
            initargs=(settings.max_image_pixels,),
        ),
        path_of=_task_path,
        setup=partial(pixels.configure, settings.max_image_pixels),
    )
    computed = executor.map_batches(
        plan_batches(tasks, settings.batch_size), read_frame, partial(embed_results, embedder)
    )
    writer = BatchWriter(_Commit(job, embedder))
    bar = _progress_bar(len(tasks), spec.key, progress)
    try:
        with closing(computed):
            for batch in computed:
                writer.put(batch)
                bar.update(len(batch.results))
        writer.close()
    finally:
        bar.close()
        writer.close()  # a Ctrl-C still commits the batch that was handed over
    summary.embedded = summary.while_ingesting = writer.embedded
    summary.precisions = mixed_precisions(db, spec.key) if writer.embedded else None
    summary.seconds = time.monotonic() - started
    return job.finish(), summary, built


def _task_path(task) -> str:
    return task.os_path


def _progress_bar(total: int, model: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="frame",
        desc=f"ingest+embed {model}",
        file=sys.stderr,
        disable=not enabled,
        smoothing=0.05,
        mininterval=0.5,
        dynamic_ncols=True,
    )
