"""`python -m pipeline watch FOLDER`: keep a store current while a camera keeps writing frames.

Every `--interval` seconds a pass first looks at FOLDER and the store without writing (a listing
and a short read-only connection, no lock). When there are new or changed files, or frames the
run has not scored yet, it takes the run lock (`store.writer_lock`) and does what `score-new`
does, with the run it keeps loaded (`score_new.score_folder`): ingest, embed (with the run's
model at the precision of the run's vectors, built once and kept), score and add the rows to
the run, each batch in its own short write transaction. Then it lets go of the lock and
of the file until the next pass.

Sharing the store: DuckDB allows one writing process or several reading ones. Between passes
watch holds nothing, so `ingest`, `analyze`, `prune`, the dashboard and `serve` work as if it
were not there. During a pass the dashboard and `serve` wait for the file at most one batch at
a time (their reads retry on the lock; the dashboard shows its lock notice if that takes long);
a pipeline command started during a pass is refused as busy (run it again), and a pass that
finds the run lock taken by another command is skipped and tried at the next interval.

Files still being written: a file that changed between the listing and the read, or that does
not decode (truncated, empty, not yet an image), is left for the next pass instead of becoming
a frame or an error; it is recorded as an error (`ingest_errors`, stage 'watch', as ingest
records bad files) only once it has not changed for `watch_settle_seconds` (by its mtime, or by
this watch's own looks when the mtime is in the future). A bad file that is older than that is
recorded at once.

Stopping: Ctrl-C or SIGTERM sets a flag; the pass stops after the batch being written, and
between passes at once. A SIGKILL loses at most the batch being written: the next start scores
what was ingested but not yet scored (frames of FOLDER with no rows in the run).

Refit: with `--refit-every N`, after N new frames (counted since watch started or last refit)
it runs a full `analyze` with the current run's settings, inside the pass, and scores against
the new run from then on. Without a run at all, passes ingest and embed only (and, with
`--refit-every`, analyze once N frames have come).

It polls rather than waiting for file-system events: the folders cameras write to are often
network shares (SMB, NFS), which deliver no inotify events, and listing even 100,000 files
takes well under a second, so a poll every minute costs nothing noticeable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import store
from pipeline.errors import InputError
from pipeline.imagestats import FrameResult
from pipeline.ingest import FileEntry, folder_root, pending_files
from pipeline.inputs import check_folder
from pipeline.settings import Settings
from store import analysis as sa
from store import embeddings as se

log = logging.getLogger(__name__)

STAGE = "watch"  # the ingest stage its errors are recorded under


@dataclass
class PassResult:
    """What one pass did; `line()` is the line watch prints for it."""

    at: datetime
    n_new: int = 0  # frames added or changed
    n_scored: int = 0
    n_flagged: int = 0  # of those, flagged by the run's consensus
    n_errors: int = 0  # files recorded as unreadable (ingest or embed) in this pass
    n_waiting: int = 0  # files left for the next pass (still being written)
    run_id: int | None = None
    note: str = ""

    def line(self) -> str:
        text = (
            f"watch {self.at:%Y-%m-%d %H:%M:%S}: {self.n_new} new, {self.n_scored} scored, "
            f"{self.n_flagged} flagged, {self.n_errors} errors"
        )
        if self.n_waiting:
            text += f", {self.n_waiting} still being written"
        text += f" (run {self.run_id})" if self.run_id is not None else " (no run yet)"
        return text + (f"; {self.note}" if self.note else "")


class Settling:
    """Which decoded files to leave for the next pass (`ingest_folder`'s `hold`): those that
    changed while they were read, and those that do not decode and changed less than
    `seconds` ago (they may still be being written)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time):
        self.seconds = seconds
        self.clock = clock
        self.first_seen: dict[str, tuple[int, int, float]] = {}  # location -> size, mtime, when

    def hold(self, entry: FileEntry, result: FrameResult) -> bool:
        now = self.clock()
        try:
            st = os.stat(entry.os_path)
            changed = (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns)
        except OSError:
            changed = True  # gone since the listing (a temporary name renamed): look again
        if changed:
            self.first_seen.pop(entry.location, None)
            return True
        if result.error is None:
            self.first_seen.pop(entry.location, None)
            return False
        key = (entry.size, entry.mtime_ns)
        seen = self.first_seen.get(entry.location)
        if seen is None or seen[:2] != key:
            seen = self.first_seen[entry.location] = (*key, now)
        mtime = entry.mtime_ns / 1e9
        quiet_since = mtime if mtime <= now else seen[2]
        if now - quiet_since < self.seconds:
            return True
        self.first_seen.pop(entry.location, None)
        return False


class Watcher:
    """One watched folder and store: `one_pass()` brings the store up to date once."""

    def __init__(
        self,
        folder: Path,
        db: Path,
        settings: Settings,
        *,
        refit_every: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        check_folder(folder)
        if refit_every is not None and refit_every < 1:
            raise InputError(f"--refit-every must be at least 1, not {refit_every}")
        self.folder, self.db, self.settings = Path(folder), Path(db), settings
        self.root = folder_root(folder)
        self.refit_every = refit_every
        self.should_stop = should_stop
        self.settling = Settling(settings.watch_settle_seconds)
        self.fitted = None
        self.model = None  # (embedder, precision choice) of the run, kept between passes
        self.n_since_fit = 0

    def one_pass(self) -> PassResult:
        result = PassResult(at=datetime.now())
        if not self.folder.is_dir():  # removed, renamed, or a network share gone: wait for it
            result.run_id = self.fitted.run_id if self.fitted is not None else None
            result.note = self._gone()
            return result
        try:
            work = self._look(result)
            if work:
                with store.writer_lock(self.db):
                    self._work(result)
        except store.StoreLockedError as exc:  # busy (a pipeline run) or locked (a long read)
            result.note = f"store busy, tried again next pass ({_first_sentence(exc)})"
        except (FileNotFoundError, NotADirectoryError):
            if self.folder.is_dir():
                raise
            result.note = self._gone()  # went during the pass: what was committed is kept
        return result

    def _gone(self) -> str:
        return (
            f"the folder {self.folder} is not there (removed, renamed or a share not mounted?); "
            "looked for again next pass"
        )

    def _look(self, result: PassResult) -> bool:
        """Whether there is anything to write, from a read-only look; loads a newer run."""
        n_files = pending_files(self.folder, self.db, STAGE)
        with store.connect(self.db, read_only=True) as con:
            run_id = sa.latest_fitted_run(con)
            if run_id is not None:
                n_unscored = len(sa.unscored_frames(con, run_id, self.root))
            else:
                in_folder = sa.load_frames(con, root=self.root)["frame_id"].tolist()
                n_unscored = len(se.pending_frames(con, self._model(con), in_folder))
        if run_id is not None and (self.fitted is None or self.fitted.run_id != run_id):
            from pipeline.score_new import load_fitted_run

            self.fitted, warnings = load_fitted_run(self.db, run_id, read_only=True)
            for warning in warnings:
                log.warning("watch: %s", warning)
        result.run_id = run_id
        return bool(n_files or n_unscored or self._refit_due())

    def _work(self, result: PassResult) -> None:
        if self.fitted is not None:
            from pipeline.score_new import score_folder

            done = score_folder(
                self.folder,
                self.db,
                self.settings,
                self.fitted,
                stage=STAGE,
                hold=self.settling.hold,
                should_stop=self.should_stop,
                chunk=self.settings.ingest_batch_size,
                built=self._built(),
            )
            ingest, n_embed_failed = done.ingest, done.n_embed_failed
            result.n_scored = len(done.frames)
            result.n_flagged = int(done.frames["is_outlier"].sum()) if len(done.frames) else 0
        else:
            ingest, n_embed_failed = self._ingest_and_embed()
        result.n_new = ingest.added + ingest.changed
        result.n_errors = ingest.n_new_errors + n_embed_failed
        result.n_waiting = ingest.n_held
        self.n_since_fit += result.n_new
        if self._refit_due() and not self.should_stop():
            result.run_id = self._refit()
            result.note = f"refitted: analysis run {result.run_id}"

    def _ingest_and_embed(self):
        from pipeline.embed import embed_frames
        from pipeline.ingest import ingest_folder

        ingest = ingest_folder(
            self.folder,
            self.db,
            self.settings,
            progress=False,
            stage=STAGE,
            hold=self.settling.hold,
            should_stop=self.should_stop,
        )
        if self.should_stop():
            return ingest, 0
        with store.connect(self.db, read_only=True) as con:
            model = self._model(con)
            in_folder = sa.load_frames(con, root=self.root)["frame_id"].tolist()
        embedded = embed_frames(
            self.db,
            self.settings.replace(model=model),
            frame_ids=in_folder,
            progress=False,
            should_stop=self.should_stop,
        )
        return ingest, embedded.failed

    def _built(self):
        """The run's model at the precision of the run's vectors (`score_new.run_embedder`),
        built once and kept between passes while the run's model and precision stay."""
        from pipeline.score_new import run_embedder, run_precision

        precision = run_precision(self.db, self.fitted, self.settings.precision).precision
        if self.model is None or (self.model[0].key, self.model[0].precision) != (
            self.fitted.model,
            precision,
        ):
            self.model = run_embedder(self.db, self.fitted, self.settings)
            log.info("watch: embedding with %s at %s", self.fitted.model, self.model[1].describe())
        return self.model

    def _model(self, con) -> str:
        """The model to embed with before any run: the settings', else the store's only one."""
        models = [row.model for row, n in se.list_model_rows(con) if n > 0]
        return (
            models[0]
            if len(models) == 1 and self.settings.model not in models
            else self.settings.model
        )

    def _refit_due(self) -> bool:
        return self.refit_every is not None and self.n_since_fit >= self.refit_every

    def _refit(self) -> int:
        """A full analysis with the current run's settings (or these settings before any run);
        the new run is scored against from then on."""
        from pipeline.analyze import analyze

        if self.fitted is not None:
            settings = self._run_settings(self.fitted.run_id)
        else:
            with store.connect(self.db, read_only=True) as con:
                settings = self.settings.replace(model=self._model(con))
        from pipeline.score_new import load_fitted_run

        analysed = analyze(self.db, settings, progress=False)
        self.n_since_fit = 0
        self.fitted, _ = load_fitted_run(self.db, analysed.run_id, read_only=True)
        return analysed.run_id

    def _run_settings(self, run_id: int) -> Settings:
        with store.connect(self.db, read_only=True) as con:
            run = sa.get_run(con, run_id)
        known = {f.name for f in dataclasses.fields(Settings)}
        values = {k: v for k, v in (run or {}).get("params", {}).items() if k in known}
        try:
            return Settings(**values)
        except (InputError, TypeError) as exc:
            log.warning(
                "watch: run %s's settings cannot be used again (%s); refitting with "
                "the current settings",
                run_id,
                exc,
            )
            return self.settings.replace(model=self.fitted.model)


def watch(
    folder: Path,
    db: Path,
    settings: Settings,
    interval: float,
    echo: Callable[[str], None],
    stop: threading.Event,
    refit_every: int | None = None,
) -> int:
    """Run passes every `interval` seconds until `stop` is set; returns the number of passes."""
    watcher = Watcher(folder, db, settings, refit_every=refit_every, should_stop=stop.is_set)
    n_passes = 0
    while not stop.is_set():
        echo(watcher.one_pass().line())
        n_passes += 1
        stop.wait(interval)
    return n_passes


def _first_sentence(exc: Exception) -> str:
    text = str(exc)
    return text.split(";")[0] if ";" in text else text
