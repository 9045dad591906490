"""The embed stage: a vector per frame for one model, fast, resumable, committed per batch.

`embed_frames` is the front door. It builds the model with `build_embedder` (the one way a
model is built for embedding, at the `precision` setting: `pipeline.models.precision`), checks it
against the store's vectors of that model (`record_model`), then its inner loop `embed_pending`
has three steps:

1. **plan** (`plan_batches`): the frames that lack a vector for the model, in batches of
   `batch_size`;
2. **compute**, behind an executor (`pipeline.executors`; `LocalExecutor` by default): the
   per-frame function `decode_frame` reads each original file (Pillow JPEG draft mode: the DCT
   decodes at 1/2, 1/4 or 1/8 scale, still at least the model's input size) in worker threads,
   a few batches ahead of inference, and the per-batch function `embed_batch` runs the model
   (with `executor = "ray"`, both on a Ray cluster: `pipeline.ray_executor`);
3. **commit** (`BatchWriter`): the single writer. Workers hand their results back to the
   driver; only the driver writes to the store (DuckDB has one writer). Each batch's vectors
   are committed in their own short write connection by a writer thread while the next batch
   is inferred, so a killed run loses at most one finished batch, and the next run continues
   with the frames that still lack a vector.

A frame whose file vanished or no longer decodes becomes an `ingest_errors` row (stage 'embed')
and is skipped. Every vector records the precision that made it; a store may hold one model's
vectors of two precisions (measured to rank frames alike), and the summary line says so.
"""

from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np

import store
from pipeline import executors, pixels
from pipeline.errors import InputError
from pipeline.executors import Executor, LocalExecutor
from pipeline.models import get_model, keras_setup
from pipeline.models.embedder import Embedder, KerasEmbedder
from pipeline.models.precision import (
    CHECK_FRAMES,
    MIXED_PRECISION_DOC,
    PrecisionChoice,
    build_model,
)
from pipeline.settings import Settings
from store import embeddings as embeddings_store
from store.embeddings import ModelRow, PendingFrame

Batch = TypeVar("Batch")

log = logging.getLogger(__name__)


@dataclass
class EmbedSummary:
    """What one embed call did; `describe()` is the line the CLI prints."""

    model: str
    embedded: int = 0
    already_done: int = 0
    failed: int = 0
    seconds: float = 0.0
    replaced: int = 0
    while_ingesting: int = 0  # of `embedded`: in `run`'s one pass (one decode per frame)
    choice: PrecisionChoice | None = None  # None when no model was built (nothing to embed)
    precisions: dict[str, int] | None = None  # the model's vectors per precision, when mixed

    @property
    def frames_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def merge(self, later: "EmbedSummary") -> "EmbedSummary":
        """This summary followed by `later`, an embed of the same model in the same command
        (`run`: its one pass, then the frames that still lacked a vector)."""
        return EmbedSummary(
            self.model,
            embedded=self.embedded + later.embedded,
            already_done=later.already_done - self.embedded,
            failed=self.failed + later.failed,
            seconds=self.seconds + later.seconds,
            replaced=self.replaced + later.replaced,
            while_ingesting=self.while_ingesting + later.while_ingesting,
            choice=later.choice or self.choice,
            precisions=later.precisions or self.precisions,
        )

    def describe(self) -> str:
        parts = [f"embed {self.model}: {self.embedded} frames embedded"]
        if self.embedded:
            parts[0] += f" in {self.seconds:.1f} s ({self.frames_per_s:.1f} frames/s)"
        if self.while_ingesting:
            parts.append(f"{self.while_ingesting} of them while ingesting (one decode per frame)")
        if self.replaced:
            parts.append(f"{self.replaced} old vectors replaced")
        parts.append(f"{self.already_done} already had vectors")
        parts.append(f"{self.failed} failed" + (" (see ingest errors)" if self.failed else ""))
        line = ", ".join(parts)
        if self.choice is not None:
            line += f"; precision {self.choice.describe()}"
        if self.precisions and len(self.precisions) > 1:
            mix = " + ".join(f"{n} {p}" for p, n in self.precisions.items())
            line += (
                f"; note: the store's {self.model} vectors are of two precisions now ({mix})"
                f", which rank frames alike (see {MIXED_PRECISION_DOC})"
            )
        return line


def load_frame(path: Path | bytes, size: int) -> np.ndarray:
    """Decode an image file (or its bytes) to RGB uint8 `[size, size, 3]`: the whole frame,
    squashed, upright.

    Through `pipeline.pixels`, the one decoding path: JPEG draft mode decodes at the smallest
    DCT scale that is still >= size on both sides (several times faster than a full decode of
    a large frame), and modes and EXIF orientation are handled as for thumbnails, so a frame's
    vector and its thumbnail show the same picture. Raises `pixels.FrameDecodeError` for a file
    that is no frame, OSError for one that cannot be opened.
    """
    return pixels.model_input(pixels.decode_original(path, pixels.square_box(size)), size)


def _frame_file(frame: PendingFrame) -> Path:
    from pipeline.ingest import frame_file  # here: pipeline.ingest imports pandas (slow start)

    return frame_file(frame.root, frame.path)


def _frame_path(frame: PendingFrame) -> str:
    return str(_frame_file(frame))


def decode_frame(
    frame: PendingFrame, size: int
) -> tuple[PendingFrame, np.ndarray | None, str | None]:
    """Per-frame work: (frame, RGB uint8 [size, size, 3], None), or (frame, None, why not)."""
    path = _frame_file(frame)
    try:
        return frame, load_frame(path, size), None
    except FileNotFoundError:
        return frame, None, f"file vanished: {path}"
    except (pixels.FrameDecodeError, OSError) as exc:
        return frame, None, f"cannot decode {path}: {exc}"


@dataclass
class EmbeddedBatch:
    """One batch's result, what a worker hands back to the driver's writer."""

    frame_ids: np.ndarray  # int64, one per vector
    vectors: np.ndarray  # float32 [len(frame_ids), dim]
    errors: list[tuple[PendingFrame, str]]  # frames that could not be read, and why
    n_frames: int  # frames in the batch (vectors + errors)


def embed_batch(
    embedder: Embedder, decoded: list[tuple[PendingFrame, np.ndarray | None, str | None]]
) -> EmbeddedBatch:
    """Per-batch work: the model on the batch's decoded frames."""
    good = [(frame, pixels) for frame, pixels, _ in decoded if pixels is not None]
    errors = [(frame, message) for frame, _, message in decoded if message is not None]
    ids = np.array([frame.frame_id for frame, _ in good], dtype=np.int64)
    if good:
        vectors = embedder.embed(np.stack([pixels for _, pixels in good]))
    else:
        vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    return EmbeddedBatch(ids, vectors, errors, len(decoded))


def plan_batches(pending: Sequence[PendingFrame], batch_size: int) -> list[list[PendingFrame]]:
    """The frames to embed in batches of `batch_size` (each batch is one inference and one
    commit)."""
    return [list(pending[i : i + batch_size]) for i in range(0, len(pending), batch_size)]


class BatchWriter(Generic[Batch]):
    """The single writer: `commit(batch) -> vectors added` in a background thread (each commit
    opens its own short write connection), while the caller computes the next batch.

    `put()` first waits for the previous batch's commit (and re-raises its error), so at most
    one finished batch is ever uncommitted.
    """

    def __init__(self, commit: Callable[[Batch], int]):
        self._commit = commit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-writer")
        self._last: Future | None = None
        self.embedded = 0

    def wait(self) -> None:
        if self._last is not None:
            last, self._last = self._last, None
            self.embedded += last.result()

    def put(self, batch: Batch) -> None:
        self.wait()
        self._last = self._pool.submit(self._commit, batch)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def commit_vectors(db: Path, embedder: Embedder, batch: EmbeddedBatch) -> int:
    """One batch's vectors (at the embedder's precision) and errors, in one short write
    connection; returns the vectors added."""
    with store.connect(db, migrate=False) as con:
        return embeddings_store.insert_vectors(
            con, embedder.key, batch.frame_ids, batch.vectors, batch.errors, embedder.precision
        )


def build_embedder(
    settings: Settings,
    sample: Callable[[], np.ndarray | None] | None = None,
    precision: str | None = None,
) -> tuple[Embedder, PrecisionChoice]:
    """The one way the pipeline builds a model for embedding: `settings.model` with
    `settings.weights` at `precision` (default `settings.precision`; `auto` is resolved here,
    `sample()` giving a few decoded frames for its speed check). Returns the model and the
    choice with its reason. `score-new` and `serve` pass the run's precision
    (`pipeline.score_new.run_precision`); an executor's workers get the driver's resolved
    precision, so every worker embeds alike."""
    spec = get_model(settings.model)
    if settings.weights is not None:
        check = spec.available(settings.weights)
        if not check.ok:
            raise InputError(f"--weights for {spec.key}: {check.detail}")
    embedder, choice = build_model(spec, settings.weights, precision or settings.precision, sample)
    keras_backend = keras_setup.backend() if isinstance(embedder, KerasEmbedder) else None
    embedder.recipe = (
        rebuild_embedder,
        (spec.key, settings.weights, embedder.precision, keras_backend),
    )
    return embedder, choice


_REBUILT: dict[tuple, Embedder] = {}


def rebuild_embedder(
    model: str, weights: str | None, precision: str, keras_backend: str | None = None
) -> Embedder:
    """A driver's model built again in a worker process (a Ray actor) from its recipe, at the
    driver's resolved precision and on the driver's Keras backend; once per process. A worker
    that cannot build it (weights or the backend missing on that node) raises as the driver
    would."""
    key = (model, weights, precision)
    if keras_backend is not None:
        keras_setup.use_backend(keras_backend)
    if key not in _REBUILT:
        settings = Settings(model=model, weights=weights, precision=precision)
        _REBUILT[key] = build_embedder(settings)[0]
    return _REBUILT[key]


def model_row(embedder: Embedder) -> ModelRow:
    """The `models` row of a built model (with the precision it runs at)."""
    return ModelRow(
        embedder.key,
        embedder.family,
        embedder.weights,
        embedder.dim,
        embedder.input_size,
        embedder.precision,
    )


def record_model(db: Path, embedder: Embedder) -> None:
    """Record the model row, after checking the store's vectors of this model were made with
    the same weights and dim. Raises `InputError` with the fix (`embed --replace`) when not:
    vectors of other weights are incomparable. Another precision is no refusal: the vectors
    are the same to within rounding (`pipeline.models.precision`); each records its own."""
    row = model_row(embedder)
    with store.connect(db, migrate=False) as con:
        existing = embeddings_store.get_model_row(con, row.model)
        n_existing = embeddings_store.count_vectors(con, row.model) if existing else 0
        if (
            existing is not None
            and n_existing
            and (not same_weights(existing.weights, row.weights) or existing.dim != row.dim)
        ):
            raise InputError(
                f"the store's {n_existing} {row.model} vectors were made with other weights "
                f"({existing.weights}, {existing.dim}-d); now: {row.weights}, {row.dim}-d. "
                "Mixing them would make the vectors incomparable: use the same weights, or "
                f"re-embed every frame with `python -m pipeline embed --db {db} --model "
                f"{row.model} --replace`."
            )
        embeddings_store.record_model(con, row)


def mixed_precisions(db: Path, model: str) -> dict[str, int] | None:
    """The model's vectors per precision when the store holds more than one, else None."""
    with store.connect(db, migrate=False) as con:
        counts = embeddings_store.precision_counts(con, model)
    return counts if len(counts) > 1 else None


def sample_frames(
    paths: Sequence[Path], size: int | None, n: int = CHECK_FRAMES
) -> np.ndarray | None:
    """Up to `n` of the first 2n files decoded at the model's input size (`auto`'s check);
    files that do not decode are passed over."""
    if size is None:
        return None
    decoded = []
    for path in paths[: 2 * n]:
        try:
            decoded.append(load_frame(path, size))
        except (pixels.FrameDecodeError, OSError) as exc:
            log.info("precision check: %s passed over (%s)", path, exc)
        if len(decoded) == n:
            break
    return np.stack(decoded) if decoded else None


_HASH = re.compile(r"blake2b ([0-9a-f]+)")


def same_weights(old: str, new: str) -> bool:
    """Whether two `models.weights` descriptions name the same weights (by their hash when
    both have one)."""
    old_hash, new_hash = _HASH.search(old), _HASH.search(new)
    if old_hash and new_hash:
        return old_hash[1] == new_hash[1]
    return old == new


def _progress_bar(total: int, model: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="frame",
        desc=f"embed {model}",
        disable=not enabled,
        smoothing=0.05,
        dynamic_ncols=True,
    )


def embed_frames(
    db: Path,
    settings: Settings,
    frame_ids: Sequence[int] | None = None,
    progress: bool = True,
    replace: bool = False,
    built: tuple[Embedder, PrecisionChoice] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EmbedSummary:
    """Embed every frame (of `frame_ids` when given) that lacks a vector for `settings.model`.

    Uses settings.model, .weights, .precision, .batch_size and .workers (`built`: a model
    `build_embedder` already built for these settings, used instead of building it again).
    `replace=True` deletes all of the model's vectors once the model is built (e.g. after
    changing its weights file), then embeds again. Raises `ModelUnavailableError` when the
    model cannot be built here (never switches to another model) and `InputError` when the
    store already holds vectors of this model made with different weights.
    """
    started = time.monotonic()
    db = Path(db)
    spec = get_model(settings.model)
    if settings.weights is not None:
        check = spec.available(settings.weights)
        if not check.ok:
            raise InputError(f"--weights for {spec.key}: {check.detail}")
    pixels.configure(settings.max_image_pixels)

    with store.connect(db) as con:
        n_scope = embeddings_store.count_frames(con, frame_ids)
        pending = embeddings_store.pending_frames(con, spec.key, frame_ids)
        existing = embeddings_store.get_model_row(con, spec.key)
        n_existing = embeddings_store.count_vectors(con, spec.key) if existing else 0
    summary = EmbedSummary(spec.key, already_done=n_scope - len(pending))
    replacing = replace and (n_existing > 0 or existing is not None)
    if not pending and not replacing:
        summary.seconds = time.monotonic() - started
        return summary

    with executors.session(settings):  # Ray missing or unreachable: said before the build
        _check_roots(db, pending)
        # before any delete: a failed build changes nothing
        embedder, summary.choice = built or build_embedder(
            settings,
            sample=partial(
                sample_frames,
                [_frame_file(frame) for frame in pending[: 2 * CHECK_FRAMES]],
                spec.input_size,
            ),
        )
        if replacing:
            with store.connect(db, migrate=False) as con:
                summary.replaced = embeddings_store.delete_model(con, spec.key)
                pending = embeddings_store.pending_frames(con, spec.key, frame_ids)
            summary.already_done = n_scope - len(pending)
            _check_roots(db, pending)
        record_model(db, embedder)
        log.info(
            "embedding %d frames with %s (%d-d, %s, %s)",
            len(pending),
            spec.key,
            embedder.dim,
            embedder.weights,
            summary.choice.describe(),
        )

        executor = executors.choose(
            settings,
            lambda: LocalExecutor(settings.workers),
            path_of=_frame_path,
            setup=partial(pixels.configure, settings.max_image_pixels),
        )
        summary.embedded, summary.failed = embed_pending(
            db, embedder, pending, settings, progress, executor, should_stop=should_stop
        )
    summary.precisions = mixed_precisions(db, spec.key) if summary.embedded else None
    summary.seconds = time.monotonic() - started
    return summary


def _check_roots(db: Path, pending: list[PendingFrame]) -> None:
    """Refuse at once when every frames folder is gone (moved or unmounted), before the build."""
    roots = sorted({frame.root for frame in pending})
    if roots and not any(os.path.isdir(root) for root in roots):
        shown = ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
        raise InputError(
            f"the frames folder {shown} no longer exists, so no frame can be read: mount it "
            f"again, or if it moved, run `python -m pipeline ingest NEW_FOLDER --db {db}` "
            "(frames keep their ids and vectors), then embed again"
        )


def embed_pending(
    db: Path,
    embedder: Embedder,
    pending: list[PendingFrame],
    settings: Settings,
    progress: bool = False,
    executor: Executor | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Embed `pending` with a built model: plan the batches, compute them with `executor`
    (default: `LocalExecutor(settings.workers)`), commit each batch as it comes back; when
    `should_stop()` turns true, stop after the batch being committed (`watch` on SIGTERM).
    Returns (vectors added, frames failed). `embed_frames` is the front door; this is its
    inner loop (the benchmark times it with a warmed-up model)."""
    batches = plan_batches(pending, settings.batch_size)
    executor = executor or LocalExecutor(settings.workers)
    computed = executor.map_batches(
        batches, partial(decode_frame, size=embedder.input_size), partial(embed_batch, embedder)
    )
    n_failed = 0
    writer = BatchWriter(partial(commit_vectors, db, embedder))
    bar = _progress_bar(len(pending), embedder.key, progress)
    try:
        with closing(computed):
            for batch in computed:
                for _, message in batch.errors:
                    log.warning("embed: %s", message)
                writer.put(batch)
                n_failed += len(batch.errors)
                bar.update(batch.n_frames)
                if should_stop is not None and should_stop():
                    break
        writer.close()
    finally:
        bar.close()
        writer.close()  # a Ctrl-C still commits the batch that was handed over
    return writer.embedded, n_failed
