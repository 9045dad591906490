"""`ingest`, `embed` and `run`'s one pass on a real two-node Ray cluster give the store exactly
what the local executor gives it: the same frame rows, thumbnails, errors and vectors (within
1e-5), each once, also when an actor is killed mid-batch."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import store
from pipeline import executors
from pipeline.embed import embed_frames
from pipeline.errors import InputError
from pipeline.ingest import ingest_folder
from pipeline.onepass import ingest_and_embed
from pipeline.ray_executor import RayExecutor
from pipeline.settings import Settings
from tests.conftest import write_jpeg

N_FRAMES = 30
FRAME_COLUMNS = (
    "path, taken_at, taken_at_utc, time_source, width, height, file_bytes, "
    "content_hash, mean_luma, contrast, sharpness, colorfulness, daylight"
)


def make_folder(root: Path, n: int = N_FRAMES) -> Path:
    """`n` frames of two sizes, a PNG, and two files that are not frames."""
    folder = root / "frames"
    start = datetime(2024, 4, 10, 8, 0)
    for i in range(n):
        size = (1280, 720) if i % 5 == 0 else (480, 270)
        write_jpeg(
            folder / f"f_{i:02d}.jpg",
            when=start + timedelta(minutes=10 * i),
            size=size,
            seed=i,
            colour=(60 + 5 * i, 120, 90),
        )
    Image.new("RGB", (300, 200), (10, 200, 30)).save(folder / "plain.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture")
    return folder


def table(db: Path, sql: str) -> dict:
    with store.connect(db, read_only=True) as con:
        rows = con.execute(sql).fetchall()
    keyed = {row[0]: row[1:] for row in rows}
    assert len(keyed) == len(rows), "a frame is in the store twice"
    return keyed


def vectors(db: Path, model: str) -> dict[str, np.ndarray]:
    sql = (
        "SELECT f.path, e.vector FROM embeddings e JOIN frames f USING (frame_id) "
        f"WHERE e.model = '{model}'"
    )
    return {path: np.asarray(v, dtype=np.float32) for path, (v,) in table(db, sql).items()}


def assert_same_store(got: Path, want: Path, model: str, atol: float = 0.0) -> None:
    frames = f"SELECT {FRAME_COLUMNS} FROM frames"
    assert table(got, frames) == table(want, frames)
    thumbs = (
        "SELECT f.path, t.jpeg, t.width, t.height FROM thumbnails t JOIN frames f USING (frame_id)"
    )
    assert table(got, thumbs) == table(want, thumbs)
    errors = "SELECT path, stage, message FROM ingest_errors"
    assert table(got, errors) == table(want, errors)
    got_v, want_v = vectors(got, model), vectors(want, model)
    assert got_v.keys() == want_v.keys()
    for path, vector in want_v.items():
        np.testing.assert_allclose(got_v[path], vector, rtol=0, atol=atol, err_msg=path)


def one_pass(folder: Path, db: Path, settings: Settings, executor=None, built=None):
    """What `run` does before `analyze`: the one pass, then any frame still lacking a vector."""
    with executors.session(settings):
        ingested, embedded, built = ingest_and_embed(
            folder, db, settings, progress=False, executor=executor, built=built
        )
        rest = embed_frames(db, settings, progress=False, built=built)
    return ingested, embedded.merge(rest)


@pytest.fixture(scope="module")
def local_pixels(tmp_path_factory):
    """The frames folder and the local executor's store of it (`pixels` model)."""
    root = tmp_path_factory.mktemp("local")
    folder = make_folder(root)
    db = root / "local.duckdb"
    one_pass(folder, db, Settings(model="pixels", batch_size=4, workers=2))
    return folder, db


def test_run_ingest_and_embed_on_ray_store_what_the_local_executor_stores(
    ray_cluster, local_pixels, tmp_path
):
    folder, local_db = local_pixels
    settings = Settings(model="pixels", batch_size=4, executor="ray")
    ingested, embedded = one_pass(folder, tmp_path / "run.duckdb", settings)
    assert (ingested.added, ingested.failed) == (N_FRAMES + 1, 2)
    assert (embedded.embedded, embedded.while_ingesting) == (N_FRAMES + 1, N_FRAMES + 1)
    assert_same_store(tmp_path / "run.duckdb", local_db, "pixels")

    two = tmp_path / "two.duckdb"  # `ingest --executor ray`, then `embed --executor ray`
    assert ingest_folder(folder, two, settings, progress=False).added == N_FRAMES + 1
    assert embed_frames(two, settings, progress=False).embedded == N_FRAMES + 1
    assert_same_store(two, local_db, "pixels")

    again, rest = one_pass(folder, tmp_path / "run.duckdb", settings)  # nothing left to do
    assert (again.added, again.unchanged, rest.embedded) == (0, N_FRAMES + 1, 0)


def test_the_work_is_split_over_both_nodes(ray_cluster, local_pixels, tmp_path):
    folder, local_db = local_pixels
    settings = Settings(model="pixels", batch_size=2, executor="ray")
    executor = RayExecutor(batch_size=2)
    one_pass(folder, tmp_path / "split.duckdb", settings, executor=executor)
    assert len(executor.prepared_per_node) == 2, executor.prepared_per_node
    assert sum(executor.prepared_per_node.values()) == N_FRAMES + 3  # the bad files too
    assert sum(executor.finished_per_node.values()) == N_FRAMES + 3
    assert_same_store(tmp_path / "split.duckdb", local_db, "pixels")


class KillOnce:
    """A model that SIGKILLs the process it runs in (a Ray actor) on its first batch there,
    once per test (the marker file): the actor dies mid-batch, as on a node's OOM kill."""

    def __init__(self, model, marker: str):
        self.model, self.marker = model, marker

    def __getattr__(self, name):
        if name.startswith("__"):  # pickle's look-ups before the attributes are set
            raise AttributeError(name)
        return getattr(self.model, name)

    def embed(self, images):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.model.embed(images)


def test_an_actor_killed_mid_batch_is_replaced_and_nothing_is_lost_or_doubled(
    ray_cluster, local_pixels, tmp_path
):
    from pipeline.embed import build_embedder

    folder, local_db = local_pixels
    settings = Settings(model="pixels", batch_size=4, executor="ray")
    built = build_embedder(settings)
    marker = tmp_path / "killed"
    killer = (KillOnce(built[0], str(marker)), built[1])
    db = tmp_path / "killed.duckdb"
    with executors.session(settings):
        ingested, embedded, _ = ingest_and_embed(
            folder, db, settings, progress=False, executor=RayExecutor(4), built=killer
        )
    assert int(marker.read_text()) != os.getpid()  # an actor died, not this process
    assert (ingested.added, embedded.embedded) == (N_FRAMES + 1, N_FRAMES + 1)
    assert_same_store(db, local_db, "pixels")


def test_the_default_model_gives_the_local_vectors_within_1e_5(ray_cluster, tmp_path):
    folder = make_folder(tmp_path, n=6)
    local, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    settings = Settings(batch_size=3, precision="float32")  # vgg16-hed-grid
    one_pass(folder, local, settings)
    one_pass(folder, ray_db, settings.replace(executor="ray"))
    assert_same_store(ray_db, local, "vgg16-hed-grid", atol=1e-5)


class Unloadable:
    """A model no worker can build (its weights are missing there): unpickling it raises."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        if name.startswith("__"):  # pickle's look-ups before the attributes are set
            raise AttributeError(name)
        return getattr(self.model, name)

    def __reduce__(self):
        return (_cannot_load, ("weights file /models/hed.weights.h5 not found on this node",))


def _cannot_load(why: str):
    raise FileNotFoundError(why)


def test_every_actor_failing_to_load_the_model_stops_the_run_and_writes_nothing(
    ray_cluster, local_pixels, tmp_path
):
    from pipeline.embed import build_embedder

    folder, _ = local_pixels
    settings = Settings(model="pixels", batch_size=4, executor="ray")
    embedder, choice = build_embedder(settings)
    db = tmp_path / "nothing.duckdb"
    with pytest.raises(InputError, match="every Ray actor failed to load the model.*not found"):
        with executors.session(settings):
            ingest_and_embed(
                folder,
                db,
                settings,
                progress=False,
                executor=RayExecutor(4),
                built=(Unloadable(embedder), choice),
            )
    with store.connect(db, read_only=True) as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM frames), (SELECT count(*) FROM "
            "embeddings), (SELECT count(*) FROM thumbnails)"
        ).fetchone()
    assert counts == (0, 0, 0)


class SlowModel(KillOnce):
    """A model that takes a while per batch, so a run is still going when a node goes."""

    def embed(self, images):
        import time

        time.sleep(0.3)
        return self.model.embed(images)


class RemoveNodeAfterFirstBatch:
    """An executor that removes a node of the cluster once the first batch is back."""

    def __init__(self, inner: RayExecutor, cluster, node):
        self.inner, self.cluster, self.node = inner, cluster, node
        self.after_removal = 0

    def map_batches(self, batches, prepare, finish):
        for i, result in enumerate(self.inner.map_batches(batches, prepare, finish)):
            if i == 0:
                self.cluster.remove_node(self.node)
            else:
                self.after_removal += len(result.results)
            yield result


def test_a_node_that_dies_mid_run_leaves_the_work_to_the_others(
    ray_cluster, local_pixels, tmp_path
):
    from pipeline.embed import build_embedder

    folder, local_db = local_pixels
    extra = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    settings = Settings(model="pixels", batch_size=2, executor="ray")
    embedder, choice = build_embedder(settings)
    executor = RemoveNodeAfterFirstBatch(RayExecutor(2, stall_seconds=120), ray_cluster, extra)
    db = tmp_path / "node-lost.duckdb"
    with executors.session(settings):
        ingested, embedded, _ = ingest_and_embed(
            folder,
            db,
            settings,
            progress=False,
            executor=executor,
            built=(SlowModel(embedder, ""), choice),
        )
    assert executor.after_removal > 0
    assert (ingested.added, embedded.embedded) == (N_FRAMES + 1, N_FRAMES + 1)
    assert_same_store(db, local_db, "pixels")
