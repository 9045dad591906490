"""The whole bad-input corpus (`corpus.build_corpus`) through `serve` and through `watch`.

`serve`: every file a client can read is uploaded to a real server: odd but valid images are
scored (their time from the EXIF or the name: an upload has no mtime), broken ones are a clear
4xx naming the problem, each followed by a good request that is served. Entries no client can
send (a symlink loop, a dangling link, a FIFO) are file-system states, not uploads. `watch`: the
corpus folder is watched by a real child process; good files become scored frames, broken ones
exactly one error row each (stage 'watch'), and the next pass records nothing twice.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from pipeline.serve import build
from tests.pipeline.test_watch import WatchProcess, _config
from tests.reliability.conftest import one, query
from tests.reliability.corpus import SPARSE_BYTES, build_corpus
from tests.serving import expect_continue, running_server, score

pytestmark = pytest.mark.slow

# The problem code /v1/score answers each broken corpus file with.
PROBLEMS = {
    "zero.jpg": (400, "empty"),
    "truncated.jpg": (422, "truncated"),
    "text.jpg": (415, "not_an_image"),
    "huge.jpg": (413, "too_many_pixels"),
    "really_a_gif.jpg": (415, "unsupported_format"),
}
NOT_UPLOADABLE = {"loop_a.jpg", "loop_b.jpg", "dangling.jpg", "fifo.jpg"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus") / "frames", n_plain=4)


def _path(corpus, stored: str) -> Path:
    """The file of a stored path (undoing the `\\xNN` escape of the non-UTF-8 name)."""
    from pipeline.ingest import os_text

    return corpus.folder / os_text(stored)


def test_every_corpus_file_through_serve(corpus, serving_store, tmp_path):
    assert set(corpus.broken) == set(PROBLEMS) | NOT_UPLOADABLE | {"sparse_2gb.jpg"}
    for name in NOT_UPLOADABLE:  # no client can read these to send them
        path = corpus.folder / name
        assert not path.exists() or not stat.S_ISREG(os.stat(path).st_mode)
    db = serving_store.copy(tmp_path)
    good_file = serving_store.new[0]
    with running_server(build(db, serving_store.settings)) as url:
        good = sorted(corpus.good)
        for start in range(0, len(good), 16):
            names = good[start : start + 16]
            reply = score(
                url,
                [
                    (os.fsdecode(os.fsencode(_path(corpus, n).name)), _path(corpus, n).read_bytes())
                    for n in names
                ],
            )
            assert reply.status == 200, reply.body
            for name, result in zip(names, reply.json()["results"]):
                assert result["verdict"] in ("junk", "ok")
                assert result["scores"]["lof"]["score"] is not None, name
                source = corpus.warned.get(name, ("exif", ""))[0]
                if source in ("mtime", "none"):  # an upload has no mtime to fall back on
                    assert result["taken_at"] is None, name
                else:
                    assert result["taken_at"].startswith("2024-04-10T"), (name, result)
        for name, (status, problem) in PROBLEMS.items():
            reply = score(url, [(name, (corpus.folder / name).read_bytes())])
            assert (reply.status, reply.json()["problem"]) == (status, problem), reply.body
            assert corpus.broken[name] in reply.json()["detail"], reply.json()
            assert score(url, [good_file]).status == 200
        reply = expect_continue(url, SPARSE_BYTES, "sparse_2gb.jpg")
        assert reply.status == 413 and b"request_too_big" in reply.body
        assert score(url, [good_file]).status == 200


def test_every_corpus_file_through_watch(corpus, serving_store, tmp_path):
    db = serving_store.copy(tmp_path / "store")
    watch = WatchProcess(corpus.folder, db, _config(tmp_path, watch_settle_seconds=0))
    try:
        watch.wait_for(
            rf": {len(corpus.good)} new, {len(corpus.good)} scored, \d+ flagged, "
            rf"{len(corpus.broken)} errors \(run 1\)"
        )
        watch.wait_for(r": 0 new, 0 scored, 0 flagged, 0 errors \(run 1\)$")
    finally:
        assert watch.stop(signal.SIGTERM) == 0, watch.seen[-10:]
    root = str(corpus.folder)
    paths = {p for (p,) in query(db, "SELECT path FROM frames WHERE root = ?", [root])}
    assert paths == corpus.good
    rows = query(db, "SELECT path, message FROM ingest_errors WHERE stage = 'watch' ORDER BY 1")
    assert [p for p, _ in rows] == sorted(corpus.broken)
    for path, message in rows:
        assert message.startswith(corpus.broken[path]), (path, message)
    warnings = dict(
        query(
            db,
            "SELECT path, message FROM ingest_errors WHERE stage = 'timestamp' AND root = ?",
            [root],
        )
    )
    assert set(warnings) == set(corpus.warned)
    assert one(
        db,
        "SELECT count(DISTINCT c.frame_id) FROM clusters c JOIN frames f "
        "USING (frame_id) WHERE c.run_id = 1 AND f.root = ?",
        [root],
    ) == len(corpus.good)
