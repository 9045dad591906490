"""The whole bad-input corpus (`tests/reliability/corpus.py`) through the Ray executor: `run`'s
one pass on the two-node cluster stores exactly what the local executor stores (every odd but
valid image a frame with its vector, every broken file one clear error row), and a second pass
records nothing twice."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings
from tests.ray.test_ray_run import assert_same_store, one_pass, table
from tests.reliability.corpus import build_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("ray-corpus") / "frames", n_plain=4)


def test_every_corpus_file_through_the_ray_executor(ray_cluster, corpus, tmp_path):
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    settings = Settings(model="pixels", batch_size=4, workers=2)
    one_pass(corpus.folder, local_db, settings)
    ingested, embedded = one_pass(corpus.folder, ray_db, settings.replace(executor="ray"))

    assert (ingested.added, ingested.failed) == (len(corpus.good), len(corpus.broken))
    assert embedded.embedded == len(corpus.good)
    errors = table(ray_db, "SELECT path, message FROM ingest_errors WHERE stage = 'ingest'")
    assert sorted(errors) == sorted(corpus.broken)
    for path, (message,) in errors.items():
        assert message.startswith(corpus.broken[path]), (path, message)
    frames = table(ray_db, "SELECT path, time_source FROM frames")
    assert set(frames) == corpus.good
    warnings = table(ray_db, "SELECT path, message FROM ingest_errors WHERE stage = 'timestamp'")
    assert set(warnings) == set(corpus.warned)
    for path, (source, text) in corpus.warned.items():
        assert frames[path] == (source,) and text in warnings[path][0], path
    assert (
        table(ray_db, "SELECT path FROM ingest_errors WHERE stage NOT IN ('ingest', 'timestamp')")
        == {}
    )
    assert_same_store(ray_db, local_db, "pixels")

    again, rest = one_pass(corpus.folder, ray_db, settings.replace(executor="ray"))
    assert (again.added, again.unchanged, again.failed, rest.embedded) == (
        0,
        len(corpus.good),
        len(corpus.broken),
        0,
    )
    assert table(ray_db, "SELECT path, message FROM ingest_errors WHERE stage = 'ingest'") == errors
